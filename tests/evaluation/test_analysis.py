"""Error analysis: the confusion matrix on a hand-worked case (class confusion, a miss, a false
detection, a tie, a crowd region, the score threshold, images without objects or detections),
PR curves against COCO's interpolation worked by hand, and the pictures."""
import numpy as np
import pytest
from PIL import Image

from mgdet.evaluation.analysis import RECALL_POINTS, confusion_matrix, plot_confusion, plot_pr_curves
from mgdet.evaluation.coco import coco_metrics


def _gt(objects, num_images, names=("a", "b")):
    """COCO dict from ``(image_id, category_id, [x, y, w, h], iscrowd)`` tuples."""
    return {"images": [{"id": i, "width": 200, "height": 200} for i in range(1, num_images + 1)],
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
            "annotations": [{"id": n + 1, "image_id": i, "category_id": c, "bbox": b,
                             "area": b[2] * b[3], "iscrowd": crowd}
                            for n, (i, c, b, crowd) in enumerate(objects)]}


def _det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def test_confusion_matrix_hand_worked():
    gt = _gt([(1, 1, [0, 0, 10, 10], 0),     # A1: found as a (d1)
              (1, 2, [20, 20, 10, 10], 0),   # B1: found as a (d2, IoU 81/119)
              (1, 1, [40, 40, 10, 10], 0),   # A2: missed
              (1, 2, [60, 60, 20, 20], 1),   # crowd region
              (3, 2, [0, 0, 10, 10], 0)],    # image 3: missed b
             num_images=3)
    dets = [_det(1, 1, [0, 0, 10, 10], 0.7),    # d1 a on A1, IoU 1 (tie with d3, higher score)
            _det(1, 1, [21, 21, 10, 10], 0.8),  # d2 a on B1
            _det(1, 2, [0, 0, 10, 10], 0.6),    # d3 b on A1, IoU 1, loses the tie: false b
            _det(1, 2, [60, 60, 18, 18], 0.6),  # on the crowd region (IoU 0.81): not counted
            _det(1, 1, [100, 100, 5, 5], 0.1),  # below the score threshold: ignored
            _det(2, 2, [0, 0, 5, 5], 0.5)]      # image 2 has no objects: false b
    matrix, names = confusion_matrix(gt, dets, iou_threshold=0.5, score_threshold=0.25)
    assert names == ["a", "b", "background"]
    np.testing.assert_array_equal(matrix, [[1, 0, 1],
                                           [1, 0, 1],
                                           [0, 2, 0]])
    # the tie goes the other way when d3 scores higher: then a -> b, and d1 is the false a
    dets[2]["score"] = 0.75
    matrix, _ = confusion_matrix(gt, dets)
    np.testing.assert_array_equal(matrix, [[0, 1, 1], [1, 0, 1], [1, 1, 0]])


def test_confusion_matrix_edge_cases():
    gt = _gt([(1, 1, [0, 0, 10, 10], 0), (1, 2, [5, 5, 10, 10], 0)], num_images=2)
    matrix, _ = confusion_matrix(gt, [])  # nothing detected: every object missed
    np.testing.assert_array_equal(matrix, [[0, 0, 1], [0, 0, 1], [0, 0, 0]])
    empty = _gt([], num_images=2)
    matrix, _ = confusion_matrix(empty, [_det(2, 2, [0, 0, 5, 5], 0.9)])
    np.testing.assert_array_equal(matrix, [[0, 0, 0], [0, 0, 0], [0, 1, 0]])
    # many detections on one object: one match, the rest false detections of their class
    many = [_det(1, 1, [0, 0, 10, 10], s) for s in (0.9, 0.8, 0.7)]
    matrix, _ = confusion_matrix(gt, many)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 0, 1], [2, 0, 0]])


def test_pr_curve_follows_cocos_interpolation_and_averages_to_ap50():
    # one class, two objects: detections TP 0.9, FP 0.8, TP 0.7 -> precision 1 up to recall
    # 0.5, then 2/3 (interpolated from the right) up to recall 1
    gt = _gt([(1, 1, [0, 0, 10, 10], 0), (2, 1, [0, 0, 10, 10], 0)], num_images=2,
             names=("a",))
    dets = [_det(1, 1, [0, 0, 10, 10], 0.9), _det(1, 1, [50, 50, 10, 10], 0.8),
            _det(2, 1, [0, 0, 10, 10], 0.7)]
    metrics = coco_metrics(gt, dets, curves=True)
    curve = np.array(metrics["pr_curves"]["a"])
    expected = np.where(RECALL_POINTS <= 0.5 + 1e-9, 1.0, 2.0 / 3.0)
    np.testing.assert_allclose(curve, expected, atol=1e-6)
    assert curve.mean() == pytest.approx(metrics["AP50"], abs=1e-6)


def test_pictures_are_written(tmp_path):
    curves = {"a": np.linspace(1, 0.2, 101).tolist(), "b": [float("nan")] * 101}
    plot_pr_curves(curves, str(tmp_path / "pr.png"))
    plot_confusion([[3, 1, 0], [0, 2, 1], [1, 0, 0]], ["a", "b", "background"],
                   str(tmp_path / "cm.png"))
    for name in ("pr.png", "cm.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 300 and np.asarray(im.convert("L")).std() > 5

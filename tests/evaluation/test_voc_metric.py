"""The authors' VOC metric (mgdet.evaluation.voc_metric) against hand-worked values, the separate
numpy reference of tests/evaluation/test_evaluation.py and pycocotools."""
import types

import numpy as np
import pytest

from mgdet.evaluation import coco as evaluation
from mgdet.evaluation import voc_metric
from tests.evaluation.test_evaluation import _gt, _noisy_detections, _voc07_reference


def _ann(i, img, box, difficult=0):
    return {"id": i, "image_id": img, "category_id": 1, "bbox": box, "area": box[2] * box[3],
            "iscrowd": 0, "difficult": difficult}


def test_hand_worked_over_iou_thresholds():
    gt = {"images": [{"id": 1, "width": 100, "height": 100}],
          "annotations": [_ann(1, 1, [0, 0, 10, 10]), _ann(2, 1, [20, 20, 10, 10]),
                          _ann(3, 1, [50, 50, 20, 20], difficult=1)],
          "categories": [{"id": 1, "name": "a"}]}
    det = lambda box, s: {"image_id": 1, "category_id": 1, "bbox": box, "score": s}  # noqa: E731
    dets = [det([50, 50, 20, 20], 0.95),  # the difficult object: ignored at every threshold
            det([0, 0, 10, 7.9], 0.9),     # IoU 0.79 with A: tp up to 0.75, fp from 0.80
            det([20, 20, 10, 10], 0.8),    # B exactly: tp everywhere
            det([80, 0, 10, 10], 0.7)]     # background: fp
    # IoU <= 0.75 (6 thresholds): tp tp fp -> precision 1 up to recall 1: AP 1.
    # IoU >= 0.80 (4 thresholds): fp tp fp -> recall 0, .5, .5, precision 0, .5, .33: the six
    # recall points 0 .. .5 see precision .5, the five above see 0: AP 3 / 11.
    m = voc_metric.voc_metrics(gt, dets)
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(1.0)
    assert m["per_threshold"][0.8] == pytest.approx(3 / 11)
    assert m["AP"] == pytest.approx((6 + 4 * 3 / 11) / 10)
    assert list(m["per_threshold"]) == pytest.approx(np.arange(0.5, 0.96, 0.05))
    # Without the difficult flag the first detection is a true positive for object 3.
    gt["annotations"][2]["difficult"] = 0
    assert voc_metric.voc_metrics(gt, dets)["AP50"] == pytest.approx(1.0)
    # Without its detection, 2 of 3 objects are found at precision 1: recall points 0 .. .6.
    assert voc_metric.voc_metrics(gt, dets[1:])["AP50"] == pytest.approx(7 / 11)


def test_at_most_300_detections_per_image():
    gt = {"images": [{"id": 1, "width": 100, "height": 100}],
          "annotations": [_ann(1, 1, [0, 0, 10, 10])], "categories": [{"id": 1, "name": "a"}]}
    fps = [{"image_id": 1, "category_id": 1, "bbox": [60, 60, 5, 5], "score": 0.5}] * 300
    tp = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.1}  # the 301st
    assert voc_metric.voc_metrics(gt, fps + [tp])["AP50"] == 0.0
    assert voc_metric.voc_metrics(gt, fps + [tp], max_detections=301)["AP50"] == pytest.approx(
        1 / 301)  # 11 points, precision 1/301 at recall 1


@pytest.mark.parametrize("seed", [3, 5])
def test_each_threshold_matches_numpy_reference(seed):
    gt = _gt(num_images=8, seed=seed)
    dets = _noisy_detections(gt, seed=seed + 1)
    m = voc_metric.voc_metrics(gt, dets)
    want = {t: _voc07_reference(gt, dets, thr=t) for t in voc_metric.IOU_THRESHOLDS}
    assert m["per_threshold"] == pytest.approx(want)
    assert m["AP"] == pytest.approx(np.mean(list(want.values())))
    assert evaluation.voc07_map(gt, dets)["mAP"] == pytest.approx(want[0.5])


def test_ap50_close_to_pycocotools_without_difficult():
    # 11-point (VOC07) vs 101-point (COCO) interpolation: close, not equal.
    gt = _gt(num_images=60, seed=11)
    for a in gt["annotations"]:
        a["iscrowd"] = 0
    rng = np.random.default_rng(12)
    dets = []  # a fair detector: one jittered hit per object, some misses and false alarms
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        if rng.uniform() < 0.85:
            j = rng.normal(0, 0.06, 4) * [w, h, w, h]
            dets.append({"image_id": a["image_id"], "category_id": a["category_id"],
                         "bbox": [x + j[0], y + j[1], w + j[2], h + j[3]],
                         "score": float(rng.uniform(0.3, 1))})
    for d in _noisy_detections(gt, seed=13):
        dets.append(dict(d, score=d["score"] * 0.6))
    coco = evaluation.coco_metrics(gt, dets)
    voc = voc_metric.voc_metrics(gt, dets)
    assert abs(voc["AP50"] - coco["AP50"]) < 0.02, (voc["AP50"], coco["AP50"])
    assert abs(voc["AP75"] - coco["AP75"]) < 0.03, (voc["AP75"], coco["AP75"])


def test_no_detections_and_table():
    gt = _gt(num_images=3, seed=0)
    m = voc_metric.voc_metrics(gt, [])
    assert m["AP"] == 0.0 and m["AP50"] == 0.0
    assert evaluation.voc07_map(gt, [])["mAP"] == 0.0
    table = voc_metric.format_voc_table({"AP": 0.5, "AP50": 0.75, "AP75": float("nan")}, "t")
    assert table.splitlines()[0] == "t" and table.splitlines()[-1] == "| 50.0 | 75.0 | - |"


def test_iou_edge_cases_and_the_inclusive_threshold():
    """Hand-worked IoUs: a sub-pixel pair at exactly 0.5 (a true positive at 0.5, not at 0.51),
    two zero-area boxes (IoU 0) and disjoint boxes (IoU 0)."""
    gt = {1: np.array([[0, 0, 0.5, 0.25]]), 2: np.array([[1.0, 1, 1, 1]]), 3: np.array([[5.0, 5, 7, 7]])}
    difficult = {k: np.zeros(1, bool) for k in gt}
    dets = np.array([[0, 0, 0.5, 0.5], [1, 1, 1, 1], [0, 0, 2, 2]], np.float64)
    tp, fp = voc_metric.class_flags(gt, difficult, [1, 2, 3], dets, [0.9, 0.8, 0.7], (0.1, 0.5, 0.51))
    np.testing.assert_array_equal(tp, [[1, 0, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(fp, 1 - tp)


def test_equal_scores_keep_the_input_order():
    """Tied detections are taken in the order listed (a stable sort): of 20 detections scored
    0.5 / 0.9 alternately, only the 3rd 0.9 one (input 5) matches the object, so it is the
    3rd in score order."""
    gt = {1: np.array([[10.0, 10, 20, 20]])}
    dets = np.tile([50.0, 50, 60, 60], (20, 1))
    dets[5] = [10, 10, 20, 20]
    tp, fp = voc_metric.class_flags(gt, {1: np.zeros(1, bool)}, [1] * 20, dets, [0.5, 0.9] * 10,
                                    (0.5,))
    want = np.zeros(20)
    want[2] = 1
    np.testing.assert_array_equal(tp[0], want)
    np.testing.assert_array_equal(fp[0], 1 - want)


def test_a_detection_where_its_class_has_no_object_is_a_false_positive():
    """The class's only object is in image 1: the better-scored detection, in image 2 (not in
    ``gt_boxes``), is a false positive at every threshold; image 1's a true positive."""
    box = [0.0, 0.0, 10.0, 10.0]
    tp, fp = voc_metric.class_flags({1: np.array([box])}, {1: np.zeros(1, bool)}, [2, 1],
                                    np.array([box, box]), [0.9, 0.8], (0.5, 0.75))
    np.testing.assert_array_equal(tp, [[0, 1], [0, 1]])
    np.testing.assert_array_equal(fp, [[1, 0], [1, 0]])


def test_one_detection_one_object_is_ap_1():
    assert voc_metric.voc07_ap(np.array([1.0]), np.array([0.0]), 1) == 1.0
    assert voc_metric.voc07_ap(np.array([0.0]), np.array([1.0]), 1) == 0.0


def test_coco_objects_unnamed_and_empty_categories_and_missing_flags():
    """A ``COCO``-like object is read through ``.dataset``; a category without ground truth is
    left out (also when it comes first), one without a name is listed by its id, annotations
    without ``difficult`` / ``iscrowd`` keys count as ordinary objects."""
    gt = {"images": [{"id": 1}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10]},
                          {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 20, 10, 10]}],
          "categories": [{"id": 1, "name": "empty"}, {"id": 2, "name": "a"}, {"id": 3}]}
    dets = [{"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.9},
            {"image_id": 1, "category_id": 3, "bbox": [50, 50, 10, 10], "score": 0.8}]
    for source in (gt, types.SimpleNamespace(dataset=gt)):
        m = voc_metric.voc_metrics(source, dets)
        assert m["per_class"] == {"a": 1.0, "3": 0.0}
        assert m["AP"] == m["AP50"] == m["AP75"] == 0.5


def test_without_ground_truth_or_without_0_5_and_0_75_the_values_are_nan():
    gt = {"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    m = voc_metric.voc_metrics(gt, [])
    assert np.isnan(m["AP"]) and np.isnan(m["AP50"]) and m["per_class"] == {}
    assert list(m["per_threshold"]) == list(voc_metric.IOU_THRESHOLDS)
    assert all(np.isnan(v) for v in m["per_threshold"].values())
    one = _gt(num_images=2, seed=1)
    m = voc_metric.voc_metrics(one, [], thresholds=(0.6,))
    assert m["AP"] == 0.0 and np.isnan(m["AP50"]) and np.isnan(m["AP75"])
    assert voc_metric.format_voc_table(m).splitlines() == [
        "| VOC07 AP | VOC07 AP50 | VOC07 AP75 |", "|---|---|---|", "| 0.0 | - | - |"]

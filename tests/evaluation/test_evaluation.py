"""mgdet.evaluation.coco: COCO metrics equal pycocotools run directly, hand-worked cases, VOC07 mAP
against a separate numpy reference, model outputs -> COCO results, and the evaluate() loop."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from mgdet.evaluation import coco as evaluation


def _gt(num_images=6, num_classes=3, seed=0, sizes=((64, 48), (100, 80), (300, 200))):
    """COCO ground truth with objects of every COCO area range (small, medium, large)."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(num_images):
        h, w = sizes[i % len(sizes)][0] * 2, sizes[i % len(sizes)][1] * 3
        images.append({"id": 100 + i, "height": h, "width": w})
        for _ in range(rng.integers(1, 6)):
            bw, bh = rng.uniform(4, w * 0.7), rng.uniform(4, h * 0.7)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            anns.append({"id": len(anns) + 1, "image_id": 100 + i,
                         "category_id": int(rng.integers(1, num_classes + 1)),
                         "bbox": [x, y, bw, bh], "area": bw * bh,
                         "iscrowd": int(rng.uniform() < 0.1)})
    cats = [{"id": c + 1, "name": f"c{c}"} for c in range(num_classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def _noisy_detections(gt, seed=1):
    rng = np.random.default_rng(seed)
    dets = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(rng.integers(0, 3)):
            j = rng.normal(0, 0.15, 4) * [w, h, w, h]
            cat = a["category_id"] if rng.uniform() < 0.8 else 1 + (a["category_id"] % 3)
            dets.append({"image_id": a["image_id"], "category_id": cat,
                         "bbox": [x + j[0], y + j[1], max(w + j[2], 1), max(h + j[3], 1)],
                         "score": float(rng.uniform())})
    for im in gt["images"]:  # background false positives
        for _ in range(3):
            dets.append({"image_id": im["id"], "category_id": int(rng.integers(1, 4)),
                         "bbox": [float(rng.uniform(0, im["width"] / 2)),
                                  float(rng.uniform(0, im["height"] / 2)), 20.0, 30.0],
                         "score": float(rng.uniform())})
    return dets


def _pycocotools_stats(gt, dets):
    import copy

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_coco_metrics_equal_pycocotools_directly(capsys):
    gt = _gt()
    dets = _noisy_detections(gt)
    before = [dict(d) for d in dets]
    got = evaluation.coco_metrics(gt, dets)
    stats = _pycocotools_stats(gt, dets)
    for key, value in zip(evaluation.COCO_KEYS, stats):
        if value < 0:
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=1e-12), key
    assert 0.05 < got["AP"] < 0.95  # a non-trivial case
    assert dets == before  # the caller's list is not modified
    assert capsys.readouterr().out == ""  # pycocotools' prints are swallowed


def test_perfect_detections_give_ap_one_and_none_give_zero():
    gt = _gt(seed=3)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 0.9} for a in gt["annotations"] if not a["iscrowd"]]
    m = evaluation.coco_metrics(gt, perfect, per_class=True)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        assert m[key] == pytest.approx(1.0), key
    assert all(v == pytest.approx(1.0) for v in m["per_class"].values())

    none = evaluation.coco_metrics(gt, [], per_class=True)
    for key in evaluation.COCO_KEYS:
        assert none[key] == 0.0, key
    assert set(none["per_class"].values()) == {0.0}


def test_missing_area_range_is_nan_and_table_prints_dash():
    gt = {"images": [{"id": 1, "width": 200, "height": 200}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50],
                           "area": 2500.0, "iscrowd": 0}],
          "categories": [{"id": 1, "name": "a"}]}
    m = evaluation.coco_metrics(gt, [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50],
                                      "score": 0.5}])
    assert m["AP"] == pytest.approx(1.0) and m["APm"] == pytest.approx(1.0)
    assert math.isnan(m["APs"]) and math.isnan(m["APl"])
    none = evaluation.coco_metrics(gt, [])
    assert none["AP"] == 0.0 and math.isnan(none["APs"])
    table = evaluation.format_table(dict(m, VOC07_mAP50=0.5))
    lines = table.splitlines()
    assert lines[0].split("|")[1].strip() == "AP" and "VOC07 mAP50" in lines[0]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == ["100.0", "100.0", "100.0", "-", "100.0", "-", "50.0"]


def test_unknown_image_or_category_is_a_clear_error():
    gt = _gt(num_images=2)
    with pytest.raises(ValueError, match="image ids"):
        evaluation.coco_metrics(gt, [{"image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5],
                                      "score": 1.0}])
    with pytest.raises(ValueError, match="category"):
        evaluation.coco_metrics(gt, [{"image_id": 100, "category_id": 99, "bbox": [0, 0, 5, 5],
                                      "score": 1.0}])


# --------------------------------------------------------------------------------------------
# VOC07
# --------------------------------------------------------------------------------------------

def _voc07_reference(gt, dets, thr=0.5):
    """Separate numpy reference: vectorized IoU per (class, image), greedy matching in score
    order, then the 11-point interpolation written as a max over a recall mask."""
    aps = []
    for cat in sorted(c["id"] for c in gt["categories"]):
        g = [a for a in gt["annotations"] if a["category_id"] == cat]
        hard = np.array([bool(a.get("iscrowd", 0)) for a in g])
        npos = int((~hard).sum()) if g else 0
        if npos == 0:
            continue
        d = sorted([x for x in dets if x["category_id"] == cat], key=lambda x: -x["score"])
        g_img = np.array([a["image_id"] for a in g])
        g_box = np.array([a["bbox"] for a in g], float).reshape(-1, 4)
        g_box[:, 2:] += g_box[:, :2]
        taken = np.zeros(len(g), bool)
        labels = []  # 1 tp, 0 fp, None ignored
        for x in d:
            b = np.array(x["bbox"], float)
            b[2:] += b[:2]
            same = np.where(g_img == x["image_id"])[0]
            if same.size == 0:
                labels.append(0)
                continue
            gb = g_box[same]
            lt = np.maximum(gb[:, :2], b[:2])
            rb = np.minimum(gb[:, 2:], b[2:])
            inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
            union = np.prod(b[2:] - b[:2]) + np.prod(gb[:, 2:] - gb[:, :2], axis=1) - inter
            ious = inter / union
            k = same[int(np.argmax(ious))]
            if ious.max() < thr:
                labels.append(0)
            elif hard[k]:
                labels.append(None)
            elif taken[k]:
                labels.append(0)
            else:
                taken[k] = True
                labels.append(1)
        kept = np.array([lab for lab in labels if lab is not None], float)
        tp = np.cumsum(kept)
        fp = np.cumsum(1 - kept)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, 1e-12)
        pts = np.linspace(0, 1, 11)
        mask = rec[None, :] >= pts[:, None] - 1e-12  # [11, D]
        aps.append(np.where(mask, prec[None, :], 0).max(axis=1, initial=0).mean())
    return float(np.mean(aps))


def test_voc07_hand_worked():
    # One class. Image 1: gt A (normal) and B (difficult); image 2: gt C.
    gt = {"images": [{"id": 1, "width": 100, "height": 100},
                     {"id": 2, "width": 100, "height": 100}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 30, 30], "iscrowd": 1},
              {"id": 3, "image_id": 2, "category_id": 1, "bbox": [10, 10, 40, 40], "iscrowd": 0}],
          "categories": [{"id": 1, "name": "a"}]}
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20], "score": 0.9},   # tp (A)
        {"image_id": 1, "category_id": 1, "bbox": [50, 50, 30, 30], "score": 0.8},  # difficult
        {"image_id": 2, "category_id": 1, "bbox": [70, 70, 10, 10], "score": 0.7},  # fp (miss)
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.6},   # fp (dup A)
        {"image_id": 2, "category_id": 1, "bbox": [10, 10, 40, 38], "score": 0.5},  # tp (C)
    ]
    # recall .5 .5 .5 1, precision 1 1/2 1/3 1/2: six 11-point thresholds (0 .. .5) see
    # precision 1, five (.6 .. 1) see 1/2.
    expected = (6 * 1.0 + 5 * 0.5) / 11
    got = evaluation.voc07_map(gt, dets)
    assert got["mAP"] == pytest.approx(expected)
    assert got["per_class"] == {"a": pytest.approx(expected)}
    assert _voc07_reference(gt, dets) == pytest.approx(expected)


# --------------------------------------------------------------------------------------------
# Model outputs -> COCO results, and the evaluate() loop
# --------------------------------------------------------------------------------------------

def test_detections_to_coco_scales_to_original_pixels_and_drops_padding():
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.2, 1.0], [0.3, 0.3, 0.3, 0.4]],
                      [[0.5, 0.5, 1.0, 1.0], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7], [0.6, 0, 0]], np.float32)
    classes = np.array([[0, 2, 1], [1, 0, 0]], np.int32)
    out = evaluation.detections_to_coco([7, 8], boxes, scores, classes, [3, 1],
                                        [[100, 200], [50, 40]], label_to_category=[1, 3, 5])
    assert len(out) == 3  # image 7's zero-width box and image 8's padding are dropped
    assert out[0] == {"image_id": 7, "category_id": 1, "score": pytest.approx(0.9),
                      "bbox": pytest.approx([20.0, 20.0, 80.0, 40.0], abs=1e-4)}
    assert out[1]["bbox"] == pytest.approx([0.0, 0.0, 200.0, 100.0])  # clipped to the image
    assert out[1]["category_id"] == 5
    assert out[2]["image_id"] == 8 and out[2]["category_id"] == 3
    assert out[2]["bbox"] == pytest.approx([20.0, 25.0, 20.0, 25.0])
    default = evaluation.detections_to_coco([7, 8], boxes, scores, classes, [3, 1],
                                            [[100, 200], [50, 40]])
    assert [d["category_id"] for d in default] == [1, 3, 2]


class _OracleDetector:
    """Stands in for a Detector: returns the ground truth of the batch's images."""

    def __init__(self, gt, k=5):
        self.by_image = {}
        sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
        for a in gt["annotations"]:
            if a["iscrowd"]:
                continue
            h, w = sizes[a["image_id"]]
            x, y, bw, bh = a["bbox"]
            self.by_image.setdefault(a["image_id"], []).append(
                ([x / w, y / h, (x + bw) / w, (y + bh) / h], a["category_id"] - 1))
        self.k = k
        self.current_ids = None

    def detect(self, images):
        b = len(self.current_ids)
        boxes = np.zeros((b, self.k, 4), np.float32)
        scores = np.zeros((b, self.k), np.float32)
        classes = np.zeros((b, self.k), np.int32)
        num = np.zeros((b,), np.int32)
        for i, image_id in enumerate(self.current_ids):
            objs = self.by_image.get(int(image_id), [])[: self.k]
            num[i] = len(objs)
            for k, (box, label) in enumerate(objs):
                boxes[i, k], scores[i, k], classes[i, k] = box, 0.9, label
        return {"boxes": boxes, "scores": scores, "classes": classes, "num_detections": num}


def test_evaluate_loop_with_an_oracle_detector(tmp_path):
    gt = _gt(num_images=5, seed=11)
    model = _OracleDetector(gt, k=8)
    ids = np.array([im["id"] for im in gt["images"]], np.int64)
    sizes = np.array([[im["height"], im["width"]] for im in gt["images"]], np.int32)
    ds = tf.data.Dataset.from_tensor_slices(
        (np.zeros((5, 64, 64, 3), np.float32), {"image_id": ids, "orig_size": sizes})).batch(2)

    class _Tap:  # let the oracle see the ids of the batch being detected
        def __iter__(self):
            for images, meta in ds:
                model.current_ids = meta["image_id"].numpy()
                yield images, meta

    m = evaluation.evaluate(model, _Tap(), gt, progress=False,
                            results_path=str(tmp_path / "r.json"))
    assert m["AP"] == pytest.approx(1.0) and m["VOC07_mAP50"] == pytest.approx(1.0)
    # the results file holds exactly the oracle's detections in COCO form
    want = []
    for images, meta in _Tap():
        out = model.detect(images)
        want += evaluation.detections_to_coco(
            meta["image_id"].numpy(), out["boxes"], out["scores"], out["classes"],
            out["num_detections"], meta["orig_size"].numpy(),
            evaluation.default_label_to_category(gt))
    written = json.loads((tmp_path / "r.json").read_text())
    assert m["num_images"] == 5
    assert len(written) == m["num_detections"] == sum(not a["iscrowd"] for a in gt["annotations"])
    assert written == json.loads(json.dumps(want))
    table = evaluation.format_table(m)
    assert "100.0" in table and "AP75" in table


def test_evaluate_on_the_real_eval_pipeline_with_an_oracle():
    """Synthetic source -> to_coco ground truth -> make_dataset(training=False) -> evaluate():
    a detector returning the batch's own (resized-image-relative) target boxes scores AP 1."""
    from mgdet.data import pipeline
    from mgdet.data.synthetic.shapes import CLASS_NAMES
    from mgdet.data.synthetic.source import synthetic_dataset
    from mgdet.data.common import to_coco
    source = synthetic_dataset(6, image_size=96, seed=0, split="val")
    gt = to_coco(source, list(CLASS_NAMES))
    ds = pipeline.make_dataset(source, image_size=64, batch_size=4, max_objects=40,
                               training=False)

    class _TargetOracle:
        current = None

        def detect(self, images):
            t = self.current
            valid = t["valid"].numpy()
            return {"boxes": t["boxes"].numpy(), "scores": valid.astype(np.float32),
                    "classes": t["labels"].numpy(), "num_detections": valid.sum(1)}

    model = _TargetOracle()

    class _Tap:
        def __iter__(self):
            for images, targets in ds:
                assert images.shape[1:] == (64, 64, 3)
                model.current = targets
                yield images, targets

    m = evaluation.evaluate(model, _Tap(), gt, progress=False)
    assert m["AP"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(1.0)
    assert m["num_images"] == 6

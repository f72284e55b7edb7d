"""VOC difficult / COCO crowd objects in training: kept as objects (data.difficult: train, the
authors) or ignored (their anchors neither positive nor background)."""
import numpy as np
import pytest
import tensorflow as tf

from mgdet.assign import IGNORED, NEGATIVE, NO_GT, assign, ignore_objects
from mgdet.data.pipeline import make_dataset


def _examples(n=6, seed=0):
    """Examples whose label says whether the box is difficult (label 1) or not (label 0)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = 3
        xy = rng.uniform(0.05, 0.5, (k, 2))
        wh = rng.uniform(0.2, 0.45, (k, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        difficult = np.array([False, True, i % 2 == 0])
        out.append({"image": rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), "boxes": boxes,
                    "labels": difficult.astype(np.int32), "image_id": np.int64(i + 1),
                    "difficult": difficult})
    return out


def _dataset(examples):
    spec = {"image": tf.TensorSpec([None, None, 3], tf.uint8),
            "boxes": tf.TensorSpec([None, 4], tf.float32), "labels": tf.TensorSpec([None], tf.int32),
            "image_id": tf.TensorSpec([], tf.int64), "difficult": tf.TensorSpec([None], tf.bool)}
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=spec)


def test_difficult_boxes_are_trained_or_flagged_through_the_augmentation():
    examples = _examples()  # the authors' augmentation (crop, expand, box drop) moves boxes
    kw = dict(image_size=64, batch_size=6, max_objects=4, training=True, seed=1, augment="paper")
    _, kept = next(iter(make_dataset(_dataset(examples), **kw)))
    assert "ignore" not in kept  # train (the default): difficult objects are plain objects
    assert (kept["labels"].numpy()[kept["valid"].numpy()] == 1).any()
    _, flagged = next(iter(make_dataset(_dataset(examples), difficult="ignore", **kw)))
    valid, labels, ignore = (flagged[k].numpy() for k in ("valid", "labels", "ignore"))
    assert valid.sum() > 0 and not ignore[~valid].any()
    np.testing.assert_array_equal(ignore[valid], labels[valid] == 1)  # flags follow their boxes
    for key in ("boxes", "labels", "valid"):  # the same batches otherwise
        np.testing.assert_array_equal(flagged[key].numpy(), kept[key].numpy())


def test_unknown_difficult_mode_is_one_clear_error():
    from mgdet.data.common import DataError
    with pytest.raises(DataError, match="difficult must be one of"):
        make_dataset(_dataset(_examples(1)), 64, 1, difficult="drop")


def _iou(anchors, box):
    lt = np.maximum(anchors[:, :2], box[:2])
    rb = np.minimum(anchors[:, 2:], box[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), 1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(anchors) + area(box) - inter)


def test_anchors_of_an_ignored_object_are_neither_positive_nor_background():
    rng = np.random.default_rng(0)
    centers = rng.uniform(0, 1, (400, 2))
    sizes = rng.uniform(0.1, 0.4, (400, 2))
    anchors = np.concatenate([centers - sizes / 2, centers + sizes / 2], 1).astype(np.float32)
    gt = np.array([[[0.05, 0.05, 0.35, 0.4], [0.55, 0.5, 0.9, 0.95]]], np.float32)
    labels, valid = np.array([[2, 5]], np.int32), np.array([[True, True]])
    base = assign("iou", anchors, gt, labels, valid)
    out = ignore_objects(base, np.array([[False, True]]))
    cls, reg = out.cls_labels.numpy()[0], out.reg_positive.numpy()[0]
    iou = np.stack([_iou(anchors, g) for g in gt[0]], 1)
    owner, best = iou.argmax(1), iou.max(1)
    of_ignored = (owner == 1) & (best >= 0.4)  # positive or ignored for object 1
    assert of_ignored.any() and ((owner == 0) & (best >= 0.5)).any()
    assert (cls[of_ignored] == IGNORED).all() and not reg[of_ignored].any()
    assert (out.reg_gt_index.numpy()[0][of_ignored] == NO_GT).all()
    rest = ~of_ignored  # the kept object's anchors and the background are untouched
    np.testing.assert_array_equal(cls[rest], base.cls_labels.numpy()[0][rest])
    np.testing.assert_array_equal(reg[rest], base.reg_positive.numpy()[0][rest])
    assert (cls[rest & (best < 0.4)] == NEGATIVE).all()
    assert set(cls[(owner == 0) & (best >= 0.5)]) == {2}


def test_detector_loss_ignores_the_flagged_objects():
    from mgdet import build_model
    from mgdet.config import load_config
    from tests.batches import painted_batch
    cfg = load_config(None, ["model.image_size=64", "model.width=0.125", "assign.strategy=mg"])
    model = build_model(cfg, num_classes=3)
    images, targets = painted_batch(64, batch=2, max_objects=4)
    deltas, logits = model(images, training=False)
    trained = model.compute_detection_loss(targets, deltas, logits)
    assert trained["num_pos_cls"] > 0 and trained["num_pos_reg"] > 0
    ignored = model.compute_detection_loss({**targets, "ignore": targets["valid"]}, deltas, logits)
    assert ignored["num_pos_cls"] == 0 and ignored["num_pos_reg"] == 0 and ignored["reg"] == 0
    # the anchors they owned no longer count as background: less classification loss
    assert float(ignored["cls"]) < float(trained["cls"]) * float(trained["num_pos_cls"])

"""SSD augmentation: boxes follow the pixels, determinism, sampler constraints."""
import numpy as np
import pytest
import tensorflow as tf

from mgdet.data import augment as aug
from mgdet.data import augment_paper as paper

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]], np.uint8)


def _painted_image(rng):
    """A black image with up to 5 non-overlapping solid rectangles on integer pixel edges."""
    h, w = int(rng.integers(40, 120)), int(rng.integers(40, 120))
    img = np.zeros((h, w, 3), np.uint8)
    boxes = []
    for c in range(len(COLOURS)):
        for _ in range(20):
            bw, bh = int(rng.integers(w // 5, w // 2)), int(rng.integers(h // 5, h // 2))
            x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            b = (x0, y0, x0 + bw, y0 + bh)
            if all(b[2] + 1 <= o[0] or o[2] + 1 <= b[0] or b[3] + 1 <= o[1] or o[3] + 1 <= b[1]
                   for o in boxes if o is not None):
                boxes.append(b)
                img[y0:y0 + bh, x0:x0 + bw] = COLOURS[c]
                break
        else:
            boxes.append(None)
    keep = [i for i, b in enumerate(boxes) if b is not None]
    norm = np.array([boxes[i] for i in keep], np.float32) / np.array([w, h, w, h], np.float32)
    return img, norm, np.array(keep, np.int32)


@tf.function(reduce_retracing=True)
def _augment(image, boxes, labels, seed):
    return aug.ssd_augment(image, boxes, labels, seed, 96, photometric=False)


@pytest.mark.parametrize("case", range(40))
def test_boxes_match_the_transformed_pixels(case):
    rng = np.random.default_rng(case)
    img, boxes, labels = _painted_image(rng)
    out, new_boxes, new_labels = _augment(img, boxes, labels, tf.constant([case, 99], tf.int64))
    out, new_boxes, new_labels = out.numpy(), new_boxes.numpy(), new_labels.numpy()
    assert out.shape == (96, 96, 3) and out.dtype == np.float32
    assert np.all(new_boxes >= 0) and np.all(new_boxes <= 1)
    assert set(new_labels) <= set(labels)
    for box, label in zip(new_boxes, new_labels):
        px = box * 96
        if min(px[2] - px[0], px[3] - px[1]) < 3:
            continue  # too small after a 4x zoom-out to measure edges
        # pixels at least half covered by this rectangle's colour
        dist = np.abs(out - COLOURS[label].astype(np.float32)).max(axis=-1)
        region = dist < 0.5 * 255
        ys, xs = np.nonzero(region)
        assert len(xs), (case, box)
        measured = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        np.testing.assert_allclose(measured, px, atol=1.5, err_msg=f"case {case} label {label}")


def test_dropped_boxes_were_cut_by_the_crop():
    """A box disappears only when the crop cut its centre off: whatever remains of it then
    touches the border of the output (it is never dropped while fully inside)."""
    dropped = 0
    for case in range(40):
        rng = np.random.default_rng(case)
        img, boxes, labels = _painted_image(rng)
        out, _, new_labels = _augment(img, boxes, labels, tf.constant([case, 99], tf.int64))
        out = out.numpy()
        for label in labels:
            if label in new_labels.numpy():
                continue
            dropped += 1
            region = np.abs(out - COLOURS[label].astype(np.float32)).max(axis=-1) < 0.5 * 255
            if region.sum() > 4:
                border = region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any()
                assert border, case
    assert dropped > 0


def test_same_seed_same_output_and_seed_matters():
    rng = np.random.default_rng(0)
    img, boxes, labels = _painted_image(rng)
    outs = [aug.ssd_augment(img, boxes, labels, tf.constant([s, 1], tf.int64), 64) for s in (5, 5, 6)]
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(outs[0][0].numpy(), outs[2][0].numpy())


@pytest.mark.parametrize("exact_hsv", [False, True])
def test_photometric_range_and_determinism(exact_hsv):
    img = tf.random.stateless_uniform([32, 48, 3], [1, 2], 0, 255)
    changed = 0
    for s in range(10):
        a = aug.photometric_distort(img, tf.constant([s, 0]), channel_swap=True, exact_hsv=exact_hsv)
        b = aug.photometric_distort(img, tf.constant([s, 0]), channel_swap=True, exact_hsv=exact_hsv)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert a.shape == img.shape
        assert float(tf.reduce_min(a)) >= 0.0 and float(tf.reduce_max(a)) <= 255.0
        changed += not np.allclose(a.numpy(), img.numpy(), atol=1e-3)
    assert changed >= 7


def test_colour_matrix_is_identity_at_rest_and_keeps_grey():
    np.testing.assert_allclose(aug._colour_matrix(1.0, 0.0).numpy(), np.eye(3), atol=1e-5)
    m = aug._colour_matrix(tf.constant(1.4), tf.constant(0.05)).numpy()
    np.testing.assert_allclose(m @ np.ones(3), np.ones(3), atol=1e-5)      # grey stays grey
    desat = aug._colour_matrix(0.0, 0.0).numpy() @ np.array([200.0, 10.0, 30.0])
    assert np.ptp(desat) < 1e-3                                            # saturation 0 -> grey
    # a hue rotation by a full turn is the identity
    np.testing.assert_allclose(aug._colour_matrix(1.0, 1.0).numpy(), np.eye(3), atol=1e-4)


def test_crop_sampler_respects_min_iou():
    from mgdet.ops.boxes import iou
    boxes = tf.constant([[0.05, 0.1, 0.5, 0.7], [0.6, 0.5, 0.9, 0.95]])
    centres = (boxes[:, :2] + boxes[:, 2:]).numpy() / 2
    valid = tf.constant([True, True])
    checked = {0.3: 0, 0.7: 0}
    for s in range(60):
        for min_iou in (0.3, 0.7):
            win = aug._sample_crop(boxes, valid, tf.constant([s, 3]), 1.0, 50, (min_iou,)).numpy()
            if np.allclose(win, [0, 0, 1, 1]):
                continue  # no window qualified: the whole image
            checked[min_iou] += 1
            assert float(tf.reduce_max(iou(win[None], boxes))) >= min_iou - 1e-6
            ratio = (win[3] - win[1]) / (win[2] - win[0])
            assert 0.5 - 1e-5 <= ratio <= 2.0 + 1e-5
            assert np.any(np.all((centres > win[:2]) & (centres < win[2:]), axis=1))
    # measured: 60 and 14 windows; a sampler that always fell back to the image checks none
    assert checked[0.3] >= 50 and checked[0.7] >= 10, checked


def test_empty_image_and_eval_resize():
    img = np.full((50, 70, 3), 200, np.uint8)
    out, b, l = aug.ssd_augment(img, tf.zeros([0, 4]), tf.zeros([0], tf.int32), tf.constant([1, 2]), 64)
    assert out.shape == (64, 64, 3) and b.shape == (0, 4) and l.shape == (0,)
    r = aug.resize(img, 64)
    assert r.shape == (64, 64, 3) and r.dtype == tf.float32
    np.testing.assert_allclose(r.numpy(), 200.0)


def test_identity_resample_equals_resize():
    img = np.random.default_rng(1).integers(0, 255, (37, 53, 3)).astype(np.uint8)
    for size in (20, 96):
        a = aug.resample(img, tf.constant([0.0, 0.0, 1.0, 1.0]), tf.constant(False), size)
        np.testing.assert_allclose(a.numpy(), aug.resize(img, size).numpy(), atol=0.01)
    flipped = aug.resample(img, tf.constant([0.0, 0.0, 1.0, 1.0]), tf.constant(True), 96)
    np.testing.assert_allclose(flipped.numpy(), aug.resize(img[:, ::-1], 96).numpy(), atol=0.01)


# --- the authors' augmentation (data.augment: paper) ------------------------------------------

WHITE = (255.0, 255.0, 255.0)  # zoom-out fill far from every painted colour and the background


@tf.function(reduce_retracing=True)
def _paper(image, boxes, labels, seed):
    return paper.paper_augment(image, boxes, labels, seed, 96, photometric=False, mean=WHITE)


@pytest.mark.parametrize("case", range(30))
def test_paper_boxes_match_the_transformed_pixels(case):
    """Whatever the crop, zoom-out, flip and interpolation drawn, each box returned is where its
    rectangle's colour is in the output; a box disappears only when the crop cut its centre off
    or it became too small."""
    rng = np.random.default_rng(100 + case)
    img, boxes, labels = _painted_image(rng)
    out, new_boxes, new_labels = _paper(img, boxes, labels, tf.constant([case, 7], tf.int64))
    out, new_boxes, new_labels = out.numpy(), new_boxes.numpy(), new_labels.numpy()
    assert out.shape == (96, 96, 3) and 0 <= out.min() and out.max() <= 255
    assert len(new_labels) and np.all(new_boxes >= 0) and np.all(new_boxes <= 1)
    assert np.all(np.minimum(new_boxes[:, 2] - new_boxes[:, 0], new_boxes[:, 3] - new_boxes[:, 1])
                  > 0.01) or np.array_equal(new_boxes, boxes)   # the 1% rule (or the fallback)
    assert len(set(new_labels)) == len(new_labels) and set(new_labels) <= set(labels)
    for box, label in zip(new_boxes, new_labels):
        px = box * 96   # (mostly-covered pixels: grey, where fill meets black, is not red)
        if min(px[2] - px[0], px[3] - px[1]) < 3:
            continue
        region = np.abs(out - COLOURS[label].astype(np.float32)).max(axis=-1) < 0.35 * 255
        ys, xs = np.nonzero(region)
        assert len(xs), (case, box)
        measured = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        np.testing.assert_allclose(measured, px, atol=1.5, err_msg=f"case {case} label {label}")
    # what is left of a dropped rectangle was cut by the crop: it touches the crop's border, i.e.
    # the output's border or the (white) zoom-out fill
    fill = np.pad(out.min(axis=-1) > 200, 1, constant_values=True)
    near_fill = np.zeros_like(fill)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            near_fill |= np.roll(fill, (dy, dx), axis=(0, 1))
    for label in set(labels) - set(new_labels):
        region = np.abs(out - COLOURS[label].astype(np.float32)).max(axis=-1) < 0.35 * 255
        if region.sum() > 4:
            assert (region & near_fill[1:-1, 1:-1]).any(), (case, label)


def test_paper_same_seed_same_output_and_seed_matters():
    img, boxes, labels = _painted_image(np.random.default_rng(3))
    outs = [paper.paper_augment(img, boxes, labels, tf.constant([s, 2], tf.int64), 64)
            for s in (5, 5, 6)]
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(outs[0][0].numpy(), outs[2][0].numpy())


def _np_iou(window, boxes):
    lt = np.maximum(window[:2], boxes[:, :2])
    rb = np.minimum(window[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    union = np.prod(window[2:] - window[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter
    return inter / union


@pytest.mark.parametrize("min_iou", [0.1, 0.3, 0.5])
def test_paper_crop_every_object_reaches_the_min_iou(min_iou):
    """The window's IoU with EVERY object is >= the mode's minimum (SSD's own rule needs only one),
    a centre is inside, and the window has the sampler's scale and aspect."""
    rng = np.random.default_rng(int(min_iou * 10))
    height, width = 300, 400
    cropped = 0
    for s in range(40):
        xy = rng.uniform(0.05, 0.45, (2, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0.3, 0.5, (2, 2))], 1).astype(np.float32)
        x0, y0, w, h = paper.paper_crop_window(tf.constant(boxes), tf.constant([s, 11]), height,
                                             width, min_ious=(min_iou,)).numpy()
        if (x0, y0, w, h) == (0, 0, width, height):
            continue
        cropped += 1
        assert 0 <= x0 and x0 + w <= width and 0 <= y0 and y0 + h <= height
        window = np.array([x0 / width, y0 / height, (x0 + w) / width, (y0 + h) / height])
        assert _np_iou(window, boxes).min() >= min_iou - 1e-6, (s, window)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert np.any(np.all((centres > window[:2]) & (centres < window[2:]), axis=1))
        fw, fh = window[2:] - window[:2]
        assert 0.3 ** 2 - 0.02 <= fw * fh <= 1 and 0.5 - 0.02 <= fw / fh <= 2 + 0.02
    assert cropped >= 10


def test_paper_crop_impossible_rule_keeps_the_whole_image():
    # Two far-apart objects: no window can overlap both with IoU >= 0.5.
    boxes = tf.constant([[0.0, 0.0, 0.2, 0.2], [0.8, 0.8, 1.0, 1.0]])
    for s in range(10):
        window = paper.paper_crop_window(boxes, tf.constant([s, 0]), 100, 100, min_ious=(0.5,))
        np.testing.assert_array_equal(window.numpy(), [0, 0, 100, 100])


def test_paper_drops_boxes_of_1_percent_and_falls_back_to_the_original():
    img = np.random.default_rng(0).integers(0, 255, (200, 200, 3)).astype(np.uint8)
    tiny = np.array([[0.5, 0.5, 0.502, 0.503]], np.float32)     # < 1% even at the largest zoom-in
    both = np.concatenate([np.array([[0.1, 0.2, 0.7, 0.9]], np.float32), tiny])
    resized = [paper.resize_with(img, tf.constant([64, 64]), tf.constant(i)).numpy()
               for i in range(len(paper.PAPER_INTERPOLATIONS))]
    outcomes = set()
    for s in range(12):
        seed = tf.constant([s, 5])
        out, b, l = paper.paper_augment(img, tiny, np.array([3], np.int32), seed, 64)
        np.testing.assert_array_equal(b.numpy(), tiny)           # all the original boxes ...
        np.testing.assert_array_equal(l.numpy(), [3])
        assert min(np.abs(out.numpy() - r).max() for r in resized) < 1e-3  # ... on the original
        out, b, l = paper.paper_augment(img, both, np.array([1, 3], np.int32), seed, 64)
        b, l = b.numpy(), l.numpy()
        if np.array_equal(b, both):   # the crop cut the big box off, the tiny one was dropped
            assert min(np.abs(out.numpy() - r).max() for r in resized) < 1e-3
            outcomes.add("original")
        else:                         # only the tiny box is gone
            np.testing.assert_array_equal(l, [1])
            assert np.all(np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) > 0.01)
            outcomes.add("augmented")
    assert "augmented" in outcomes


def test_paper_mode_in_the_pipeline_and_config():
    from mgdet.config import ConfigError, load_config
    from mgdet.data.common import DataError
    from mgdet.data.pipeline import augment_transform, make_dataset
    assert load_config(None, ["data.augment=true"]).data.augment == "ssd"
    assert load_config(None, ["data.augment=false"]).data.augment == "none"
    assert load_config(None, ["data.augment=paper"]).data.augment == "paper"
    with pytest.raises(ConfigError, match="data.augment"):
        load_config(None, ["data.augment=fancy"])
    assert augment_transform("none") is None and augment_transform({"mode": "none"}) is None
    with pytest.raises(DataError, match="augment mode"):
        augment_transform("fancy")
    with pytest.raises(DataError, match="zoom"):
        augment_transform({"mode": "paper", "zoom": 2})
    img, boxes, labels = _painted_image(np.random.default_rng(1))
    src = tf.data.Dataset.from_tensors({"image": img, "boxes": boxes, "labels": labels,
                                        "image_id": tf.constant(1, tf.int64)}).repeat(4)
    ds = make_dataset(src, 64, 2, 8, seed=3, shuffle_buffer=0, prefetch=0,
                      augment={"mode": "paper", "max_expand": 2.0, "photometric": False})
    images, targets = next(iter(ds))
    assert images.shape == (2, 64, 64, 3) and targets["valid"].numpy().any()
    assert not np.array_equal(images[0].numpy(), images[1].numpy())  # a seed per example


def test_eval_resize_of_a_batch_is_each_image_resized():
    """Serving and predict resize batches with the evaluation transform: a batch gives what each
    of its images gives alone, including in a graph with unknown sizes."""
    imgs = np.random.default_rng(2).integers(0, 255, (3, 41, 29, 3)).astype(np.uint8)
    batch = aug.resize(imgs, 32)
    assert batch.shape == (3, 32, 32, 3) and batch.dtype == tf.float32
    for image, out in zip(imgs, batch.numpy()):
        np.testing.assert_array_equal(out, aug.resize(image, 32).numpy())
    graph = tf.function(lambda x: aug.resize(x, 32),
                        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    np.testing.assert_array_equal(graph(imgs).numpy(), batch.numpy())

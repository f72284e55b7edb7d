"""``postprocess`` (decode, sigmoid, class-wise NMS, top K) against a numpy reference written
from its definition, and a hand-worked case."""
import math

import numpy as np
import pytest
import tensorflow as tf

from mgdet.ops.postprocess import postprocess
from tests import reference as ref


def postprocess_ref(deltas, logits, anchors, score_threshold, nms_iou, max_detections,
                    max_per_class, variances=(0.1, 0.2)):
    """Per image: decoded boxes clipped to [0, 1], sigmoid scores; per class, greedy NMS over
    the (box, score >= threshold) pairs in descending score (a box whose IoU with a kept one is
    above ``nms_iou`` is dropped), at most ``max_per_class``; then the ``max_detections`` best
    of all classes. Returns a list of (box, score, class) lists."""
    out = []
    for d, lg in zip(deltas, logits):
        boxes = np.clip(ref.decode_ref(d.astype(np.float64), anchors.astype(np.float64),
                                      variances), 0, 1)
        scores = 1 / (1 + np.exp(-lg.astype(np.float64)))
        found = []
        for c in range(scores.shape[1]):
            kept = []
            for i in np.argsort(-scores[:, c], kind="stable"):
                if scores[i, c] < score_threshold or len(kept) == max_per_class:
                    break
                if all(ref.iou_one(boxes[i], boxes[[j]])[0] <= nms_iou for j in kept):
                    kept.append(i)
            found += [(boxes[i], scores[i, c], c) for i in kept]
        out.append(sorted(found, key=lambda f: -f[1])[:max_detections])
    return out


@pytest.mark.parametrize("threshold,nms_iou,k,per_class,variances", [
    (0.3, 0.5, 12, None, (0.1, 0.2)), (0.1, 0.3, 30, 4, (0.1, 0.2)), (0.6, 0.7, 5, 2, (0.1, 0.2)),
    (0.3, 0.5, 12, None, (0.2, 0.4))])
def test_postprocess_matches_the_numpy_reference(threshold, nms_iou, k, per_class, variances):
    rng = np.random.default_rng(7)
    c = rng.uniform(0.1, 0.9, (40, 2))
    wh = rng.uniform(0.1, 0.4, (40, 2))
    anchors = np.concatenate([c - wh / 2, c + wh / 2], -1).astype(np.float32)
    deltas = rng.normal(0, 1, (2, 40, 4)).astype(np.float32)
    logits = rng.normal(-0.5, 1.5, (2, 40, 3)).astype(np.float32)
    out = postprocess(deltas, logits, anchors, threshold, nms_iou, k, per_class, variances)
    want = postprocess_ref(deltas, logits, anchors, threshold, nms_iou, k, per_class or k,
                           variances)
    for b in range(2):
        n = int(out["num_detections"][b])
        assert n == len(want[b]) > 0
        np.testing.assert_allclose(out["scores"][b, :n], [w[1] for w in want[b]], rtol=1e-5)
        np.testing.assert_array_equal(out["classes"][b, :n], [w[2] for w in want[b]])
        np.testing.assert_allclose(out["boxes"][b, :n], [w[0] for w in want[b]], atol=1e-5)
        assert np.all(out["scores"][b, n:] == 0) and np.all(out["boxes"][b, n:] == 0)
        assert out["boxes"].shape == (2, k, 4) and out["classes"].dtype == tf.int32


def test_postprocess_nms_by_class():
    anchors = tf.constant([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9],
                           [0.0, 0.0, 0.2, 0.2]], tf.float32)
    deltas = tf.zeros([1, 4, 4])
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    # class 0: anchors 0 and 1 overlap (IoU ~0.9) -> 1 kept; anchor 2 alone. Class 1: anchor 1
    # (overlapping a class-0 box does not matter). Anchor 3: score == threshold -> kept.
    scores = np.full([1, 4, 2], 1e-4, np.float32)
    scores[0, 0, 0], scores[0, 1, 0], scores[0, 2, 0] = 0.9, 0.8, 0.7
    scores[0, 1, 1] = 0.6
    scores[0, 3, 1] = 0.5
    logits = tf.constant(np.vectorize(logit)(scores), tf.float32)
    out = postprocess(deltas, logits, anchors, score_threshold=0.5, nms_iou=0.5,
                      max_detections=10)
    assert int(out["num_detections"][0]) == 4
    np.testing.assert_allclose(out["scores"][0, :4], [0.9, 0.7, 0.6, 0.5], rtol=1e-5)
    np.testing.assert_array_equal(out["classes"][0, :4], [0, 0, 1, 1])
    np.testing.assert_allclose(out["boxes"][0, :4], tf.gather(anchors, [0, 2, 1, 3]), atol=1e-6)
    capped = postprocess(deltas, logits, anchors, 0.5, 0.5, max_detections=10, max_per_class=1)
    assert int(capped["num_detections"][0]) == 2
    # Out-of-image boxes are clipped to [0, 1].
    wide = postprocess(tf.constant([[[0.0, 0.0, 50.0, 50.0]]]), tf.constant([[[3.0]]]),
                       tf.constant([[0.4, 0.4, 0.6, 0.6]]), 0.5, 0.5, 5)
    np.testing.assert_allclose(wide["boxes"][0, 0], [0, 0, 1, 1])


@pytest.mark.parametrize("nms_iou,kept", [(0.3, [0.9, 0.7]), (0.5, [0.9, 0.7, 0.6]),
                                           (0.7, [0.9, 0.8, 0.7, 0.6])])
def test_nms_iou_is_the_suppression_threshold(nms_iou, kept):
    """Two pairs of same-class boxes, IoU 0.6 (0.16 + 0.16 - 0.12 = 0.2 union, 0.12 overlap) and
    1/3 (0.08 / 0.24): a pair loses its lower box where its IoU is above ``nms_iou``."""
    anchors = np.array([[0.0, 0.0, 0.4, 0.4], [0.1, 0.0, 0.5, 0.4],
                        [0.0, 0.5, 0.4, 0.9], [0.2, 0.5, 0.6, 0.9]], np.float32)
    scores = np.array([[[0.9], [0.8], [0.7], [0.6]]])
    logits = np.log(scores / (1 - scores)).astype(np.float32)
    deltas = np.zeros((1, 4, 4), np.float32)
    out = postprocess(deltas, logits, anchors, 0.5, nms_iou, 10)
    want = postprocess_ref(deltas, logits, anchors, 0.5, nms_iou, 10, 10)[0]
    assert [round(w[1], 6) for w in want] == kept
    n = int(out["num_detections"][0])
    np.testing.assert_allclose(out["scores"][0, :n], kept, rtol=1e-5)
    np.testing.assert_allclose(out["boxes"][0, :n], [w[0] for w in want], atol=1e-6)


def test_defaults_are_the_papers_evaluation_settings():
    """Score threshold 0.005, NMS IoU 0.5, 300 detections, no per-class cap below that."""
    rng = np.random.default_rng(2)
    c = rng.uniform(0.2, 0.8, (600, 2))
    anchors = np.concatenate([c - 0.1, c + 0.1], -1).astype(np.float32)  # overlapping
    deltas = np.zeros((1, 600, 4), np.float32)
    logits = rng.normal(-4.0, 2.0, (1, 600, 1)).astype(np.float32)  # scores around 0.005..0.5
    default = postprocess(deltas, logits, anchors)
    paper = postprocess(deltas, logits, anchors, 0.005, 0.5, 300, 300)
    for key in paper:
        np.testing.assert_array_equal(default[key], paper[key])
    assert 0 < int(paper["num_detections"][0]) < 300  # the threshold and NMS both bite

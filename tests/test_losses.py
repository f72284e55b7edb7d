"""Focal, balanced-L1 and detection_loss against numpy references."""
import numpy as np
import pytest
import tensorflow as tf

from mgdet.ops import anchors as anchor_ops
from mgdet.assign import Assignment, assign
from mgdet.losses import (_global_count, balanced_l1_loss, detection_loss, focal_loss,
                          quality_focal_loss, resolve_cls_loss)
from tests import reference as ref
from tests.batches import on_two_replicas


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_focal_matches_formula(gamma):
    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.normal(0, 4, 200), [-30.0, 30.0, 0.0]]).astype(np.float32)
    targets = (rng.uniform(size=logits.shape) < 0.5).astype(np.float32)
    got = focal_loss(tf.constant(logits), tf.constant(targets), 0.25, gamma).numpy()
    want = [ref.focal_ref(float(x), t, 0.25, gamma) for x, t in zip(logits, targets)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_balanced_l1_matches_formula_and_is_continuous():
    x = np.concatenate([np.linspace(-3, 3, 301), [0.11, -0.11, 0.11 - 1e-6, 0.0]]).astype(np.float32)
    got = balanced_l1_loss(tf.constant(x), tf.zeros_like(x)).numpy()
    np.testing.assert_allclose(got, [ref.balanced_l1_ref(float(v)) for v in x], rtol=1e-4, atol=1e-6)
    # continuous at |x| = beta, zero at 0
    below, at = balanced_l1_loss(tf.constant([0.11 - 1e-4]), tf.constant([0.0])), balanced_l1_loss(tf.constant([0.11]), tf.constant([0.0]))
    assert abs(float(below[0]) - float(at[0])) < 1e-3 and float(balanced_l1_loss(tf.constant([0.0]), tf.constant([0.0]))[0]) == 0.0


def _reference_loss(a, deltas, logits, anchors, gt_boxes, gamma):
    b, n, c = logits.shape
    cls_sum = reg_sum = 0.0
    npos = (a.cls_labels >= 0).sum()
    nreg = a.reg_positive.sum()
    for i in range(b):
        for k in range(n):
            lab = a.cls_labels[i, k]
            if lab != -2:  # ignored anchors are out of the classification loss only
                for cc in range(c):
                    cls_sum += ref.focal_ref(float(logits[i, k, cc]), lab == cc, 0.25, gamma)
            if a.reg_positive[i, k]:
                t = ref.encode_ref(gt_boxes[i, a.reg_gt_index[i, k]].astype(np.float64), anchors[k].astype(np.float64))
                reg_sum += sum(ref.balanced_l1_ref(float(deltas[i, k, d] - t[d])) for d in range(4))
    return cls_sum / max(npos, 1), reg_sum / (4 * max(nreg, 1))


@pytest.mark.parametrize("strategy,num_objects", [("mg", 3), ("iou", 1), ("iou", 0)])
def test_detection_loss_matches_reference(strategy, num_objects):
    rng = np.random.default_rng(num_objects)
    anchors = anchor_ops.generate_anchors(64).numpy()
    n, b, m, c = len(anchors), 2, 3, 3
    cen = rng.uniform(0.2, 0.8, (b, m, 2))
    wh = rng.uniform(0.2, 0.6, (b, m, 2))
    gt = np.clip(np.concatenate([cen - wh / 2, cen + wh / 2], -1), 0, 1).astype(np.float32)
    valid = np.zeros((b, m), bool)
    valid[:, :num_objects] = True
    labels = rng.integers(0, c, (b, m)).astype(np.int32)
    deltas = rng.normal(0, 1, (b, n, 4)).astype(np.float32)
    logits = rng.normal(-2, 2, (b, n, c)).astype(np.float32)
    a = assign(strategy, anchors, gt, labels, valid, deltas, logits)
    out = detection_loss(a, deltas, logits, anchors, gt, gamma=1.0)
    a_np = Assignment(*[None if x is None else x.numpy() for x in a])
    cls, reg = _reference_loss(a_np, deltas, logits, anchors, gt, 1.0)
    np.testing.assert_allclose(float(out["cls"]), cls, rtol=1e-4)
    np.testing.assert_allclose(float(out["reg"]), reg, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(float(out["total"]), cls + reg, rtol=1e-4)
    assert float(out["num_pos_cls"]) == (a_np.cls_labels >= 0).sum()
    assert float(out["num_pos_reg"]) == a_np.reg_positive.sum()
    if num_objects == 0:  # all negative: normalizer clamps to 1, nothing is NaN
        assert float(out["reg"]) == 0.0 and float(out["num_pos_cls"]) == 0 and np.isfinite(float(out["cls"]))


def test_gradients_finite_and_only_through_predictions():
    rng = np.random.default_rng(4)
    anchors = anchor_ops.generate_anchors(64).numpy()
    n = len(anchors)
    gt = np.array([[[0.1, 0.1, 0.6, 0.7], [0, 0, 0, 0]]], np.float32)
    valid = np.array([[True, False]])
    labels = np.array([[1, 0]], np.int32)
    d = tf.Variable(rng.normal(0, 1, (1, n, 4)).astype(np.float32))
    lg = tf.Variable(np.full((1, n, 2), 50.0, np.float32))  # p = 1: the C2L exponent's extreme
    with tf.GradientTape() as tape:
        a = assign("mg", anchors, gt, labels, valid, d, lg)
        out = detection_loss(a, d, lg, anchors, gt)
    gd, gl = tape.gradient(out["total"], [d, lg])
    assert np.all(np.isfinite(gd.numpy())) and np.all(np.isfinite(gl.numpy()))
    # regression gradient only on regression positives
    pos = a.reg_positive.numpy()[0]
    assert np.all(gd.numpy()[0][~pos] == 0) and np.any(gd.numpy()[0][pos] != 0)


@pytest.mark.parametrize("cls_loss,strategy,want", [
    ("auto", "tal", "quality_focal"), ("auto", "mg", "focal"), ("auto", "atss", "focal"),
    ("focal", "tal", "focal"), ("quality_focal", "mg", "quality_focal")])
def test_cls_loss_auto_picks_quality_focal_only_for_soft_targets(cls_loss, strategy, want):
    assert resolve_cls_loss(cls_loss, strategy) == want


def test_unknown_cls_loss_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown classification loss 'qfl': use one of \('auto', "
                                         r"'focal', 'quality_focal'\)"):
        resolve_cls_loss("qfl", "mg")
    z = tf.zeros([1, 2, 1])
    none = tf.fill([1, 2], -1)
    a = Assignment(none, none, tf.zeros([1, 2], bool), none)
    with pytest.raises(ValueError, match="cls_loss must be 'focal' or 'quality_focal', got 'auto'"):
        detection_loss(a, tf.zeros([1, 2, 4]), z, tf.zeros([2, 4]), tf.zeros([1, 1, 4]), cls_loss="auto")


def test_defaults_are_the_papers_hyper_parameters():
    """focal alpha 0.25, gamma 2; quality focal beta 2; detection_loss's focal gamma 2."""
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 3, 50).astype(np.float32)
    hard = (rng.uniform(size=50) < 0.5).astype(np.float32)
    soft = rng.uniform(size=50).astype(np.float32)
    np.testing.assert_allclose(focal_loss(tf.constant(logits), tf.constant(hard)).numpy(),
                               [ref.focal_ref(float(x), t, 0.25, 2.0) for x, t in zip(logits, hard)],
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(quality_focal_loss(tf.constant(logits), tf.constant(soft)).numpy(),
                               [ref.qfl_ref(float(x), float(y), 2.0) for x, y in zip(logits, soft)],
                               rtol=1e-4, atol=1e-7)
    a, deltas, logits, anchors, gt = _one_regression_positive()
    want = sum(ref.focal_ref(float(logits[0, k, c]), a.cls_labels[0, k] == c, 0.25, 2.0)
               for k in range(4) for c in range(2) if a.cls_labels[0, k] != -2) / 2
    np.testing.assert_allclose(float(detection_loss(a, deltas, logits, anchors, gt)["cls"]), want,
                               rtol=1e-5)


def _one_regression_positive():
    """A hand-made batch of 4 anchors, 2 classes: anchor 0 positive (class 1, regresses to
    object 0), 1 negative, 2 ignored, 3 a classification-only positive (class 0)."""
    anchors = np.array([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8], [0.0, 0.2, 0.3, 0.3],
                        [0.2, 0.6, 0.7, 0.9]], np.float32)
    gt = np.array([[[0.15, 0.05, 0.5, 0.45], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    a = Assignment(cls_labels=np.array([[1, -1, -2, 0]], np.int32),
                   cls_gt_index=np.array([[0, -1, 0, 0]], np.int32),
                   reg_positive=np.array([[True, False, False, False]]),
                   reg_gt_index=np.array([[0, -1, -1, -1]], np.int32),
                   cls_target=np.array([[0.7, 0.0, 0.0, 0.4]], np.float32))
    rng = np.random.default_rng(8)
    deltas = rng.normal(0, 1, (1, 4, 4)).astype(np.float32)
    deltas[0, 0, 0] = 0.05  # inside balanced L1's beta of 0.3 below
    logits = rng.normal(0, 2, (1, 4, 2)).astype(np.float32)
    return a, deltas, logits, anchors, gt


def test_detection_loss_passes_every_hyper_parameter_on():
    """Non-default focal, quality focal, balanced-L1 and variance values against the formulas;
    one regression positive: reg = its balanced-L1 sum / 4 (normalizer clamped at 1, not more)."""
    a, deltas, logits, anchors, gt = _one_regression_positive()
    v = (0.2, 0.3)
    t = ref.encode_ref(gt[0, 0].astype(np.float64), anchors[0].astype(np.float64), v)
    reg = sum(ref.balanced_l1_ref(float(deltas[0, 0, d] - t[d]), 0.4, 1.2, 0.3) for d in range(4)) / 4
    kept = [(k, c) for k in range(4) for c in range(2) if a.cls_labels[0, k] != -2]
    focal = sum(ref.focal_ref(float(logits[0, k, c]), a.cls_labels[0, k] == c, 0.6, 1.5)
                for k, c in kept) / 2
    qfl = sum(ref.qfl_ref(float(logits[0, k, c]), a.cls_target[0, k] * (a.cls_labels[0, k] == c), 1.3)
              for k, c in kept) / 2
    kw = dict(bl1_alpha=0.4, bl1_gamma=1.2, bl1_beta=0.3, variances=v)
    out = detection_loss(a, deltas, logits, anchors, gt, alpha=0.6, gamma=1.5, **kw)
    np.testing.assert_allclose([float(out["cls"]), float(out["reg"])], [focal, reg], rtol=1e-4)
    assert float(out["num_pos_cls"]) == 2 and float(out["num_pos_reg"]) == 1
    out = detection_loss(a, deltas, logits, anchors, gt, cls_loss="quality_focal", qfl_beta=1.3, **kw)
    np.testing.assert_allclose([float(out["cls"]), float(out["reg"])], [qfl, reg], rtol=1e-4)


_TWO_REPLICAS_COUNT = r'''
    from mgdet.losses import _global_count

    @tf.function
    def count():
        def replica():  # replica 0 counts 1 positive, replica 1 counts 2
            ctx = tf.distribute.get_replica_context()
            return _global_count(tf.cast(ctx.replica_id_in_sync_group, tf.float32) + 1.0)
        return strategy.experimental_local_results(strategy.run(replica))

    print(json.dumps([float(c) for c in count()]))
'''


def test_positives_are_counted_over_all_replicas():
    """The loss normaliser: under MirroredStrategy (2 logical CPUs) each replica gets the count
    of the global batch, the sum over the replicas; on one device the count as it is."""
    assert float(_global_count(tf.constant(3.0))) == 3.0
    assert on_two_replicas(_TWO_REPLICAS_COUNT) == [3.0, 3.0]

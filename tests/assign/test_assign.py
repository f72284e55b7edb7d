"""Label assignment against the numpy reference (tests/reference.py), hand-worked cases and the
paper's invariants."""
import numpy as np
import pytest
import tensorflow as tf

from mgdet.ops import anchors as anchor_ops
from mgdet.assign import PAPER_STRATEGIES, STRATEGIES, assign, own, ownership
from tests import reference as ref

EPS = 1e-5
ANCHORS_128 = anchor_ops.generate_anchors(128).numpy()


def make_batch(rng, b, m, num_classes, anchors, fill=0.7, delta_scale=1.0, min_wh=0.03):
    """Random gt (padded with a validity mask), deltas and logits."""
    n = len(anchors)
    c = rng.uniform(0.05, 0.95, (b, m, 2))
    wh = rng.uniform(min_wh, 0.7, (b, m, 2))
    boxes = np.clip(np.concatenate([c - wh / 2, c + wh / 2], -1), 0, 1).astype(np.float32)
    valid = rng.uniform(size=(b, m)) < fill
    labels = rng.integers(0, num_classes, (b, m)).astype(np.int32)
    boxes[~valid] = 0.0  # padding rows as a pipeline writes them
    deltas = rng.normal(0, delta_scale, (b, n, 4)).astype(np.float32)
    logits = rng.normal(-2, 2, (b, n, num_classes)).astype(np.float32)
    return boxes, labels, valid, deltas, logits


def run(strategy, anchors, boxes, labels, valid, deltas, logits, **kw):
    out = assign(strategy, tf.constant(anchors), boxes, labels, valid, deltas, logits, **kw)
    return {k: v.numpy() for k, v in out._asdict().items() if v is not None}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", PAPER_STRATEGIES)
def test_random_batches_match_reference(strategy):
    rng = np.random.default_rng(PAPER_STRATEGIES.index(strategy))
    compared = excluded = 0
    for case in range(6):
        b, m, c = int(rng.integers(1, 4)), int(rng.integers(1, 12)), int(rng.integers(1, 6))
        anchors = ANCHORS_128 if case % 2 else anchor_ops.generate_anchors(64).numpy()
        boxes, labels, valid, deltas, logits = make_batch(rng, b, m, c, anchors, delta_scale=0.5, min_wh=0.06)
        sigma = float(rng.choice([1.5, 2.0, 3.0]))
        got = run(strategy, anchors, boxes, labels, valid, deltas, logits, sigma=sigma)
        for i in range(b):
            want = ref.assign_ref(strategy, anchors.astype(np.float64), boxes[i].astype(np.float64), labels[i],
                                  valid[i], deltas[i].astype(np.float64), logits[i], sigma=sigma)
            amb = ref.ambiguous_anchors(want, anchors, boxes[i], labels[i], valid[i],
                                        logits[i], sigma, deltas=deltas[i], eps=EPS)
            keep = ~amb
            compared += keep.sum()
            excluded += amb.sum()
            for key in ("cls_labels", "cls_gt_index", "reg_positive", "reg_gt_index"):
                np.testing.assert_array_equal(got[key][i][keep], want[key][keep], err_msg=f"{strategy} {key} case {case} image {i}")
    assert excluded <= 0.05 * (compared + excluded), (excluded, compared)


@pytest.mark.parametrize("force_match", [True, False])
@pytest.mark.parametrize("strategy", PAPER_STRATEGIES)
def test_decoded_predictions_and_no_force_match_against_reference(strategy, force_match):
    """``pred_boxes`` (predictions decoded by another detector's coding, here in pixels) replace
    mgdet's decoding of ``pred_deltas``; ``force_match=False`` drops the force step."""
    rng = np.random.default_rng(11 + PAPER_STRATEGIES.index(strategy))
    size = 64.0
    anchors = anchor_ops.generate_anchors(64).numpy() * size
    compared = excluded = 0
    for case in range(3):
        b, m, c = 2, int(rng.integers(1, 8)), 3
        boxes, labels, valid, _, logits = make_batch(rng, b, m, c, anchors, min_wh=0.06)
        boxes = boxes * size
        shift = rng.normal(0, 3.0, (b, len(anchors), 4))
        pred = (anchors[None] + shift).astype(np.float32)  # anchors moved by a few pixels
        out = assign(strategy, tf.constant(anchors), boxes, labels, valid, pred_logits=logits,
                     pred_boxes=pred, force_match=force_match)
        got = {k: v.numpy() for k, v in out._asdict().items() if v is not None}
        for i in range(b):
            want = ref.assign_ref(strategy, anchors.astype(np.float64), boxes[i].astype(np.float64),
                                  labels[i], valid[i], logits=logits[i],
                                  pred=pred[i].astype(np.float64), force=force_match)
            amb = ref.ambiguous_anchors(want, anchors, boxes[i], labels[i], valid[i], logits[i],
                                        pred=pred[i], eps=EPS)
            compared, excluded = compared + (~amb).sum(), excluded + amb.sum()
            for key in ("cls_labels", "cls_gt_index", "reg_positive", "reg_gt_index"):
                np.testing.assert_array_equal(got[key][i][~amb], want[key][~amb],
                                              err_msg=f"{strategy} {key} case {case} image {i}")
    assert excluded <= 0.05 * (compared + excluded), (excluded, compared)


def test_force_match_false_leaves_a_poorly_covered_object_without_positive():
    anchors = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32)
    boxes = np.array([[[0.0, 0.0, 0.3, 0.3], [0.5, 0.5, 1.0, 0.95]]], np.float32)  # IoU .36, .9
    args = (tf.constant(anchors), boxes, np.array([[1, 2]], np.int32), np.array([[True, True]]))
    kw = dict(pred_boxes=np.repeat(anchors[None], 1, 0), pred_logits=np.zeros((1, 2, 3), np.float32))
    for strategy in PAPER_STRATEGIES:
        forced = assign(strategy, *args, **kw)
        assert forced.cls_labels.numpy().tolist() == [[1, 2]], strategy
        free = assign(strategy, *args, force_match=False, **kw)
        # the IoU-anchor labels: object 0's best IoU 0.36 < neg_iou, so its anchor is background;
        # L2C ranks object 0's own anchors (Np clamps to 1), so it keeps one
        want = [[1, 2]] if strategy in ("l2c", "mg") else [[-1, 2]]
        assert free.cls_labels.numpy().tolist() == want, strategy
        want_reg = [[True, True]] if strategy in ("c2l", "mg") else [[False, True]]
        assert free.reg_positive.numpy().tolist() == want_reg, strategy


def test_pred_boxes_and_force_match_are_for_the_paper_strategies():
    anchors = tf.constant(ANCHORS_128)
    boxes, labels, valid, deltas, logits = make_batch(np.random.default_rng(0), 1, 2, 3, ANCHORS_128)
    with pytest.raises(ValueError, match="force_match"):
        assign("atss", anchors, boxes, labels, valid, force_match=False)
    with pytest.raises(ValueError, match="pred_deltas or pred_boxes"):
        assign("l2c", anchors, boxes, labels, valid)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_objects_all_negative(strategy):
    anchors = ANCHORS_128
    boxes = np.zeros((2, 3, 4), np.float32)
    out = run(strategy, anchors, boxes, np.zeros((2, 3), np.int32), np.zeros((2, 3), bool),
              np.zeros((2, len(anchors), 4), np.float32), np.zeros((2, len(anchors), 4), np.float32))
    assert np.all(out["cls_labels"] == -1) and np.all(out["cls_gt_index"] == -1)
    assert not out["reg_positive"].any() and np.all(out["reg_gt_index"] == -1)


def test_tiny_object_still_gets_its_forced_positive():
    anchors = ANCHORS_128
    boxes = np.array([[[0.50, 0.50, 0.51, 0.51]]], np.float32)  # 1.3 px, smaller than any anchor
    # It lies inside several anchors of equal area (the three shapes of a cell): their IoUs are
    # equal up to float rounding, so the forced anchor is any of those near-ties.
    iou = ref.iou_one(boxes[0, 0], anchors)
    best = np.flatnonzero(iou > iou.max() - 1e-6)
    for strategy in PAPER_STRATEGIES:
        out = run(strategy, anchors, boxes, np.array([[3]], np.int32), np.array([[True]]),
                  np.zeros((1, len(anchors), 4), np.float32), np.zeros((1, len(anchors), 5), np.float32))
        assert (out["cls_labels"][0] == 3).sum() == 1 and out["reg_positive"][0].sum() == 1, strategy
        assert (out["cls_labels"][0, best] == 3).sum() == 1 and out["reg_positive"][0, best].sum() == 1


def test_identical_objects_go_to_the_lower_index():
    anchors = ANCHORS_128
    box = [0.2, 0.3, 0.6, 0.7]
    boxes = np.array([[box, box]], np.float32)
    labels = np.array([[1, 2]], np.int32)
    for strategy in PAPER_STRATEGIES:
        out = run(strategy, anchors, boxes, labels, np.array([[True, True]]),
                  np.zeros((1, len(anchors), 4), np.float32), np.zeros((1, len(anchors), 3), np.float32))
        assert (out["cls_labels"][0] == 1).sum() >= 1
        assert not (out["cls_labels"][0] == 2).any(), strategy
        assert not (out["cls_gt_index"][0] == 1).any() and not (out["reg_gt_index"][0] == 1).any()


def test_exact_tie_between_anchors_goes_to_lower_anchor_index():
    # Two anchors that are the same box: quality ties exactly; the lower index must win rank 1.
    anchors = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32)
    boxes = np.array([[[0.0, 0.0, 0.5, 0.45]]], np.float32)  # IoU 0.9 with both
    for strategy in PAPER_STRATEGIES:
        out = run(strategy, anchors, boxes, np.array([[0]], np.int32), np.array([[True]]),
                  np.zeros((1, 3, 4), np.float32), np.zeros((1, 3, 1), np.float32))
        # Np = 2 (both >= 0.5): both positive whatever the strategy
        assert out["cls_labels"][0].tolist() == [0, 0, -1], strategy
    # With a third object-less tie under ranking: Np = 1 when one anchor is below 0.5.
    anchors2 = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.3, 0.3], [0.0, 0.0, 0.5, 0.5]], np.float32)
    deltas = np.zeros((1, 3, 4), np.float32)
    out = run("l2c", anchors2, boxes, np.array([[0]], np.int32), np.array([[True]]), deltas,
              np.zeros((1, 3, 1), np.float32))
    # Np = 2 (anchors 0 and 2 tie at IoU 0.9), Ni = 1 (anchor 1: IoU exactly 0.4)
    assert out["cls_labels"][0].tolist() == [0, -2, 0]


def test_many_overlapping_objects_50_plus():
    rng = np.random.default_rng(7)
    anchors = ANCHORS_128
    m = 60
    c = rng.uniform(0.4, 0.6, (1, m, 2))
    wh = rng.uniform(0.1, 0.4, (1, m, 2))
    boxes = np.clip(np.concatenate([c - wh / 2, c + wh / 2], -1), 0, 1).astype(np.float32)
    labels = rng.integers(0, 5, (1, m)).astype(np.int32)
    valid = np.ones((1, m), bool)
    deltas = rng.normal(0, 0.3, (1, len(anchors), 4)).astype(np.float32)
    logits = rng.normal(-2, 2, (1, len(anchors), 5)).astype(np.float32)
    for strategy in PAPER_STRATEGIES:
        got = run(strategy, anchors, boxes, labels, valid, deltas, logits)
        want = ref.assign_ref(strategy, anchors.astype(np.float64), boxes[0].astype(np.float64), labels[0], valid[0],
                              deltas[0].astype(np.float64), logits[0])
        for key in ("cls_labels", "reg_positive"):
            agree = (got[key][0] == want[key]).mean()
            assert agree >= 0.995, (strategy, key, agree)  # near-ties among 60 objects may flip a few
        # every anchor is claimed by at most one object; gt indexes are in range
        assert got["cls_gt_index"].max() < m and got["reg_gt_index"].max() < m


def test_logits_with_p_equal_one_are_finite_and_valid():
    rng = np.random.default_rng(3)
    anchors = ANCHORS_128
    boxes, labels, valid, deltas, _ = make_batch(rng, 2, 5, 3, anchors)
    logits = np.full((2, len(anchors), 3), 100.0, np.float32)  # sigmoid == 1 exactly in float32
    got = run("mg", anchors, boxes, labels, valid, deltas, logits)
    for i in range(2):
        want = ref.assign_ref("c2l", anchors.astype(np.float64), boxes[i].astype(np.float64), labels[i], valid[i],
                              logits=logits[i])
        np.testing.assert_array_equal(got["reg_positive"][i], want["reg_positive"])


def _boat_case(anchors, np_target=6, ni_target=3):
    """A box with exactly Np positives and Ni ignored under IoU-anchor (paper Figure 2)."""
    rng = np.random.default_rng(11)
    for _ in range(20000):
        c = rng.uniform(0.3, 0.7, 2)
        wh = rng.uniform(0.15, 0.5, 2)
        box = np.concatenate([c - wh / 2, c + wh / 2]).astype(np.float32)
        qa = ref.own_ref(ref.iou_one(box, anchors)[None], np.array([True]))[0]
        if (qa >= 0.5).sum() == np_target and ((qa >= 0.4) & (qa < 0.5)).sum() == ni_target:
            return box
    raise AssertionError("no box found")


def test_paper_figure_2_boat():
    anchors = anchor_ops.generate_anchors(320).numpy()
    box = _boat_case(anchors)
    boxes, labels, valid = box[None, None], np.array([[4]], np.int32), np.array([[True]])
    static = run("iou", anchors, boxes, labels, valid, None, None)
    assert (static["cls_labels"] == 4).sum() == 6 and (static["cls_labels"] == -2).sum() == 3
    rng = np.random.default_rng(0)
    for trial in range(5):  # whatever the regressed IoUs and scores are
        deltas = rng.normal(0, 0.5, (1, len(anchors), 4)).astype(np.float32)
        logits = rng.normal(0, 3, (1, len(anchors), 5)).astype(np.float32)
        out = run("mg", anchors, boxes, labels, valid, deltas, logits)
        assert (out["cls_labels"] == 4).sum() == 6 and (out["cls_labels"] == -2).sum() == 3
        assert out["reg_positive"].sum() == 6


@pytest.mark.parametrize("strategy", ["l2c", "c2l", "mg"])
def test_invariant_counts_equal_static_counts(strategy):
    """Every object that owns enough anchors of quality > 0 keeps exactly Np positives (and Ni
    ignored under L2C)."""
    rng = np.random.default_rng(5)
    anchors = ANCHORS_128
    boxes, labels, valid, deltas, logits = make_batch(rng, 4, 6, 4, anchors, delta_scale=0.3)
    got = run(strategy, anchors, boxes, labels, valid, deltas, logits)
    checked = 0
    for i in range(4):
        want = ref.assign_ref(strategy, anchors.astype(np.float64), boxes[i].astype(np.float64), labels[i], valid[i],
                              deltas[i].astype(np.float64), logits[i])
        for j in np.flatnonzero(valid[i]):
            npos, nign = want["num_pos"][j], want["num_ign"][j]
            if strategy in ("l2c", "mg") and (want["qr"][j] > 0).sum() >= npos + nign:
                assert ((got["cls_gt_index"][i] == j) & (got["cls_labels"][i] >= 0)).sum() == npos
                assert ((got["cls_gt_index"][i] == j) & (got["cls_labels"][i] == -2)).sum() == nign
                checked += 1
            if strategy in ("c2l", "mg") and (want["qc"][j] > 0).sum() >= npos:
                assert (got["reg_gt_index"][i] == j).sum() == npos
                checked += 1
    assert checked > 5


def test_bad_arguments_name_the_value():
    a = ANCHORS_128
    z = np.zeros((1, 1, 4), np.float32)
    with pytest.raises(ValueError, match="'mutual'"):
        assign("mutual", a, z, np.zeros((1, 1), np.int32), np.ones((1, 1), bool))
    with pytest.raises(ValueError, match="sigma"):
        assign("c2l", a, z, np.zeros((1, 1), np.int32), np.ones((1, 1), bool),
               pred_logits=np.zeros((1, len(a), 2), np.float32), sigma=1.0)
    with pytest.raises(ValueError, match="pred_deltas"):
        assign("l2c", a, z, np.zeros((1, 1), np.int32), np.ones((1, 1), bool))


def test_runs_in_tf_function_and_passes_no_gradient():
    rng = np.random.default_rng(2)
    anchors = ANCHORS_128
    boxes, labels, valid, deltas, logits = make_batch(rng, 2, 4, 3, anchors)
    d, l = tf.Variable(deltas), tf.Variable(logits)

    @tf.function
    def f():
        with tf.GradientTape() as tape:
            out = assign("mg", anchors, boxes, labels, valid, d, l)
            s = tf.reduce_sum(tf.cast(out.cls_labels, tf.float32)) + tf.reduce_sum(tf.cast(out.reg_positive, tf.float32))
        return out, tape.gradient(s, [d, l], unconnected_gradients="zero")

    out, grads = f()
    eager = run("mg", anchors, boxes, labels, valid, deltas, logits)
    np.testing.assert_array_equal(out.cls_labels.numpy(), eager["cls_labels"])
    assert all(float(tf.reduce_sum(tf.abs(g))) == 0.0 for g in grads)


def _tied_quality(rng, b, m, n, fill=0.8):
    """Quality matrices on a coarse grid: many exact ties, zeros and values equal to 1 (the forced
    value), plus invalid rows."""
    q = rng.integers(0, 5, (b, m, n)).astype(np.float32) / 4.0
    q[rng.uniform(size=(b, m, n)) < 0.5] = 0.0
    return q, rng.uniform(size=(b, m)) < fill


@pytest.mark.parametrize("jit", [False, True])
def test_own_matches_reference_on_ties(jit):
    """own() applies the force after reducing the unforced matrix: check it against the reference
    on matrices full of exact ties, values equal to the forced 1 and objects forcing one anchor."""
    rng = np.random.default_rng(21)
    fn = tf.function(own, jit_compile=True) if jit else own
    for case in range(4):
        q, valid = _tied_quality(rng, 3, int(rng.integers(1, 7)), int(rng.integers(1, 40)))
        q[:, :, 0] = 1.0 if case == 0 else q[:, :, 0]  # every object holds 1 at anchor 0
        owned, owner = (t.numpy() for t in fn(tf.constant(q), tf.constant(valid)))
        for i in range(q.shape[0]):
            want = ref.own_ref(q[i].astype(np.float64), valid[i])  # [M, N], one value per column
            np.testing.assert_array_equal(owned[i], want.max(0), err_msg=f"case {case} image {i}")
            kept = want.max(0) > 0
            np.testing.assert_array_equal(owner[i][kept], want.argmax(0)[kept])


def test_amplified_log_quality_is_the_log_of_eq_1():
    """``log IoU^((sigma - p) / sigma)`` (paper Eq. 1, sigma 2 by default) where the IoU is > 0,
    the floor LOG_ZERO where it is 0."""
    from mgdet.assign.strategies import LOG_ZERO, amplified_log_quality
    rng = np.random.default_rng(27)
    iou = rng.uniform(0.01, 1.0, (2, 3, 50)).astype(np.float32)
    iou[rng.uniform(size=iou.shape) < 0.3] = 0.0
    labels = rng.integers(0, 4, (2, 3)).astype(np.int32)
    logits = rng.normal(0, 2, (2, 50, 4)).astype(np.float32)
    for sigma in (None, 3.0):
        args = (tf.constant(iou), tf.constant(labels), tf.constant(logits))
        got = (amplified_log_quality(*args) if sigma is None else
               amplified_log_quality(*args, sigma=sigma)).numpy()
        for i in range(2):
            amp = ref.amplified_ref(iou[i].astype(np.float64), logits[i], labels[i], sigma or 2.0)
            want = np.where(iou[i] > 0, np.log(np.where(iou[i] > 0, amp, 1.0)), LOG_ZERO)
            np.testing.assert_allclose(got[i], want, rtol=2e-6, atol=1e-6)


def test_count_by_iou_at_the_thresholds():
    """Np = #{IoU >= pos_iou} (at least 1), Ni = #{neg_iou <= IoU < pos_iou} per valid object,
    with IoUs exactly at the thresholds; defaults 0.5 / 0.4 (the paper's)."""
    owned = tf.constant([[0.5, 0.4, 0.45, 0.39, 0.9, 0.0, 0.5, 0.3]] * 2)
    owner = tf.constant([[0, 0, 1, 1, 1, 0, 1, 2]] * 2)
    valid = tf.constant([[True, True, True], [True, False, True]])

    def counts(pos_iou, neg_iou):
        iou, who = owned.numpy(), owner.numpy()
        pos = np.array([[max(np.sum((who[i] == j) & (iou[i] >= pos_iou)), 1) for j in range(3)]
                        for i in range(2)])
        ign = np.array([[np.sum((who[i] == j) & (iou[i] >= neg_iou) & (iou[i] < pos_iou))
                         for j in range(3)] for i in range(2)])
        return pos * valid.numpy(), ign * valid.numpy()

    got = [t.numpy() for t in ownership.count_by_iou(owned, owner, valid)]
    np.testing.assert_array_equal(got, counts(np.float32(0.5), np.float32(0.4)))
    assert got[0][0].tolist() == [1, 2, 1] and got[1][0].tolist() == [1, 1, 0]  # by hand
    got = ownership.count_by_iou(owned, owner, valid, pos_iou=0.6, neg_iou=0.45)
    np.testing.assert_array_equal([t.numpy() for t in got],
                                  counts(np.float32(0.6), np.float32(0.45)))


def test_candidates_are_the_top_quality_bins_reaching_the_count():
    """candidate_key's documented rule on qualities in distinct 1/8-octave bins: per object the
    anchors of quality > 0 in the bins from the top down to the first where the count reaches
    ``num_ranked``; all of them when it is never reached (a quality below 2^-31, the lowest bin,
    included); quality 0 never. select_ranked keeps anchors of quality > 0 only, also when the
    owner has fewer of them than asked."""
    owned = tf.constant([[0.5, 1e-11, 0.0, 0.3, 0.9, 0.8, 0.7, 0.1, 0.05, 1.0, 0.95, 0.6]])
    owner = tf.constant([[0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2]])
    key, candidate = ownership.candidate_key(owned, owner, tf.constant([[5, 2, 1]]))
    want = [True, True, False, True, True, True, False, False, False, True, False, False]
    assert candidate.numpy()[0].tolist() == want
    full = ownership.rank_key(owned, owner).numpy()[0]
    np.testing.assert_array_equal(key.numpy()[0][want], full[want])
    assert np.all(key.numpy()[0][~np.array(want)] < full.min())
    rank = ownership.rank_within_owner(owned, owner, 3)
    first, nxt = ownership.select_ranked(rank, owned, owner, tf.constant([[5, 2, 1]]),
                                         tf.constant([[1, 1, 1]]))
    assert first.numpy()[0].tolist() == want  # object 0: 3 anchors of quality > 0 for 5 asked
    assert np.flatnonzero(nxt.numpy()[0]).tolist() == [6, 10]


def test_iou_labels_at_the_thresholds():
    """Static labels: the owner's class where the owned IoU >= pos_iou, ignored (-2) where
    neg_iou <= IoU < pos_iou, background (-1) below; IoUs exactly at 0.5 / 0.4 (the defaults)."""
    from mgdet.assign.strategies import iou_anchor_labels
    owned = tf.constant([[0.5, 0.4, 0.45, 0.39, 0.9, 0.0]])
    owner = tf.constant([[0, 0, 1, 1, 1, 0]])
    labels = tf.constant([[3, 7]])
    cls, index = iou_anchor_labels(owned, owner, labels)
    assert cls.numpy().tolist() == [[3, -2, -2, -1, 7, -1]]
    assert index.numpy().tolist() == [[0, 0, 1, -1, 1, -1]]
    cls, _ = iou_anchor_labels(owned, owner, labels, pos_iou=0.45, neg_iou=0.39)
    assert cls.numpy().tolist() == [[3, -2, 7, -2, 7, -1]]


def test_own_masked_is_own_of_a_masked_matrix():
    """own_masked's defaults are own()'s (the IoU ownership of assign() relies on them)."""
    rng = np.random.default_rng(28)
    q, valid = _tied_quality(rng, 2, 4, 30)
    masked = ownership.mask_invalid(tf.constant(q), tf.constant(valid))
    for got, want in zip(ownership.own_masked(masked, tf.constant(valid)),
                         own(tf.constant(q), tf.constant(valid))):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_own_of_the_log_quality_gives_the_same_owners():
    """own(log Q, empty=LOG_ZERO, forced=0) (the documented monotone transform): the owners of
    own(Q) and the log of its kept values; a padding row owns nothing even at the top value."""
    from mgdet.assign.strategies import LOG_ZERO

    def log(x):
        return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), LOG_ZERO).astype(np.float32)

    rng = np.random.default_rng(23)
    for case in range(3):
        q, valid = _tied_quality(rng, 3, int(rng.integers(2, 7)), int(rng.integers(5, 40)))
        valid[:, 0], valid[:, -1] = True, False  # a real object and a padding row per image
        q[~valid] = 1.0  # log 0: the largest log value, above every real object's
        owned, owner = (t.numpy() for t in own(tf.constant(log(q)), tf.constant(valid),
                                               empty=LOG_ZERO, forced=0.0))
        for i in range(q.shape[0]):
            want = ref.own_ref(q[i].astype(np.float64), valid[i])
            np.testing.assert_array_equal(owned[i], log(want.max(0)), err_msg=f"case {case}")
            kept = want.max(0) > 0
            np.testing.assert_array_equal(owner[i][kept], want.argmax(0)[kept])


def test_best_anchors_is_the_first_maximum_on_long_rows():
    """best_anchors (TF's multi-threaded ArgMax kernel outside XLA) returns the lowest anchor index
    among exact ties on rows as long as a model's anchors, where the kernel splits its work."""
    rng = np.random.default_rng(24)
    for n in (7, 3000, 12750, 20000):
        q = rng.integers(0, 4, (3, 9, n)).astype(np.float32) / 8.0
        for i, j in np.ndindex(3, 9):  # the maximum, 1, at 2-4 places spread over the row
            q[i, j, rng.choice(n, min(n, int(rng.integers(2, 5))), replace=False)] = 1.0
        q[0, 0] = 0.0  # an all-zero row: anchor 0
        got = ownership.best_anchors(tf.constant(q)).numpy()
        np.testing.assert_array_equal(got, np.argmax(q, axis=-1), err_msg=f"n={n}")


@pytest.mark.parametrize("jit", [False, True])
def test_column_max_is_max_and_first_argmax_over_objects(jit):
    """column_max (one int64 reduction of packed float bits and object index) returns the max over
    the objects bit for bit and the lowest object holding it: on positive, negative (log-domain),
    -0.0/+0.0, LOG_ZERO and tied values."""
    rng = np.random.default_rng(25)
    fn = tf.function(ownership.column_max, jit_compile=True) if jit else ownership.column_max
    for m in (1, 2, 7, 40):
        q = rng.integers(-4, 5, (3, m, 500)).astype(np.float32) / 4.0  # ties, +-0.0, +-1
        q[rng.uniform(size=q.shape) < 0.2] = -1e30  # LOG_ZERO
        q[rng.uniform(size=q.shape) < 0.2] = -0.0
        q[0, :, :5] = [3.4e38, -3.4e38, 1.2e-38, -1.2e-38, -0.0]  # extremes (TF flushes denormals)
        q[1] += rng.normal(0, 1e-3, q[1].shape).astype(np.float32) * (q[1] > -1e29)  # no ties
        got_max, got_arg = (t.numpy() for t in fn(tf.constant(q)))
        want_max = q.max(axis=1)
        np.testing.assert_array_equal(got_max, want_max, err_msg=f"m={m}")
        np.testing.assert_array_equal(np.signbit(got_max), np.signbit(want_max) & (want_max != 0))
        np.testing.assert_array_equal(got_arg, np.argmax(q, axis=1), err_msg=f"m={m}")


def test_regressed_iou_decodes_with_the_given_variances():
    """L2C's quality IoU(g, decode(t, a)) against the numpy decode and IoU, with the default and
    with other box-coding variances."""
    from mgdet.assign.strategies import regressed_iou
    rng = np.random.default_rng(29)
    anchors = anchor_ops.generate_anchors(64).numpy()[:40]
    deltas = rng.normal(0, 1, (1, 40, 4)).astype(np.float32)
    gt = np.array([[[0.1, 0.1, 0.6, 0.5], [0.3, 0.2, 0.9, 0.9]]], np.float32)
    for variances in (None, (0.2, 0.3)):
        args = (tf.constant(gt), tf.constant(anchors), tf.constant(deltas))
        got = (regressed_iou(*args) if variances is None
               else regressed_iou(*args, variances=variances)).numpy()
        pred = ref.decode_ref(deltas[0].astype(np.float64), anchors.astype(np.float64),
                              variances or (0.1, 0.2))
        want = np.stack([ref.iou_one(g, pred) for g in gt[0].astype(np.float64)])
        np.testing.assert_allclose(got[0], want, atol=1e-5)


def test_validate_accepts_its_defaults():
    from mgdet.assign import validate
    for strategy in STRATEGIES:
        assert validate(strategy) is None


def test_log_positive_reads_any_input_as_float32():
    """numpy float64 or a Python list: the log of their float32 values, as for a float32 tensor."""
    from mgdet.assign.logf import log_positive
    x = np.array([[1e-3, 0.25, 0.5], [0.75, 1.0, 3.0]])
    want = log_positive(tf.constant(x, tf.float32)).numpy()
    np.testing.assert_allclose(want, np.log(x.astype(np.float32)), rtol=1e-6)
    for given in (x, x.tolist()):
        np.testing.assert_array_equal(log_positive(given).numpy(), want)


@pytest.mark.parametrize("jit", [False, True])
def test_log_positive_is_within_one_ulp_of_float64_log(jit):
    """C2L's log (plain arithmetic on the float's bits) against numpy's float64 log: uniform and
    log-uniform inputs, subnormals, powers of two, both ends of the polynomial's interval, and
    log(1) == 0 exactly with log(x) < 0 for every x < 1 (the forced value 0 stays the maximum)."""
    from mgdet.assign.logf import log_positive
    rng = np.random.default_rng(26)
    one_minus = np.float32(1) - np.arange(1, 2000, dtype=np.float32) * np.float32(2.0 ** -24)
    x = np.concatenate([
        rng.uniform(0, 1, 200_000), np.exp(rng.uniform(-87, 88, 200_000)),
        2.0 ** rng.uniform(-149, -126, 2000),  # subnormals (their bits, not their arithmetic)
        2.0 ** np.arange(-149, 128), [np.sqrt(0.5), np.sqrt(2), 1.17549435e-38, 3.4e38],
        np.nextafter(np.float32(np.sqrt(2)), [0, 4], dtype=np.float32), one_minus]).astype(np.float32)
    x = x[x > 0]
    fn = tf.function(log_positive, jit_compile=True) if jit else log_positive
    got = fn(tf.constant(x)).numpy()
    want = np.log(x.astype(np.float64))
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    err = np.abs(got.astype(np.float64) - want) / ulp
    assert err.max() <= 1.0, (err.max(), x[err.argmax()])
    assert fn(tf.constant([1.0])).numpy()[0] == 0.0
    assert np.all(fn(tf.constant(one_minus)).numpy() < 0)


def test_candidate_ranks_equal_full_sort_ranks():
    """The bounded ranking (candidates only, top_k of their count) gives every rank below the
    requested count exactly as a sort of all anchors does, ties included."""
    rng = np.random.default_rng(22)
    b, m, n = 4, 6, 3000
    owned = rng.integers(0, 40, (b, n)).astype(np.float32) / 40.0  # ties, zeros
    owned[:, :50] = rng.uniform(1e-30, 1e-20, (b, 50))  # the lowest quality bin
    owner = rng.integers(0, m, (b, n)).astype(np.int32)
    num_ranked = rng.integers(0, 120, (b, m)).astype(np.int32)
    owned, owner, num_ranked = tf.constant(owned), tf.constant(owner), tf.constant(num_ranked)
    full = ownership.rank_within_owner(owned, owner, m).numpy()
    key, candidate = ownership.candidate_key(owned, owner, num_ranked)
    order = ownership.sort_keys(key, candidate)
    assert order.shape[1] < n  # the bound is used
    got = ownership.rank_from_order(order, owner, m, candidate).numpy()
    need = np.take_along_axis(num_ranked.numpy(), owner.numpy(), axis=1)
    scored = owned.numpy() > 0
    low = scored & (full < need)
    np.testing.assert_array_equal(got[low], full[low])
    assert np.all(got[scored & ~low] >= need[scored & ~low])
    assert low.sum() > 500


def test_default_and_full_xla_paths_give_the_same_labels():
    """The library path (three XLA clusters, bounded top_k) and the whole assignment compiled as
    one XLA program (a full sort) agree exactly."""
    rng = np.random.default_rng(23)
    anchors = ANCHORS_128
    boxes, labels, valid, deltas, logits = make_batch(rng, 4, 12, 5, anchors, delta_scale=0.5)
    args = [tf.constant(x) for x in (anchors, boxes, labels, valid, deltas, logits)]
    default = tf.function(lambda *a: assign("mg", *a))(*args)
    whole = tf.function(lambda *a: assign("mg", *a), jit_compile=True)(*args)
    assert default.cls_target is None and whole.cls_target is None
    for key in ("cls_labels", "cls_gt_index", "reg_positive", "reg_gt_index"):
        np.testing.assert_array_equal(getattr(default, key).numpy(), getattr(whole, key).numpy(),
                                      err_msg=key)

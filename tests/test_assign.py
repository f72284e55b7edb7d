"""Label assignment against the numpy reference (tests/reference.py), hand-worked cases and the
paper's invariants."""
import numpy as np
import pytest
import tensorflow as tf

from mgdet.ops import anchors as anchor_ops
from mgdet.ops import boxes as box_ops
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


def _ambiguous(anchors, q_raw_rows, q_owned, counts, valid):
    """Anchors whose reference label depends on a float near-tie (0 < |diff| < EPS; exact ties
    are decided by the index rule on both sides): excluded from the exact comparison."""
    n = anchors.shape[0]
    amb = np.zeros(n, bool)
    if q_raw_rows.shape[0] == 0:
        return amb
    top2 = np.sort(q_raw_rows, axis=0)[-2:] if q_raw_rows.shape[0] > 1 else None
    if top2 is not None:
        amb |= (top2[1] > 0) & (top2[1] - top2[0] < EPS) & (top2[1] > top2[0])  # ownership between objects
    for j in np.flatnonzero(valid):
        row = q_raw_rows[j]
        o = np.argsort(-row, kind="stable")
        if 0 < row[o[0]] - row[o[1]] < EPS:  # the forced anchor itself is a near-tie
            amb[row > row[o[0]] - EPS] = True
            amb[q_owned[j] > 0] = True
        cand = np.flatnonzero(q_owned[j] > 0)
        order = cand[np.lexsort((cand, -q_owned[j, cand]))]
        for cut in counts[j]:
            if 0 < cut < len(order):
                a_, b_ = order[cut - 1], order[cut]
                if 0 < q_owned[j, a_] - q_owned[j, b_] < EPS:
                    amb[order] = True
    return amb


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
            iou_a = np.stack([ref.iou_one(boxes[i, j], anchors) for j in range(m)])
            iou_a[~valid[i]] = 0
            amb = _ambiguous(anchors, iou_a, want["qa"], [[]] * m, valid[i])
            qa = want["qa"].max(0)
            amb |= (np.abs(qa - 0.5) < EPS) | (np.abs(qa - 0.4) < EPS)
            for j in range(m):  # counts near a threshold change Np/Ni for the ranked strategies
                if valid[i, j] and np.any(np.abs(want["qa"][j][want["qa"][j] > 0] - 0.5) < EPS):
                    amb[:] = True
            if "qr" in want:
                pred = ref.decode_ref(deltas[i].astype(np.float64), anchors.astype(np.float64))
                raw = np.stack([ref.iou_one(boxes[i, j], pred) for j in range(m)])
                raw[~valid[i]] = 0
                amb |= _ambiguous(pred, raw, want["qr"],
                                  [[want["num_pos"][j], want["num_pos"][j] + want["num_ign"][j]] for j in range(m)], valid[i])
            if "qc" in want:
                amb |= _ambiguous(anchors, np.where(valid[i][:, None], want["qc"] * 0 + _amp(iou_a, logits[i], labels[i], sigma), 0),
                                  want["qc"], [[want["num_pos"][j]] for j in range(m)], valid[i])
            keep = ~amb
            compared += keep.sum()
            excluded += amb.sum()
            for key in ("cls_labels", "cls_gt_index", "reg_positive", "reg_gt_index"):
                np.testing.assert_array_equal(got[key][i][keep], want[key][keep], err_msg=f"{strategy} {key} case {case} image {i}")
    assert excluded <= 0.05 * (compared + excluded), (excluded, compared)


def _amp(iou_a, logits, labels, sigma):
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    return np.stack([np.power(iou_a[j], (sigma - p[:, labels[j]]) / sigma) for j in range(len(labels))])


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

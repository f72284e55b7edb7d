"""ATSS and TOOD's task-aligned assignment (``mgdet.assign.adaptive``) against independent numpy
references written from the papers' formulas (plain loops, float64), on random batches and on
hand-made edge cases; and the quality focal loss that trains TAL's soft targets.

Rules under test (mgdet.assign.adaptive's docstring): top-k ties go to the lower anchor index;
an anchor claimed by several objects goes to the highest IoU (ATSS: IoU with the anchor, TAL:
IoU with the predicted box), the lower object index on equal IoUs; ATSS takes ``topk * 6``
anchors per level (the authors' ``TOPK * num_anchors_per_loc``) and the sample std (n - 1).
"""

import numpy as np
import pytest
import tensorflow as tf

from mgdet.ops import anchors as anchor_ops
from mgdet import assign as assign_ops
from mgdet.assign import Assignment, assign, ignore_objects
from mgdet.assign.adaptive import centre_inside, level_sizes
from mgdet.losses import detection_loss, quality_focal_loss
from tests import reference as ref

ANCHORS_64 = anchor_ops.generate_anchors(64).numpy()
ANCHORS_128 = anchor_ops.generate_anchors(128).numpy()
NEAR = 1e-5  # float32 vs float64 near-ties: such images are left out of exact comparisons


# --- numpy references (one image) ------------------------------------------------------------


def _centres(boxes):
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _inside(point, box):
    return box[0] < point[0] < box[2] and box[1] < point[1] < box[3]


def _owners(claims):
    """claims [M, N] (IoU where object j claims anchor i, -inf else) -> owner per anchor (-1:
    none): the highest IoU, the first object on ties."""
    owner = np.full(claims.shape[1], -1)
    for i in range(claims.shape[1]):
        column = claims[:, i]
        if np.isfinite(column).any():
            owner[i] = int(np.argmax(column))  # numpy: the first maximum
    return owner


def _topk_in_order(values, indices, k, descending):
    """The first k of ``indices`` by value (descending or ascending), ties by lower index."""
    sign = -1.0 if descending else 1.0
    return sorted(indices, key=lambda i: (sign * values[i], i))[:k]


def atss_ref(anchors, boxes, valid, sizes, topk, per_cell=6):
    """ATSS (Zhang et al. 2020, Algorithm 1) for one image. Returns (owner [N], near_tie)."""
    m, n = len(boxes), len(anchors)
    centres = _centres(anchors)
    claims = np.full((m, n), -np.inf)
    near_tie = False
    for j in range(m):
        if not valid[j]:
            continue
        box = boxes[j]
        iou = ref.iou_one(box, anchors)
        dist = np.sqrt(((centres - (box[:2] + box[2:]) / 2) ** 2).sum(1))
        candidates, start = [], 0
        for size in sizes:
            level = list(range(start, start + size))
            k = min(topk * per_cell, size)
            chosen = _topk_in_order(dist, level, k, descending=False)
            if k < size:  # the k-th and the next distances: a float32 near-tie may swap them
                d = sorted(dist[level])
                near_tie |= 0 < d[k] - d[k - 1] < NEAR * d[k]
            candidates += chosen
            start += size
        values = iou[candidates]
        threshold = values.mean() + values.std(ddof=1)
        near_tie |= bool(np.any((values != threshold)
                                & (np.abs(values - threshold) < NEAR * threshold)))
        for i in candidates:
            if iou[i] >= threshold and _inside(centres[i], box):
                claims[j, i] = iou[i]
    return _owners(claims), near_tie or _claims_near_tie(claims)


def _claims_near_tie(claims):
    finite = np.where(np.isfinite(claims), claims, -1.0)
    top2 = np.sort(finite, 0)[-2:] if len(claims) > 1 else None
    return top2 is not None and bool(np.any((top2[0] >= 0) & (0 < top2[1] - top2[0])
                                            & (top2[1] - top2[0] < NEAR * top2[1])))


def tal_ref(anchors, boxes, labels, valid, deltas, logits, topk, alpha, beta):
    """TOOD's task-aligned assignment (Feng et al. 2021, Eqs. 1 and 10) for one image.

    Returns (owner [N], soft target [N], near_tie)."""
    m, n = len(boxes), len(anchors)
    centres = _centres(anchors)
    pred = ref.decode_ref(deltas, anchors)
    scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
    claims = np.full((m, n), -np.inf)
    t = np.zeros((m, n))
    u = np.zeros((m, n))
    near_tie = False
    for j in range(m):
        if not valid[j]:
            continue
        box = boxes[j]
        u[j] = ref.iou_one(box, pred)
        t[j] = scores[:, labels[j]] ** alpha * u[j] ** beta
        inside = [i for i in range(n) if _inside(centres[i], box)]
        chosen = _topk_in_order(t[j], inside, topk, descending=True)
        if len(inside) > topk:
            v = sorted(t[j, inside], reverse=True)
            near_tie |= 0 < v[topk - 1] - v[topk] < NEAR * v[topk - 1]
        for i in chosen:
            if t[j, i] > 0:
                claims[j, i] = u[j, i]
    owner = _owners(claims)
    target = np.zeros(n)
    for j in range(m):
        mine = np.flatnonzero(owner == j)
        if len(mine):
            target[mine] = t[j, mine] / t[j, mine].max() * u[j, mine].max()
    return owner, target, near_tie or _claims_near_tie(claims)


def _labels_of(owner, labels):
    return np.where(owner >= 0, labels[np.maximum(owner, 0)], -1)


# --- helpers ---------------------------------------------------------------------------------


def random_batch(rng, b, m, c, anchors, fill=0.7, min_wh=0.04, max_wh=0.7, delta_scale=0.3):
    n = len(anchors)
    centre = rng.uniform(0.05, 0.95, (b, m, 2))
    wh = rng.uniform(min_wh, max_wh, (b, m, 2))
    boxes = np.clip(np.concatenate([centre - wh / 2, centre + wh / 2], -1), 0, 1).astype(np.float32)
    valid = rng.uniform(size=(b, m)) < fill
    boxes[~valid] = 0.0  # padding rows as the pipeline writes them
    labels = rng.integers(0, c, (b, m)).astype(np.int32)
    deltas = rng.normal(0, delta_scale, (b, n, 4)).astype(np.float32)
    logits = rng.normal(-2, 2, (b, n, c)).astype(np.float32)
    return boxes, labels, valid, deltas, logits


def run(strategy, anchors, boxes, labels, valid, deltas=None, logits=None, **kw):
    if deltas is None:
        deltas = np.zeros((len(boxes), len(anchors), 4), np.float32)
    if logits is None:
        logits = np.zeros((len(boxes), len(anchors), int(np.max(labels, initial=0)) + 1), np.float32)
    out = assign(strategy, tf.constant(anchors), boxes, labels, valid, deltas, logits, **kw)
    return {k: v.numpy() for k, v in out._asdict().items() if v is not None}



def _assert_owned(got, i, owner, labels):
    """Image ``i`` of an assignment's outputs: every anchor's object (``owner``, -1 for none)
    and its label, for classification and regression alike (ATSS and TAL share positives)."""
    np.testing.assert_array_equal(got["cls_gt_index"][i], owner, err_msg=f"image {i}")
    np.testing.assert_array_equal(got["cls_labels"][i], _labels_of(owner, labels))
    np.testing.assert_array_equal(got["reg_positive"][i], owner >= 0)
    np.testing.assert_array_equal(got["reg_gt_index"][i], owner)

def check_atss(anchors, boxes, labels, valid, topk=9, allow_near_ties=False):
    """ATSS of a batch equals the reference; returns (outputs, images compared)."""
    got = run("atss", anchors, boxes, labels, valid, atss_topk=topk)
    sizes = level_sizes(len(anchors))
    compared = 0
    for i in range(len(boxes)):
        owner, near = atss_ref(anchors.astype(np.float64), boxes[i].astype(np.float64), valid[i],
                               sizes, topk)
        if near and allow_near_ties:
            continue
        assert not near, "a hand-made case must not hold float near-ties"
        _assert_owned(got, i, owner, labels[i])
        compared += 1
    assert "cls_target" not in got  # ATSS trains on hard labels
    return got, compared


def check_tal(anchors, boxes, labels, valid, deltas, logits, topk=13, alpha=1.0, beta=6.0,
              allow_near_ties=False):
    """TAL of a batch equals the reference; returns (outputs, images compared)."""
    got = run("tal", anchors, boxes, labels, valid, deltas, logits, tal_topk=topk,
              tal_alpha=alpha, tal_beta=beta)
    compared = 0
    for i in range(len(boxes)):
        owner, target, near = tal_ref(anchors.astype(np.float64), boxes[i].astype(np.float64),
                                      labels[i], valid[i], deltas[i].astype(np.float64),
                                      logits[i], topk, alpha, beta)
        if near and allow_near_ties:
            continue
        assert not near, "a hand-made case must not hold float near-ties"
        _assert_owned(got, i, owner, labels[i])
        np.testing.assert_allclose(got["cls_target"][i], target, rtol=1e-4, atol=1e-6)
        compared += 1
    return got, compared


def _cell_anchors(image_size, level, row, col):
    """Indices of the 6 anchors of one cell (level by level, row, column, shape)."""
    sizes = anchor_ops.feature_sizes(image_size)
    start = sum(6 * f * f for f in sizes[:level])
    first = start + (row * sizes[level] + col) * 6
    return list(range(first, first + 6))


# --- random cases ----------------------------------------------------------------------------


def test_level_sizes_are_the_anchor_layout():
    assert level_sizes(12_750) == (9600, 2400, 600, 150)
    assert level_sizes(len(ANCHORS_64)) == (384, 96, 24, 6)
    # every input size up to the largest, 8192 (anchor counts only: no grid is built)
    for size in range(64, 8192 + 1, 64):
        want = tuple(6 * f * f for f in anchor_ops.feature_sizes(size))
        assert level_sizes(anchor_ops.num_anchors(size)) == want, size
    # the count of a size the anchors are never built for (100 px: not a multiple of 64)
    with pytest.raises(ValueError, match="1428 anchors is not"):
        level_sizes(anchor_ops.num_anchors(100))
    with pytest.raises(ValueError) as error:
        level_sizes(12_751)
    assert str(error.value) == ("12751 anchors is not mgdet's anchor layout of any input size: "
                                "pass level_sizes (anchors per pyramid level) to assign()")


def test_centre_inside_is_strict():
    """An anchor centre on a box's edge is not inside (ATSS's candidates): numpy reference, with
    centres exactly on each of the four edges."""
    anchors = np.array([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.5, 0.5], [0.5, 0.25, 1.0, 0.75]],
                       np.float32)  # centres (0.5, 0.5), (0.25, 0.25), (0.75, 0.5)
    boxes = np.array([[[0.5, 0.25, 0.875, 0.75], [0.125, 0.25, 0.5, 0.75],
                       [0.25, 0.5, 0.75, 0.875], [0.25, 0.125, 0.75, 0.5]],
                      [[0.125, 0.125, 0.875, 0.875], [0.25, 0.125, 0.75, 0.625],
                       [0.0, 0.0, 0.0, 0.0], [0.5, 0.0, 1.0, 0.5]]], np.float32)
    got = centre_inside(tf.constant(anchors), tf.constant(boxes)).numpy()
    centres = _centres(anchors)
    want = [[[_inside(c, box) for c in centres] for box in image] for image in boxes]
    np.testing.assert_array_equal(got, want)
    assert not got[0, :, 0].any() and got[1, 0].all()  # on the 4 edges; all strictly inside


def test_adaptive_defaults_are_the_papers():
    """ATSS takes the top 9 per level (Zhang et al. 2020); TAL the top 13 with alpha 1, beta 6
    (Feng et al. 2021): assign() without them equals assign() with them, and this batch tells
    each of them from the next value."""
    rng = np.random.default_rng(31)
    batch = random_batch(rng, 2, 4, 3, ANCHORS_64, fill=1.0)
    for strategy, paper in (("atss", dict(atss_topk=9)),
                            ("tal", dict(tal_topk=13, tal_alpha=1.0, tal_beta=6.0))):
        default = run(strategy, ANCHORS_64, *batch)
        want = run(strategy, ANCHORS_64, *batch, **paper)
        for key in want:
            np.testing.assert_array_equal(default[key], want[key], err_msg=f"{strategy} {key}")
        for name, value in paper.items():
            other = run(strategy, ANCHORS_64, *batch, **{**paper, name: value + 1})
            assert any(np.any(other[k] != want[k]) for k in want), name


def _compare_on_random_batches(seed, check):
    """``check(anchors, boxes, labels, valid, deltas, logits)`` -> (_, images compared) on four
    random cases (64 and 128 px anchors); near-ties may exclude at most a quarter of the images."""
    rng = np.random.default_rng(seed)
    compared = total = 0
    for case in range(4):
        anchors = ANCHORS_128 if case % 2 else ANCHORS_64
        b, m = 2, int(rng.integers(1, 9))
        _, n = check(anchors, *random_batch(rng, b, m, 4, anchors))
        compared, total = compared + n, total + b
    assert compared >= 0.75 * total, (compared, total)


@pytest.mark.parametrize("topk", [9, 2])
def test_atss_random_batches_match_reference(topk):
    _compare_on_random_batches(topk, lambda anchors, boxes, labels, valid, _d, _l: check_atss(
        anchors, boxes, labels, valid, topk, allow_near_ties=True))


@pytest.mark.parametrize("topk,alpha,beta", [(13, 1.0, 6.0), (4, 0.5, 2.0), (30, 0.0, 1.0)])
def test_tal_random_batches_match_reference(topk, alpha, beta):
    _compare_on_random_batches(topk, lambda *batch: check_tal(
        *batch, topk, alpha, beta, allow_near_ties=True))


# --- hand-made edge cases ---------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["atss", "tal"])
def test_no_objects_gives_all_negative_and_zero_targets(strategy):
    boxes = np.zeros((2, 3, 4), np.float32)
    out = run(strategy, ANCHORS_64, boxes, np.zeros((2, 3), np.int32), np.zeros((2, 3), bool))
    assert np.all(out["cls_labels"] == -1) and np.all(out["cls_gt_index"] == -1)
    assert not out["reg_positive"].any() and np.all(out["reg_gt_index"] == -1)
    if strategy == "tal":
        assert np.all(out["cls_target"] == 0.0)


def test_padding_rows_claim_nothing_even_with_a_box():
    """A padding row that still holds a real box (its valid flag is what counts) takes no
    anchor: the result equals that of the image without the row."""
    box = [0.2, 0.2, 0.7, 0.6]
    boxes = np.array([[box, [0.1, 0.1, 0.5, 0.5]]], np.float32)
    rng = np.random.default_rng(0)
    deltas = rng.normal(0, 0.3, (1, len(ANCHORS_64), 4)).astype(np.float32)
    logits = rng.normal(-2, 2, (1, len(ANCHORS_64), 2)).astype(np.float32)
    for strategy in ("atss", "tal"):
        both = run(strategy, ANCHORS_64, boxes, np.array([[0, 1]], np.int32),
                   np.array([[True, False]]), deltas, logits)
        alone = run(strategy, ANCHORS_64, boxes[:, :1], np.array([[0]], np.int32),
                    np.array([[True]]), deltas, logits)
        for key, value in alone.items():
            np.testing.assert_array_equal(both[key], value, err_msg=f"{strategy} {key}")
        assert (both["cls_gt_index"] == 0).sum() > 0


def test_one_object():
    boxes = np.array([[[0.23, 0.31, 0.71, 0.64]]], np.float32)
    labels, valid = np.array([[2]], np.int32), np.array([[True]])
    got, _ = check_atss(ANCHORS_64, boxes, labels, valid)
    positive = np.flatnonzero(got["reg_positive"][0])
    assert 1 <= len(positive) <= sum(min(54, s) for s in level_sizes(len(ANCHORS_64)))
    centres = _centres(ANCHORS_64[positive])
    assert np.all((centres > boxes[0, 0, :2]) & (centres < boxes[0, 0, 2:]))
    rng = np.random.default_rng(5)
    deltas = rng.normal(0, 0.3, (1, len(ANCHORS_64), 4)).astype(np.float32)
    logits = rng.normal(-2, 2, (1, len(ANCHORS_64), 3)).astype(np.float32)
    got, _ = check_tal(ANCHORS_64, boxes, labels, valid, deltas, logits)
    positive = got["reg_positive"][0]
    assert positive.sum() == 13
    # the best-aligned positive's target is the object's largest predicted IoU among positives
    pred = ref.decode_ref(deltas[0].astype(np.float64), ANCHORS_64.astype(np.float64))
    u = ref.iou_one(boxes[0, 0].astype(np.float64), pred)
    assert got["cls_target"][0].max() == pytest.approx(u[positive].max(), rel=1e-5)
    assert np.all(got["cls_target"][0][~positive] == 0) and np.all(got["cls_target"][0][positive] > 0)


def test_object_smaller_than_every_anchor():
    """A 0.6 px box that holds no anchor centre gets no positive (neither method forces one);
    one that holds a single cell's centre can only get anchors of that cell."""
    n = len(ANCHORS_128)
    zero = np.zeros((1, n, 4), np.float32), np.zeros((1, n, 2), np.float32)
    # centres of level 0 at 128 px: (x + 0.5) / 16; 0.500..0.505 lies between two of them
    empty = np.array([[[0.500, 0.500, 0.505, 0.505]]], np.float32)
    holds = np.array([[[0.5265, 0.5305, 0.5325, 0.5365]]], np.float32)  # holds (8.5, 8.5) / 16
    one = np.array([[1]], np.int32), np.array([[True]])
    got, _ = check_atss(ANCHORS_128, empty, *one)
    assert not got["reg_positive"].any()
    got, _ = check_tal(ANCHORS_128, empty, *one, *zero)
    assert not got["reg_positive"].any()
    cell = _cell_anchors(128, 0, 8, 8)
    for got, _ in (check_atss(ANCHORS_128, holds, *one), check_tal(ANCHORS_128, holds, *one, *zero)):
        positive = set(np.flatnonzero(got["reg_positive"][0]).tolist())
        assert positive and positive <= set(cell), positive


def test_two_objects_sharing_a_centre_split_by_iou():
    """A large and a small box with the same centre have the same candidates; an anchor both
    claim goes to the one it overlaps more, whatever the object order."""
    large, small = [0.125, 0.125, 0.875, 0.875], [0.34375, 0.34375, 0.65625, 0.65625]
    rng = np.random.default_rng(3)
    deltas = rng.normal(0, 0.2, (1, len(ANCHORS_64), 4)).astype(np.float32)
    logits = np.zeros((1, len(ANCHORS_64), 2), np.float32)
    valid = np.array([[True, True]])
    for order in ([large, small], [small, large]):
        boxes = np.array([order], np.float32)
        labels = np.array([[0, 1]], np.int32)
        for strategy, (got, _) in (("atss", check_atss(ANCHORS_64, boxes, labels, valid)),
                                   ("tal", check_tal(ANCHORS_64, boxes, labels, valid, deltas,
                                                     logits))):
            owner = got["cls_gt_index"][0]
            assert (owner == 0).any() and (owner == 1).any(), (strategy, order)


def test_topk_ties_go_to_the_lower_anchor_index():
    """A box centred on the corner of four cells: they are equally far (ATSS) and, with zero
    deltas and equal logits, equally aligned (TAL). With one candidate cell per level (ATSS) or
    two candidates (TAL), the lowest anchor indices win."""
    # 64 px, level 0 (8x8 cells): (0.5, 0.5) is the corner of cells (3, 3), (3, 4), (4, 3), (4, 4)
    boxes = np.array([[[0.3125, 0.3125, 0.6875, 0.6875]]], np.float32)
    one = np.array([[0]], np.int32), np.array([[True]])
    got, _ = check_atss(ANCHORS_64, boxes, *one, topk=1)
    level0 = np.flatnonzero(got["reg_positive"][0][:384])
    assert len(level0) and set(level0) <= set(_cell_anchors(64, 0, 3, 3)), level0
    n = len(ANCHORS_64)
    zero = np.zeros((1, n, 4), np.float32), np.zeros((1, n, 1), np.float32)
    got, _ = check_tal(ANCHORS_64, boxes, *one, *zero, topk=2)
    positive = np.flatnonzero(got["reg_positive"][0])
    # the best shape of the four cells ties exactly 4 ways; the two lowest indices are in the
    # first row of cells: (3, 3) and (3, 4)
    assert len(positive) == 2
    assert positive[0] in _cell_anchors(64, 0, 3, 3) and positive[1] in _cell_anchors(64, 0, 3, 4)


def test_atss_threshold_is_inclusive():
    """Candidates of equal IoU: std 0, the threshold is their IoU and all are positive
    (IoU >= mean + std). One level of 6 identical anchors, IoU exactly 0.25."""
    anchors = np.tile(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (6, 1))
    boxes = np.array([[[0.25, 0.25, 0.75, 0.75]]], np.float32)
    got = run("atss", anchors, boxes, np.array([[0]], np.int32), np.array([[True]]), sizes=[6],
              atss_topk=1)
    assert got["cls_labels"][0].tolist() == [0] * 6


def test_anchor_claimed_by_several_objects_goes_to_the_highest_iou():
    """Two overlapping objects where the higher-index one overlaps the shared anchors more: the
    owner is the higher-IoU object, not the lower index. Equal boxes: the lower index."""
    boxes = np.array([[[0.20, 0.20, 0.62, 0.62], [0.30, 0.30, 0.66, 0.66]]], np.float32)
    labels, valid = np.array([[0, 1]], np.int32), np.array([[True, True]])
    n = len(ANCHORS_64)
    rng = np.random.default_rng(9)
    deltas = rng.normal(0, 0.2, (1, n, 4)).astype(np.float32)
    logits = np.zeros((1, n, 2), np.float32)
    pred = ref.decode_ref(deltas[0].astype(np.float64), ANCHORS_64.astype(np.float64))
    settings = {"atss": dict(atss_topk=20), "tal": dict(tal_topk=40)}
    for strategy, quality, (got, _) in (
            ("atss", ANCHORS_64, check_atss(ANCHORS_64, boxes, labels, valid, topk=20)),
            ("tal", pred, check_tal(ANCHORS_64, boxes, labels, valid, deltas, logits, topk=40))):
        # an object's claims are its positives when it is alone in the image
        claims = [run(strategy, ANCHORS_64, boxes[:, j:j + 1], labels[:, j:j + 1],
                      valid[:, j:j + 1], deltas, logits[..., :1], **settings[strategy])
                  ["reg_positive"][0] for j in range(2)]
        owner = got["cls_gt_index"][0]
        np.testing.assert_array_equal(owner >= 0, claims[0] | claims[1])
        iou = np.stack([ref.iou_one(b, quality) for b in boxes[0].astype(np.float64)])
        both = np.flatnonzero(claims[0] & claims[1])
        assert len(both) >= 2, strategy
        assert (owner[both] == 1).any() and (owner[both] == 0).any(), strategy
        for i in both:
            assert iou[owner[i], i] > iou[1 - owner[i], i], (strategy, i)
    same = np.array([[[0.2, 0.3, 0.6, 0.7]] * 2], np.float32)
    for strategy in ("atss", "tal"):
        out = run(strategy, ANCHORS_64, same, labels, valid)
        assert (out["cls_gt_index"] == 0).any() and not (out["cls_gt_index"] == 1).any()


# --- contract: graph, XLA, gradient, ignore -----------------------------------------------------


def test_in_a_compiled_train_step_without_gradient():
    rng = np.random.default_rng(2)
    boxes, labels, valid, deltas, logits = random_batch(rng, 2, 4, 3, ANCHORS_64)
    d, l = tf.Variable(deltas), tf.Variable(logits)
    for strategy in ("atss", "tal"):
        @tf.function(jit_compile=True)
        def step():
            with tf.GradientTape() as tape:
                out = assign(strategy, ANCHORS_64, boxes, labels, valid, d, l)
                parts = [tf.cast(x, tf.float32) for x in out if x is not None]
                total = tf.add_n([tf.reduce_sum(x) for x in parts])
            return out, tape.gradient(total, [d, l], unconnected_gradients="zero")

        out, grads = step()
        eager = run(strategy, ANCHORS_64, boxes, labels, valid, deltas, logits)
        for key, value in eager.items():
            np.testing.assert_array_equal(getattr(out, key).numpy(), value, err_msg=key)
        assert all(float(tf.reduce_sum(tf.abs(g))) == 0.0 for g in grads)


def test_ignore_objects_keeps_the_soft_targets_of_the_others():
    rng = np.random.default_rng(4)
    boxes, labels, valid, deltas, logits = random_batch(rng, 1, 3, 3, ANCHORS_64, fill=1.0)
    out = assign("tal", ANCHORS_64, boxes, labels, valid, deltas, logits)
    ignored = ignore_objects(out, np.array([[False, True, False]]))
    owner = out.cls_gt_index.numpy()
    np.testing.assert_array_equal(ignored.cls_target.numpy(), out.cls_target.numpy())
    assert np.all(ignored.cls_labels.numpy()[owner == 1] == -2)


def test_ignore_objects_matches_a_per_anchor_reference():
    """Mutual Guidance (classification and regression owners differ), two images with other
    objects ignored (object 0 among them): an anchor whose classification owner is ignored gets
    label -2, one whose regression owner is ignored no regression target; the others keep all."""
    rng = np.random.default_rng(5)
    boxes, labels, valid, deltas, logits = random_batch(rng, 2, 3, 3, ANCHORS_64, fill=1.0)
    out = assign("mg", ANCHORS_64, boxes, labels, valid, deltas, logits)
    ignore = np.array([[True, False, False], [False, True, True]])
    got = ignore_objects(out, ignore)
    cls_owner, reg_owner = out.cls_gt_index.numpy(), out.reg_gt_index.numpy()
    cls_labels, reg_positive = out.cls_labels.numpy().copy(), out.reg_positive.numpy().copy()
    reg_index = reg_owner.copy()
    for i, a in np.ndindex(cls_owner.shape):
        if cls_owner[i, a] >= 0 and ignore[i, cls_owner[i, a]]:
            cls_labels[i, a] = -2
        if reg_owner[i, a] >= 0 and ignore[i, reg_owner[i, a]]:
            reg_positive[i, a], reg_index[i, a] = False, -1
    for i in range(2):  # the case holds anchors of ignored and of kept objects in each image
        assert ignore[i][cls_owner[i][cls_owner[i] >= 0]].any()
        assert ignore[i][reg_owner[i][reg_positive[i] | (reg_index[i] != reg_owner[i])]].any()
        assert reg_positive[i].any() and (cls_labels[i] >= 0).any()
    np.testing.assert_array_equal(got.cls_labels.numpy(), cls_labels)
    np.testing.assert_array_equal(got.reg_positive.numpy(), reg_positive)
    np.testing.assert_array_equal(got.reg_gt_index.numpy(), reg_index)
    np.testing.assert_array_equal(got.cls_gt_index.numpy(), cls_owner)


def test_iou_thresholds_and_top_k_at_their_bounds():
    """``0 < neg_iou <= pos_iou <= 1`` and integer top-k >= 1: the bounds themselves are accepted
    or refused as written, with one line naming the values."""
    for neg, pos in ((0.5, 0.5), (0.4, 1.0), (1e-6, 0.5)):
        assign_ops.validate("mg", pos_iou=pos, neg_iou=neg)
    for (neg, pos), message in (
            ((0.0, 0.5), "neg_iou must be a finite number in (0, 1], got 0.0"),
            ((0.6, 0.5), "need 0 < neg_iou <= pos_iou <= 1, got neg_iou=0.6, pos_iou=0.5"),
            ((0.4, 1.5), "pos_iou must be a finite number in (0, 1], got 1.5")):
        with pytest.raises(ValueError) as error:
            assign_ops.validate("mg", pos_iou=pos, neg_iou=neg)
        assert str(error.value) == message
    for name, high in (("atss_topk", 10_000), ("tal_topk", 100_000)):
        assign_ops.validate("mg", **{name: 1})
        with pytest.raises(ValueError) as error:
            assign_ops.validate("mg", **{name: 0})
        assert str(error.value) == f"{name} must be a finite number in [1, {high}], got 0"


def test_bad_hyper_parameters_name_the_value():
    z = np.zeros((1, 1, 4), np.float32)
    args = (ANCHORS_64, z, np.zeros((1, 1), np.int32), np.ones((1, 1), bool))
    for kw, named in ((dict(atss_topk=0), "atss_topk"), (dict(tal_topk=2.5), "tal_topk"),
                      (dict(tal_alpha=-1.0), "tal_alpha"), (dict(tal_beta=0.0), "tal_beta")):
        with pytest.raises(ValueError, match=named):
            assign("atss", *args, **kw)
    with pytest.raises(ValueError, match="pred_deltas"):
        assign("tal", *args)
    deltas = np.zeros((1, len(ANCHORS_64), 4), np.float32)
    for strategy in ("tal", "c2l", "mg"):  # the classification output is needed too
        with pytest.raises(ValueError, match=f"^strategy '{strategy}' needs pred_logits$"):
            assign(strategy, *args, pred_deltas=deltas)
    with pytest.raises(ValueError, match="not mgdet's anchor layout"):
        assign("atss", ANCHORS_64[:100], *args[1:])
    with pytest.raises(ValueError) as error:
        assign("atss", *args, sizes=(300, 80))
    assert str(error.value) == f"sizes (300, 80) add up to 380, not the {len(ANCHORS_64)} anchors"


# --- quality focal loss -----------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_quality_focal_matches_formula(beta):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, 300).astype(np.float32)
    targets = np.where(rng.uniform(size=300) < 0.3, rng.uniform(size=300), 0.0).astype(np.float32)
    got = quality_focal_loss(tf.constant(logits), tf.constant(targets), beta).numpy()
    want = [ref.qfl_ref(float(x), float(y), beta) for x, y in zip(logits, targets)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("strategy", ["tal", "atss"])
def test_detection_loss_with_quality_focal_matches_reference(strategy):
    """The class entry of a positive is its soft target (TAL) or 1 (hard labels), every other
    entry 0; summed over anchors and classes, divided by the positives."""
    rng = np.random.default_rng(6)
    boxes, labels, valid, deltas, logits = random_batch(rng, 2, 3, 3, ANCHORS_64, fill=1.0)
    a = assign(strategy, ANCHORS_64, boxes, labels, valid, deltas, logits)
    out = detection_loss(a, deltas, logits, ANCHORS_64, boxes, cls_loss="quality_focal")
    a_np = Assignment(*[None if x is None else x.numpy() for x in a])
    total = 0.0
    for i in range(2):
        for k in range(len(ANCHORS_64)):
            for c in range(3):
                y = 0.0
                if a_np.cls_labels[i, k] == c:
                    y = 1.0 if a_np.cls_target is None else float(a_np.cls_target[i, k])
                total += ref.qfl_ref(float(logits[i, k, c]), y, 2.0)
    npos = (a_np.cls_labels >= 0).sum()
    assert npos > 0
    np.testing.assert_allclose(float(out["cls"]), total / npos, rtol=1e-4)


def test_the_config_and_the_cli_offer_exactly_the_strategies_assign_implements():
    # the config (TensorFlow-free, read by the CLI) keeps its own copy of the names
    from mgdet import config
    from mgdet.cli import build_parser
    assert config.STRATEGIES == assign_ops.STRATEGIES
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    choices = next(a.choices for a in train._actions if a.dest == "strategy")
    assert tuple(choices) == assign_ops.STRATEGIES

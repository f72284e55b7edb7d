"""The shared core of every assignment: ``own()`` and per-object ranking
(docs/design.md, "Label assignment").

``own`` turns an ``[B, M, N]`` quality matrix (M objects, N anchors) into its *owned* form. Since
after ``own`` every anchor keeps the value of one object only, the owned matrix is stored compactly
as ``(quality [B, N], owner [B, N])``: the anchor's kept value and the object it belongs to. Every
later step (counts, thresholds, ranking) works on that form: ``[B, N]`` tensors and one sort per
image, static shapes throughout (XLA-compatible). Ties resolve to the lower index everywhere:
object index for ownership, anchor index for ranking.
"""
import tensorflow as tf

NEGATIVE = -1  # cls_labels code: background
IGNORED = -2  # cls_labels code: excluded from the classification loss
NO_GT = -1  # *_gt_index code: the anchor is matched to no object


def own(quality, gt_valid, empty=0.0, forced=1.0):
    """``own(Q)`` of docs/design.md ("Label assignment"): force, then exclusive.

    1. force: each valid object's best anchor (argmax over anchors, lowest index on ties) gets
       quality ``forced`` (1: every object gets at least one positive);
    2. exclusive: each anchor keeps only the quality of the object with the largest value
       (ties -> lower object index); the other objects' values become ``empty``.

    Args:
      quality: ``[B, M, N]`` float32 in [empty, forced] (``[0, 1]``; a monotone transform of it,
        e.g. its log with ``empty=-inf, forced=0``, gives the same ownership and order).
      gt_valid: ``[B, M]`` bool; rows of invalid (padding) objects are set to ``empty`` first.
    Returns:
      ``(owned [B, N] float32, owner [B, N] int32)``: the kept value of each anchor and the object
      that keeps it (0 where the anchor's value is ``empty`` for every object).
    """
    return own_masked(mask_invalid(quality, gt_valid, empty), gt_valid, empty, forced)


def mask_invalid(quality, gt_valid, empty=0.0):
    """``[B, M, N]`` quality with the rows of invalid (padding) objects set to ``empty``."""
    return tf.where(tf.cast(gt_valid, tf.bool)[..., None], quality, empty)


def own_masked(q, gt_valid, empty=0.0, forced=1.0, best_anchor=None, force=True):
    """:func:`own` of a quality matrix already passed through :func:`mask_invalid`.

    Two reductions of the unforced matrix (a forced copy would cost one more write and read),
    each one pass: :func:`best_anchors` and :func:`column_max`; then the force is applied to the
    ``[B, N]`` result: at most M anchors per image change.

    Args:
      q, gt_valid, empty, forced: as :func:`own`.
      best_anchor: ``[B, M]`` int32 :func:`best_anchors` of ``q``, computed by the caller, or
        None to compute it here.
      force: False skips step 1 (no object is given its best anchor): the exclusive step only,
        as keras-hub's RetinaNet encoder matches anchors by default.
    """
    if not force:
        return column_max(q)
    valid = tf.cast(gt_valid, tf.bool)
    b, m, n = tf.shape(q)[0], tf.shape(q)[1], tf.shape(q)[2]
    if best_anchor is None:
        best_anchor = best_anchors(q)
    col_max, col_owner = column_max(q)  # [B, N], lowest object on ties
    # forcing object of each anchor (the lowest one when several force it), m where none
    image = tf.broadcast_to(tf.range(b)[:, None], [b, m])
    forcing = tf.where(valid, tf.range(m)[None, :], m)  # [B, M]
    forced_by = tf.tensor_scatter_nd_min(tf.fill([b, n], m), tf.stack([image, best_anchor], -1),
                                         forcing)
    is_forced = forced_by < m
    # At a forced anchor the forcing objects hold ``forced``; another object holding the same
    # value (quality == forced, the maximum) competes on index; one above it (outside the
    # documented range) keeps it.
    forced_owner = tf.where(col_max > forced, col_owner,
                            tf.where(col_max == forced, tf.minimum(col_owner, forced_by), forced_by))
    owner = tf.where(is_forced, forced_owner, col_owner)
    return tf.where(is_forced, tf.maximum(col_max, forced), col_max), owner


def column_max(q):
    """Each anchor's largest quality over the objects and the lowest object holding it, in one
    pass: ``[B, M, N]`` float32 -> ``(max [B, N] float32, argmax [B, N] int32)``.

    One int64 max-reduction over ``(order-preserving float bits << 32) | (M - 1 - object)``:
    equal qualities compare on the low half, where the lowest object is largest. The float
    order: non-negative floats order as their int32 bits, negative ones reversed (their low 31
    bits flipped); -0.0 is made +0.0 first, so equal floats get equal keys. The max comes back
    bit-exact from the high half. (XLA on CPU runs an arg-max as a reduction of value/index
    pairs and the max as another pass; this is one vectorized integer reduction.)
    """
    m = tf.shape(q)[1]
    q = tf.where(tf.equal(q, 0.0), tf.zeros_like(q), q)
    bits = tf.bitcast(q, tf.int32)
    flip = tf.constant(0x7FFFFFFF, tf.int32)
    ordered = tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, flip), bits)
    low = tf.cast(m - 1 - tf.range(m), tf.int64)[None, :, None]
    top = tf.reduce_max(tf.bitwise.left_shift(tf.cast(ordered, tf.int64), 32) + low, axis=1)
    owner = m - 1 - tf.cast(tf.bitwise.bitwise_and(top, 0xFFFFFFFF), tf.int32)
    high = tf.cast(tf.bitwise.right_shift(top, 32), tf.int32)
    high = tf.where(high < 0, tf.bitwise.bitwise_xor(high, flip), high)
    return tf.bitcast(high, tf.float32), owner


def best_anchors(q):
    """Each object's best anchor: ``[B, M, N]`` -> ``[B, M]`` int32 arg-max over the anchors,
    the lowest anchor index on ties.

    Outside XLA this is TensorFlow's ArgMax kernel, which splits the rows over the CPU's threads
    and on CPU takes about 0.4x the time of XLA's arg-max along the minor axis (a scalar loop);
    both return the first maximum (``tests/assign/test_assign.py`` checks it on matrices full
    of ties).
    """
    return tf.argmax(q, axis=-1, output_type=tf.int32)


def per_object_count(mask, owner, num_objects):
    """Number of anchors with ``mask`` per owner object.

    Args:
      mask: ``[B, N]`` bool; owner: ``[B, N]`` int32; num_objects: M.
    Returns:
      ``[B, M]`` int32.
    """
    b = tf.shape(owner)[0]
    segments = tf.range(b)[:, None] * num_objects + owner  # [B, N]
    counts = tf.math.unsorted_segment_sum(tf.cast(mask, tf.int32), segments, b * num_objects)
    return tf.reshape(counts, [b, num_objects])


def count_by_iou(owned_iou, owner, gt_valid, pos_iou=0.5, neg_iou=0.4):
    """Per-object sample counts from the anchors' owned IoU (Np and Ni of docs/design.md,
    "Label assignment").

    Args:
      owned_iou, owner: ``[B, N]`` from :func:`own` of IoU(gt, anchors); gt_valid: ``[B, M]``.
    Returns:
      ``(num_pos [B, M], num_ignored [B, M])`` int32: Np_j = #{Qa >= pos_iou} clamped to >= 1,
      Ni_j = #{neg_iou <= Qa < pos_iou}; both 0 for invalid objects.
    """
    m = tf.shape(gt_valid)[1]
    pos = per_object_count(owned_iou >= pos_iou, owner, m)
    ign = per_object_count(tf.logical_and(owned_iou >= neg_iou, owned_iou < pos_iou), owner, m)
    valid = tf.cast(gt_valid, tf.int32)
    return tf.maximum(pos, 1) * valid, ign * valid


def rank_key(owned, owner):
    """Sort key of each anchor: descending key = (owner asc, quality desc).

    Args:
      owned, owner: ``[B, N]`` from :func:`own` (qualities >= 0).
    Returns:
      ``[B, N]`` int64. :func:`sort_keys` keeps anchor order among equal keys, which is the tie
      rule (lower anchor index first). Non-negative float32 bit patterns sort like the floats.
    """
    bits = tf.cast(tf.bitcast(tf.maximum(owned, 0.0), tf.int32), tf.int64)
    return bits - tf.cast(owner, tf.int64) * (2 ** 31)


_BINS = 256  # quality bins of candidate_key: 1/8 octave each, the top bin ends at 1.0
_ONE_BIN = 0x3F800000 >> 20  # bin of 1.0 in float32 bits >> 20 (exponent and 3 mantissa bits)
_NO_KEY = -(2 ** 62)  # key of the anchors outside the candidates: below every rank_key


def candidate_key(owned, owner, num_ranked):
    """:func:`rank_key` restricted to each object's candidates: the anchors that can rank below
    ``num_ranked`` of their owner. A bound on the rank needed, not a sort, decides it.

    Per object, its anchors of quality > 0 are counted in 256 quality bins (bins of the float32
    bits: monotone in the quality); the candidates are those in the bins from the top down to
    the first one where the count reaches ``num_ranked``. The candidates of an object are thus a
    prefix of its ranking (no tie is cut) with at least ``num_ranked`` anchors, or all its anchors
    of quality > 0: ranks below ``num_ranked`` are the same as in a full sort.

    Args:
      owned, owner: ``[B, N]`` from :func:`own`; num_ranked: ``[B, M]`` int32.
    Returns:
      ``(key [B, N] int64, candidate [B, N] bool)``: the key, ``_NO_KEY`` outside the candidates.
    """
    b, m = tf.shape(owned)[0], tf.shape(num_ranked)[1]
    bits = tf.bitcast(tf.maximum(owned, 0.0), tf.int32)
    bins = tf.clip_by_value(tf.bitwise.right_shift(bits, 20) - (_ONE_BIN - _BINS + 1), 0, _BINS - 1)
    positive = owned > 0.0
    segments = (tf.range(b)[:, None] * m + owner) * _BINS + bins  # [B, N]
    counts = tf.math.unsorted_segment_sum(tf.cast(positive, tf.int32), segments, b * m * _BINS)
    at_or_above = tf.math.cumsum(tf.reshape(counts, [b, m, _BINS]), axis=-1, reverse=True)
    bin_index = tf.range(_BINS)[None, None, :]
    lowest_bin = tf.reduce_max(tf.where(at_or_above >= num_ranked[..., None], bin_index, 0), -1)
    candidate = tf.logical_and(positive, bins >= tf.gather(lowest_bin, owner, batch_dims=1))
    key = tf.where(candidate, rank_key(owned, owner), tf.constant(_NO_KEY, tf.int64))
    return key, candidate


def sort_keys(key, candidate=None):
    """Sorted position -> anchor, ``key`` descending, ties in anchor order (``top_k`` is stable;
    a TF kernel: on CPU several times faster than XLA's sort).

    Args:
      key: ``[B, N]`` int64 from :func:`rank_key` or :func:`candidate_key`.
      candidate: ``[B, N]`` bool from :func:`candidate_key`, or None: only the first
        ``max candidates per image`` positions are computed (``top_k`` with that bound, rounded
        up to a power of two, at least 64: a few distinct shapes), which is exact because every
        other anchor holds the lowest key. Inside an XLA compilation, where ``k`` must be static,
        all N positions.
    Returns:
      ``[B, K]`` int32, K <= N.
    """
    n = tf.shape(key)[-1]
    if candidate is None or _in_xla_compilation():
        return tf.math.top_k(key, k=n, sorted=True).indices
    need = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(candidate, tf.int32), axis=-1)), 64)
    bound = tf.bitwise.left_shift(1, tf.cast(tf.math.ceil(
        tf.math.log(tf.cast(need, tf.float32)) / tf.math.log(2.0)), tf.int32))
    return tf.math.top_k(key, k=tf.minimum(tf.maximum(bound, need), n), sorted=True).indices


def _in_xla_compilation():
    """Whether the op being built is compiled by XLA (a ``jit_compile=True`` function or one
    called from it)."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # private module moved: assume XLA, the choice that always compiles
        return True
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def rank_from_order(order, owner, num_objects, candidate=None):
    """Rank within owner of each anchor, given the anchors sorted by :func:`rank_key` (or its
    candidates sorted by :func:`candidate_key`).

    Args:
      order: ``[B, K]`` int32 from :func:`sort_keys`; owner: ``[B, N]``; num_objects: M;
      candidate: ``[B, N]`` bool from :func:`candidate_key` or None (K = N, all ranked).
    Returns:
      ``[B, N]`` int32 rank (0 = best); N for the anchors outside the candidates.
    """
    b, k, n = tf.shape(order)[0], tf.shape(order)[1], tf.shape(owner)[1]
    position = tf.broadcast_to(tf.range(k)[None, :], [b, k])  # [B, K]
    sorted_owner = tf.gather(owner, order, batch_dims=1)  # [B, N]
    segments = tf.range(b)[:, None] * num_objects + sorted_owner
    group_start = tf.math.unsorted_segment_min(position, segments, b * num_objects)  # [B*M]
    rank_sorted = position - tf.gather(group_start, segments)
    index = tf.stack([tf.broadcast_to(tf.range(b)[:, None], [b, k]), order], axis=-1)
    rank = tf.scatter_nd(index, rank_sorted, [b, n])
    return rank if candidate is None else tf.where(candidate, rank, n)


def rank_within_owner(owned, owner, num_objects):
    """Rank of each anchor among the anchors of its owner, by quality descending (ties: lower
    anchor index first).

    Args:
      owned, owner: ``[B, N]`` from :func:`own` (qualities >= 0); num_objects: M.
    Returns:
      ``[B, N]`` int32 rank (0 = best). Anchors of quality 0 rank after every anchor of quality
      > 0 of the same owner.
    """
    return rank_from_order(sort_keys(rank_key(owned, owner)), owner, num_objects)


def select_ranked(rank, owned, owner, num_first, num_next=None):
    """Per object, its anchors of quality > 0 of rank < ``num_first`` (and the next ``num_next``).

    Args:
      rank: ``[B, N]`` from :func:`rank_within_owner`; owned, owner: ``[B, N]`` from :func:`own`;
      num_first: ``[B, M]`` int32; num_next: ``[B, M]`` int32 or None.
    Returns:
      ``(first [B, N] bool, next [B, N] bool or None)``: whether the anchor is in its owner's
      first group (resp. next group).
    """
    has_quality = owned > 0.0
    first_count = tf.gather(num_first, owner, batch_dims=1)  # [B, N]
    first = tf.logical_and(has_quality, rank < first_count)
    if num_next is None:
        return first, None
    next_end = first_count + tf.gather(num_next, owner, batch_dims=1)
    nxt = tf.logical_and(has_quality, tf.logical_and(rank >= first_count, rank < next_end))
    return first, nxt

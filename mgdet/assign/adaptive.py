"""Two assignments beside Mutual Guidance that also pick a fixed number of candidates per object:

- ATSS (Zhang et al., CVPR 2020, "Bridging the Gap Between Anchor-based and Anchor-free
  Detection via Adaptive Training Sample Selection"): per pyramid level, the anchors closest to
  the object's centre are candidates; the object's IoU threshold is the mean + standard deviation
  of its candidates' IoU(object, anchor); a candidate is positive if its IoU reaches the
  threshold and its centre lies inside the box.
- TAL, TOOD's task-aligned assignment (Feng et al., ICCV 2021): alignment metric
  ``t = s^alpha * u^beta`` with ``s`` the predicted score of the object's class and ``u`` the IoU
  of the predicted (decoded) box with the object; among the anchors whose centre lies inside the
  box, the ``topk`` of largest ``t`` (``t > 0``) are positive. Soft classification target of a
  positive: ``t_hat = t / max t * max u`` (maxima over the object's positives).

Rules shared by both (the authors' code where it decides, stated where it does not):
- "centre inside": the anchor's centre lies strictly inside the box (the authors' code asks for
  more than 0.01 px from every edge; coordinates here are normalized, so the margin is 0);
- an anchor positive for several objects goes to the one of highest IoU (ATSS: IoU with the
  anchor; TAL: IoU with the predicted box ``u``), the lower object index on equal IoUs;
- top-k ties (equal distance, equal metric) go to the lower anchor index (``tf.math.top_k`` is
  stable, also under XLA);
- there is no ignored anchor and no forced positive: an object may get no positive (a box that
  holds no anchor centre, say); classification and regression share the positives, and the
  regression target is the owner's box.

ATSS counts its ``topk`` in cells, as the authors' code does with several anchors per location
(``TOPK * num_anchors_per_loc`` anchors per level): ``topk * 6`` anchors per level (fewer on a
level with fewer anchors), and the standard deviation is the sample one (``n - 1``, torch's
``std``). Everything is batched over ``[B, M, N]`` tensors (static shapes, XLA-compiled).
"""
import tensorflow as tf

from mgdet.ops import anchors as anchor_ops
from mgdet.ops import boxes as box_ops
from mgdet.assign.logf import log_positive
from mgdet.assign.ownership import column_max, mask_invalid
from mgdet.assign.strategies import LOG_ZERO, class_logits, labels_from_mask, regressed_iou

_MAX_IMAGE_SIZE = 8192


def level_sizes(num_anchors):
    """Anchors per pyramid level of mgdet's anchor layout with ``num_anchors`` anchors
    (``mgdet.ops.anchors.generate_anchors``: level by level, 6 per cell): ``(2400, 600, 150, 24)``
    for 3,174 anchors (256 px). Raises ``ValueError`` if no square input size gives that count."""
    for size in range(64, _MAX_IMAGE_SIZE + 1, 64):
        count = anchor_ops.num_anchors(size)
        if count == num_anchors:
            return tuple(anchor_ops.ANCHORS_PER_CELL * f * f
                         for f in anchor_ops.feature_sizes(size))
        if count > num_anchors:
            break
    raise ValueError(f"{num_anchors} anchors is not mgdet's anchor layout of any input size: "
                     "pass level_sizes (anchors per pyramid level) to assign()")


def centre_inside(anchors, gt_boxes):
    """``[B, M, N]`` bool: anchor ``i``'s centre lies strictly inside box ``j``.

    Args: anchors ``[N, 4]``, gt_boxes ``[B, M, 4]``, both xyxy.
    """
    cx = (anchors[:, 0] + anchors[:, 2]) * 0.5
    cy = (anchors[:, 1] + anchors[:, 3]) * 0.5
    x0, y0, x1, y1 = [t[..., None] for t in tf.unstack(gt_boxes, axis=-1)]  # [B, M, 1]
    return (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)


def _centre_distance2(anchors, gt_boxes):
    """``[B, M, N]`` squared distance between the box centres and the anchor centres."""
    a = (anchors[:, :2] + anchors[:, 2:]) * 0.5  # [N, 2]
    g = (gt_boxes[..., :2] + gt_boxes[..., 2:]) * 0.5  # [B, M, 2]
    dx = g[..., 0, None] - a[:, 0]
    dy = g[..., 1, None] - a[:, 1]
    return dx * dx + dy * dy


def _mask_from_indices(indices, keep, num_anchors):
    """``[B, M, K]`` anchor indices (distinct per row) and keep flags -> ``[B, M, N]`` bool."""
    b, m, k = tf.shape(indices)[0], tf.shape(indices)[1], tf.shape(indices)[2]
    bi = tf.broadcast_to(tf.range(b)[:, None, None], [b, m, k])
    mi = tf.broadcast_to(tf.range(m)[None, :, None], [b, m, k])
    where = tf.stack([bi, mi, indices], -1)
    return tf.scatter_nd(where, tf.cast(keep, tf.int32), [b, m, num_anchors]) > 0


def _resolve(claimed, quality):
    """Each anchor claimed by some objects goes to the one of largest ``quality`` (>= 0), the
    lower object index on ties -> ``(positive [B, N], owner [B, N], owned quality [B, N])``."""
    best, owner = column_max(tf.where(claimed, quality, -1.0))
    return best >= 0.0, owner, best


@tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
def atss_labels(anchors, gt_boxes, gt_labels, gt_valid, sizes, topk):
    """ATSS: ``(cls_labels, cls_gt_index, reg_positive, reg_gt_index)`` ``[B, N]``.

    Args:
      anchors: ``[N, 4]``; gt_boxes ``[B, M, 4]``; gt_labels ``[B, M]``; gt_valid ``[B, M]``.
      sizes: Python tuple, anchors per level (:func:`level_sizes`), in anchor order.
      topk: cells per level (``topk * 6`` anchors per level are candidates).
    """
    n = sum(sizes)
    iou = box_ops.iou(gt_boxes, anchors)  # [B, M, N]
    distance = _centre_distance2(anchors, gt_boxes)
    candidates, start = [], 0
    for size in sizes:
        k = min(topk * anchor_ops.ANCHORS_PER_CELL, size)
        candidates.append(tf.math.top_k(-distance[:, :, start:start + size], k).indices + start)
        start += size
    candidates = tf.concat(candidates, -1)  # [B, M, K]
    cand_iou = tf.gather(iou, candidates, batch_dims=2)
    count = float(candidates.shape[-1])
    mean = tf.reduce_mean(cand_iou, -1, keepdims=True)
    std = tf.sqrt(tf.reduce_sum(tf.square(cand_iou - mean), -1, keepdims=True)
                  / max(count - 1.0, 1.0))
    inside = tf.gather(centre_inside(anchors, gt_boxes), candidates, batch_dims=2)
    keep = (cand_iou >= mean + std) & inside & gt_valid[..., None]
    positive, owner, _ = _resolve(_mask_from_indices(candidates, keep, n), iou)
    cls_labels, gt_index = labels_from_mask(positive, owner, gt_labels)
    return cls_labels, gt_index, positive, gt_index


@tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
def tal_labels(anchors, gt_boxes, gt_labels, gt_valid, pred_deltas, pred_logits, n, topk, alpha,
               beta):
    """TOOD's task-aligned assignment: ``(cls_labels, cls_gt_index, reg_positive, reg_gt_index,
    cls_target)`` ``[B, N]``; ``cls_target`` float32 is ``t_hat`` at positives, 0 elsewhere.

    Ranking and the soft target run on ``log t = alpha log s + beta log u`` (no underflow of
    ``u^6``); ``t > 0`` iff ``u > 0`` (``beta > 0``). ``n``: the number of anchors (Python int).
    """
    u = mask_invalid(regressed_iou(gt_boxes, anchors, pred_deltas), gt_valid)  # [B, M, N]
    log_s = tf.math.log_sigmoid(class_logits(gt_labels, pred_logits))
    eligible = centre_inside(anchors, gt_boxes) & (u > 0.0)
    log_t = tf.where(eligible, alpha * log_s + beta * log_positive(tf.where(eligible, u, 1.0)),
                     LOG_ZERO)
    top = tf.math.top_k(log_t, min(topk, n))
    keep = top.values > 0.5 * LOG_ZERO
    positive, owner, owned_u = _resolve(_mask_from_indices(top.indices, keep, n), u)
    b, m = tf.shape(u)[0], tf.shape(u)[1]
    image = tf.broadcast_to(tf.range(b)[:, None], [b, n])
    owned_log_t = tf.gather_nd(log_t, tf.stack([image, owner, tf.broadcast_to(tf.range(n), [b, n])],
                                               -1))
    segments = image * m + owner
    max_log_t = tf.math.unsorted_segment_max(tf.where(positive, owned_log_t, LOG_ZERO), segments,
                                             b * m)
    max_u = tf.math.unsorted_segment_max(tf.where(positive, owned_u, 0.0), segments, b * m)
    target = tf.exp(owned_log_t - tf.gather(max_log_t, segments)) * tf.gather(max_u, segments)
    cls_labels, gt_index = labels_from_mask(positive, owner, gt_labels)
    return cls_labels, gt_index, positive, gt_index, tf.where(positive, target, 0.0)

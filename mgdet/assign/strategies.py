"""The paper's three quality matrices and the labels each gives (docs/design.md,
"Label assignment").

- IoU-anchor (static baseline): quality = IoU(gt, anchor), thresholds pos_iou / neg_iou.
- Localize to Classify (paper §3.2): quality = IoU(gt, decoded prediction); per object the first
  Np ranked anchors are positive, the next Ni ignored.
- Classify to Localize (paper Eq. 1): quality = IoU(gt, anchor) ^ ((sigma - p) / sigma); per
  object the first Np ranked anchors are regression positives.

Each quality is an ``[B, M, N]`` matrix that :func:`ownership.own` turns into
``(owned [B, N], owner [B, N])``; the labels come from that owned form.
"""
import tensorflow as tf

from mgdet.ops import boxes as box_ops
from mgdet.assign.logf import log_positive
from mgdet.assign.ownership import IGNORED, NEGATIVE, NO_GT, select_ranked

LOG_ZERO = -1e30  # log-domain quality of IoU 0; exp() maps it back to exactly 0


def labels_from_mask(positive, owner, gt_labels, ignored=None):
    """Codes from ``[B, N]`` masks: the owner's class where positive, IGNORED where ignored,
    else NEGATIVE; plus the owner index for positives and ignored anchors, NO_GT elsewhere."""
    owner_label = tf.gather(gt_labels, owner, batch_dims=1)
    if ignored is None:
        return tf.where(positive, owner_label, NEGATIVE), tf.where(positive, owner, NO_GT)
    cls_labels = tf.where(positive, owner_label, tf.where(ignored, IGNORED, NEGATIVE))
    gt_index = tf.where(tf.logical_or(positive, ignored), owner, NO_GT)
    return cls_labels, gt_index


def iou_anchor_labels(owned_iou, owner, gt_labels, pos_iou=0.5, neg_iou=0.4):
    """Static labels: positive where q >= pos_iou, ignored where neg_iou <= q < pos_iou.

    Returns ``(cls_labels [B, N], gt_index [B, N])`` int32 (see :class:`mgdet.assign.Assignment`).
    """
    positive = owned_iou >= pos_iou
    ignored = tf.logical_and(owned_iou >= neg_iou, tf.logical_not(positive))
    return labels_from_mask(positive, owner, gt_labels, ignored)


def regressed_iou(gt_boxes, anchors, pred_deltas, variances=box_ops.VARIANCES, pred_boxes=None):
    """L2C quality matrix ``IoU(g, decode(t, a))`` -> ``[B, M, N]`` (``own`` it next).

    ``pred_boxes``: ``[B, N, 4]`` xyxy predictions already decoded by the caller's box coding
    (another detector's), used instead of decoding ``pred_deltas`` with mgdet's.
    """
    if pred_boxes is None:
        pred_boxes = box_ops.decode(pred_deltas, anchors, variances)  # [B, N, 4]
    return box_ops.iou(gt_boxes, tf.stop_gradient(tf.cast(pred_boxes, tf.float32)))


def class_logits(gt_labels, pred_logits):
    """``[B, M, N]``: each object's class logit at each anchor, ``pred_logits[b, i, c_j]``
    (under ``stop_gradient``; labels of padding rows are clipped into range)."""
    num_classes = tf.shape(pred_logits)[-1]
    labels = tf.clip_by_value(gt_labels, 0, num_classes - 1)  # padding rows may hold any label
    logits = tf.transpose(tf.stop_gradient(tf.cast(pred_logits, tf.float32)), [0, 2, 1])  # [B,C,N]
    return tf.gather(logits, labels, axis=1, batch_dims=1)


def amplified_log_quality(anchor_iou, gt_labels, pred_logits, sigma=2.0):
    """C2L quality matrix (paper Eq. 1) in log space -> ``[B, M, N]``:
    ``log(IoU(g, a) ^ ((sigma - p) / sigma)) = (1 - p / sigma) * log IoU``, with
    ``p[b, j, i] = sigmoid(pred_logits[b, i, gt_labels[b, j]])``.

    Ownership and ranking only compare values, so ``own`` runs on the log (one transcendental
    instead of a ``pow``; ``own(q, valid, empty=LOG_ZERO, forced=0.0)``) and the owned values come
    back through ``exp`` on ``[B, N]`` only. IoU 0 maps to the finite floor ``LOG_ZERO``. The log
    is :func:`mgdet.assign.logf.log_positive`, plain arithmetic that runs faster than XLA's CPU
    ``log`` and is at least as accurate.
    """
    p = tf.sigmoid(class_logits(gt_labels, pred_logits))  # [B, M, N]
    # A finite floor instead of -inf: XLA's CPU codegen may assume no infinities.
    return tf.where(anchor_iou > 0.0, (1.0 - p / sigma) * log_positive(anchor_iou), LOG_ZERO)


def ranked_cls_labels(rank, owned, owner, gt_labels, num_pos, num_ignored):
    """L2C labels: per object its first Np ranked anchors are positive, the next Ni ignored.

    Args: ``rank`` from :func:`ownership.rank_within_owner` of ``(owned, owner)``.
    Returns ``(cls_labels [B, N], gt_index [B, N])`` int32.
    """
    positive, ignored = select_ranked(rank, owned, owner, num_pos, num_ignored)
    return labels_from_mask(positive, owner, gt_labels, ignored)


def ranked_reg_positives(rank, owned, owner, num_pos):
    """C2L labels: per object its first Np ranked anchors are regression positives.

    Returns ``(reg_positive [B, N] bool, reg_gt_index [B, N] int32)``.
    """
    positive, _ = select_ranked(rank, owned, owner, num_pos)
    return positive, tf.where(positive, owner, NO_GT)

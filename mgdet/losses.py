"""Losses of the paper's runs (docs/design.md, "Losses"): sigmoid focal loss and balanced L1; and the
quality focal loss (Li et al., Generalized Focal Loss, 2020) that TOOD trains its soft
classification targets with (``loss.cls_loss: quality_focal``).

``tensorflow-addons`` (which had a focal loss) is end-of-life and does not work with Keras 3,
and Keras has no balanced L1, so both are written here from their papers' formulas.
"""
import math

import tensorflow as tf

from mgdet.assign import IGNORED, SOFT_TARGETS
from mgdet.config import CLS_LOSSES
from mgdet.ops import boxes as box_ops


def resolve_cls_loss(cls_loss, strategy):
    """``"focal"`` or ``"quality_focal"`` from ``loss.cls_loss`` and ``assign.strategy``:
    ``"auto"`` picks the quality focal loss for the strategies with soft targets (``tal``)."""
    if cls_loss not in CLS_LOSSES:
        raise ValueError(f"unknown classification loss {cls_loss!r}: use one of {CLS_LOSSES}")
    if cls_loss == "auto":
        return "quality_focal" if strategy in SOFT_TARGETS else "focal"
    return cls_loss


def focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """Element-wise sigmoid focal loss (Lin et al. 2017), no reduction.

    FL = -alpha_t (1 - p_t)^gamma log(p_t), alpha_t = alpha for targets 1, 1 - alpha for 0.

    Args:
      logits, targets: float32, same shape; targets in {0, 1}.
    Returns:
      float32, the same shape.
    """
    targets = tf.cast(targets, logits.dtype)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    p = tf.sigmoid(logits)
    p_t = p * targets + (1.0 - p) * (1.0 - targets)
    alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
    modulator = tf.pow(1.0 - p_t, gamma) if gamma else 1.0
    return alpha_t * modulator * ce


def quality_focal_loss(logits, targets, beta=2.0):
    """Element-wise quality focal loss (Li et al. 2020, Eq. 5), no reduction.

    QFL = |y - p|^beta * BCE(y, p), p = sigmoid(logit): a focal loss whose target ``y`` is a
    soft score in [0, 1] (0 for negatives); with ``y`` in {0, 1} it is a focal loss without
    alpha.

    Args:
      logits, targets: float32, same shape; targets in [0, 1].
    Returns:
      float32, the same shape.
    """
    targets = tf.cast(targets, logits.dtype)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    modulator = tf.pow(tf.abs(targets - tf.sigmoid(logits)), beta) if beta else 1.0
    return modulator * ce


def balanced_l1_loss(pred, target, alpha=0.5, gamma=1.5, beta=0.11):
    """Element-wise balanced L1 loss (Pang et al., Libra R-CNN 2019), no reduction.

    With x = |pred - target| and b = e^(gamma / alpha) - 1:
      alpha / b * (b x + 1) * ln(b x / beta + 1) - alpha x     if x < beta
      gamma x + gamma / b - alpha beta                          otherwise.
    """
    x = tf.abs(pred - target)
    b = math.exp(gamma / alpha) - 1.0
    inner = alpha / b * (b * x + 1.0) * tf.math.log(b * x / beta + 1.0) - alpha * x
    outer = gamma * x + gamma / b - alpha * beta
    return tf.where(x < beta, inner, outer)


def _global_count(count):
    """Sum ``count`` over the replicas of a ``tf.distribute`` strategy (identity on one device)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return count


def detection_loss(assignment, pred_deltas, pred_logits, anchors, gt_boxes, alpha=0.25,
                   gamma=2.0, bl1_alpha=0.5, bl1_gamma=1.5, bl1_beta=0.11,
                   variances=box_ops.VARIANCES, cls_loss="focal", qfl_beta=2.0):
    """Focal (or quality focal) + balanced-L1 loss of a batch given its
    :class:`mgdet.assign.Assignment`.

    Args:
      assignment: labels for the batch (``[B, N]`` fields).
      pred_deltas: float32 [B, N, 4] encoded offsets.
      pred_logits: float32 [B, N, C].
      anchors: float32 [N, 4] xyxy.
      gt_boxes: float32 [B, M, 4] xyxy.
      cls_loss: ``"focal"`` (``alpha``, ``gamma``; hard one-hot targets) or ``"quality_focal"``
        (``qfl_beta``; the target of a positive's class is ``assignment.cls_target``, 1 where
        the assignment has none).
    Returns:
      dict of float32 scalars: ``cls`` (classification loss summed over positives and
      negatives / #cls positives),
      ``reg`` (balanced-L1 sum over regression positives / (4 x #reg positives)), ``total``,
      ``num_pos_cls``, ``num_pos_reg`` (global counts, before clamping to >= 1). Under a
      distribution strategy with several replicas the counts are all-reduced, so each replica
      returns its share of the global-batch loss.
    """
    pred_deltas = tf.cast(pred_deltas, tf.float32)
    pred_logits = tf.cast(pred_logits, tf.float32)
    num_classes = tf.shape(pred_logits)[-1]
    cls_labels = assignment.cls_labels
    positive = cls_labels >= 0
    cls_weight = tf.cast(cls_labels != IGNORED, tf.float32)  # ignored anchors weigh 0
    cls_targets = tf.one_hot(tf.where(positive, cls_labels, -1), num_classes)  # -1 -> all zeros
    if cls_loss == "quality_focal":
        if assignment.cls_target is not None:
            cls_targets = cls_targets * tf.cast(assignment.cls_target, tf.float32)[..., None]
        per_class = quality_focal_loss(pred_logits, tf.stop_gradient(cls_targets), qfl_beta)
    elif cls_loss == "focal":
        per_class = focal_loss(pred_logits, cls_targets, alpha, gamma)  # [B, N, C]
    else:
        raise ValueError(f"cls_loss must be 'focal' or 'quality_focal', got {cls_loss!r}")
    cls_sum = tf.reduce_sum(tf.reduce_sum(per_class, axis=-1) * cls_weight)

    reg_mask = tf.cast(assignment.reg_positive, tf.float32)  # [B, N]
    target_boxes = tf.gather(gt_boxes, tf.maximum(assignment.reg_gt_index, 0), batch_dims=1)
    # Non-positive anchors may pair with a padding box: give them their own anchor as target.
    target_boxes = tf.where(assignment.reg_positive[..., None], target_boxes, anchors[None])
    target_deltas = box_ops.encode(target_boxes, anchors, variances)
    bl1 = balanced_l1_loss(pred_deltas, tf.stop_gradient(target_deltas), bl1_alpha, bl1_gamma,
                           bl1_beta)
    reg_sum = tf.reduce_sum(tf.reduce_sum(bl1, axis=-1) * reg_mask)

    num_pos_cls = _global_count(tf.reduce_sum(tf.cast(positive, tf.float32)))
    num_pos_reg = _global_count(tf.reduce_sum(reg_mask))
    cls = cls_sum / tf.maximum(num_pos_cls, 1.0)
    reg = reg_sum / (4.0 * tf.maximum(num_pos_reg, 1.0))
    return {"cls": cls, "reg": reg, "total": cls + reg,
            "num_pos_cls": num_pos_cls, "num_pos_reg": num_pos_reg}

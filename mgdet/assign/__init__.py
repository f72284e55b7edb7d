"""Label assignment: the static IoU-anchor baseline and Mutual Guidance (paper §3).

``assign(strategy, ...)`` is the one entry point the models call; ``strategy`` picks the
classification and regression labels:

| strategy | classification labels  | regression labels     |
|----------|------------------------|-----------------------|
| iou      | IoU-anchor             | IoU-anchor            |
| l2c      | Localize to Classify   | IoU-anchor            |
| c2l      | IoU-anchor             | Classify to Localize  |
| mg       | Localize to Classify   | Classify to Localize  |
"""
from typing import NamedTuple

import tensorflow as tf

from mgdet import boxes as box_ops
from mgdet.assign.ownership import IGNORED, NEGATIVE, NO_GT, count_by_iou, own
from mgdet.assign.strategies import (amplified_quality, iou_anchor_labels, ranked_cls_labels,
                                     ranked_reg_positives, regressed_quality)

STRATEGIES = ("iou", "l2c", "c2l", "mg")
_L2C_CLS = ("l2c", "mg")
_C2L_REG = ("c2l", "mg")

__all__ = ["Assignment", "assign", "validate", "STRATEGIES", "NEGATIVE", "IGNORED", "NO_GT", "own"]


class Assignment(NamedTuple):
    """Per-anchor training labels of a batch (N anchors).

    cls_labels:   int32 [B, N]: class id (0..C-1) for positives, -1 negative, -2 ignored.
    cls_gt_index: int32 [B, N]: object index for classification positives and ignored, -1 else.
    reg_positive: bool  [B, N]: regression positives.
    reg_gt_index: int32 [B, N]: object index for regression positives, -1 else.
    """
    cls_labels: tf.Tensor
    cls_gt_index: tf.Tensor
    reg_positive: tf.Tensor
    reg_gt_index: tf.Tensor


def validate(strategy, sigma=2.0, pos_iou=0.5, neg_iou=0.4):
    """Raise ``ValueError`` naming the bad value; return nothing."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown assignment strategy {strategy!r}: use one of {STRATEGIES}")
    if not sigma > 1.0:
        raise ValueError(f"sigma must be > 1 (paper Eq. 1), got {sigma!r}")
    if not 0.0 < neg_iou <= pos_iou <= 1.0:
        raise ValueError(
            f"need 0 < neg_iou <= pos_iou <= 1, got neg_iou={neg_iou!r}, pos_iou={pos_iou!r}")


def assign(strategy, anchors, gt_boxes, gt_labels, gt_valid, pred_deltas=None, pred_logits=None,
           sigma=2.0, pos_iou=0.5, neg_iou=0.4):
    """Assign training labels to anchors.

    Args:
      strategy: "iou", "l2c", "c2l" or "mg".
      anchors: float32 [N, 4] xyxy normalized.
      gt_boxes: float32 [B, M, 4] xyxy normalized (padded).
      gt_labels: int32 [B, M] class ids 0..C-1.
      gt_valid: bool [B, M] which rows are real objects.
      pred_deltas: float32 [B, N, 4] predicted offsets (needed by l2c, mg).
      pred_logits: float32 [B, N, C] class logits (needed by c2l, mg).
      sigma: C2L's amplification (> 1).
      pos_iou, neg_iou: IoU-anchor thresholds that also set the per-object counts Np and Ni.
    Returns:
      :class:`Assignment`. No gradient flows through it.
    """
    validate(strategy, sigma, pos_iou, neg_iou)
    if strategy in _L2C_CLS and pred_deltas is None:
        raise ValueError(f"strategy {strategy!r} needs pred_deltas")
    if strategy in _C2L_REG and pred_logits is None:
        raise ValueError(f"strategy {strategy!r} needs pred_logits")
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_labels = tf.cast(gt_labels, tf.int32)
    gt_valid = tf.cast(gt_valid, tf.bool)
    anchors = tf.cast(anchors, tf.float32)
    # The dense [B, M, N] work (IoUs, amplification, own) runs as XLA clusters, one per quality
    # matrix: fused, it is several times faster on CPU than op by op. The per-image sorts of the
    # ranking stay outside (TF's sort kernel is faster than XLA's on CPU).
    owned_iou, owner = _owned_anchor_iou(anchors, gt_boxes, gt_valid)
    cls_labels, cls_gt = iou_anchor_labels(owned_iou, owner, gt_labels, pos_iou, neg_iou)
    reg_positive, reg_gt = cls_labels >= 0, tf.where(cls_labels >= 0, cls_gt, NO_GT)
    if strategy == "iou":
        return Assignment(cls_labels, cls_gt, reg_positive, reg_gt)
    num_pos, num_ignored = count_by_iou(owned_iou, owner, gt_valid, pos_iou, neg_iou)
    if strategy in _L2C_CLS:
        owned, owner_r = _owned_regressed_iou(anchors, gt_boxes, gt_valid, pred_deltas)
        cls_labels, cls_gt = ranked_cls_labels(owned, owner_r, gt_labels, num_pos, num_ignored)
    if strategy in _C2L_REG:
        owned, owner_c = _owned_amplified_iou(anchors, gt_boxes, gt_labels, gt_valid, pred_logits,
                                              float(sigma))
        reg_positive, reg_gt = ranked_reg_positives(owned, owner_c, num_pos)
    return Assignment(cls_labels, cls_gt, reg_positive, reg_gt)


@tf.function(jit_compile=True, reduce_retracing=True)
def _owned_anchor_iou(anchors, gt_boxes, gt_valid):
    """``own(IoU(g, a))`` -> (owned [B, N], owner [B, N])."""
    return own(box_ops.iou(gt_boxes, anchors), gt_valid)


@tf.function(jit_compile=True, reduce_retracing=True)
def _owned_regressed_iou(anchors, gt_boxes, gt_valid, pred_deltas):
    return regressed_quality(gt_boxes, gt_valid, anchors, pred_deltas)


@tf.function(jit_compile=True, reduce_retracing=True)
def _owned_amplified_iou(anchors, gt_boxes, gt_labels, gt_valid, pred_logits, sigma):
    return amplified_quality(box_ops.iou(gt_boxes, anchors), gt_labels, gt_valid, pred_logits,
                             sigma)

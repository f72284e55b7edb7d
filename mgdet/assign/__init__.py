"""Label assignment: the static IoU-anchor baseline and Mutual Guidance (paper §3).

``assign(strategy, ...)`` is the one entry point the models call; ``strategy`` picks the
classification and regression labels:

| strategy | classification labels  | regression labels     |
|----------|------------------------|-----------------------|
| iou      | IoU-anchor             | IoU-anchor            |
| l2c      | Localize to Classify   | IoU-anchor            |
| c2l      | IoU-anchor             | Classify to Localize  |
| mg       | Localize to Classify   | Classify to Localize  |
| atss     | ATSS (Zhang et al. 2020), the same positives for both    |
| tal      | TOOD's task-aligned assignment (Feng et al. 2021), both; soft class targets |

``atss`` and ``tal`` are in :mod:`mgdet.assign.adaptive` (their rules are stated there).
"""
from typing import NamedTuple

import tensorflow as tf

from mgdet.assign.adaptive import atss_labels, level_sizes, tal_labels
from mgdet.assign.ownership import (IGNORED, NEGATIVE, NO_GT, best_anchors, candidate_key,
                                    count_by_iou, mask_invalid, own, own_masked, rank_from_order,
                                    sort_keys)
from mgdet.assign.strategies import (LOG_ZERO, amplified_log_quality, iou_anchor_labels,
                                     ranked_cls_labels, ranked_reg_positives, regressed_iou)
from mgdet.config import PAPER_STRATEGIES, STRATEGIES, check_value
from mgdet.ops import boxes as box_ops

SOFT_TARGETS = ("tal",)  # strategies whose Assignment has a cls_target
_L2C_CLS = ("l2c", "mg")
_C2L_REG = ("c2l", "mg")

__all__ = ["Assignment", "assign", "ignore_objects", "validate", "STRATEGIES", "PAPER_STRATEGIES",
           "SOFT_TARGETS", "NEGATIVE", "IGNORED", "NO_GT", "own"]


class Assignment(NamedTuple):
    """Per-anchor training labels of a batch (N anchors).

    cls_labels:   int32 [B, N]: class id (0..C-1) for positives, -1 negative, -2 ignored.
    cls_gt_index: int32 [B, N]: object index for classification positives and ignored, -1 else.
    reg_positive: bool  [B, N]: regression positives.
    reg_gt_index: int32 [B, N]: object index for regression positives, -1 else.
    cls_target:   float32 [B, N] soft classification target of positives (the value of their
                  class's one-hot entry; 0 elsewhere) for the strategies that define one
                  (``SOFT_TARGETS``); None: hard labels (1 at positives).
    """
    cls_labels: tf.Tensor
    cls_gt_index: tf.Tensor
    reg_positive: tf.Tensor
    reg_gt_index: tf.Tensor
    cls_target: tf.Tensor = None


def ignore_objects(assignment, gt_ignore):
    """Turn the anchors assigned to ignored objects (VOC ``difficult`` / COCO crowd with
    ``data.difficult: ignore``) into ignored anchors: neither positive nor background.

    Args:
      assignment: :class:`Assignment` of a batch.
      gt_ignore: bool ``[B, M]``, True for an object to ignore.
    Returns:
      the :class:`Assignment` where every anchor whose classification label (positive or
      ignored) comes from an ignored object is ``IGNORED`` (weight 0 in the classification
      loss), and no anchor regresses to an ignored object. Other anchors are unchanged.
    """
    gt_ignore = tf.cast(gt_ignore, tf.bool)

    def from_ignored(index):
        return (index >= 0) & tf.gather(gt_ignore, tf.maximum(index, 0), batch_dims=1)

    cls_ignored = from_ignored(assignment.cls_gt_index)
    reg_ignored = from_ignored(assignment.reg_gt_index)
    return assignment._replace(
        cls_labels=tf.where(cls_ignored, IGNORED, assignment.cls_labels),
        reg_positive=assignment.reg_positive & ~reg_ignored,
        reg_gt_index=tf.where(reg_ignored, NO_GT, assignment.reg_gt_index))


def validate(strategy, sigma=2.0, pos_iou=0.5, neg_iou=0.4, atss_topk=9, tal_topk=13,
             tal_alpha=1.0, tal_beta=6.0):
    """Raise ``ValueError`` (a ConfigError) naming the bad value: the ``assign.*`` config's
    choices and ranges, and ``neg_iou <= pos_iou``; return nothing."""
    for name, value in (("strategy", strategy), ("sigma", sigma), ("pos_iou", pos_iou),
                        ("neg_iou", neg_iou), ("atss_topk", atss_topk), ("tal_topk", tal_topk),
                        ("tal_alpha", tal_alpha), ("tal_beta", tal_beta)):
        check_value(f"assign.{name}", value, name)
    if neg_iou > pos_iou:
        raise ValueError(
            f"need 0 < neg_iou <= pos_iou <= 1, got neg_iou={neg_iou!r}, pos_iou={pos_iou!r}")


def assign(strategy, anchors, gt_boxes, gt_labels, gt_valid, pred_deltas=None, pred_logits=None,
           sigma=2.0, pos_iou=0.5, neg_iou=0.4, atss_topk=9, tal_topk=13, tal_alpha=1.0,
           tal_beta=6.0, sizes=None, pred_boxes=None, force_match=True):
    """Assign training labels to anchors.

    Args:
      strategy: one of ``STRATEGIES``: "iou", "l2c", "c2l", "mg", "atss" or "tal".
      anchors: float32 [N, 4] xyxy normalized.
      gt_boxes: float32 [B, M, 4] xyxy normalized (padded).
      gt_labels: int32 [B, M] class ids 0..C-1.
      gt_valid: bool [B, M] which rows are real objects.
      pred_deltas: float32 [B, N, 4] predicted offsets (needed by l2c, mg, tal).
      pred_logits: float32 [B, N, C] class logits (needed by c2l, mg, tal).
      sigma: C2L's amplification (> 1).
      pos_iou, neg_iou: IoU-anchor thresholds that also set the per-object counts Np and Ni.
      atss_topk: ATSS's candidates per level, in cells (``atss_topk * 6`` anchors).
      tal_topk, tal_alpha, tal_beta: TAL's candidates per object and metric exponents
        ``t = s^alpha * u^beta`` (beta > 0).
      sizes: anchors per pyramid level (ATSS); None: :func:`adaptive.level_sizes` of N.
      pred_boxes: float32 [B, N, 4] xyxy predictions already decoded (in the coordinates of
        ``anchors`` and ``gt_boxes``, e.g. pixels) by another detector's box coding; l2c and mg
        use them instead of decoding ``pred_deltas`` with mgdet's (paper strategies only).
      force_match: True: each object's best anchor is forced (``ownership.own``), so every
        object gets at least one positive. False: no forcing, an object whose best IoU is below
        ``pos_iou`` may have none (keras-hub's RetinaNet encoder; paper strategies only).
    Returns:
      :class:`Assignment` (with ``cls_target`` for ``tal``). No gradient flows through it.
    """
    validate(strategy, sigma, pos_iou, neg_iou, atss_topk, tal_topk, tal_alpha, tal_beta)
    if strategy not in PAPER_STRATEGIES and (pred_boxes is not None or not force_match):
        raise ValueError(f"pred_boxes and force_match=False apply to the strategies "
                         f"{PAPER_STRATEGIES}, not {strategy!r}")
    if strategy in _L2C_CLS and pred_deltas is None and pred_boxes is None:
        raise ValueError(f"strategy {strategy!r} needs pred_deltas or pred_boxes")
    if strategy == "tal" and pred_deltas is None:
        raise ValueError(f"strategy {strategy!r} needs pred_deltas")
    if strategy in _C2L_REG + ("tal",) and pred_logits is None:
        raise ValueError(f"strategy {strategy!r} needs pred_logits")
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_labels = tf.cast(gt_labels, tf.int32)
    gt_valid = tf.cast(gt_valid, tf.bool)
    anchors = tf.cast(anchors, tf.float32)
    if strategy == "atss":
        sizes = tuple(int(s) for s in sizes) if sizes else level_sizes(int(anchors.shape[0]))
        if sum(sizes) != anchors.shape[0]:
            raise ValueError(f"sizes {sizes} add up to {sum(sizes)}, not the {anchors.shape[0]} "
                             "anchors")
        return Assignment(*atss_labels(anchors, gt_boxes, gt_labels, gt_valid, sizes,
                                       int(atss_topk)))
    if strategy == "tal":
        return Assignment(*tal_labels(anchors, gt_boxes, gt_labels, gt_valid,
                                      tf.cast(pred_deltas, tf.float32),
                                      tf.cast(pred_logits, tf.float32),
                                      int(anchors.shape[0]), int(tal_topk),
                                      float(tal_alpha), float(tal_beta)))
    l2c, c2l = strategy in _L2C_CLS, strategy in _C2L_REG
    # Three XLA clusters and TF kernels between them:
    # 1. the dense [B, M, N] quality matrices, written once;
    # then each object's best anchor in each (TF's multi-threaded ArgMax kernel: on CPU 0.4x the
    # time of XLA's arg-max along the minor axis);
    # 2. own() of each, the counts Np/Ni and the sort keys of each object's candidates: reductions
    #    over a stored matrix (when XLA fuses the quality computation into own()'s arg-max
    #    reductions instead, it recomputes every IoU and log inside a scalar loop: 2-3x slower on
    #    CPU);
    # 3. after the per-image top_k of the candidates (a TF kernel: faster than XLA's sort on CPU,
    #    bounded by the candidate count instead of a sort of all N anchors), ranks and labels.
    qualities = _quality_matrices(anchors, gt_boxes, gt_labels, gt_valid, pred_deltas, pred_logits,
                                  float(sigma), l2c, c2l, pred_boxes)
    force = bool(force_match)
    best = {k: best_anchors(q) if force else None for k, q in qualities.items()}
    owned = _own(qualities, best, gt_valid, gt_labels, float(pos_iou), float(neg_iou), l2c, c2l,
                 force)
    orders = {k: sort_keys(owned[k + "_key"], owned[k + "_candidate"])
              for k in ("l2c", "c2l") if k + "_key" in owned}
    return _labels_from_ranks(owned, orders, gt_labels)


@tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
def _quality_matrices(anchors, gt_boxes, gt_labels, gt_valid, pred_deltas, pred_logits, sigma,
                      l2c, c2l, pred_boxes=None):
    """``[B, M, N]`` qualities: IoU(g, a), and IoU(g, decode(t, a)) (or IoU(g, pred_boxes)) if
    ``l2c``, and the log of the amplified IoU if ``c2l``; rows of invalid objects hold the empty
    value."""
    anchor_iou = box_ops.iou(gt_boxes, anchors)
    out = {"iou": mask_invalid(anchor_iou, gt_valid)}
    if l2c:
        out["l2c"] = mask_invalid(regressed_iou(gt_boxes, anchors, pred_deltas,
                                                pred_boxes=pred_boxes), gt_valid)
    if c2l:
        out["c2l"] = mask_invalid(amplified_log_quality(anchor_iou, gt_labels, pred_logits, sigma),
                                  gt_valid, LOG_ZERO)
    return out


@tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
def _own(qualities, best, gt_valid, gt_labels, pos_iou, neg_iou, l2c, c2l, force=True):
    """``own()`` of each quality matrix given its objects' ``best`` anchors (forced unless
    ``force`` is False), the static labels, Np/Ni and the ranking sort keys."""
    owned_iou, owner = own_masked(qualities["iou"], gt_valid, best_anchor=best["iou"], force=force)
    cls_labels, cls_gt = iou_anchor_labels(owned_iou, owner, gt_labels, pos_iou, neg_iou)
    out = {"cls_labels": cls_labels, "cls_gt": cls_gt}
    if not (l2c or c2l):
        return out
    out["num_pos"], out["num_ignored"] = count_by_iou(owned_iou, owner, gt_valid, pos_iou, neg_iou)
    if l2c:
        out["l2c"] = own_masked(qualities["l2c"], gt_valid, best_anchor=best["l2c"], force=force)
    if c2l:
        owned_log, owner_c = own_masked(qualities["c2l"], gt_valid, empty=LOG_ZERO, forced=0.0,
                                        best_anchor=best["c2l"], force=force)
        out["c2l"] = (tf.exp(owned_log), owner_c)
    ranked = {"l2c": out["num_pos"] + out["num_ignored"], "c2l": out["num_pos"]}
    for k in ("l2c", "c2l"):
        if k in out:
            out[k + "_key"], out[k + "_candidate"] = candidate_key(*out[k], ranked[k])
    return out


@tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
def _labels_from_ranks(owned, orders, gt_labels):
    """The :class:`Assignment` from the owned form and the sorted orders."""
    cls_labels, cls_gt = owned["cls_labels"], owned["cls_gt"]
    m = tf.shape(gt_labels)[1]
    if "l2c" in orders:
        rank = rank_from_order(orders["l2c"], owned["l2c"][1], m, owned["l2c_candidate"])
        cls_labels, cls_gt = ranked_cls_labels(rank, *owned["l2c"], gt_labels, owned["num_pos"],
                                               owned["num_ignored"])
    reg_positive = owned["cls_labels"] >= 0
    reg_gt = tf.where(reg_positive, owned["cls_gt"], NO_GT)
    if "c2l" in orders:
        rank = rank_from_order(orders["c2l"], owned["c2l"][1], m, owned["c2l_candidate"])
        reg_positive, reg_gt = ranked_reg_positives(rank, *owned["c2l"], owned["num_pos"])
    return Assignment(cls_labels, cls_gt, reg_positive, reg_gt)

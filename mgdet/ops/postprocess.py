"""Detections from raw head outputs: decode + class-wise NMS, all in the graph.

``postprocess`` is a pure TF function (no Keras, no state), shared by ``Detector.predict_step``,
``Detector.detect`` and the SavedModel export.
"""
import numpy as np
import tensorflow as tf

from mgdet.ops import boxes as box_ops


def postprocess(deltas, logits, anchors, score_threshold=0.005, nms_iou=0.5, max_detections=300,
                max_per_class=None, variances=box_ops.VARIANCES):
    """Decode offsets, score with sigmoids and run class-wise NMS.

    Args:
      deltas: float [B, N, 4] encoded offsets.
      logits: float [B, N, C] class logits (sigmoid, no background column).
      anchors: float [N, 4] xyxy normalized.
      score_threshold: keep (box, class) pairs with score >= this.
      nms_iou: IoU above which a lower-scored box of the same class is suppressed.
      max_detections: K, detections kept per image (outputs are zero-padded to K).
      max_per_class: detections kept per class and image before the top-K merge
        (default: ``max_detections``).
      variances: box-coding variances.
    Returns:
      dict: ``boxes`` float32 [B, K, 4] xyxy normalized, clipped to [0, 1]; ``scores`` float32
      [B, K] (descending); ``classes`` int32 [B, K] (0-based; 0 for padding);
      ``num_detections`` int32 [B] valid rows.
    """
    max_detections = int(max_detections)
    max_per_class = int(max_per_class or max_detections)
    # combined_non_max_suppression keeps scores strictly above its threshold: the float32 just
    # below ours keeps scores >= score_threshold.
    below = float(np.nextafter(np.float32(score_threshold), np.float32(-np.inf)))
    boxes = tf.clip_by_value(box_ops.decode(deltas, anchors, variances), 0.0, 1.0)  # [B, N, 4]
    scores = tf.sigmoid(tf.cast(logits, tf.float32))  # [B, N, C]
    # One box per anchor shared by all classes: [B, N, 1, 4]. TF's NMS expects yxyx.
    nms_boxes, nms_scores, nms_classes, num = tf.image.combined_non_max_suppression(
        box_ops.xyxy_to_yxyx(boxes)[:, :, None, :], scores,
        max_output_size_per_class=max_per_class, max_total_size=max_detections,
        iou_threshold=nms_iou, score_threshold=below, pad_per_class=False,
        clip_boxes=False)
    return {"boxes": box_ops.yxyx_to_xyxy(nms_boxes),
            "scores": nms_scores,
            "classes": tf.cast(nms_classes, tf.int32),
            "num_detections": tf.cast(num, tf.int32)}

"""Pure box geometry on the last axis.

Convention everywhere in mgdet: boxes are ``[xmin, ymin, xmax, ymax]`` normalized to [0, 1],
float32. Every function is a tensor-in / tensor-out TF op that runs inside ``tf.function``.
"""
import math

import tensorflow as tf

VARIANCES = (0.1, 0.2)
# Largest |dw|, |dh| (in log space) accepted by ``decode`` before ``exp``: log(1000 / 16) as in
# torchvision's coder, so an untrained head can never produce inf boxes.
_MAX_LOG_SCALE = math.log(1000.0 / 16)


def area(boxes):
    """Area of ``[..., 4]`` xyxy boxes -> ``[...]`` (0 for degenerate boxes)."""
    wh = tf.maximum(boxes[..., 2:4] - boxes[..., 0:2], 0.0)
    return wh[..., 0] * wh[..., 1]


def iou(a, b):
    """Pairwise IoU.

    Args:
      a: ``[..., M, 4]`` xyxy boxes.
      b: ``[..., N, 4]`` xyxy boxes (leading dims broadcastable with ``a``'s, e.g. ``[N, 4]``).
    Returns:
      ``[..., M, N]`` IoU in [0, 1]; 0 where the union is empty.
    """
    a = tf.cast(a, tf.float32)
    b = tf.cast(b, tf.float32)
    ax1, ay1, ax2, ay2 = [t[..., :, None] for t in tf.unstack(a, axis=-1)]  # [..., M, 1]
    bx1, by1, bx2, by2 = [t[..., None, :] for t in tf.unstack(b, axis=-1)]  # [..., 1, N]
    inter = (tf.maximum(tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1), 0.0)
             * tf.maximum(tf.minimum(ay2, by2) - tf.maximum(ay1, by1), 0.0))
    area_a = tf.maximum(ax2 - ax1, 0.0) * tf.maximum(ay2 - ay1, 0.0)
    area_b = tf.maximum(bx2 - bx1, 0.0) * tf.maximum(by2 - by1, 0.0)
    return tf.math.divide_no_nan(inter, area_a + area_b - inter)


def xyxy_to_cxcywh(boxes):
    """``[..., 4]`` xyxy -> ``[..., 4]`` (cx, cy, w, h)."""
    xy_min, xy_max = boxes[..., 0:2], boxes[..., 2:4]
    return tf.concat([(xy_min + xy_max) * 0.5, xy_max - xy_min], axis=-1)


def cxcywh_to_xyxy(boxes):
    """``[..., 4]`` (cx, cy, w, h) -> ``[..., 4]`` xyxy."""
    c, wh = boxes[..., 0:2], boxes[..., 2:4]
    return tf.concat([c - wh * 0.5, c + wh * 0.5], axis=-1)


def xyxy_to_yxyx(boxes):
    """Swap to TF's ``[ymin, xmin, ymax, xmax]`` order (used by ``tf.image`` ops and serving)."""
    return tf.gather(boxes, [1, 0, 3, 2], axis=-1)


yxyx_to_xyxy = xyxy_to_yxyx  # the swap is its own inverse


def encode(boxes, anchors, variances=VARIANCES):
    """SSD offsets of ``boxes`` relative to ``anchors``.

    Args:
      boxes: ``[..., N, 4]`` xyxy (positive width and height).
      anchors: ``[N, 4]`` or ``[..., N, 4]`` xyxy.
      variances: (center variance, size variance).
    Returns:
      ``[..., N, 4]``: (dcx / (v0 wa), dcy / (v0 ha), log(w / wa) / v1, log(h / ha) / v1).
    """
    v0, v1 = variances
    g = xyxy_to_cxcywh(tf.cast(boxes, tf.float32))
    a = xyxy_to_cxcywh(tf.cast(anchors, tf.float32))
    g_wh = tf.maximum(g[..., 2:4], 1e-8)
    center = (g[..., 0:2] - a[..., 0:2]) / (v0 * a[..., 2:4])
    size = tf.math.log(g_wh / a[..., 2:4]) / v1
    return tf.concat([center, size], axis=-1)


def decode(deltas, anchors, variances=VARIANCES):
    """Inverse of :func:`encode`: ``[..., N, 4]`` offsets + ``[N, 4]`` anchors -> xyxy boxes.

    The log-size offsets are clamped to ``log(1000/16)`` before ``exp`` so that untrained
    predictions never overflow. Boxes are not clipped.
    """
    v0, v1 = variances
    d = tf.cast(deltas, tf.float32)
    a = xyxy_to_cxcywh(tf.cast(anchors, tf.float32))
    center = a[..., 0:2] + d[..., 0:2] * v0 * a[..., 2:4]
    size = a[..., 2:4] * tf.exp(tf.minimum(d[..., 2:4] * v1, _MAX_LOG_SCALE))
    return cxcywh_to_xyxy(tf.concat([center, size], axis=-1))

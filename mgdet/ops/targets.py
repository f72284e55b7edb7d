"""Training targets as users hand them in, turned into the detector's own form.

The detector trains on ``{"boxes": float [B, M, 4] relative xyxy, "labels": int32 [B, M],
"valid": bool [B, M]}`` (what :mod:`mgdet.data.pipeline` makes). Data prepared for keras-hub
works as it is: boxes in any ``bounding_box_format`` of :data:`BOX_FORMATS` (converted with
``keras.utils.bounding_boxes.convert_format``; absolute formats are pixels of the model's
``S x S`` input) and padded labels ``-1`` under ``"labels"`` or ``"classes"`` (the ``valid`` mask
is then ``labels >= 0``)::

    model = mgdet.build_model(cfg, num_classes=3, bounding_box_format="xywh")
    model.fit(tf.data.Dataset.from_tensor_slices(
        (images, {"boxes": boxes_xywh_pixels, "labels": labels_padded_with_minus_1})).batch(8))
"""
import tensorflow as tf
from keras.utils import bounding_boxes

# keras.utils.bounding_boxes formats: absolute (pixels of the S x S input) and relative (0..1).
BOX_FORMATS = ("xyxy", "yxyx", "xywh", "center_xywh", "center_yxhw",
               "rel_xyxy", "rel_yxyx", "rel_xywh", "rel_center_xywh")
OWN_FORMAT = "rel_xyxy"
LABEL_KEYS = ("labels", "classes")


def check_box_format(bounding_box_format):
    """Raise ValueError unless ``bounding_box_format`` is one of :data:`BOX_FORMATS`."""
    if bounding_box_format not in BOX_FORMATS:
        raise ValueError(f"bounding_box_format must be one of {', '.join(BOX_FORMATS)}, got "
                         f"{bounding_box_format!r}")
    return bounding_box_format


def convert_boxes(boxes, source, target, image_size):
    """``boxes`` [..., 4] from format ``source`` to ``target`` (absolute formats: pixels of an
    ``image_size`` square)."""
    boxes = tf.cast(boxes, tf.float32)
    if source == target:
        return boxes
    return bounding_boxes.convert_format(boxes, source=source,
                                         target=target, height=image_size, width=image_size)


def standardize_targets(targets, bounding_box_format=OWN_FORMAT, image_size=None):
    """The detector's targets from a user's.

    Args:
      targets: dict with ``"boxes"`` [B, M, 4] in ``bounding_box_format`` and ``"labels"`` or
        ``"classes"`` [B, M] (int or float class ids, ``-1`` for padding); ``"valid"`` [B, M]
        (bool) when given is used as it is; ``"ignore"`` passes through.
      bounding_box_format: one of :data:`BOX_FORMATS`.
      image_size: S, the model's input side (for absolute formats).
    Returns:
      dict ``boxes`` float32 [B, M, 4] relative xyxy, ``labels`` int32 [B, M] (>= 0),
      ``valid`` bool [B, M] (+ ``ignore``).
    Raises:
      ValueError naming the expected keys when ``targets`` is not such a dict.
    """
    if not isinstance(targets, dict) or "boxes" not in targets or not any(
            k in targets for k in LABEL_KEYS):
        got = sorted(targets) if isinstance(targets, dict) else type(targets).__name__
        raise ValueError("targets must be a dict with 'boxes' [B, M, 4] and 'labels' (or "
                         "'classes') [B, M] (-1 for padding), optionally 'valid' [B, M]; got "
                         f"{got}")
    labels = targets["labels"] if "labels" in targets else targets["classes"]
    if isinstance(labels, tf.RaggedTensor) or isinstance(targets["boxes"], tf.RaggedTensor):
        raise ValueError("targets must be dense: pad boxes and labels to M objects per image "
                         "(labels -1 for padding), e.g. with keras.utils.bounding_boxes.pad or "
                         "RaggedTensor.to_tensor(default_value=-1)")
    labels = tf.cast(labels, tf.int32)
    valid = tf.cast(targets["valid"], tf.bool) if "valid" in targets else labels >= 0
    out = {"boxes": convert_boxes(targets["boxes"], bounding_box_format, OWN_FORMAT, image_size),
           "labels": tf.maximum(labels, 0), "valid": valid}
    if "ignore" in targets:
        out["ignore"] = targets["ignore"]
    return out

"""SavedModel export for TensorFlow Serving (docs/design.md, "Serving and export").

``export_saved_model`` writes a plain ``tf.Module`` (the detector's variables + traced serving
functions), so the export loads with ``tf.saved_model.load`` / ``saved_model_cli`` / TF Serving
without importing mgdet. Signatures:

``serving_default``
  input ``images``: uint8 ``[batch, height, width, 3]``, any size (resized inside to the model's
  ``S x S``, bilinear, as the evaluation pipeline does).
``serving_bytes``
  input ``image_bytes``: string ``[batch]``, encoded JPEG / PNG (also BMP / GIF, first frame, and
  WebP), decoded with ``tf.io.decode_image`` one by one (images of different sizes may share a
  batch), with the JPEG's EXIF orientation applied as in training (:mod:`mgdet.data.exif`). The
  image size is read from the header first (``tf.io.extract_jpeg_shape``, the PNG
  IHDR, the GIF / BMP / WebP headers): an image of more than ``max_pixels`` pixels (export
  setting, default ``data.max_pixels`` = 40 MP) is refused with ``InvalidArgumentError`` before
  anything is decoded, so a small file that claims a huge size (decompression bomb) costs no
  memory.

Both return (K = ``max_detections``, rows past ``num_detections`` are zero / empty padding):

==========================  =====================  ==========================================
``detection_boxes``         float32 [batch, K, 4]  (ymin, xmin, ymax, xmax) normalized to the
                                                   input image, TF Object Detection API order
``detection_scores``        float32 [batch, K]     sigmoid class score, descending
``detection_classes``       int32 [batch, K]       **0-based** class id = line of labels.txt
``detection_class_names``   string [batch, K]      the class name ("" for padding)
``num_detections``          int32 [batch]          valid rows
==========================  =====================  ==========================================

Unlike the TF OD API (float32, 1-based ids from a label map), ``detection_classes`` is int32 and
0-based: it indexes ``assets/labels.txt`` (one class name per line) directly, and JSON clients
get integers. The loaded object also has ``class_names()`` (string [C], read from the asset) and
``metadata()`` (image size, thresholds). Score threshold, NMS IoU and max detections are fixed at
export time (``cli.py export --score-threshold --nms-iou --max-detections``).

Versions follow TF Serving's layout ``saved_models/<name>/<version>/`` (integers; the next
free one by default). A version folder is written under a temporary name and renamed when
complete, so a Serving process polling the folder never loads a half-written export; the
temporary folder of an export that was killed is removed by the next export beside it. The
rename claims the version: it fails when another export got there first, and the next free
version is taken instead (two exports of one name at once get two versions).
"""
import json
import os
import shutil
import socket
import tempfile

import tensorflow as tf

from mgdet.config import DEFAULT_MAX_PIXELS, check_value
from mgdet.data.augment import resize
from mgdet.data.exif import decode_oriented
from mgdet.data.image_header import header_size
from mgdet.export.versions import OWNER_FILE, TMP_PREFIX, claim, refuse_existing, remove_stale_tmp
from mgdet.ops import boxes as box_ops

DEFAULT_BASE_DIR = "saved_models"
LABELS_FILE = "labels.txt"


def build(model):
    """Create ``model``'s variables (one forward pass on zeros); returns its input size S."""
    size = int(model.image_size)
    model(tf.zeros([1, size, size, 3], tf.float32), training=False)
    return size


def detect_fn(model, score_threshold, nms_iou, max_detections):
    """``images float32 [B, S, S, 3] -> {"boxes", "scores", "classes", "num_detections"}``:
    the detector's own :meth:`~mgdet.models.detector.Detector.detections` with the given
    post-processing settings."""
    return lambda images: model.detections(images, score_threshold, nms_iou, max_detections)


def raw_variable(variable):
    """The ``tf.Variable`` under a Keras 3 variable (itself when it is one already)."""
    value = getattr(variable, "value", None)
    if isinstance(variable, tf.Variable) or not isinstance(value, tf.Variable):
        return variable
    return value


def _check_pixels(data, max_pixels):
    """An assertion op: the header's height x width is at most ``max_pixels`` (the error shows
    the product)."""
    height, width = header_size(data)
    return tf.debugging.assert_less_equal(
        height * width, tf.constant(int(max_pixels), tf.int64),
        message=f"serving_bytes: image larger than max_pixels = {int(max_pixels)} (height x width "
                "read from its header, shown as x); refused before decoding", summarize=1)


class _DetectorServing(tf.Module):
    """What the SavedModel holds: the model's variables, the labels asset, the functions."""

    def __init__(self, model, labels_path, image_size, detect, settings, max_pixels):
        super().__init__(name="mgdet_detector")
        # Only the variables are tracked (not the Keras objects): loading then needs no Keras
        # class. The raw tf.Variables, not Keras 3's wrappers: a wrapper is exported as a copy
        # that TF1-style loaders (saved_model_cli run, TF Serving's session bundle) restore
        # while the functions read the original, left uninitialized.
        self.model_variables = [raw_variable(v) for v in model.variables]
        self.labels = tf.saved_model.Asset(labels_path)
        size = int(image_size)

        def class_names():
            text = tf.strings.strip(tf.io.read_file(self.labels.asset_path))
            return tf.strings.split(text, "\n")

        def outputs(images):
            det = detect(images)
            boxes = tf.clip_by_value(tf.cast(det["boxes"], tf.float32), 0.0, 1.0)
            classes = tf.cast(det["classes"], tf.int32)
            num = tf.cast(det["num_detections"], tf.int32)
            valid = tf.range(tf.shape(classes)[1])[None, :] < num[:, None]  # [B, K]
            names = tf.where(valid, tf.gather(class_names(), tf.maximum(classes, 0)), "")
            return {
                "detection_boxes": box_ops.xyxy_to_yxyx(boxes),
                "detection_scores": tf.cast(det["scores"], tf.float32),
                "detection_classes": classes,
                "detection_class_names": names,
                "num_detections": num,
            }

        def serve_images(images):
            return outputs(resize(images, size))

        def decode_one(data):
            with tf.control_dependencies([_check_pixels(data, max_pixels)]):
                image = decode_oriented(data)  # EXIF orientation applied, as in training
            return resize(image, size)

        def serve_bytes(image_bytes):
            images = tf.map_fn(decode_one, image_bytes,
                               fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
            return outputs(images)

        def metadata():
            return {k: tf.constant(v) for k, v in settings.items()}

        self.serving_default = tf.function(serve_images, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        self.serving_bytes = tf.function(serve_bytes, input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes")])
        self.class_names = tf.function(class_names, input_signature=[])
        self.metadata = tf.function(metadata, input_signature=[])


def check_settings(score_threshold, nms_iou, max_detections, max_pixels=1):
    """Refuse post-processing settings out of range: the config's own ranges
    (``eval.*``, ``data.max_pixels``), one ConfigError naming the key."""
    for key, option, value in (("eval.score_threshold", "--score-threshold", score_threshold),
                               ("eval.nms_iou", "--nms-iou", nms_iou),
                               ("eval.max_detections", "--max-detections", max_detections),
                               ("data.max_pixels", "max_pixels", max_pixels)):
        check_value(key, value, f"export: {option}")


def export_saved_model(model, export_dir, class_names, score_threshold=0.005, nms_iou=0.5,
                       max_detections=300, overwrite=False, max_pixels=DEFAULT_MAX_PIXELS,
                       next_free=False, trained=True):
    """Write ``model`` as a SavedModel with the ``serving_default`` and ``serving_bytes``
    signatures (see the module docstring).

    Args:
      model: an mgdet Detector (``model(images) -> (deltas, logits)``, ``model.anchors``,
        ``model.image_size``), built or not.
      export_dir: the version folder to create, e.g. ``saved_models/default/1``.
      class_names: one name per class, in label order (written to ``assets/labels.txt``).
      score_threshold, nms_iou, max_detections: post-processing baked into the export.
      overwrite: replace an existing ``export_dir`` (default: refuse).
      max_pixels: ``serving_bytes`` refuses larger images (read from the header).
      next_free: ``export_dir`` is ``<base>/<version>``: when another export takes that version
        first, take the next free one (the folder actually written is returned).
      trained: recorded in ``metadata()``; False for an export of untrained weights.
    Returns:
      ``export_dir`` (with ``next_free``, the version folder written).
    Raises:
      FileExistsError: ``export_dir`` exists and ``overwrite`` is False.
      ValueError: the class names do not match the model's classes, or a bad setting.
    """
    class_names = [str(n) for n in class_names]
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and int(num_classes) != len(class_names):
        raise ValueError(f"export: the model has {num_classes} classes but {len(class_names)} "
                         "class names were given")
    if any("\n" in n or not n.strip() for n in class_names):
        raise ValueError("export: class names must be non-empty single-line strings")
    check_settings(score_threshold, nms_iou, int(max_detections), int(max_pixels))
    export_dir = os.path.normpath(export_dir)
    if not overwrite:
        refuse_existing(export_dir)
    size = build(model)
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    remove_stale_tmp(parent)
    # A dot-folder beside the target: not an integer version, so TF Serving ignores it.
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.path.basename(export_dir)}-", dir=parent)
    try:
        with open(os.path.join(tmp, OWNER_FILE), "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}")
        labels_src = os.path.join(tmp, LABELS_FILE)
        with open(labels_src, "w", encoding="utf-8") as f:
            f.write("\n".join(class_names) + "\n")
        settings = {"image_size": size, "num_classes": len(class_names),
                    "score_threshold": float(score_threshold), "nms_iou": float(nms_iou),
                    "max_detections": int(max_detections), "max_pixels": int(max_pixels),
                    "trained": bool(trained)}
        module = _DetectorServing(model, labels_src, size,
                                  detect_fn(model, float(score_threshold), float(nms_iou),
                                            int(max_detections)), settings, int(max_pixels))
        out = os.path.join(tmp, "model")
        tf.saved_model.save(module, out, signatures={
            "serving_default": module.serving_default.get_concrete_function(),
            "serving_bytes": module.serving_bytes.get_concrete_function(),
        })
        extra = os.path.join(out, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, "mgdet_export.json"), "w") as f:
            json.dump({**settings, "class_names": class_names,
                       "arch": type(model).__name__}, f, indent=1)
        if overwrite and os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        base, version = os.path.split(export_dir)
        export_dir = claim(out, base, None if next_free else version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return export_dir

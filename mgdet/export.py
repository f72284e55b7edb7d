"""SavedModel export for TensorFlow Serving (SPEC "Export and serving contract").

``export_saved_model`` writes a plain ``tf.Module`` (the detector's variables + traced serving
functions), so the export loads with ``tf.saved_model.load`` / ``saved_model_cli`` / TF Serving
without importing mgdet. Signatures:

``serving_default``
  input ``images``: uint8 ``[batch, height, width, 3]``, any size (resized inside to the model's
  ``S x S``, bilinear, as the evaluation pipeline does).
``serving_bytes``
  input ``image_bytes``: string ``[batch]``, encoded JPEG / PNG (also BMP / GIF, first frame),
  decoded with ``tf.io.decode_image`` one by one (images of different sizes may share a batch).

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
complete, so a Serving process polling the folder never loads a half-written export.
"""
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from mgdet import boxes as box_ops

DEFAULT_BASE_DIR = "saved_models"
LABELS_FILE = "labels.txt"


def next_version(base_dir):
    """The next free integer version under ``base_dir`` (1 when there is none)."""
    if not os.path.isdir(base_dir):
        return 1
    versions = [int(d) for d in os.listdir(base_dir)
                if d.isdigit() and os.path.isdir(os.path.join(base_dir, d))]
    return max(versions, default=0) + 1


def _build(model):
    """Create ``model``'s variables (one forward pass on zeros); returns its input size S."""
    size = int(model.image_size)
    model(tf.zeros([1, size, size, 3], tf.float32), training=False)
    return size


def _resize_to(images_uint8, size):
    """uint8 ``[B, H, W, 3]`` (or one ``[H, W, 3]``) -> float32 at ``size`` x ``size``, 0..255."""
    return tf.image.resize(tf.cast(images_uint8, tf.float32), [size, size], method="bilinear",
                           antialias=False)


def _detect_fn(model, score_threshold, nms_iou, max_detections):
    """``images float32 [B, S, S, 3] -> {"boxes", "scores", "classes", "num_detections"}``
    with the given post-processing settings (the model's own decode + NMS)."""
    from mgdet import postprocess
    # The anchors become an in-graph constant: a captured eager tensor would be an extra graph
    # input for the converters (tf2onnx).
    anchors = np.asarray(model.anchors, np.float32)

    def detect(images):
        deltas, logits = model(images, training=False)
        return postprocess.postprocess(deltas, logits, tf.constant(anchors),
                                       score_threshold=score_threshold, nms_iou=nms_iou,
                                       max_detections=max_detections)
    return detect


def _raw_variable(variable):
    """The ``tf.Variable`` under a Keras 3 variable (itself when it is one already)."""
    value = getattr(variable, "value", None)
    if isinstance(variable, tf.Variable) or not isinstance(value, tf.Variable):
        return variable
    return value


class _DetectorServing(tf.Module):
    """What the SavedModel holds: the model's variables, the labels asset, the functions."""

    def __init__(self, model, labels_path, image_size, detect, settings):
        super().__init__(name="mgdet_detector")
        # Only the variables are tracked (not the Keras objects): loading then needs no Keras
        # class. The raw tf.Variables, not Keras 3's wrappers: a wrapper is exported as a copy
        # that TF1-style loaders (saved_model_cli run, TF Serving's session bundle) restore
        # while the functions read the original, left uninitialized.
        self.model_variables = [_raw_variable(v) for v in model.variables]
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
            return outputs(_resize_to(images, size))

        def decode_one(data):
            image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
            return _resize_to(tf.ensure_shape(image, [None, None, 3]), size)

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


def export_saved_model(model, export_dir, class_names, score_threshold=0.005, nms_iou=0.5,
                       max_detections=300, overwrite=False):
    """Write ``model`` as a SavedModel with the ``serving_default`` and ``serving_bytes``
    signatures (see the module docstring).

    Args:
      model: an mgdet Detector (``model(images) -> (deltas, logits)``, ``model.anchors``,
        ``model.image_size``), built or not.
      export_dir: the version folder to create, e.g. ``saved_models/default/1``.
      class_names: one name per class, in label order (written to ``assets/labels.txt``).
      score_threshold, nms_iou, max_detections: post-processing baked into the export.
      overwrite: replace an existing ``export_dir`` (default: refuse).
    Returns:
      ``export_dir``.
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
    if not 0.0 <= score_threshold < 1.0 or not 0.0 < nms_iou <= 1.0 or int(max_detections) < 1:
        raise ValueError("export: need score_threshold in [0, 1), nms_iou in (0, 1] and "
                         f"max_detections >= 1, got {score_threshold}, {nms_iou}, {max_detections}")
    export_dir = os.path.normpath(export_dir)
    if os.path.exists(export_dir) and os.listdir(export_dir) and not overwrite:
        raise FileExistsError(f"export: {export_dir!r} already exists; choose another version "
                              "(or remove it)")
    size = _build(model)
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    # A dot-folder beside the target: not an integer version, so TF Serving ignores it.
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(export_dir)}-", dir=parent)
    try:
        labels_src = os.path.join(tmp, LABELS_FILE)
        with open(labels_src, "w", encoding="utf-8") as f:
            f.write("\n".join(class_names) + "\n")
        settings = {"image_size": size, "num_classes": len(class_names),
                    "score_threshold": float(score_threshold), "nms_iou": float(nms_iou),
                    "max_detections": int(max_detections)}
        module = _DetectorServing(model, labels_src, size,
                                  _detect_fn(model, float(score_threshold), float(nms_iou),
                                             int(max_detections)), settings)
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
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.replace(out, export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return export_dir


def run_export(config, weights, name=None, version=None, score_threshold=None, nms_iou=None,
               max_detections=None, base_dir=DEFAULT_BASE_DIR):
    """``cli.py export``: build ``config``'s detector, load ``weights``, export it to
    ``<base_dir>/<name>/<version>/``.

    Args:
      config: :class:`mgdet.config.Config`.
      weights: ``.weights.h5`` file (None: the initialization, e.g. to test serving).
      name: model name (default ``config.name``).
      version: integer version (default: the next free one).
      score_threshold, nms_iou, max_detections: default ``config.eval``'s.
      base_dir: the models folder.
    Returns:
      the version folder written.
    """
    from mgdet.predict import load_detector
    model, class_names = load_detector(config, weights)
    e = config.eval
    name = name or config.name
    base = os.path.join(base_dir, name)
    if version is None:
        version = next_version(base)
    elif int(version) < 1:
        raise ValueError(f"export: version must be a positive integer, got {version}")
    return export_saved_model(
        model, os.path.join(base, str(int(version))), class_names,
        score_threshold=e.score_threshold if score_threshold is None else score_threshold,
        nms_iou=e.nms_iou if nms_iou is None else nms_iou,
        max_detections=e.max_detections if max_detections is None else max_detections)


# --------------------------------------------------------------------------------------------
# Optional formats: ONNX (tf2onnx) and TFLite
# --------------------------------------------------------------------------------------------

def _numeric_serving_fn(model, score_threshold, nms_iou, max_detections):
    """``serving_default`` without the string output (converters do not take string ops)."""
    size = int(model.image_size)
    detect = _detect_fn(model, score_threshold, nms_iou, max_detections)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(images):
        det = detect(_resize_to(images, size))
        return {"detection_boxes": box_ops.xyxy_to_yxyx(det["boxes"]),
                "detection_scores": det["scores"],
                "detection_classes": det["classes"],
                "num_detections": det["num_detections"]}
    return serve


def export_onnx(model, path, score_threshold=0.005, nms_iou=0.5, max_detections=300, opset=17):
    """ONNX export through tf2onnx (``pip install tf2onnx onnxruntime``).

    Input ``images`` uint8 ``[batch, height, width, 3]`` (resized inside); outputs
    ``detection_boxes`` / ``detection_scores`` / ``detection_classes`` (int32, 0-based) /
    ``num_detections`` as the SavedModel's (no ``detection_class_names``: ONNX has no string
    ops for it). NMS is ONNX's NonMaxSuppression. Returns ``path``.
    """
    try:
        import tf2onnx
    except ImportError as err:
        raise ImportError("ONNX export needs tf2onnx: pip install tf2onnx onnxruntime") from err
    _build(model)
    fn = _numeric_serving_fn(model, float(score_threshold), float(nms_iou), int(max_detections))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=opset,
                                  output_path=path)
    return path


def export_tflite(model, path):
    """Float32 TFLite export of the network and box decoding (no NMS).

    Input ``images``: float32 ``[1, S, S, 3]`` RGB 0..255, already resized to the model's input.
    Outputs: ``boxes`` float32 ``[1, N, 4]`` (ymin, xmin, ymax, xmax) normalized and clipped, one
    per anchor; ``scores`` float32 ``[1, N, C]`` sigmoid scores. The class-wise NMS stays with the
    application: ``tf.image.combined_non_max_suppression`` is not a TFLite builtin (it would need
    the Flex delegate, which the stock interpreter lacks). Returns ``path``.
    """
    size = _build(model)
    anchors = np.asarray(model.anchors, np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="images")])
    def raw(images):
        deltas, logits = model(images, training=False)
        boxes = tf.clip_by_value(box_ops.decode(deltas, tf.constant(anchors)), 0.0, 1.0)
        return {"boxes": box_ops.xyxy_to_yxyx(boxes), "scores": tf.sigmoid(logits)}

    # Through a SavedModel of the raw variables: the converter then freezes them. From the
    # concrete function directly, Keras 3's variables stay READ_VARIABLE ops that the
    # interpreter reads uninitialized (NaN outputs).
    module = tf.Module()
    module.model_variables = [_raw_variable(v) for v in model.variables]
    module.raw = raw
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp,
                            signatures={"serving_default": raw.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        data = converter.convert()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path

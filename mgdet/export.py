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
import errno
import json
import os
import shutil
import socket
import tempfile
import time

import numpy as np
import tensorflow as tf

from mgdet import boxes as box_ops
from mgdet.config import ConfigError, check_name
from mgdet.data.common import DEFAULT_MAX_PIXELS  # noqa: F401 - the one limit, re-exported
from mgdet.data.exif import decode_oriented

DEFAULT_BASE_DIR = "saved_models"
LABELS_FILE = "labels.txt"
TMP_PREFIX = ".tmp-"
OWNER_FILE = ".owner"  # "<host> <pid>" of the export writing a temporary folder


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


def _header_uint(data, offset, nbytes, little_endian=False):
    """Unsigned integer of ``nbytes`` (2 or 4) at ``offset`` of the string ``data`` -> int64."""
    raw = tf.io.decode_raw(tf.strings.substr(data, offset, nbytes), tf.uint8)
    raw = tf.cast(tf.ensure_shape(raw, [nbytes]), tf.int64)
    order = range(nbytes) if little_endian else range(nbytes - 1, -1, -1)
    return tf.add_n([raw[i] * (256 ** k) for k, i in enumerate(order)])


def header_size(data):
    """Height and width (int64 scalars) read from the header of an encoded image, without
    decoding it: JPEG (``tf.io.extract_jpeg_shape``), PNG (IHDR, big-endian), GIF (logical
    screen), BMP (``|height|``: negative for top-down rows) and WebP (VP8 / VP8L / VP8X). Any
    other bytes: (0, 0), left to ``tf.io.decode_image`` to refuse."""
    jpeg_data = data
    data = tf.strings.substr(data, 0, 32) + b"\0" * 32  # short inputs read as zeros
    magic = tf.strings.substr(data, 0, 4)
    webp = tf.logical_and(tf.equal(magic, b"RIFF"),
                          tf.equal(tf.strings.substr(data, 8, 4), b"WEBP"))
    chunk = tf.strings.substr(data, 12, 4)
    kind = tf.case([  # the format: an index into ``branches``
        (tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff"), lambda: 1),
        (tf.equal(magic, b"\x89PNG"), lambda: 2),
        (tf.equal(magic, b"GIF8"), lambda: 3),
        (tf.equal(tf.strings.substr(data, 0, 2), b"BM"), lambda: 4),
        (tf.logical_and(webp, tf.equal(chunk, b"VP8 ")), lambda: 5),
        (tf.logical_and(webp, tf.equal(chunk, b"VP8L")), lambda: 6),
        (tf.logical_and(webp, tf.equal(chunk, b"VP8X")), lambda: 7),
    ], default=lambda: 0)
    kind = tf.convert_to_tensor(kind, tf.int32)  # eager: tf.case gives a Python int

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(jpeg_data), tf.int64)
        return shape[0], shape[1]

    def bmp():  # int32 little-endian width at 18, height at 22 (negative: top-down rows)
        signed = tf.bitcast(tf.cast(_header_uint(data, 22, 4, True), tf.uint32), tf.int32)
        return tf.abs(tf.cast(signed, tf.int64)), _header_uint(data, 18, 4, True)

    def vp8l():  # 14 bits width - 1, then 14 bits height - 1, little-endian from byte 21
        bits = _header_uint(data, 21, 4, little_endian=True)
        return bits // 16384 % 16384 + 1, bits % 16384 + 1

    def vp8x():  # 24-bit width - 1 and height - 1 at bytes 24 and 27
        lo = _header_uint(data, 24, 4, little_endian=True) % 16777216
        hi = _header_uint(data, 27, 4, little_endian=True) % 16777216
        return hi + 1, lo + 1

    branches = [
        lambda: (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
        jpeg,
        lambda: (_header_uint(data, 20, 4), _header_uint(data, 16, 4)),
        lambda: (_header_uint(data, 8, 2, True), _header_uint(data, 6, 2, True)),
        bmp,
        lambda: (_header_uint(data, 28, 2, True) % 16384, _header_uint(data, 26, 2, True) % 16384),
        vp8l,
        vp8x,
    ]
    return tf.switch_case(kind, branches)


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
            with tf.control_dependencies([_check_pixels(data, max_pixels)]):
                image = decode_oriented(data)  # EXIF orientation applied, as in training
            return _resize_to(image, size)

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


def _alive(owner):
    """Whether the export named by an owner file's text ``"<host> <pid>"`` still runs (an
    export on another host counts as alive for a day)."""
    try:
        host, pid = owner.split()
        pid = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale_tmp(parent, min_age_s=60.0):
    """Remove the temporary folders (``.tmp-*``) of killed exports from ``parent``: those whose
    owner process is gone, those of another host older than a day, those without an owner file
    older than ``min_age_s``. Returns the removed paths."""
    removed = []
    if not os.path.isdir(parent):
        return removed
    for entry in os.listdir(parent):
        path = os.path.join(parent, entry)
        if not entry.startswith(TMP_PREFIX) or not os.path.isdir(path):
            continue
        age = time.time() - os.path.getmtime(path)
        try:
            with open(os.path.join(path, OWNER_FILE)) as f:
                alive = _alive(f.read())
        except OSError:
            alive = age < min_age_s
        if alive is None:
            alive = age < 86400
        if not alive:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _refuse_existing(export_dir):
    if os.path.isdir(export_dir) and os.listdir(export_dir):
        raise FileExistsError(f"export: {export_dir!r} already exists; choose another --version "
                              "(default: the next free one) or remove it")


def check_settings(score_threshold, nms_iou, max_detections, max_pixels=1):
    """Refuse post-processing settings out of range: one ConfigError naming the option."""
    for option, value, ok, allowed in (
            ("--score-threshold", score_threshold, 0.0 <= score_threshold < 1.0, "[0, 1)"),
            ("--nms-iou", nms_iou, 0.0 < nms_iou <= 1.0, "(0, 1]"),
            ("--max-detections", max_detections, 1 <= max_detections <= 100_000,
             "1 to 100000"),
            ("max_pixels", max_pixels, 1 <= max_pixels, ">= 1")):
        if not ok:
            raise ConfigError(f"export: {option} must be in {allowed}, got {value}")


def _claim(out, base, version=None):
    """Rename the finished export ``out`` to ``base/<version>`` (None: the next free version)
    and return that folder. ``rename`` fails when the target holds files, so two exports never
    take one version: without ``version`` the later one takes the next number, with it a
    FileExistsError is raised."""
    while True:
        target = os.path.join(base, str(next_version(base) if version is None else version))
        try:
            os.rename(out, target)
            return target
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if version is not None:
                raise FileExistsError(f"export: {target!r} was written by another export "
                                      "meanwhile; choose another --version") from None


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
        _refuse_existing(export_dir)
    size = _build(model)
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
                                  _detect_fn(model, float(score_threshold), float(nms_iou),
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
        export_dir = _claim(out, base, None if next_free else version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return export_dir


EXPORT_FORMATS = ("saved_model", "onnx", "tflite")
DEFAULT_FILE_DIR = "exports"  # ONNX / TFLite files: exports/<name>/<name>[-<quantize>].<ext>


ONNX_EXTRA = 'pip install "mgdet[onnx]"'  # tf2onnx and onnxruntime


def check_format(fmt, quantize):
    """Refuse a format / quantization pair that does not exist, or ``onnx`` without tf2onnx
    installed (one line, before any work): ``quantize`` (None = "none") applies to ``tflite``
    only."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"export: --format must be one of {', '.join(EXPORT_FORMATS)}, got "
                          f"{fmt!r}")
    if quantize not in (None,) + TFLITE_QUANTIZE:
        raise ConfigError(f"export: --quantize must be one of {', '.join(TFLITE_QUANTIZE)}, "
                          f"got {quantize!r}")
    if fmt != "tflite" and quantize not in (None, "none"):
        raise ConfigError(f"export: --quantize {quantize} applies to --format tflite only "
                          f"(--format {fmt} is float32); drop --quantize or use --format tflite")
    if fmt == "onnx":
        try:
            import tf2onnx  # noqa: F401
        except ImportError:
            raise ConfigError(f"export: --format onnx needs tf2onnx, not installed: "
                              f"{ONNX_EXTRA}") from None


def export_file_path(name, fmt, quantize=None, base_dir=DEFAULT_FILE_DIR):
    """Default file of an ONNX / TFLite export: ``exports/<name>/<name>.onnx``,
    ``exports/<name>/<name>-<float32|float16|int8>.tflite``."""
    if fmt == "onnx":
        return os.path.join(base_dir, name, f"{name}.onnx")
    kind = {None: "float32", "none": "float32"}.get(quantize, quantize)
    return os.path.join(base_dir, name, f"{name}-{kind}.tflite")


def _check_weights(weights, untrained):
    """Weights are required; ``untrained`` (and only it) allows none."""
    if weights is None and not untrained:
        raise ConfigError("export: no --weights given: pass a run folder or its .weights.h5 "
                          "(--untrained exports the random initialization, for tests only)")
    if weights is not None and untrained:
        raise ConfigError("export: --untrained and --weights contradict each other: drop one")


def run_export(config, weights, name=None, version=None, score_threshold=None, nms_iou=None,
               max_detections=None, base_dir=DEFAULT_BASE_DIR, format="saved_model",
               quantize=None, out=None, calibration_images=32, untrained=False):
    """``cli.py export``: build ``config``'s detector, load ``weights``, export it to
    ``<base_dir>/<name>/<version>/``.

    Args:
      config: :class:`mgdet.config.Config`.
      weights: ``.weights.h5`` file; None only with ``untrained`` (the initialization, e.g. to
        test serving; recorded as ``trained: false`` in the SavedModel's metadata).
      name: model name (default ``config.name``).
      version: integer version (default: the next free one, claimed atomically).
        An existing version is refused (``FileExistsError``).
      score_threshold, nms_iou, max_detections: default ``config.eval``'s.
      base_dir: the models folder.
      format: ``saved_model`` (TF Serving, above), ``onnx`` (:func:`export_onnx`, the same
        settings) or ``tflite`` (:func:`export_tflite`, no NMS).
      quantize: TFLite only: ``none`` / ``float16`` / ``int8`` (calibrated on
        ``calibration_images`` images of the config's training split).
      out: the ONNX / TFLite file (default :func:`export_file_path`; an existing one is refused).
      untrained: allow ``weights=None``.
    Returns:
      the version folder or file written. A file export writes ``labels.txt`` beside it.
    Raises:
      ConfigError: a bad option (before anything is loaded).
    """
    from mgdet.predict import load_detector
    check_format(format, quantize)
    if format == "saved_model" and out is not None or format != "saved_model" and version:
        raise ConfigError(f"export: --{'out' if out else 'version'} does not apply to --format "
                          f"{format} (--version numbers SavedModels, --out names ONNX / TFLite "
                          "files)")
    e = config.eval
    name = name or config.name
    check_name(name, "export: model name", f"{base_dir}/<name>")
    settings = dict(
        score_threshold=e.score_threshold if score_threshold is None else score_threshold,
        nms_iou=e.nms_iou if nms_iou is None else nms_iou,
        max_detections=e.max_detections if max_detections is None else max_detections)
    check_settings(**settings)
    if format != "saved_model":
        path = out or export_file_path(name, format, quantize)
        if os.path.exists(path):
            raise FileExistsError(f"export: {path!r} already exists; give another --out or "
                                  "remove it")
        _check_weights(weights, untrained)
        model, class_names = load_detector(config, weights)
        if format == "onnx":
            export_onnx(model, path, **settings)
        else:
            images = (representative_images(config, calibration_images)
                      if quantize == "int8" else None)
            export_tflite(model, path, quantize=quantize or "none", representative_images=images)
        with open(os.path.join(os.path.dirname(os.path.abspath(path)), LABELS_FILE), "w",
                  encoding="utf-8") as f:
            f.write("\n".join(class_names) + "\n")
        return path
    base = os.path.join(base_dir, name)
    if version is not None and int(version) < 1:
        raise ConfigError(f"export: --version must be a positive integer, got {version}")
    export_dir = os.path.join(base, str(int(version) if version else next_version(base)))
    _refuse_existing(export_dir)  # before loading anything
    _check_weights(weights, untrained)
    model, class_names = load_detector(config, weights)
    return export_saved_model(model, export_dir, class_names, max_pixels=config.data.max_pixels,
                              next_free=version is None, trained=weights is not None,
                              **settings)


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
    """ONNX export through tf2onnx (``pip install "mgdet[onnx]"``).

    Input ``images`` uint8 ``[batch, height, width, 3]`` (resized inside); outputs
    ``detection_boxes`` / ``detection_scores`` / ``detection_classes`` (int32, 0-based) /
    ``num_detections`` as the SavedModel's (no ``detection_class_names``: ONNX has no string
    ops for it). NMS is ONNX's NonMaxSuppression. Returns ``path``.
    """
    try:
        import tf2onnx
    except ImportError as err:
        raise ImportError(f"ONNX export needs tf2onnx: {ONNX_EXTRA}") from err
    _build(model)
    fn = _numeric_serving_fn(model, float(score_threshold), float(nms_iou), int(max_detections))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=opset,
                                  output_path=path)
    return path


TFLITE_QUANTIZE = ("none", "float16", "int8")
DECODE_SCOPE = "mgdet_decode"  # name scope of the float box decoding and sigmoid in TFLite


def export_tflite(model, path, quantize="none", representative_images=None):
    """TFLite export of the network and box decoding (no NMS).

    Input ``images``: float32 ``[1, S, S, 3]`` RGB 0..255, already resized to the model's input.
    Outputs: ``boxes`` float32 ``[1, N, 4]`` (ymin, xmin, ymax, xmax) normalized and clipped, one
    per anchor; ``scores`` float32 ``[1, N, C]`` sigmoid scores. The class-wise NMS stays with the
    application: ``tf.image.combined_non_max_suppression`` is not a TFLite builtin (it would need
    the Flex delegate, which the stock interpreter lacks).

    Args:
      model: an mgdet Detector, built or not.
      path: the ``.tflite`` file to write.
      quantize: ``"none"`` (float32), ``"float16"`` (float16 weights, float32 compute) or
        ``"int8"``: full-integer post-training quantization of the network (int8 weights and
        activations, per-channel conv weights), calibrated on ``representative_images``. The
        box decoding and the sigmoid (name scope ``mgdet_decode``) stay float32: the network's
        int8 deltas and logits are dequantized before them, so boxes and scores keep float
        resolution (int8 scores would be multiples of 1/256).
      representative_images: for int8, an iterable of float32 images ``[S, S, 3]`` (or
        ``[1, S, S, 3]``) in 0..255, preprocessed as training feeds the model (a few dozen;
        :func:`representative_images` draws them from a config's training split).
    Returns:
      ``path``.
    """
    if quantize not in TFLITE_QUANTIZE:
        raise ValueError(f"export_tflite: quantize must be one of {TFLITE_QUANTIZE}, got "
                         f"{quantize!r}")
    images_in = list(representative_images or ()) if quantize == "int8" else None
    if images_in == []:
        raise ValueError("export_tflite: quantize='int8' needs representative_images (float32 "
                         "[S, S, 3] images in 0..255, a few dozen)")
    size = _build(model)
    anchors = np.asarray(model.anchors, np.float32)
    if images_in:
        images_in = [np.asarray(x, np.float32).reshape(1, size, size, 3) for x in images_in]

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="images")])
    def raw(images):
        deltas, logits = model(images, training=False)
        with tf.name_scope(DECODE_SCOPE):
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
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            data = _int8_convert(converter, images_in)
        else:
            data = converter.convert()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _int8_convert(converter, images):
    """Full-integer quantization except the ops under :data:`DECODE_SCOPE` (and the outputs).

    This is the selective quantization of ``tf.lite.experimental.QuantizationDebugger``
    (``denylisted_nodes``) without its debug build: calibrate once, then quantize with the
    decode ops' output tensors denylisted, so they run in float32.
    """
    from tensorflow.lite.python import convert as tflite_convert  # the debugger's own call

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ({"images": x} for x in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    calibrated = converter.convert()
    names = [d["name"] for d in tf.lite.Interpreter(model_content=calibrated).get_tensor_details()]
    float_nodes = [n for n in names
                   if n.startswith(DECODE_SCOPE + "/") or n.startswith("StatefulPartitionedCall")]
    return tflite_convert.mlir_quantize(calibrated, fully_quantize=False,
                                        denylisted_nodes=float_nodes)


def representative_images(config, num_images=32):
    """The first ``num_images`` images of ``config``'s TRAINING split, preprocessed as training
    feeds them to the model without augmentation (resized to ``S x S``, float32 0..255):
    a list of ``[S, S, 3]`` arrays, the calibration set of the int8 TFLite export."""
    from mgdet.data import get_source
    from mgdet.data import pipeline as data_pipeline
    d, m = config.data, config.model
    source = get_source(d, image_size=m.image_size)
    ds = data_pipeline.make_dataset(source.dataset("train"), m.image_size, 1, d.max_objects,
                                    training=True, seed=d.seed, shuffle_buffer=0,
                                    augment="none", name="calibration")
    return [images[0].numpy() for images, _ in ds.take(int(num_images))]

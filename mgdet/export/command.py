"""``mgdet export``: a trained run's detector to a SavedModel version folder, an ONNX file or a
TFLite file, with the options checked before anything is loaded (:func:`run_export`)."""
import os

from mgdet.config import EXPORT_FORMATS, QUANTIZE, ConfigError, check_name
from mgdet.export.files import ONNX_EXTRA, export_onnx, export_tflite, representative_images
from mgdet.export.saved_model import (DEFAULT_BASE_DIR, LABELS_FILE, check_settings,
                                      export_saved_model)
from mgdet.export.versions import next_version, refuse_existing
from mgdet.training.trained import load_detector

DEFAULT_FILE_DIR = "exports"  # ONNX / TFLite files: exports/<name>/<name>[-<quantize>].<ext>


def check_format(fmt, quantize):
    """Refuse a format / quantization pair that does not exist, or ``onnx`` without tf2onnx
    installed (one line, before any work): ``quantize`` (None = "none") applies to ``tflite``
    only."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"export: --format must be one of {', '.join(EXPORT_FORMATS)}, got "
                          f"{fmt!r}")
    if quantize not in (None,) + QUANTIZE:
        raise ConfigError(f"export: --quantize must be one of {', '.join(QUANTIZE)}, "
                          f"got {quantize!r}")
    if fmt != "tflite" and quantize not in (None, "none"):
        raise ConfigError(f"export: --quantize {quantize} applies to --format tflite only "
                          f"(--format {fmt} is float32); drop --quantize or use --format tflite")
    if fmt == "onnx":
        try:
            import tf2onnx  # noqa: F401 (an optional extra: imported to check it is there)
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
    refuse_existing(export_dir)  # before loading anything
    _check_weights(weights, untrained)
    model, class_names = load_detector(config, weights)
    return export_saved_model(model, export_dir, class_names, max_pixels=config.data.max_pixels,
                              next_free=version is None, trained=weights is not None,
                              **settings)

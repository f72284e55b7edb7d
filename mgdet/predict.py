"""Detect objects in image files with an exported SavedModel or trained weights (``cli.py
predict``): JSON detections on stdout, pictures with boxes in ``out_dir``.

    run_predict("saved_models/default", ["images/"], "runs/predict")       # newest version
    run_predict("saved_models/default/3", ["a.jpg", "b.png"], "runs/predict")
    run_predict("runs/default/final.weights.h5", ["images/"], "runs/predict")  # + config.json beside
"""
import json
import logging
import os
import sys

import numpy as np

from mgdet.config import ConfigError
from mgdet.data.common import DEFAULT_MAX_PIXELS, probe_image

log = logging.getLogger("mgdet.predict")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

def resolve_saved_model(path):
    """A SavedModel folder: ``path`` itself when it holds ``saved_model.pb``, else its highest
    integer version subfolder (TF Serving's ``saved_models/<name>/<version>/`` layout).

    Raises:
      FileNotFoundError naming the folder when neither exists.
    """
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if os.path.isdir(path):
        versions = [int(d) for d in os.listdir(path) if d.isdigit()
                    and os.path.isfile(os.path.join(path, d, "saved_model.pb"))]
        if versions:
            return os.path.join(path, str(max(versions)))
    raise FileNotFoundError(f"no SavedModel in {path!r}: expected saved_model.pb there or in an "
                            "integer version folder (saved_models/<name>/<version>/)")


RUN_CONFIG = "config.json"  # what ``train`` writes into its run folder beside the weights


class ModelFileError(ConfigError):
    """A weights or model file that cannot be loaded (not a weights file, truncated, another
    architecture, refused by Keras' safe mode); the message names the file and the fix."""


def run_config_path(weights):
    """The ``config.json`` of the training run that wrote ``weights`` (a run folder or a file in
    it), or None when there is none."""
    folder = weights if os.path.isdir(weights) else os.path.dirname(os.path.abspath(weights))
    path = os.path.join(folder, RUN_CONFIG)
    return path if os.path.isfile(path) else None


def _config_beside(weights):
    """The training run's ``config.json`` next to a weights file (``cli.py train`` writes one),
    as ``(Config, class_names or None)``; ``(None, None)`` when there is none."""
    path = run_config_path(weights)
    if path is None:
        return None, None
    from mgdet.config import load_config
    # the run's weights hold the trained backbone: its ImageNet starting file is not needed
    config = load_config(path, {"model": {"weights": None}})
    return config, list(config.class_names) or None


def resolve_weights(path):
    """A run folder -> its ``final.weights.h5``; a file -> itself (FileNotFoundError, saying
    what to give, when neither exists).

    The final weights, not ``best.weights.h5``: a model picked on some images must not be
    reported on them, and the best is only ever picked on the validation split held out of the
    training images (``data.val_fraction``); name it explicitly to use it."""
    if path and os.path.isdir(path):
        final = os.path.join(path, "final.weights.h5")
        if os.path.isfile(final):
            return final
        hint = (f"; {os.path.join(path, 'best.weights.h5')} (best validation AP) exists: "
                "pass it explicitly" if os.path.isfile(os.path.join(path, "best.weights.h5"))
                else "")
        raise FileNotFoundError(f"no final.weights.h5 in {path}: the run has not finished "
                                f"(`cli.py train --resume` finishes it){hint}")
    if path and not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} not found: give a .weights.h5 file written by "
                                "`cli.py train` or its output folder")
    return path


def class_names_of(config, weights=None):
    """Class names of a config's dataset: the config's own (a run's ``config.json``), the run's
    ``config.json`` beside ``weights``, else ``data.class_names``, else the dataset's own
    (``mgdet.data``)."""
    if config.class_names:
        return list(config.class_names)
    if weights:
        _, names = _config_beside(weights)
        if names:
            return list(names)
    if config.data.class_names:
        return list(config.data.class_names)
    import mgdet.data as data
    if hasattr(data, "class_names_for"):
        return list(data.class_names_for(config.data, image_size=config.model.image_size))
    _, names = data.load_source(config.data, "eval", image_size=config.model.image_size)
    return list(names)


def load_detector(config=None, weights=None, class_names=None, **eval_overrides):
    """Build the detector of ``config`` (default: the ``config.json`` beside ``weights``) and load
    ``weights`` (a ``.weights.h5`` file; None keeps the initialization).

    Args:
      config: :class:`mgdet.config.Config` or None.
      weights: weights file or None.
      class_names: overrides the dataset's class names (their count sets ``num_classes``).
      eval_overrides: ``score_threshold`` / ``nms_iou`` / ``max_detections`` replacing the
        config's ``eval`` values (None entries are ignored).
    Returns:
      ``(model, class_names)``, the model built (variables created).
    """
    import tensorflow as tf

    from mgdet import build_model
    from mgdet.config import replace
    if config is None:
        if not weights:
            raise ValueError("load_detector: give a config, or a weights file with its run's "
                             "config.json beside it")
        config, names = _config_beside(weights)
        if config is None:
            raise FileNotFoundError(f"no config.json beside {weights!r}: pass the training config "
                                    "(--config) that produced these weights")
        class_names = class_names or names
    overrides = {k: v for k, v in eval_overrides.items() if v is not None}
    if overrides:
        config = replace(config, eval=overrides)
    class_names = list(class_names) if class_names else class_names_of(config, weights)
    # trained weights replace the backbone's ImageNet starting weights: do not read those
    model = build_model(replace(config, model={"weights": None}) if weights else config,
                        class_names=class_names)
    size = config.model.image_size
    model(tf.zeros([1, size, size, 3], tf.float32), training=False)  # create the variables
    if weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights file {weights!r} not found")
        load_weights_file(model, weights, config)
    return model, class_names


def _model_settings(config):
    m = config.model
    return (f"model.arch={m.arch} model.backbone={m.backbone} model.width={m.width} "
            f"model.image_size={m.image_size}")


def load_weights_file(model, weights, config):
    """``model.load_weights(weights)``; a file that does not load is one
    :class:`ModelFileError` naming it, the model settings it was tried with and the fix."""
    if not weights.endswith((".h5", ".keras")):
        raise ModelFileError(f"weights file {weights!r} is not a .weights.h5 file: give the "
                             "final.weights.h5 (or the folder) of an `mgdet train` run; "
                             "torchvision backbone weights go through `mgdet convert-weights` "
                             "into model.weights")
    try:
        model.load_weights(weights)
    except OSError as err:  # h5py: not an HDF5 file, truncated
        raise ModelFileError(f"weights file {weights!r} is not a readable .weights.h5 file "
                             f"({_first_line(err)}): give the final.weights.h5 (or the folder) of "
                             "a finished `mgdet train` run") from None
    except ValueError as err:
        raise ModelFileError(
            f"weights file {weights!r} does not fit the model built from the config "
            f"({_model_settings(config)}, {model.num_classes} classes): {_first_line(err)}; "
            "pass the run folder (its config.json is used) or the --config the weights were "
            "trained with") from None


def _first_line(err, limit=160):
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return line if len(line) <= limit else line[:limit] + "..."


def load_keras_file(path):
    """An mgdet detector saved with ``model.save(".keras")``, loaded in Keras' safe mode; any
    failure is one :class:`ModelFileError` naming the file and the fix."""
    import keras

    import mgdet.models  # noqa: F401  (registers the detector classes)
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - zip, JSON, unknown class, safe mode: one line
        if "safe_mode" in str(err) or "unsafe" in str(err):
            raise ModelFileError(f"model file {path!r} holds Python code (a Lambda layer or "
                                 "function) that Keras' safe mode refuses to run: mgdet loads "
                                 ".keras files of its own detectors only; save the detector "
                                 "with model.save() or pass its .weights.h5") from None
        raise ModelFileError(f"model file {path!r} is not a .keras file of an mgdet detector "
                             f"({_first_line(err)}): give a detector saved with model.save(), "
                             "a SavedModel folder, or a run folder") from None


class _SavedModelRunner:
    def __init__(self, path):
        import tensorflow as tf
        self.path = resolve_saved_model(path)
        self.loaded = tf.saved_model.load(self.path)
        self.fn = self.loaded.signatures["serving_default"]
        self.class_names = _saved_model_class_names(self.loaded, self.path)

    def __call__(self, image_uint8):
        import tensorflow as tf
        out = self.fn(images=tf.convert_to_tensor(image_uint8[None]))
        n = int(out["num_detections"][0])
        yxyx = out["detection_boxes"][0, :n].numpy()
        return (yxyx[:, [1, 0, 3, 2]], out["detection_scores"][0, :n].numpy(),
                out["detection_classes"][0, :n].numpy().astype(np.int64))


def _saved_model_class_names(loaded, path):
    if hasattr(loaded, "class_names"):
        return [n.decode() for n in loaded.class_names().numpy()]
    labels = os.path.join(path, "assets", "labels.txt")
    if os.path.isfile(labels):
        with open(labels, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    return None


class _KerasRunner:
    def __init__(self, path, config=None, model=None):
        if model is not None or path.endswith(".keras"):
            if model is None:
                model = load_keras_file(path)
            self.model = model
            names = getattr(model, "class_names", None)  # saved with the model, if given
            self.class_names = list(names) if names else None
        else:
            self.model, self.class_names = load_detector(config, path)
        self.size = int(self.model.image_size)

    def __call__(self, image_uint8):
        import tensorflow as tf
        image = tf.image.resize(tf.cast(image_uint8, tf.float32), [self.size, self.size],
                                method="bilinear", antialias=False)
        out = self.model.detect(image[None])
        n = int(np.asarray(out["num_detections"])[0])
        return (np.asarray(out["boxes"])[0, :n], np.asarray(out["scores"])[0, :n],
                np.asarray(out["classes"])[0, :n].astype(np.int64))


def model_runner(model):
    """:func:`load_runner`'s callable for a detector object already in memory."""
    return _KerasRunner(None, model=model)


def load_runner(model_path, config=None):
    """A callable ``uint8 [H, W, 3] -> (boxes xyxy normalized [K, 4], scores [K], classes [K])``
    with a ``class_names`` attribute, for a SavedModel folder, a training run folder (its
    ``final.weights.h5`` and ``config.json``), a ``.keras`` file or a weights file."""
    if os.path.isdir(model_path):
        if run_config_path(model_path) and not _has_saved_model(model_path):
            return _KerasRunner(resolve_weights(model_path), config)
        return _SavedModelRunner(model_path)
    if os.path.isfile(model_path):
        return _KerasRunner(model_path, config)
    raise FileNotFoundError(f"model {model_path!r} not found: give saved_models/<name>"
                            "[/<version>], a run folder, a .keras file or a .weights.h5 file")


def _has_saved_model(path):
    try:
        resolve_saved_model(path)
        return True
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

def list_images(inputs):
    """Image files among ``inputs`` (files, or folders searched recursively), sorted per folder.

    Raises:
      FileNotFoundError for an input path that does not exist.
    """
    files = []
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, names in os.walk(item):
                dirs.sort()
                files += [os.path.join(root, n) for n in sorted(names)
                          if n.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"input {item!r} is neither an image file nor a folder")
    return files


class ImageTooLarge(ValueError):
    """An image whose header gives more pixels than ``data.max_pixels`` (not decoded)."""


def _read_image(path, max_pixels=DEFAULT_MAX_PIXELS):
    """uint8 [H, W, 3] of an image file as displayed (EXIF orientation applied). An image whose
    header gives more than ``max_pixels`` pixels (``data.max_pixels``, as training and serving
    refuse them) raises :class:`ImageTooLarge` before anything is decoded."""
    import tensorflow as tf

    from mgdet.data.exif import decode_oriented
    kind, info = probe_image(path, max_pixels)
    if kind == "too_large":
        raise ImageTooLarge(f"image {path!r} is too large to decode ({info}; data.max_pixels)")
    return decode_oriented(tf.io.read_file(path)).numpy()


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

PREDICT_RUNS = "predict"  # default output: runs/predict, then runs/predict-2, -3, ...


def predict_out_dir(out_dir=None):
    """``out_dir`` as given, or the next free ``runs/predict``, ``runs/predict-2``, ... (the
    numbering of training runs, :func:`mgdet.rundir.resolve_run_dir`)."""
    if out_dir:
        return out_dir
    from mgdet.rundir import resolve_run_dir
    return resolve_run_dir(PREDICT_RUNS, log=lambda message: None)


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_out_dir(out_dir, inputs, files):
    """Refuse an ``out_dir`` that would overwrite or mix with the input images: equal to or
    inside an input folder, or the folder of an input image (ConfigError naming both)."""
    for item in inputs:
        if os.path.isdir(item) and _inside(out_dir, item):
            raise ConfigError(f"predict: --out-dir {out_dir!r} is inside the input folder "
                              f"{item!r}: its pictures would overwrite or join the images; "
                              "choose an --out-dir outside it")
    out = os.path.realpath(out_dir)
    for path in files:
        if os.path.dirname(os.path.realpath(path)) == out:
            raise ConfigError(f"predict: --out-dir {out_dir!r} holds the input image {path!r}, "
                              "which its pictures could overwrite; choose another --out-dir")


def run_predict(model_path, inputs, out_dir=None, score_threshold=0.3, class_names=None,
                config=None, print_json=True, progress=True):
    """Detect objects in images; print JSON lines and write annotated PNGs.

    Args:
      model_path: SavedModel (``saved_models/<name>`` -> newest version, or a version folder),
        a ``.keras`` file, or a ``.weights.h5`` file (its run's ``config.json`` beside it, or
        ``config``).
      inputs: image files and / or folders.
      out_dir: where ``<stem>.png`` pictures and ``detections.json`` go (default: the next
        free ``runs/predict[-N]``, :func:`predict_out_dir`); a folder holding or inside the
        inputs is refused.
      score_threshold: detections below it are dropped.
      class_names: override the model's class names.
      config: training config for a bare weights file.
      print_json: print one JSON object per image on stdout.
      progress: tqdm bar on stderr.
    Returns:
      list of ``{"image": path, "width", "height", "output": png path, "detections": [{"box":
      [xmin, ymin, xmax, ymax] pixels, "box_normalized": [...], "score", "class_id",
      "class_name"}]}``, one per readable image (unreadable ones, and images larger than
      ``data.max_pixels`` by their header, are skipped with a warning).
    """
    from tqdm.auto import tqdm

    from mgdet.drawing import draw_detections
    files = list_images(inputs)
    if not files:
        raise FileNotFoundError(f"no images found in {list(inputs)} "
                                f"(extensions {IMAGE_EXTENSIONS})")
    out_dir = predict_out_dir(out_dir)
    check_out_dir(out_dir, inputs, files)
    runner = load_runner(model_path, config)
    names = list(class_names) if class_names else runner.class_names
    max_pixels = config.data.max_pixels if config is not None else DEFAULT_MAX_PIXELS
    os.makedirs(out_dir, exist_ok=True)
    results, skipped, used = [], [], set()
    for path in tqdm(files, desc="predict", unit="image", disable=not progress, file=sys.stderr):
        try:
            image = _read_image(path, max_pixels)
        except Exception as err:  # noqa: BLE001 - any undecodable file is skipped and reported
            skipped.append(path)
            reason = err if isinstance(err, ImageTooLarge) else \
                f"not a readable image ({_first_line(err)})"
            log.warning("skipping %s: %s", path, reason)
            continue
        boxes, scores, classes = runner(image)
        keep = scores >= score_threshold
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        h, w = image.shape[:2]
        stem = os.path.splitext(os.path.basename(path))[0]
        out_name, k = stem, 1
        while out_name in used:  # same stem in two folders
            k += 1
            out_name = f"{stem}_{k}"
        used.add(out_name)
        png = os.path.join(out_dir, out_name + ".png")
        draw_detections(image, boxes, scores, classes, names).save(png)
        dets = []
        for box, score, c in zip(boxes, scores, classes):
            b = np.clip(box, 0.0, 1.0)
            dets.append({"box": [round(float(v), 2) for v in b * [w, h, w, h]],
                         "box_normalized": [round(float(v), 5) for v in b],
                         "score": round(float(score), 4), "class_id": int(c),
                         "class_name": names[int(c)] if names and 0 <= c < len(names) else str(c)})
        record = {"image": path, "width": int(w), "height": int(h), "output": png,
                  "detections": dets}
        results.append(record)
        if print_json:
            print(json.dumps(record), flush=True)
    with open(os.path.join(out_dir, "detections.json"), "w") as f:
        json.dump(results, f, indent=1)
    if skipped:
        print(f"predict: skipped {len(skipped)} unreadable image(s): {skipped[:5]}",
              file=sys.stderr)
    return results

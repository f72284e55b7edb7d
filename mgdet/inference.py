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

import tensorflow as tf
from tqdm.auto import tqdm

from mgdet.config import DEFAULT_MAX_PIXELS, ConfigError
from mgdet.data.common import IMAGE_EXTENSIONS, probe_image
from mgdet.data import exif
from mgdet.data.augment import resize
from mgdet.models.build import first_line, load_keras_file
from mgdet.training.rundir import resolve_run_dir, resolve_weights, run_config_path
from mgdet.training.trained import load_detector
from mgdet.viz.drawing import draw_detections

log = logging.getLogger("mgdet.inference")

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


class _SavedModelRunner:
    def __init__(self, path):
        self.path = resolve_saved_model(path)
        self.loaded = tf.saved_model.load(self.path)
        self.fn = self.loaded.signatures["serving_default"]
        self.class_names = _saved_model_class_names(self.loaded, self.path)

    def __call__(self, image_uint8):
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
        out = self.model.detect(resize(image_uint8, self.size)[None])
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


def read_image(path, max_pixels=DEFAULT_MAX_PIXELS):
    """uint8 [H, W, 3] of an image file as displayed (EXIF orientation applied). An image whose
    header gives more than ``max_pixels`` pixels (``data.max_pixels``, as training and serving
    refuse them) raises :class:`ImageTooLarge` before anything is decoded."""
    kind, info = probe_image(path, max_pixels)
    if kind == "too_large":
        raise ImageTooLarge(f"image {path!r} is too large to decode ({info}; data.max_pixels)")
    return exif.decode_oriented(tf.io.read_file(path)).numpy()


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

PREDICT_RUNS = "predict"  # default output: runs/predict, then runs/predict-2, -3, ...


def predict_out_dir(out_dir=None):
    """``out_dir`` as given, or the next free ``runs/predict``, ``runs/predict-2``, ... (the
    numbering of training runs, :func:`mgdet.training.rundir.resolve_run_dir`)."""
    if out_dir:
        return out_dir
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
            image = read_image(path, max_pixels)
        except Exception as err:  # noqa: BLE001 - any undecodable file is skipped and reported
            skipped.append(path)
            reason = err if isinstance(err, ImageTooLarge) else \
                f"not a readable image ({first_line(err)})"
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

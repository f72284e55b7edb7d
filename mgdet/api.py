"""The public Python API, re-exported by the package (``mgdet.train(cfg)``, ...); see the
README's "Python API". ``import mgdet`` stays free of TensorFlow: each function imports the
stages it runs (all of them import TensorFlow) when it is first called.

Boxes are ``[xmin, ymin, xmax, ymax]``; :func:`predict` returns them in the input image's
pixels.
"""
import collections
import os

import numpy as np

from mgdet.config import load_config

__all__ = ["load_config", "build_model", "build_datasets", "train", "evaluate",
           "export_saved_model", "predict", "load_pretrained", "Datasets"]

Datasets = collections.namedtuple("Datasets",
                                  "train eval class_names ground_truth steps_per_epoch")
Datasets.__doc__ = """Training and evaluation data of a config (:func:`build_datasets`).

train / eval: ``tf.data.Dataset`` of ``(images float32 [B, S, S, 3] in 0..255, targets)``;
targets hold ``"boxes"`` [B, M, 4] (relative xyxy), ``"labels"`` [B, M], ``"valid"`` [B, M].
class_names: one name per label. ground_truth: the eval split in COCO form (for pycocotools).
steps_per_epoch: training batches per epoch. ``train`` is one epoch of exactly that many batches
(``model.fit(data.train, epochs=n)`` trains n epochs); each pass draws a new shuffle and new
augmentation, and an image that fails to decode is replaced from the next pass.
"""


def build_datasets(cfg):
    """The training and evaluation datasets of ``cfg`` (:class:`Datasets`)."""
    from mgdet.data.datasets import build_datasets as build  # TensorFlow: imported on use
    train_ds, eval_ds, class_names, ground_truth, steps_per_epoch = build(cfg)
    # the training stream repeats forever (mgdet.training.loop passes steps_per_epoch to fit);
    # one epoch of it here, so that a plain model.fit(data.train) ends
    return Datasets(train_ds.take(steps_per_epoch), eval_ds, class_names, ground_truth,
                    steps_per_epoch)


def build_model(config, num_classes=None, class_names=None, bounding_box_format="rel_xyxy"):
    """A detector from a config: see :func:`mgdet.models.build.build_model`."""
    from mgdet.models.build import build_model as build  # TensorFlow: imported on use
    return build(config, num_classes, class_names, bounding_box_format)


def train(cfg, resume=False, out_dir=None, verbose="auto"):
    """Train ``cfg`` with the full recipe (``mgdet train``); returns the final COCO metrics.
    Outputs (checkpoints, best/final weights, eval.json, TensorBoard logs) go to ``out_dir``
    (default ``cfg.out_dir``: ``runs/<name>``)."""
    from mgdet.training.loop import train as run  # TensorFlow: imported on use
    return run(cfg, resume=resume, verbose=verbose, out_dir=out_dir)


def evaluate(model, cfg=None, per_class=False, progress=False):
    """COCO metrics (``"AP"``, ``"AP50"``, ... fractions in [0, 1]) on ``cfg``'s eval split.

    Args:
      model: a detector (:func:`mgdet.build_model`), or a ``.weights.h5`` file / run folder.
      cfg: the :class:`mgdet.config.Config` whose eval split is used; None for a weights file
        or run folder: the run's own ``config.json``.
      per_class: add ``"per_class"`` (AP per class name).
    """
    # TensorFlow: imported on use
    from mgdet.data.datasets import build_eval_dataset
    from mgdet.evaluation.coco import evaluate as run
    from mgdet.training.rundir import config_beside, resolve_weights
    from mgdet.training.trained import load_detector
    if isinstance(model, (str, os.PathLike)):
        weights = resolve_weights(os.fspath(model))
        cfg = cfg or config_beside(weights)[0]
        model, _ = load_detector(cfg, weights)
    if cfg is None:
        raise ValueError("evaluate: give cfg (the config whose eval split is used) with a model")
    dataset, ground_truth = build_eval_dataset(cfg)
    return run(model, dataset, ground_truth, per_class=per_class, progress=progress)


def load_pretrained(path_or_name):
    """A ready detector (weights loaded, ``class_names`` set) from a converted checkpoint.

    Args:
      path_or_name: a run folder or ``.weights.h5`` with its ``config.json`` (what ``mgdet
        convert-weights`` and ``mgdet train`` write), a ``.keras`` file, one of the paper
        authors' checkpoints (``.pth`` / ``.safetensors``, converted in memory), or a name of
        ``mgdet.convert.authors.ZOO`` (``"rfbnet_mg_voc"``: the folder ``pretrained/<name>``
        that docs/zoo.md converts it into).
    Returns:
      a :class:`mgdet.models.Detector`; ``model.detect`` / :func:`predict` on it.
    """
    from mgdet.convert import authors  # TensorFlow: imported on use
    from mgdet.models.build import load_keras_file
    from mgdet.training.rundir import resolve_weights
    from mgdet.training.trained import load_detector
    path = authors.resolve_pretrained(os.fspath(path_or_name))
    if path.endswith((".pth", ".pt", ".safetensors")):
        return authors.load_checkpoint(path)[0]
    if path.endswith(".keras"):
        return load_keras_file(path)
    return load_detector(None, resolve_weights(path))[0]


def export_saved_model(model, export_dir, class_names, **settings):
    """Write ``model`` as a TF Serving SavedModel in ``export_dir`` (a version folder such as
    ``saved_models/<name>/1``); ``settings``: ``score_threshold``, ``nms_iou``,
    ``max_detections``. Returns ``export_dir``."""
    from mgdet.export.saved_model import export_saved_model as run  # TensorFlow: on use
    return run(model, export_dir, class_names, **settings)


def predict(model, images, score_threshold=0.3, class_names=None, config=None):
    """Detections of ``model`` on ``images``, boxes in each image's own pixels.

    Args:
      model: a detector (:func:`mgdet.build_model`), a SavedModel folder, a ``.keras`` file or a
        ``.weights.h5`` file.
      images: an image file, a uint8 (or 0..255 float) array [H, W, 3] or [B, H, W, 3], or a
        list of files / arrays; any size (resized inside).
      score_threshold: detections below it are dropped.
      class_names: names of the labels (default: the model's own, when it has them).
      config: training config, for a weights file without its run's ``config.json``.
    Returns:
      one dict per image: ``"boxes"`` float [K, 4] pixel xyxy, ``"scores"`` [K],
      ``"classes"`` int [K], ``"names"`` list of K class names.
    """
    from mgdet.inference import load_runner, model_runner, read_image  # TensorFlow: on use
    runner = model_runner(model) if not isinstance(model, (str, os.PathLike)) else \
        load_runner(os.fspath(model), config)
    names = list(class_names) if class_names else runner.class_names
    results = []
    for image in _image_list(images):
        if isinstance(image, (str, os.PathLike)):
            image = read_image(os.fspath(image))
        image = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        boxes, scores, classes = runner(image)
        keep = scores >= score_threshold
        h, w = image.shape[:2]
        boxes = np.clip(boxes[keep], 0.0, 1.0) * np.array([w, h, w, h], np.float32)
        classes = classes[keep]
        results.append({"boxes": boxes, "scores": scores[keep], "classes": classes,
                        "names": [names[c] if names and 0 <= c < len(names) else str(c)
                                  for c in classes]})
    return results


def _image_list(images):
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, (list, tuple)):
        return list(images)
    array = np.asarray(images)
    return [array] if array.ndim == 3 else list(array)

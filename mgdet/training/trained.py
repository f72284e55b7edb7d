"""A trained detector back from its run folder (what :mod:`mgdet.training.loop` writes; the
folder's files: :mod:`mgdet.training.rundir`), built and loaded (:func:`load_detector`). Used
by fine-tuning (``model.init_from``), ``eval``, ``export``, ``predict`` and ``show-assign``.
"""
import os

import tensorflow as tf

from mgdet.config import replace
from mgdet.data import get_source
from mgdet.models.build import build_model, load_weights_file
from mgdet.training.rundir import config_beside


def class_names_of(config, weights=None):
    """Class names of a config's dataset: the config's own (a run's ``config.json``), the run's
    ``config.json`` beside ``weights``, else ``data.class_names``, else the dataset's own
    (``mgdet.data``)."""
    if config.class_names:
        return list(config.class_names)
    if weights:
        _, names = config_beside(weights)
        if names:
            return list(names)
    if config.data.class_names:
        return list(config.data.class_names)
    return list(get_source(config.data, image_size=config.model.image_size).class_names())


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
    if config is None:
        if not weights:
            raise ValueError("load_detector: give a config, or a weights file with its run's "
                             "config.json beside it")
        config, names = config_beside(weights)
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

"""Fine-tuning: start a detector from a trained one (``model.init_from``).

    init_from(model, "runs/default")          # the run's final.weights.h5 and config.json
    init_from(model, "runs/default/best.weights.h5")
    init_from(model, "detector.keras")

Every weight is copied (backbone, neck, box regression head) except the classification head when
the numbers of classes differ: that head keeps its fresh initialization (N(0, 0.01), bias at the
0.01 prior), as when training a new detector on new classes. The architecture, backbone, width,
number of pyramid levels and input normalization must match; a mismatch is one error naming
both and the ``--set model.<key>=<value>`` overrides that build the trained architecture.
"""
import os

from mgdet.config import ConfigError
from mgdet.models.build import load_keras_file
from mgdet.training.rundir import resolve_weights
from mgdet.training.trained import load_detector


def load_source_detector(path):
    """The trained detector at ``path``: a run folder (its ``final.weights.h5``), a
    ``.weights.h5`` file with its run's ``config.json`` beside it, or a ``.keras`` file."""
    if os.path.isfile(path) and path.endswith(".keras"):
        return load_keras_file(path)
    try:
        weights = resolve_weights(path)
        return load_detector(None, weights)[0]
    except FileNotFoundError as err:
        raise ConfigError(f"model.init_from {path!r}: {err}") from None


def _describe(model):
    return (f"{type(model).__name__} {model.backbone_name} width {model.width} with "
            f"{model.num_levels} levels (image size {model.image_size}, input_norm "
            f"{model.input_norm})")


def mismatch(source, model):
    """The ``--set`` overrides that make ``model``'s config build ``source``'s architecture
    (``["model.width=1.0", ...]``); empty when the weights fit."""
    fixes = []
    if type(source) is not type(model):
        fixes.append(f"model.arch={type(source).__name__.lower()}")
    if source.backbone_name != model.backbone_name:
        fixes.append(f"model.backbone={source.backbone_name}")
    if source.width != model.width:
        fixes.append(f"model.width={source.width:g}")
    if source.num_levels != model.num_levels:
        fixes.append(f"model.image_size={source.image_size}")
    if source.input_norm != model.input_norm:
        fixes.append(f"model.input_norm={source.input_norm}")
    return fixes


def init_from(model, source):
    """Copy the weights of ``source`` (a detector, or a path for :func:`load_source_detector`)
    into ``model`` (built). Returns the names of the weights left at their initialization
    (the classification head's when the class counts differ, else none)."""
    where = f" {os.fspath(source)!r}" if isinstance(source, (str, os.PathLike)) else ""
    if where:
        source = load_source_detector(os.fspath(source))
    fixes = mismatch(source, model)
    if fixes:
        raise ConfigError(f"model.init_from{where}: the trained detector is a {_describe(source)}, "
                          f"the config builds a {_describe(model)}: they must match (only the "
                          f"number of classes and the image size may differ); build the same "
                          f"model with --set {' --set '.join(fixes)}")
    for part in ("backbone", "neck"):
        getattr(model, part).set_weights(getattr(source, part).get_weights())
    kept_init = []
    for dst, src in zip(model.head.box_convs, source.head.box_convs):
        dst.set_weights(src.get_weights())
    for dst, src in zip(model.head.cls_convs, source.head.cls_convs):
        if model.num_classes == source.num_classes:
            dst.set_weights(src.get_weights())
        else:
            kept_init += [v.path for v in dst.weights]
    return kept_init

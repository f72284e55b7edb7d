"""A detector from a config (:func:`build_model`) and detector files loaded back: a
``.weights.h5`` into a built model, a ``.keras`` file in Keras' safe mode. Any file that does
not load is one :class:`ModelFileError` naming it and the fix."""
import keras

from mgdet.config import ConfigError
from mgdet.models.fssd import FSSD
from mgdet.models.retinanet import RetinaNet
from mgdet.models.rfbnet import RFBNet

MODELS = {"fssd": FSSD, "retinanet": RetinaNet, "rfbnet": RFBNet}  # model.arch -> class


def build_model(config, num_classes=None, class_names=None, bounding_box_format="rel_xyxy"):
    """A detector from a :class:`mgdet.config.Config`.

    Args:
      config: the experiment config (``model``, ``assign``, ``loss``, ``eval`` sections).
      num_classes: overrides ``config.model.num_classes`` (e.g. from the dataset); default
        ``len(class_names)`` when names are given.
      class_names: one name per class, saved with the model (a ``.keras`` file then names its
        detections).
      bounding_box_format: the boxes of training targets and ``model.predict`` outputs
        (keras-hub's names, see :mod:`mgdet.ops.targets`); default relative xyxy.
    Returns:
      an un-compiled :class:`mgdet.models.Detector`.
    """
    m, a, lo, e = config.model, config.assign, config.loss, config.eval
    num_classes = num_classes or (len(class_names) if class_names else None) or m.num_classes
    if not num_classes:
        raise ValueError("num_classes is unknown: set model.num_classes or pass num_classes")
    return MODELS[m.arch](
        num_classes=num_classes, backbone=m.backbone, image_size=m.image_size, width=m.width,
        weights=m.weights, strategy=a.strategy, sigma=a.sigma, pos_iou=a.pos_iou,
        neg_iou=a.neg_iou, atss_topk=a.atss_topk, tal_topk=a.tal_topk, tal_alpha=a.tal_alpha,
        tal_beta=a.tal_beta, focal_alpha=lo.focal_alpha, focal_gamma=lo.focal_gamma,
        cls_loss=lo.cls_loss, qfl_beta=lo.qfl_beta,
        bl1_alpha=lo.bl1_alpha, bl1_gamma=lo.bl1_gamma, bl1_beta=lo.bl1_beta,
        score_threshold=e.score_threshold, nms_iou=e.nms_iou, max_detections=e.max_detections,
        clip_anchors=m.clip_anchors, input_norm=m.input_norm, class_names=class_names,
        bounding_box_format=bounding_box_format)


class ModelFileError(ConfigError):
    """A weights or model file that cannot be loaded (not a weights file, truncated, another
    architecture, refused by Keras' safe mode); the message names the file and the fix."""


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
                             f"({first_line(err)}): give the final.weights.h5 (or the folder) of "
                             "a finished `mgdet train` run") from None
    except ValueError as err:
        raise ModelFileError(
            f"weights file {weights!r} does not fit the model built from the config "
            f"({_model_settings(config)}, {model.num_classes} classes): {first_line(err)}; "
            "pass the run folder (its config.json is used) or the --config the weights were "
            "trained with") from None


def first_line(err, limit=160):
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return line if len(line) <= limit else line[:limit] + "..."


def load_keras_file(path):
    """An mgdet detector saved with ``model.save(".keras")``, loaded in Keras' safe mode; any
    failure is one :class:`ModelFileError` naming the file and the fix."""
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - zip, JSON, unknown class, safe mode: one line
        if "safe_mode" in str(err) or "unsafe" in str(err):
            raise ModelFileError(f"model file {path!r} holds Python code (a Lambda layer or "
                                 "function) that Keras' safe mode refuses to run: mgdet loads "
                                 ".keras files of its own detectors only; save the detector "
                                 "with model.save() or pass its .weights.h5") from None
        raise ModelFileError(f"model file {path!r} is not a .keras file of an mgdet detector "
                             f"({first_line(err)}): give a detector saved with model.save(), "
                             "a SavedModel folder, or a run folder") from None

"""mgdet: Mutual Guidance label assignment (Zhang et al., ACCV 2020) for FSSD, RetinaNet and
RFBNet detectors in TensorFlow 2 / Keras 3.

Boxes are ``[xmin, ymin, xmax, ymax]`` normalized to [0, 1] everywhere inside mgdet.

The public API (README, "Python API"); TensorFlow is imported on first use, not by
``import mgdet``:

    cfg = mgdet.load_config("default", ["train.epochs=1"])  # a shipped name or a YAML path
    data = mgdet.build_datasets(cfg)     # .train, .eval (tf.data), .class_names, .ground_truth
    model = mgdet.build_model(cfg, num_classes=len(data.class_names))
    metrics = mgdet.train(cfg)           # the full recipe, as `mgdet train`
    metrics = mgdet.evaluate(model, cfg)
    mgdet.export_saved_model(model, "saved_models/x/1", data.class_names)
    detections = mgdet.predict(model, images)
    model = mgdet.load_pretrained("pretrained/rfbnet_mg_voc")  # converted: docs/zoo.md

``mgdet.train`` and ``mgdet.predict`` are also the modules of those names; calling them calls
:func:`mgdet.api.train` / :func:`mgdet.api.predict`.
"""
import sys as _sys
import types as _types

__version__ = "0.1.0"
__all__ = ["load_config", "build_model", "build_datasets", "train", "evaluate",
           "export_saved_model", "predict", "load_pretrained"]
_API = {"build_datasets", "evaluate", "export_saved_model", "train", "predict",
        "load_pretrained"}
_CALLABLE_MODULES = {"train", "predict"}  # submodules that share a name with an API function


class _CallableModule(_types.ModuleType):
    """A submodule that, called, runs the API function of the same name."""

    def __call__(self, *args, **kwargs):
        from mgdet import api
        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


class _Package(_types.ModuleType):
    def __setattr__(self, name, value):
        # The import system sets `mgdet.train = <module mgdet.train>` when the submodule is
        # imported; make that module callable so `mgdet.train(cfg)` keeps working.
        if name in _CALLABLE_MODULES and type(value) is _types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def __getattr__(name):
    if name == "load_config":
        from mgdet.config import load_config
        return load_config
    if name in _CALLABLE_MODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    if name in _API:
        from mgdet import api
        return getattr(api, name)
    raise AttributeError(f"module 'mgdet' has no attribute {name!r}")


def __dir__():
    return sorted({n for n in globals() if not n.startswith("_")} | set(__all__))


def build_model(config, num_classes=None, class_names=None, bounding_box_format="rel_xyxy"):
    """A detector from a :class:`mgdet.config.Config`.

    Args:
      config: the experiment config (``model``, ``assign``, ``loss``, ``eval`` sections).
      num_classes: overrides ``config.model.num_classes`` (e.g. from the dataset); default
        ``len(class_names)`` when names are given.
      class_names: one name per class, saved with the model (a ``.keras`` file then names its
        detections).
      bounding_box_format: the boxes of training targets and ``model.predict`` outputs
        (keras-hub's names, see :mod:`mgdet.targets`); default relative xyxy.
    Returns:
      an un-compiled :class:`mgdet.models.Detector`.
    """
    from mgdet.models import MODELS

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

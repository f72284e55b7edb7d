"""Experiment configuration: YAML -> frozen, validated dataclasses.

A config file holds up to six sections (``model``, ``assign``, ``loss``, ``data``, ``train``,
``eval``) plus ``name``; every key is optional and falls back to the defaults below. Unknown
keys, wrong types and out-of-range values raise :class:`ConfigError` naming the key and the fix.

    cfg = load_config("configs/retinanet_resnet18_voc.yaml", ["assign.strategy=iou"])
"""
import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Optional, Tuple

import yaml

ARCHS = ("fssd", "retinanet", "rfbnet")
BACKBONES = ("vgg16", "resnet18")
STRATEGIES = ("iou", "l2c", "c2l", "mg")
SOURCES = ("synthetic", "voc", "coco", "tfds", "coco_json", "voc_xml")
DISTRIBUTE = ("none", "mirrored", "multi_worker")
PRECISION = ("float32", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("sgd", "adamw")


class ConfigError(ValueError):
    """A bad configuration key or value; the message names it and says how to fix it."""


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "fssd"  # fssd | retinanet | rfbnet
    backbone: str = "resnet18"  # resnet18 | vgg16 (rfbnet: vgg16 only)
    image_size: int = 320  # square input side, a multiple of 64
    width: float = 1.0  # channel multiplier of backbone and neck (1.0 = the paper's models)
    weights: Optional[str] = None  # backbone weights file (ImageNet); random init when None
    num_classes: Optional[int] = None  # None: taken from the dataset
    clip_anchors: bool = False  # True: anchors clipped at the image border (ablation only)


@dataclass(frozen=True)
class AssignConfig:
    strategy: str = "mg"  # iou | l2c | c2l | mg
    sigma: float = 2.0  # C2L amplification, > 1
    pos_iou: float = 0.5
    neg_iou: float = 0.4


@dataclass(frozen=True)
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    bl1_alpha: float = 0.5
    bl1_gamma: float = 1.5
    bl1_beta: float = 0.11


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # synthetic | voc | coco | tfds | coco_json | voc_xml
    root: Optional[str] = None  # VOCdevkit folder, COCO folder, or folder of VOC XML files
    train_sets: Tuple[str, ...] = ()  # voc: "2007/trainval"...; coco: "train2017"; tfds: splits
    eval_sets: Tuple[str, ...] = ()  # voc: "2007/test"; coco: "val2017"; tfds: "test"
    train_ann: Optional[str] = None  # coco_json: annotation file of the training images
    train_images: Optional[str] = None  # coco_json / voc_xml: image folder
    eval_ann: Optional[str] = None
    eval_images: Optional[str] = None
    class_names: Tuple[str, ...] = ()  # voc_xml: the classes, in label order
    tfds_name: Optional[str] = None  # tfds: voc/2007, voc/2012 or coco/2017
    data_dir: Optional[str] = None  # tfds data_dir
    num_train: int = 2000  # synthetic: training images
    num_eval: int = 300  # synthetic: held-out images
    seed: int = 0  # synthetic generation / shuffling / augmentation seed
    max_objects: int = 50  # M_max: objects per image kept (more are truncated with a warning)
    augment: bool = True  # SSD augmentation for training
    max_expand: float = 4.0  # SSD zoom-out: largest canvas / image ratio (1 disables zoom-out)
    cache: bool = False  # cache decoded images in memory


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 250
    batch_size: int = 32
    optimizer: str = "sgd"  # sgd (the paper) | adamw (converges faster from scratch on a CPU)
    lr: float = 0.01  # peak learning rate (the paper: 1e-2 at batch 32)
    momentum: float = 0.9
    weight_decay: float = 5e-4  # not applied to biases and batch-norm parameters
    warmup_steps: int = 500  # linear warm-up from warmup_lr to lr
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6  # cosine decay floor
    steps_per_epoch: Optional[int] = None  # None: one pass over the training set
    eval_every: int = 10  # epochs between COCO evaluations (0: only at the end)
    out_dir: Optional[str] = None  # checkpoints and TensorBoard logs; default runs/<name>
    distribute: str = "none"  # none | mirrored | multi_worker
    devices: Optional[int] = None  # mirrored: number of devices (None: all)
    precision: str = "float32"  # float32 | mixed_float16 | mixed_bfloat16
    jit_compile: bool = False  # XLA-compile the whole train step
    seed: int = 0


@dataclass(frozen=True)
class EvalConfig:
    score_threshold: float = 0.005
    nms_iou: float = 0.5
    max_detections: int = 300
    batch_size: int = 8


@dataclass(frozen=True)
class Config:
    name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def out_dir(self):
        return self.train.out_dir or os.path.join("runs", self.name)

    def to_dict(self):
        return dataclasses.asdict(self)


def _coerce(value, hint, key):
    """Convert a YAML value to the dataclass field's type, or raise ConfigError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(value, [a for a in args if a is not type(None)][0], key)
    if origin in (tuple, Tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}") from None
        if as_float != int(as_float):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return int(as_float)
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls, values, prefix):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix}' must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{path}'; allowed keys here: "
                              f"{', '.join(sorted(fields))}")
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build(hints[key], value, path)
        else:
            kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def _check_choice(value, choices, key):
    if value not in choices:
        raise ConfigError(f"config key '{key}' is {value!r}; use one of {', '.join(choices)}")


def validate(cfg):
    """Cross-field checks; raises ConfigError naming the key. Returns ``cfg``."""
    m, a, t, d, e = cfg.model, cfg.assign, cfg.train, cfg.data, cfg.eval
    _check_choice(m.arch, ARCHS, "model.arch")
    _check_choice(m.backbone, BACKBONES, "model.backbone")
    if m.arch == "rfbnet" and m.backbone != "vgg16":
        raise ConfigError("model.arch 'rfbnet' is built on VGG16 only: set model.backbone: vgg16")
    if m.image_size <= 0 or m.image_size % 64:
        raise ConfigError(f"model.image_size must be a positive multiple of 64, got {m.image_size}")
    if not m.width > 0:
        raise ConfigError(f"model.width must be > 0, got {m.width}")
    if m.num_classes is not None and m.num_classes < 1:
        raise ConfigError(f"model.num_classes must be >= 1, got {m.num_classes}")
    if m.weights is not None and not os.path.exists(m.weights):
        raise ConfigError(f"model.weights file {m.weights!r} does not exist: give the path of a "
                          "backbone weights file, or remove the key for random init")
    _check_choice(a.strategy, STRATEGIES, "assign.strategy")
    if not a.sigma > 1:
        raise ConfigError(f"assign.sigma must be > 1 (paper Eq. 1), got {a.sigma}")
    if not 0 < a.neg_iou <= a.pos_iou <= 1:
        raise ConfigError(f"need 0 < assign.neg_iou <= assign.pos_iou <= 1, got "
                          f"{a.neg_iou} and {a.pos_iou}")
    _check_choice(d.source, SOURCES, "data.source")
    if d.max_expand < 1:
        raise ConfigError(f"data.max_expand must be >= 1, got {d.max_expand}")
    for key in ("max_objects", "num_train", "num_eval"):
        if getattr(d, key) < 1:
            raise ConfigError(f"data.{key} must be >= 1, got {getattr(d, key)}")
    for key in ("epochs", "batch_size"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    for key in ("lr", "warmup_lr", "min_lr"):
        if not getattr(t, key) > 0:
            raise ConfigError(f"train.{key} must be > 0, got {getattr(t, key)}")
    if t.warmup_steps < 0 or t.weight_decay < 0 or not 0 <= t.momentum < 1:
        raise ConfigError("train.warmup_steps and train.weight_decay must be >= 0 and "
                          "train.momentum in [0, 1)")
    if t.steps_per_epoch is not None and t.steps_per_epoch < 1:
        raise ConfigError(f"train.steps_per_epoch must be >= 1, got {t.steps_per_epoch}")
    _check_choice(t.optimizer, OPTIMIZERS, "train.optimizer")
    _check_choice(t.distribute, DISTRIBUTE, "train.distribute")
    _check_choice(t.precision, PRECISION, "train.precision")
    if not 0 <= e.score_threshold < 1 or not 0 < e.nms_iou <= 1 or e.max_detections < 1:
        raise ConfigError("need eval.score_threshold in [0, 1), eval.nms_iou in (0, 1] and "
                          "eval.max_detections >= 1")
    return cfg


def parse_overrides(overrides):
    """``["train.epochs=3", "assign.strategy=iou"]`` -> nested dict (values parsed as YAML)."""
    tree = {}
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        path, raw = item.split("=", 1)
        node = tree
        parts = path.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return tree


def _merge(base, extra):
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(values):
    """Build and validate a :class:`Config` from a nested dict."""
    return validate(_build(Config, values, ""))


def load_config(path=None, overrides=None):
    """Load ``path`` (YAML; None: all defaults), apply ``overrides`` (``"a.b=v"`` strings or a
    nested dict), validate, and return a frozen :class:`Config`."""
    values = {}
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path!r} not found: pass a YAML file such as "
                              "configs/default.yaml")
        with open(path) as f:
            try:
                values = yaml.safe_load(f) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"config file {path!r} is not valid YAML: {err}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path!r} must hold a mapping of sections")
        values.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    return config_from_dict(_merge(values, extra))


def replace(cfg, **sections):
    """Copy of ``cfg`` with sections' fields replaced: ``replace(cfg, train={"epochs": 1})``."""
    return config_from_dict(_merge(cfg.to_dict(), sections))

"""Experiment configuration: YAML -> frozen, validated dataclasses.

A config file holds up to six sections (``model``, ``assign``, ``loss``, ``data``, ``train``,
``eval``) plus ``name``; every key is optional and falls back to the defaults below. Unknown
keys, wrong types and out-of-range values raise :class:`ConfigError` naming the key and the fix.

    cfg = load_config("configs/retinanet_resnet18_voc.yaml", ["assign.strategy=iou"])
"""
import dataclasses
import math
import os
import re
import reprlib
import typing
from dataclasses import dataclass, field
from typing import Optional, Tuple

import yaml

from mgdet.data import SOURCES as _SOURCE_TABLE
from mgdet.data.common import DEFAULT_MAX_PIXELS

ARCHS = ("fssd", "retinanet", "rfbnet")
BACKBONES = ("vgg16", "resnet18")
STRATEGIES = ("iou", "l2c", "c2l", "mg", "atss", "tal")  # mgdet.assign.STRATEGIES
CLS_LOSSES = ("auto", "focal", "quality_focal")  # mgdet.losses.CLS_LOSSES
SOURCES = tuple(_SOURCE_TABLE)  # data.source values: the table of mgdet.data
DISTRIBUTE = ("none", "mirrored", "multi_worker")
PRECISION = ("float32", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("sgd", "adamw")
AUGMENT_MODES = ("ssd", "paper", "none")
DIFFICULT = ("train", "ignore")  # data.difficult values
INPUT_NORMS = ("imagenet", "bgr_mean")  # model.input_norm values (mgdet.models.detector)
WORKER_SHARDING = ("batches", "files")  # data.worker_sharding values


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
    # input normalization inside the model: imagenet (RGB / 255, torchvision's mean and std) |
    # bgr_mean (BGR minus (104, 117, 123): the paper authors' released detectors, mgdet.convert)
    input_norm: str = "imagenet"
    # fine-tuning: a trained detector (run folder, .weights.h5 with its config.json, or .keras)
    # whose weights start this one; the class head is re-initialized if the class count differs
    init_from: Optional[str] = None


@dataclass(frozen=True)
class AssignConfig:
    strategy: str = "mg"  # iou | l2c | c2l | mg | atss (Zhang et al. 2020) | tal (TOOD)
    sigma: float = 2.0  # C2L amplification, > 1
    pos_iou: float = 0.5
    neg_iou: float = 0.4
    atss_topk: int = 9  # ATSS: candidate cells per pyramid level (x 6 anchors per cell)
    tal_topk: int = 13  # TAL: candidates per object, alignment metric t = s^alpha * u^beta
    tal_alpha: float = 1.0
    tal_beta: float = 6.0


@dataclass(frozen=True)
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    bl1_alpha: float = 0.5
    bl1_gamma: float = 1.5
    bl1_beta: float = 0.11
    # classification loss: focal | quality_focal (Li et al. 2020: BCE against the soft target,
    # weighted by |target - p|^qfl_beta) | auto (quality_focal for tal's soft targets, else focal)
    cls_loss: str = "auto"
    qfl_beta: float = 2.0


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # synthetic | voc | coco | tfds | coco_json | voc_xml | yolo
    root: Optional[str] = None  # VOCdevkit folder, COCO folder, or folder of VOC XML files
    train_sets: Tuple[str, ...] = ()  # voc: "2007/trainval"...; coco: "train2017"; tfds: splits
    eval_sets: Tuple[str, ...] = ()  # voc: "2007/test"; coco: "val2017"; tfds: "test"
    train_ann: Optional[str] = None  # coco_json: annotation file of the training images
    train_images: Optional[str] = None  # coco_json / voc_xml / yolo: image folder
    eval_ann: Optional[str] = None
    eval_images: Optional[str] = None
    class_names: Tuple[str, ...] = ()  # voc_xml / yolo: the classes, in label order
    tfds_name: Optional[str] = None  # tfds: voc/2007, voc/2012 or coco/2017
    data_dir: Optional[str] = None  # tfds data_dir
    num_train: int = 2000  # synthetic: training images
    num_eval: int = 300  # synthetic: held-out images
    seed: int = 0  # synthetic generation / shuffling / augmentation seed
    max_objects: int = 50  # M_max: objects per image kept (more are truncated with a warning)
    # training augmentation: ssd (SSD's, photometric after the crop) | paper (the authors' order,
    # random interpolation, 1% box drop) | none; true / false mean ssd / none
    augment: str = field(default="ssd", metadata={"coerce": "augment"})
    max_expand: float = 4.0  # zoom-out: largest canvas / image ratio (1 disables zoom-out)
    cache: bool = False  # cache decoded images in memory
    # refuse larger images (decompression bombs): counted skip in training, error in serving,
    # skipped with a warning by predict
    max_pixels: int = DEFAULT_MAX_PIXELS
    # fraction of the training images held out (seeded by data.seed) to pick best.weights.h5;
    # 0: no best selection (final weights only). The eval split never chooses a model.
    val_fraction: float = 0.0
    # VOC difficult / COCO crowd objects in training: train (kept as objects, as the authors) |
    # ignore (dropped from the targets; evaluation ignores them either way)
    difficult: str = "train"
    # several workers (--distribute multi_worker): batches (every worker reads the same global
    # batches and keeps its replicas' share: exactly one process's training) | files (each
    # worker reads, decodes and shuffles only its 1/N of the training images: input work
    # divided by N, batches no longer those of one process)
    worker_sharding: str = "batches"


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
    clip_norm: Optional[float] = None  # clip the gradients' global norm to this (None: no clipping)


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
    # a trained run's class names, in label order: ``train`` writes them into the run's
    # config.json, and a config loaded from it gives them back (eval / export / predict use
    # them); empty for a config file (the dataset's names)
    class_names: Tuple[str, ...] = ()

    @property
    def out_dir(self):
        return self.train.out_dir or os.path.join("runs", self.name)

    def to_dict(self):
        return dataclasses.asdict(self)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 2, 4, 4
_SHORT.maxstring = _SHORT.maxother = 40


def shown(value):
    """A short repr of a config value for error messages (at most ~100 characters and a few
    nested levels: a YAML value built from aliases may expand to gigabytes)."""
    return _SHORT.repr(value)


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
            raise ConfigError(f"config key '{key}' must be a list, got {shown(value)}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"config key '{key}' must be true or false, got {shown(value)}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"config key '{key}' must be an integer, got {shown(value)}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"config key '{key}' must be an integer, "
                              f"got {shown(value)}") from None
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise ConfigError(f"config key '{key}' must be an integer, got {shown(value)}")
        return int(as_float)
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' must be a number, "
                              f"got {shown(value)}") from None
    if hint is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"config key '{key}' must be a string, got {shown(value)}")
        return str(value)
    return value


def _build(cls, values, prefix):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix}' must be a mapping, got {shown(values)}")
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
        elif fields[key].metadata.get("coerce") == "augment" and isinstance(value, bool):
            kwargs[key] = "ssd" if value else "none"
        else:
            kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def _check_choice(value, choices, key):
    if value not in choices:
        raise ConfigError(f"config key '{key}' is {shown(value)}; use one of {', '.join(choices)}")


# Allowed range of every numeric field: key -> (low, high, low_open, high_open). A value must be
# finite and inside; None (an Optional field left unset) is not checked.
RANGES = {
    "model.image_size": (64, 2048, False, False),
    "model.width": (0, 4, True, False),
    "model.num_classes": (1, 100_000, False, False),
    "assign.sigma": (1, 100, True, False),
    "assign.pos_iou": (0, 1, True, False),
    "assign.neg_iou": (0, 1, True, False),
    "assign.atss_topk": (1, 10_000, False, False),
    "assign.tal_topk": (1, 100_000, False, False),
    "assign.tal_alpha": (0, 100, False, False),
    "assign.tal_beta": (0, 100, True, False),
    "loss.focal_alpha": (0, 1, False, False),
    "loss.focal_gamma": (0, 10, False, False),
    "loss.bl1_alpha": (0, 10, True, False),
    "loss.bl1_gamma": (0, 10, True, False),
    "loss.bl1_beta": (0, 10, True, False),
    "loss.qfl_beta": (0, 10, False, False),
    "data.num_train": (1, 10**8, False, False),
    "data.num_eval": (1, 10**8, False, False),
    "data.seed": (0, 2**31 - 1, False, False),
    "data.max_objects": (1, 10_000, False, False),
    "data.max_expand": (1, 16, False, False),
    "data.max_pixels": (1, 10**10, False, False),
    "data.val_fraction": (0, 1, False, True),
    "train.epochs": (1, 10**6, False, False),
    "train.batch_size": (1, 65_536, False, False),
    "train.lr": (0, 100, True, False),
    "train.momentum": (0, 1, False, True),
    "train.weight_decay": (0, 1, False, False),
    "train.warmup_steps": (0, 10**9, False, False),
    "train.warmup_lr": (0, 100, True, False),
    "train.min_lr": (0, 100, True, False),
    "train.steps_per_epoch": (1, 10**9, False, False),
    "train.eval_every": (0, 10**6, False, False),
    "train.devices": (1, 4096, False, False),
    "train.seed": (0, 2**31 - 1, False, False),
    "train.clip_norm": (0, 10**6, True, False),
    "eval.score_threshold": (0, 1, False, True),
    "eval.nms_iou": (0, 1, True, False),
    "eval.max_detections": (1, 100_000, False, False),
    "eval.batch_size": (1, 65_536, False, False),
}


def numeric_keys(cls=None, prefix=""):
    """``section.key`` of every int / float field of the config (nested), in field order."""
    keys = []
    hints = typing.get_type_hints(cls or Config)
    for f in dataclasses.fields(cls or Config):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys += numeric_keys(hint, f"{prefix}{f.name}.")
            continue
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if hint in (int, float) or (typing.get_origin(hint) is typing.Union
                                    and args and args[0] in (int, float)):
            keys.append(prefix + f.name)
    return keys


def _check_range(cfg, key):
    section, name = key.split(".")
    value = getattr(getattr(cfg, section), name)
    if value is None:
        return
    low, high, low_open, high_open = RANGES[key]
    inside = (math.isfinite(value) and (value > low if low_open else value >= low)
              and (value < high if high_open else value <= high))
    if not inside:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"config key '{key}' must be a finite number in {interval}, "
                          f"got {shown(value)}")


# A run / model name: one folder name under runs/ and saved_models/, short enough for every
# file system (255 bytes a name) with room for the suffixes mgdet adds ("-2", ".tmp-..-xxxx").
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
MAX_NAME_LENGTH = 128


def check_name(name, what="config 'name'", where="runs/<name> and saved_models/<name>"):
    """Refuse a run / model ``name`` that is not one plain folder name of at most
    :data:`MAX_NAME_LENGTH` characters (ConfigError naming ``what`` and the fix)."""
    if not _NAME.match(name) or ".." in name:
        raise ConfigError(f"{what} {shown(name)} must be a plain folder name (letters, digits, "
                          f"'_', '-', '.', '+'; no '/' or '..'): it names {where}")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(f"{what} is {len(name)} characters long: use at most "
                          f"{MAX_NAME_LENGTH} (it names {where}; file systems allow 255 bytes)")


def _check_paths(cfg):
    """``name`` must be one plain folder name; a relative ``train.out_dir`` must stay inside
    ``runs/`` (an absolute one is taken as given). An explicit ``--out-dir`` is not checked."""
    check_name(cfg.name)
    out = cfg.train.out_dir
    if out is not None and not os.path.isabs(out):
        parts = os.path.normpath(out).split(os.sep)
        if len(parts) < 2 or parts[0] != "runs":
            raise ConfigError(f"config key 'train.out_dir' {out!r} leaves runs/: use a folder "
                              "under runs/ or an absolute path, or pass --out-dir")


def check_files(cfg):
    """The files ``cfg`` will read before training exist (``model.weights``, ``model.init_from``); raises
    ConfigError saying how to make a missing one. Not part of :func:`load_config`, so that a
    config can be printed, evaluated or exported from a trained run without its ImageNet file."""
    m = cfg.model
    if m.weights is not None and not os.path.isfile(m.weights):
        from mgdet.models.convert_weights import missing_weights_message
        raise ConfigError("model.weights: " + missing_weights_message(m.weights, m.backbone))
    if m.init_from is not None and not os.path.exists(m.init_from):
        raise ConfigError(f"model.init_from {m.init_from!r} does not exist: give a training run "
                          "folder, its .weights.h5 (with config.json beside it) or a .keras file")
    return cfg


def validate(cfg):
    """Every value of ``cfg``: choices, numeric ranges (finite), cross-field constraints and
    paths; raises ConfigError naming the key and the allowed values. Returns ``cfg``."""
    m, a, lo, t, d, e = cfg.model, cfg.assign, cfg.loss, cfg.train, cfg.data, cfg.eval
    _check_choice(m.arch, ARCHS, "model.arch")
    _check_choice(m.backbone, BACKBONES, "model.backbone")
    _check_choice(m.input_norm, INPUT_NORMS, "model.input_norm")
    _check_choice(a.strategy, STRATEGIES, "assign.strategy")
    _check_choice(lo.cls_loss, CLS_LOSSES, "loss.cls_loss")
    _check_choice(d.source, SOURCES, "data.source")
    _check_choice(d.augment, AUGMENT_MODES, "data.augment")
    _check_choice(d.difficult, DIFFICULT, "data.difficult")
    _check_choice(d.worker_sharding, WORKER_SHARDING, "data.worker_sharding")
    _check_choice(t.optimizer, OPTIMIZERS, "train.optimizer")
    _check_choice(t.distribute, DISTRIBUTE, "train.distribute")
    _check_choice(t.precision, PRECISION, "train.precision")
    for key in RANGES:
        _check_range(cfg, key)
    if m.arch == "rfbnet" and m.backbone != "vgg16":
        raise ConfigError("model.arch 'rfbnet' is built on VGG16 only: set model.backbone: vgg16")
    if m.image_size % 64:
        raise ConfigError(f"model.image_size must be a positive multiple of 64, got {m.image_size}")
    if a.sigma <= 1:
        raise ConfigError(f"assign.sigma must be > 1 (paper Eq. 1), got {a.sigma}")
    if a.neg_iou > a.pos_iou:
        raise ConfigError(f"need 0 < assign.neg_iou <= assign.pos_iou <= 1, got "
                          f"{a.neg_iou} and {a.pos_iou}")
    if lo.bl1_gamma / lo.bl1_alpha > 20:
        raise ConfigError("loss.bl1_gamma / loss.bl1_alpha must be <= 20 (the balanced L1 loss's "
                          f"b = e^(gamma/alpha) - 1 overflows), got {lo.bl1_gamma} / {lo.bl1_alpha}")
    if t.min_lr > t.lr:
        raise ConfigError(f"train.min_lr ({t.min_lr}) must be <= train.lr ({t.lr}): the cosine "
                          "schedule decays from lr down to min_lr")
    if d.source == "synthetic" and t.batch_size > d.num_train:
        raise ConfigError(f"train.batch_size ({t.batch_size}) is larger than the training set "
                          f"(data.num_train = {d.num_train}): lower the batch size or add images")
    _check_paths(cfg)
    return cfg


MAX_YAML_NODES = 100_000  # values a config document may hold once its aliases are expanded


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader that refuses a document whose aliases (``*name``) expand to more than
    :data:`MAX_YAML_NODES` values: a few hundred bytes of nested aliases (a "billion laughs"
    file) otherwise become gigabytes as soon as anything prints or walks the value."""

    def construct_document(self, node):
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConfigError(f"{self.what}: its YAML aliases (*name) expand to more than "
                              f"{MAX_YAML_NODES} values; write the values out instead")
        return super().construct_document(node)


def _expanded_size(node, memo):
    """Number of nodes of ``node`` with every alias expanded (shared nodes counted each time
    they are used; computed once per node)."""
    key = id(node)
    if key not in memo:
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        memo[key] = 1 + sum(_expanded_size(child, memo) for child in children)
    return memo[key]


def safe_load(text, what):
    """``yaml.safe_load(text)`` with aliases bounded (:class:`_BoundedLoader`) and nesting too
    deep for the parser refused; ``what`` (e.g. ``"config file 'x.yaml'"``) starts the
    ConfigError message."""
    loader = _BoundedLoader(text)
    loader.what = what
    try:
        return loader.get_single_data()
    except RecursionError:
        raise ConfigError(f"{what}: its YAML is nested too deeply; flatten it") from None
    finally:
        loader.dispose()


def parse_overrides(overrides):
    """``["train.epochs=3", "assign.strategy=iou"]`` -> nested dict (values parsed as YAML)."""
    tree = {}
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {shown(item)} must look like section.key=value")
        path, raw = item.split("=", 1)
        node = tree
        parts = path.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = safe_load(raw, f"override {shown(item)}")
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"override {shown(item)}: the value is not valid YAML ({problem}); "
                              "quote strings, e.g. --set 'name=\"my run\"'") from None
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


BASE_KEY = "base"  # a config's parent(s): beside the file, else shipped (`base: default`)


def configs_dir():
    """The folder of the shipped configs: ``mgdet/configs`` in an installed wheel, the
    checkout's top-level ``configs/`` otherwise."""
    package = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(package, "configs"),
                      os.path.join(os.path.dirname(package), "configs")):
        if os.path.isdir(candidate):
            return candidate
    return os.path.join(package, "configs")


def config_names():
    """Names of the shipped configs (``default``, ``retinanet_resnet18_voc``, ...)."""
    folder = configs_dir()
    if not os.path.isdir(folder):
        return []
    return sorted(n[:-5] for n in os.listdir(folder) if n.endswith(".yaml"))


def resolve_config_path(path_or_name):
    """A YAML path as given, else the shipped config of that name (``"default"`` or
    ``"default.yaml"``); raises ConfigError listing the shipped names."""
    if os.path.isfile(path_or_name):
        return path_or_name
    name = os.path.basename(path_or_name)
    shipped = os.path.join(configs_dir(), name if name.endswith(".yaml") else name + ".yaml")
    if os.path.dirname(path_or_name) in ("", "configs") and os.path.isfile(shipped):
        return shipped
    raise ConfigError(f"config file {path_or_name!r} not found: pass a YAML file, or the name of "
                      f"a shipped config: {', '.join(config_names())}")


def _read_yaml(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path!r} is not UTF-8 text (byte {data[err.start]:#04x} "
                          f"at offset {err.start}): save it as UTF-8") from None
    try:
        values = safe_load(text, f"config file {path!r}") or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path!r} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of sections")
    return values


def find_base(path, base):
    """The file that ``base:`` names in the config file ``path``: ``base`` relative to the
    file's folder, else the shipped config of that name or relative path (``default``,
    ``retinanet_resnet18_voc.yaml``, ``_base_/voc.yaml``; ``.yaml`` may be left out), so that a
    user's YAML anywhere can start from a shipped one. Raises ConfigError naming the places
    searched."""
    folders = [os.path.dirname(os.path.abspath(path))]
    if not os.path.isabs(base):
        folders.append(configs_dir())
    names = [base] if base.endswith((".yaml", ".yml")) else [base, base + ".yaml"]
    tried = [os.path.join(folder, name) for folder in folders for name in names]
    for candidate in tried:
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(f"config file {path!r}: its base {base!r} does not exist (looked for "
                      f"{', '.join(tried)}); give a path relative to the file or a shipped "
                      f"config: {', '.join(config_names())}")


def read_config_file(path, _chain=()):
    """The values of the YAML file ``path`` merged over its ``base:`` file(s), as a nested dict.

    ``base`` is a path (or a list of paths, later ones winning) found by :func:`find_base`:
    relative to the file, else a shipped config (``base: default``); bases may have bases;
    mappings merge key by key, anything else (lists too) is replaced. Each file's keys and types
    are checked on their own, so an error names the file and the key; a cycle of bases is
    refused. A base's ``name`` is not inherited.
    """
    real = os.path.realpath(path)
    if real in _chain:
        cycle = " -> ".join(list(_chain[_chain.index(real):]) + [real])
        raise ConfigError(f"config file {path!r}: its bases form a cycle ({cycle}); remove one "
                          f"'{BASE_KEY}:' line")
    values = _read_yaml(path)
    bases = values.pop(BASE_KEY, None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"config file {path!r}: '{BASE_KEY}' must be a file path or a list of "
                          f"them, got {bases!r}")
    try:
        _build(Config, values, "")  # keys and types of this file alone (cross-field: later)
    except ConfigError as err:
        raise ConfigError(f"config file {path!r}: {err}") from None
    merged = {}
    for base in bases:
        inherited = read_config_file(find_base(path, base), _chain + (real,))
        inherited.pop("name", None)
        merged = _merge(merged, inherited)
    return _merge(merged, values)


def load_config(path=None, overrides=None):
    """Load ``path`` (a YAML file, or the name of a shipped config such as ``"default"``; None:
    all defaults) with its ``base:`` files, apply ``overrides`` (``"a.b=v"`` strings or a nested
    dict), validate, and return a frozen :class:`Config`."""
    values = {}
    if path is not None:
        path = resolve_config_path(os.fspath(path))
        values = read_config_file(path)
        values.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    return config_from_dict(_merge(values, extra))


def config_to_yaml(cfg):
    """The merged, validated ``cfg`` as YAML text (what ``mgdet train --print-config`` shows)."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return yaml.safe_dump(plain(cfg.to_dict()), sort_keys=False)


def replace(cfg, **sections):
    """Copy of ``cfg`` with sections' fields replaced: ``replace(cfg, train={"epochs": 1})``."""
    return config_from_dict(_merge(cfg.to_dict(), sections))

"""The experiment config's fields: frozen dataclasses whose field metadata holds each value's
allowed range (``"range": (low, high, low_open, high_open)``) or choices (``"choices"``), and
the choice lists and limits that other stages import from here (their one home).

Every key is optional and falls back to the default below; :mod:`mgdet.config.validate`
checks the values against this metadata.
"""
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional, Tuple

ARCHS = ("fssd", "retinanet", "rfbnet")
BACKBONES = ("vgg16", "resnet18")
# model.arch -> the backbones it is built on
ARCH_BACKBONES = {"fssd": BACKBONES, "retinanet": BACKBONES, "rfbnet": ("vgg16",)}
PAPER_STRATEGIES = ("iou", "l2c", "c2l", "mg")  # Mutual Guidance and its ablations
STRATEGIES = PAPER_STRATEGIES + ("atss", "tal")  # assign.strategy values
CLS_LOSSES = ("auto", "focal", "quality_focal")  # loss.cls_loss values
# data.source values (mgdet.data.SOURCES maps each to its Source class)
SOURCES = ("synthetic", "voc", "coco", "coco_json", "voc_xml", "yolo", "tfds")
DISTRIBUTE = ("none", "mirrored", "multi_worker")
# train.precision values: Keras policies, or auto (mixed_bfloat16 where bf16 is faster than
# float32 on the training machine, float32 elsewhere: mgdet.training.cpu.resolve_precision)
PRECISION = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
OPTIMIZERS = ("sgd", "adamw")
AUGMENT_MODES = ("ssd", "paper", "none")  # data.augment values
DIFFICULT = ("train", "ignore")  # data.difficult values
INPUT_NORMS = ("imagenet", "bgr_mean")  # model.input_norm values (mgdet.models.detector)
WORKER_SHARDING = ("batches", "files")  # data.worker_sharding values
EXPORT_FORMATS = ("saved_model", "onnx", "tflite")  # `mgdet export --format`
QUANTIZE = ("none", "float16", "int8")  # `mgdet export --format tflite --quantize`

# The largest image (width x height, from its header) decoded anywhere: training skips larger
# ones, serving refuses them, predict skips them with a warning (data.max_pixels' default).
DEFAULT_MAX_PIXELS = 40_000_000
RUNS_DIR = "runs"  # training runs: runs/<name> (and predict's runs/predict)


def _range(default, low, high, low_open=False, high_open=False, **metadata):
    """A numeric field whose value must be finite and inside the interval (None unchecked)."""
    return field(default=default, metadata={"range": (low, high, low_open, high_open),
                                            **metadata})


def _choice(default, choices, **metadata):
    return field(default=default, metadata={"choices": choices, **metadata})


@dataclass(frozen=True)
class ModelConfig:
    arch: str = _choice("fssd", ARCHS)
    backbone: str = _choice("resnet18", BACKBONES)  # per arch: ARCH_BACKBONES
    image_size: int = _range(320, 64, 2048, multiple_of=64)  # square input side
    # channel multiplier of backbone and neck (1.0 = the paper's models)
    width: float = _range(1.0, 0, 4, low_open=True)
    weights: Optional[str] = None  # backbone weights file (ImageNet); random init when None
    num_classes: Optional[int] = _range(None, 1, 100_000)  # None: taken from the dataset
    clip_anchors: bool = False  # True: anchors clipped at the image border (ablation only)
    # input normalization inside the model: imagenet (RGB / 255, torchvision's mean and std) |
    # bgr_mean (BGR minus (104, 117, 123): the paper authors' released detectors, mgdet.convert)
    input_norm: str = _choice("imagenet", INPUT_NORMS)
    # fine-tuning: a trained detector (run folder, .weights.h5 with its config.json, or .keras)
    # whose weights start this one; the class head is re-initialized if the class count differs
    init_from: Optional[str] = None


@dataclass(frozen=True)
class AssignConfig:
    strategy: str = _choice("mg", STRATEGIES)  # atss: Zhang et al. 2020; tal: TOOD
    sigma: float = _range(2.0, 1, 100, low_open=True)  # C2L amplification, > 1
    pos_iou: float = _range(0.5, 0, 1, low_open=True)
    neg_iou: float = _range(0.4, 0, 1, low_open=True)
    # ATSS: candidate cells per pyramid level (x 6 anchors per cell)
    atss_topk: int = _range(9, 1, 10_000)
    # TAL: candidates per object, alignment metric t = s^alpha * u^beta
    tal_topk: int = _range(13, 1, 100_000)
    tal_alpha: float = _range(1.0, 0, 100)
    tal_beta: float = _range(6.0, 0, 100, low_open=True)


@dataclass(frozen=True)
class LossConfig:
    focal_alpha: float = _range(0.25, 0, 1)
    focal_gamma: float = _range(2.0, 0, 10)
    bl1_alpha: float = _range(0.5, 0, 10, low_open=True)
    bl1_gamma: float = _range(1.5, 0, 10, low_open=True)
    bl1_beta: float = _range(0.11, 0, 10, low_open=True)
    # classification loss: focal | quality_focal (Li et al. 2020: BCE against the soft target,
    # weighted by |target - p|^qfl_beta) | auto (quality_focal for tal's soft targets, else focal)
    cls_loss: str = _choice("auto", CLS_LOSSES)
    qfl_beta: float = _range(2.0, 0, 10)


@dataclass(frozen=True)
class DataConfig:
    source: str = _choice("synthetic", SOURCES)
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
    num_train: int = _range(2000, 1, 10**8)  # synthetic: training images
    num_eval: int = _range(300, 1, 10**8)  # synthetic: held-out images
    seed: int = _range(0, 0, 2**31 - 1)  # synthetic generation / shuffling / augmentation seed
    # M_max: objects per image kept (more are truncated with a warning)
    max_objects: int = _range(50, 1, 10_000)
    # training augmentation: ssd (SSD's, photometric after the crop) | paper (the authors' order,
    # random interpolation, 1% box drop) | none; true / false mean ssd / none
    augment: str = _choice("ssd", AUGMENT_MODES, coerce="augment")
    # zoom-out: largest canvas / image ratio (1 disables zoom-out)
    max_expand: float = _range(4.0, 1, 16)
    cache: bool = False  # cache decoded images in memory
    # refuse larger images (decompression bombs): counted skip in training, error in serving,
    # skipped with a warning by predict
    max_pixels: int = _range(DEFAULT_MAX_PIXELS, 1, 10**10)
    # fraction of the training images held out (seeded by data.seed) to pick best.weights.h5;
    # 0: no best selection (final weights only). The eval split never chooses a model.
    val_fraction: float = _range(0.0, 0, 1, high_open=True)
    # VOC difficult / COCO crowd objects in training: train (kept as objects, as the authors) |
    # ignore (dropped from the targets; evaluation ignores them either way)
    difficult: str = _choice("train", DIFFICULT)
    # several workers (--distribute multi_worker): batches (every worker reads the same global
    # batches and keeps its replicas' share: exactly one process's training) | files (each
    # worker reads, decodes and shuffles only its 1/N of the training images: input work
    # divided by N, batches no longer those of one process)
    worker_sharding: str = _choice("batches", WORKER_SHARDING)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _range(250, 1, 10**6)
    batch_size: int = _range(32, 1, 65_536)
    # sgd (the paper) | adamw (converges faster from scratch on a CPU)
    optimizer: str = _choice("sgd", OPTIMIZERS)
    lr: float = _range(0.01, 0, 100, low_open=True)  # peak learning rate (the paper: 1e-2 at 32)
    momentum: float = _range(0.9, 0, 1, high_open=True)
    # not applied to biases and batch-norm parameters
    weight_decay: float = _range(5e-4, 0, 1)
    warmup_steps: int = _range(500, 0, 10**9)  # linear warm-up from warmup_lr to lr
    warmup_lr: float = _range(1e-6, 0, 100, low_open=True)
    min_lr: float = _range(1e-6, 0, 100, low_open=True)  # cosine decay floor
    # None: one pass over the training set
    steps_per_epoch: Optional[int] = _range(None, 1, 10**9)
    eval_every: int = _range(10, 0, 10**6)  # epochs between COCO evaluations (0: only at the end)
    out_dir: Optional[str] = None  # checkpoints and TensorBoard logs; default runs/<name>
    distribute: str = _choice("none", DISTRIBUTE)
    devices: Optional[int] = _range(None, 1, 4096)  # mirrored: number of devices (None: all)
    # float32 | mixed_float16 | mixed_bfloat16 | auto (resolved when training starts; the run's
    # config.json keeps auto, its manifest the resolved policy)
    precision: str = _choice("auto", PRECISION)
    jit_compile: bool = False  # XLA-compile the whole train step
    seed: int = _range(0, 0, 2**31 - 1)
    # clip the gradients' global norm to this (None: no clipping)
    clip_norm: Optional[float] = _range(None, 0, 10**6, low_open=True)


@dataclass(frozen=True)
class EvalConfig:
    score_threshold: float = _range(0.005, 0, 1, high_open=True)
    nms_iou: float = _range(0.5, 0, 1, low_open=True)
    max_detections: int = _range(300, 1, 100_000)
    batch_size: int = _range(8, 1, 65_536)


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
        return self.train.out_dir or os.path.join(RUNS_DIR, self.name)

    def to_dict(self):
        return dataclasses.asdict(self)


def fields_by_key(cls=Config, prefix=""):
    """``{"section.key": dataclasses.Field}`` of every leaf field of the config, in order."""
    out = {}
    for f in dataclasses.fields(cls):
        if isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
            out.update(fields_by_key(f.default_factory, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f
    return out

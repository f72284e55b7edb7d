"""Data sources, SSD augmentation and the tf.data input pipeline.

Every source is a :class:`mgdet.data.source.Source` (class names, decoded examples, size and
COCO ground truth of a split), looked up by ``data.source`` in :data:`SOURCES`;
:func:`mgdet.data.pipeline.make_dataset` turns any of them into padded training / evaluation
batches::

    source = get_source(cfg.data, image_size=cfg.model.image_size)
    train_ds = make_dataset(source.dataset("train", shuffle=True), cfg.model.image_size,
                            cfg.train.batch_size, cfg.data.max_objects, training=True,
                            seed=cfg.data.seed, repeat=True)
    steps_per_epoch = source.num_examples("train") // cfg.train.batch_size
    gt = source.ground_truth("eval")  # COCO dict

Sources (``data.source``): ``synthetic`` (the embedded default), ``voc`` (VOCdevkit), ``coco``
(COCO folder), ``coco_json`` (any COCO-format JSON + image folder), ``voc_xml`` (a folder of
VOC-style XML files + images), ``yolo`` (ultralytics' YOLO-txt folders), ``tfds`` (voc/2007, voc/2012, coco/2017 from a TFDS data_dir).
A new format is one module with one ``Source`` subclass, plus its line in :data:`SOURCES`.
"""
import importlib

from mgdet.data.common import DataError, to_coco  # noqa: F401
from mgdet.data.source import SPLITS, Source, check_split  # noqa: F401

# data.source -> "module:Class" (imported on use: TFDS and TensorFlow load only when needed).
SOURCES = {
    "synthetic": "mgdet.data.synthetic:SyntheticSource",
    "voc": "mgdet.data.voc:VocSource",
    "coco": "mgdet.data.coco:CocoSource",
    "coco_json": "mgdet.data.coco:CocoJsonSource",
    "voc_xml": "mgdet.data.voc:VocXmlSource",
    "yolo": "mgdet.data.yolo:YoloSource",
    "tfds": "mgdet.data.tfds_source:TfdsSource",
}


def make_dataset(*args, **kwargs):
    """See :func:`mgdet.data.pipeline.make_dataset`."""
    from mgdet.data.pipeline import make_dataset as _make
    return _make(*args, **kwargs)


def get_source(data_config, image_size=None):
    """The :class:`~mgdet.data.source.Source` named by ``data_config.source`` (default synthetic).

    With ``data_config.val_fraction > 0`` the source is wrapped in a
    :class:`mgdet.data.holdout.HeldOutSource`: ``"train"`` is then the training split less the
    held-out ``"val"`` split (model selection), ``"eval"`` unchanged.

    Args:
      data_config: ``cfg.data`` (any object with the DataConfig attributes works).
      image_size: the model's input side (the synthetic source draws its images at that size).
    Raises:
      DataError: unknown source name.
    """
    name = getattr(data_config, "source", None) or "synthetic"
    if name not in SOURCES:
        raise DataError(f"data.source {name!r} is not one of {', '.join(SOURCES)}")
    module, cls = SOURCES[name].split(":")
    source = getattr(importlib.import_module(module), cls)(data_config, image_size)
    from mgdet.data.holdout import with_validation
    return with_validation(source, getattr(data_config, "val_fraction", 0) or 0, source.seed)


def load_source(data_config, split="train", image_size=None, shuffle=None):
    """``(tf.data.Dataset of decoded examples, class_names)`` of ``split`` ("train" | "eval").

    ``shuffle`` (reshuffle the file / index list every epoch) defaults to ``split == "train"``.
    Raises :class:`DataError` for an unknown source or missing folders / files (named).
    """
    check_split(split)
    source = get_source(data_config, image_size)
    shuffle = (split == "train") if shuffle is None else bool(shuffle)
    return source.dataset(split, shuffle=shuffle), source.class_names()


def load_ground_truth(data_config, split="eval", image_size=None):
    """COCO-format ground truth of a split (for :mod:`mgdet.evaluation`), ``category_id = label+1``.

    File sources build it from the parsed annotations without decoding any image; synthetic
    from the cached arrays; TFDS by iterating the dataset once.
    """
    check_split(split)
    return get_source(data_config, image_size).ground_truth(split)

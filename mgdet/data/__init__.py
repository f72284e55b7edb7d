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
VOC-style XML files + images), ``yolo`` (ultralytics' YOLO-txt folders), ``tfds`` (voc/2007,
voc/2012, coco/2017 from a TFDS data_dir). A new format is one module with one ``Source``
subclass, plus its line in :data:`SOURCES` and its name in :data:`mgdet.config.SOURCES` (the
``data.source`` values the config accepts).
"""
import importlib

from mgdet.data.common import DataError
from mgdet.data.holdout import with_validation

# data.source (mgdet.config.SOURCES) -> "module:Class", imported on use: a source's own
# dependencies (TFDS, pycocotools) load only when it is chosen.
SOURCES = {
    "synthetic": "mgdet.data.synthetic.source:SyntheticSource",
    "voc": "mgdet.data.voc:VocSource",
    "coco": "mgdet.data.coco:CocoSource",
    "coco_json": "mgdet.data.coco:CocoJsonSource",
    "voc_xml": "mgdet.data.voc:VocXmlSource",
    "yolo": "mgdet.data.yolo:YoloSource",
    "tfds": "mgdet.data.tfds_source:TfdsSource",
}


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
    return with_validation(source, getattr(data_config, "val_fraction", 0) or 0, source.seed)

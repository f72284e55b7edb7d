"""Data sources, SSD augmentation and the tf.data input pipeline.

Every source returns ``(tf.data.Dataset of decoded examples, class_names)`` — see
:mod:`mgdet.data.common` for the example dict — and :func:`mgdet.data.pipeline.make_dataset`
turns any of them into padded training / evaluation batches::

    train_src, names = load_source(cfg.data, "train", image_size=cfg.model.image_size)
    train_ds = make_dataset(train_src, cfg.model.image_size, cfg.train.batch_size,
                            cfg.data.max_objects, training=True, seed=cfg.data.seed)
    gt = load_ground_truth(cfg.data, "eval", image_size=cfg.model.image_size)  # COCO dict

Sources (``data.source``): ``synthetic`` (the embedded default), ``voc`` (VOCdevkit), ``coco``
(COCO folder), ``coco_json`` (any COCO-format JSON + image folder), ``voc_xml`` (a folder of
VOC-style XML files + images), ``tfds`` (voc/2007, voc/2012, coco/2017 from a TFDS data_dir).
"""
import os

from mgdet.data.common import DataError, to_coco  # noqa: F401

SPLITS = ("train", "eval")
DEFAULT_SYNTHETIC_SIZE = 160


def make_dataset(*args, **kwargs):
    """See :func:`mgdet.data.pipeline.make_dataset`."""
    from mgdet.data.pipeline import make_dataset as _make
    return _make(*args, **kwargs)


def _get(cfg, key, default=None):
    value = getattr(cfg, key, default)
    return default if value is None else value


def _sets(cfg, split, default):
    sets = tuple(_get(cfg, "train_sets" if split == "train" else "eval_sets", ()) or ())
    return sets or default


def _voc_pairs(sets):
    years, image_sets = [], []
    for s in sets:
        year, sep, iset = str(s).partition("/")
        if not sep or not year or not iset:
            raise DataError(f"data: VOC set {s!r} must look like '2007/trainval' (year/image_set)")
        years.append(year.replace("VOC", ""))
        image_sets.append(iset)
    return tuple(years), tuple(image_sets)


def _check_split(split):
    if split not in SPLITS:
        raise DataError(f"data: split must be one of {SPLITS}, got {split!r}")


def _paths(cfg, split):
    """(annotations, images) for coco_json / voc_xml."""
    ann = _get(cfg, f"{split}_ann")
    images = _get(cfg, f"{split}_images")
    return ann, images


def load_source(data_config, split="train", image_size=None, shuffle=None):
    """The dataset named by a :class:`mgdet.config.DataConfig` for ``split`` ("train" | "eval").

    Args:
      data_config: ``cfg.data`` (any object with the DataConfig attributes works).
      split: "train" or "eval".
      image_size: synthetic image side (use the model's input size; default 160).
      shuffle: shuffle the file / index list every epoch; default ``split == "train"``.
    Returns:
      ``(tf.data.Dataset of decoded examples, class_names)``.
    Raises:
      DataError: unknown source, missing folders or files (the message names them).
    """
    _check_split(split)
    cfg = data_config
    source = _get(cfg, "source", "synthetic")
    seed = int(_get(cfg, "seed", 0))
    shuffle = (split == "train") if shuffle is None else bool(shuffle)
    root = _get(cfg, "root")

    if source == "synthetic":
        from mgdet.data.synthetic import load_synthetic
        n = int(_get(cfg, "num_train" if split == "train" else "num_eval", 2000 if split == "train" else 300))
        return load_synthetic(n, int(image_size or DEFAULT_SYNTHETIC_SIZE), seed,
                              "train" if split == "train" else "val", shuffle=shuffle)

    if source == "voc":
        from mgdet.data.voc import load_voc
        if not root:
            raise DataError("data.root must name the VOCdevkit folder for source 'voc'")
        default = ("2007/trainval", "2012/trainval") if split == "train" else ("2007/test",)
        years, image_sets = _voc_pairs(_sets(cfg, split, default))
        names = tuple(_get(cfg, "class_names", ()) or ()) or None
        kw = {"class_names": names} if names else {}
        return load_voc(root, years, image_sets, shuffle=shuffle, seed=seed, **kw)

    if source in ("coco", "coco_json"):
        from mgdet.data.coco import default_paths, load_coco
        if source == "coco":
            if not root:
                raise DataError("data.root must name the COCO folder (holding annotations/ and "
                                "train2017/, val2017/) for source 'coco'")
            default = ("train2017",) if split == "train" else ("val2017",)
            pairs = [default_paths(root, s) for s in _sets(cfg, split, default)]
        else:
            ann, images = _paths(cfg, split)
            if not ann:
                raise DataError(f"data.{split}_ann must name a COCO-format JSON for source 'coco_json'")
            if not images:
                images = os.path.dirname(os.path.abspath(ann))
            pairs = [(ann, images)]
        datasets, names = [], None
        for ann, images in pairs:
            ds, n = load_coco(ann, images, shuffle=shuffle, seed=seed)
            if names is not None and n != names:
                raise DataError(f"data: COCO sets {pairs} have different categories")
            datasets.append(ds)
            names = n
        ds = datasets[0]
        for other in datasets[1:]:
            ds = ds.concatenate(other)
        return ds, names

    if source == "voc_xml":
        from mgdet.data.voc import load_voc_xml
        ann, images = _paths(cfg, split)
        ann = ann or (root if split == "train" else None)
        if not ann:
            raise DataError(f"data.{split}_ann (or data.root for training) must name the folder "
                            "of VOC XML files for source 'voc_xml'")
        names = tuple(_get(cfg, "class_names", ()) or ()) or None
        if names is None and split == "eval":  # labels must match training's
            train_ann = _get(cfg, "train_ann") or root
            if train_ann:
                from mgdet.data.voc import voc_xml_records
                names = voc_xml_records(os.fspath(train_ann), _get(cfg, "train_images"), None)[2]
        return load_voc_xml(ann, images, names, shuffle=shuffle, seed=seed)

    if source == "tfds":
        from mgdet.data.tfds_source import DEFAULT_SPLITS, load_tfds
        name = _get(cfg, "tfds_name")
        if not name:
            raise DataError("data.tfds_name must be set for source 'tfds' (voc/2007, voc/2012, coco/2017)")
        family = name.split("/")[0]
        default = DEFAULT_SPLITS.get(family, ("train", "validation"))[0 if split == "train" else 1]
        tfds_split = "+".join(_sets(cfg, split, (default,)))
        return load_tfds(name, tfds_split, _get(cfg, "data_dir"), shuffle=shuffle, seed=seed)

    raise DataError(f"data.source {source!r} is not one of synthetic, voc, coco, coco_json, voc_xml, tfds")


def load_ground_truth(data_config, split="eval", image_size=None):
    """COCO-format ground truth of a split (for :mod:`mgdet.evaluation`), ``category_id = label+1``.

    File sources build it from the parsed annotations without decoding any image; synthetic
    from the cached arrays; TFDS by iterating the dataset once.
    """
    _check_split(split)
    cfg = data_config
    source = _get(cfg, "source", "synthetic")
    if source == "synthetic":
        from mgdet.data.synthetic import generate
        n = int(_get(cfg, "num_train" if split == "train" else "num_eval", 2000 if split == "train" else 300))
        return generate(n, int(image_size or DEFAULT_SYNTHETIC_SIZE), int(_get(cfg, "seed", 0)),
                        "train" if split == "train" else "val").to_coco()
    if source in ("voc", "voc_xml", "coco", "coco_json"):
        # The loaders cache their parsed records; rebuild them through load_source's arguments.
        records, names = _records_for(cfg, split)
        return to_coco(records, names)
    ds, names = load_source(cfg, split, image_size=image_size, shuffle=False)
    return to_coco(ds, names)


def _records_for(cfg, split):
    source = _get(cfg, "source")
    root = _get(cfg, "root")
    if source == "voc":
        from mgdet.data.voc import VOC_CLASSES, voc_records
        default = ("2007/trainval", "2012/trainval") if split == "train" else ("2007/test",)
        years, image_sets = _voc_pairs(_sets(cfg, split, default))
        names = tuple(_get(cfg, "class_names", ()) or ()) or VOC_CLASSES
        return voc_records(os.fspath(root), years, image_sets, names)[0], list(names)
    if source == "voc_xml":
        _, names = load_source(cfg, split, shuffle=False)   # resolves folders and class names
        from mgdet.data.voc import voc_xml_records
        ann, images = _paths(cfg, split)
        ann = ann or root
        return voc_xml_records(os.fspath(ann), images and os.fspath(images), tuple(names))[0], names
    from mgdet.data.coco import coco_records, default_paths
    if source == "coco":
        default = ("train2017",) if split == "train" else ("val2017",)
        pairs = [default_paths(root, s) for s in _sets(cfg, split, default)]
    else:
        ann, images = _paths(cfg, split)
        pairs = [(ann, images or os.path.dirname(os.path.abspath(ann)))]
    records, names = [], None
    for ann, images in pairs:
        recs, _, cmap = coco_records(os.fspath(ann), os.fspath(images), False)
        records += recs
        names = cmap.class_names
    return records, names

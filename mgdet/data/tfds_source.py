"""TFDS datasets: ``voc/2007``, ``voc/2012``, ``coco/2017`` (and any TFDS detection dataset with
an ``objects`` sequence of ``bbox`` / ``label``), read from a prepared ``data_dir``.

TFDS stores boxes as normalized ``(ymin, xmin, ymax, xmax)``; they become mgdet's xyxy here.
``objects/is_difficult`` (VOC) becomes ``difficult``, ``objects/is_crowd`` and ``objects/area``
(COCO) become ``is_crowd`` and ``area``. The image id is ``image/id`` when the dataset has one,
else the digits of ``image/filename`` (VOC: ``000005.jpg`` -> 5, ``2008_000008.jpg`` ->
2008000008), else a hash of the file name.
"""
import tensorflow as tf

from mgdet.data.common import DataError
from mgdet.data.source import Source

# Suggested splits: (training, evaluation) for the datasets the paper uses.
DEFAULT_SPLITS = {"voc": ("train+validation", "test"), "coco": ("train", "validation")}


def _convert(ex):
    objs = ex["objects"]
    bbox = tf.reshape(tf.cast(objs["bbox"], tf.float32), [-1, 4])
    label = tf.reshape(tf.cast(objs["label"], tf.int32), [-1])
    # Be defensive about per-object lists of different lengths (malformed / mocked data).
    n = tf.minimum(tf.shape(bbox)[0], tf.shape(label)[0])
    extra = {}
    for src, dst in (("is_difficult", "difficult"), ("is_crowd", "is_crowd"), ("area", "area")):
        if src in objs:
            v = tf.reshape(objs[src], [-1])
            n = tf.minimum(n, tf.shape(v)[0])
            extra[dst] = v
    out = {
        "image": ex["image"],
        "boxes": tf.gather(bbox[:n], [1, 0, 3, 2], axis=-1),
        "labels": label[:n],
    }
    for k, v in extra.items():
        out[k] = tf.cast(v[:n], tf.float32 if k == "area" else tf.bool)
    if "image/id" in ex:
        out["image_id"] = tf.cast(ex["image/id"], tf.int64)
    elif "image/filename" in ex:
        name = ex["image/filename"]
        digits = tf.strings.regex_replace(tf.strings.regex_replace(name, r"\.[^.]*$", ""), "[^0-9]", "")
        ok = (tf.strings.length(digits) > 0) & (tf.strings.length(digits) <= 18)
        out["image_id"] = tf.cond(
            ok, lambda: tf.strings.to_number(tf.where(ok, digits, "0"), tf.int64),
            lambda: tf.strings.to_hash_bucket_fast(name, 2 ** 62))
    else:
        raise DataError("TFDS: the dataset has neither 'image/id' nor 'image/filename'")
    return out


def load_tfds_with_info(name, split, data_dir=None, shuffle=False, seed=0, download=False):
    """A TFDS detection dataset as decoded examples.

    Args:
      name: e.g. ``"voc/2007"``, ``"voc/2012"``, ``"coco/2017"``.
      split: TFDS split expression (``"train+validation"``, ``"test"``, ``"validation[:10%]"``).
      data_dir: the TFDS data folder (default: TFDS's, ``~/tensorflow_datasets``).
      shuffle: shuffle the files each epoch (TFDS ``shuffle_files``), seeded by ``seed``.
      download: let TFDS download and prepare the dataset when missing (off: training should
        not start a 20 GB download by surprise).
    Returns:
      ``(dataset of decoded examples, class_names, tfds DatasetInfo)``.
    Raises:
      DataError: the dataset is not prepared in ``data_dir`` or has no ``objects`` feature.
    """
    import tensorflow_datasets as tfds  # loaded only when the tfds source is chosen

    try:
        ds, info = tfds.load(name, split=split, data_dir=data_dir, download=download,
                             shuffle_files=bool(shuffle), with_info=True,
                             read_config=tfds.ReadConfig(shuffle_seed=seed))
    except Exception as e:  # noqa: BLE001 - TFDS raises AssertionError, DatasetNotFoundError, ...
        raise DataError(f"TFDS: cannot load {name!r} split {split!r} from data_dir "
                        f"{data_dir or '~/tensorflow_datasets'!r}: {type(e).__name__}: {e}. "
                        "Prepare it first (tfds build / download=True) or point data_dir at it.") from None
    try:
        features = info.features
        features["objects"]["bbox"]  # noqa: B018 - presence check
        class_names = list(features["objects"]["label"].names)
    except (KeyError, AttributeError, TypeError):
        raise DataError(f"TFDS: {name!r} has no objects/bbox and objects/label features "
                        "(not a detection dataset)") from None
    return (ds.map(_convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True),
            class_names, info)


class TfdsSource(Source):
    """``tfds``: ``data.tfds_name`` from ``data.data_dir``; TFDS split expressions from
    ``data.train_sets`` / ``data.eval_sets`` (joined with "+"; default :data:`DEFAULT_SPLITS`)."""

    name = "tfds"

    def split_expression(self, split):
        name = self.require("tfds_name", "a TFDS dataset (voc/2007, voc/2012, coco/2017)")
        family = name.split("/")[0]
        default = DEFAULT_SPLITS.get(family, ("train", "validation"))[0 if split == "train" else 1]
        return name, "+".join(self.sets(split, (default,)))

    def _load(self, split, shuffle=False):
        """``(dataset, class_names, info)``, loaded once per (split, shuffle)."""
        cache = self.__dict__.setdefault("_loaded", {})
        if (split, shuffle) not in cache:
            name, expr = self.split_expression(split)
            cache[split, shuffle] = load_tfds_with_info(name, expr, self.option("data_dir"),
                                                        shuffle, self.seed)
        return cache[split, shuffle]

    def class_names(self):
        return self._load("train")[1]

    def dataset(self, split, shuffle=False):
        return self._load(split, shuffle)[0]

    def num_examples(self, split):
        """The split's length from TFDS's metadata (the dataset's cardinality; no decoding)."""
        ds, _, info = self._load(split)
        n = int(ds.cardinality())
        if n >= 0:
            return n
        name, expr = self.split_expression(split)
        try:
            return int(info.splits[expr].num_examples)
        except (KeyError, ValueError, AttributeError):
            raise DataError(f"TFDS: the size of {name!r} split {expr!r} is unknown; set "
                            "train.steps_per_epoch") from None

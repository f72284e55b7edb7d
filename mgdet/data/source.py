"""The interface every data source implements, and the base of the file-based ones.

A source reads one dataset format. It is built from ``cfg.data`` (a
:class:`mgdet.config.DataConfig`, or any object with its attributes) and answers, per split
("train" | "eval"):

    source.class_names()            -> [str], label = index (the same for both splits)
    source.dataset(split, shuffle)  -> tf.data.Dataset of decoded examples (mgdet.data.common)
    source.num_examples(split)      -> int, known before any image is decoded
    source.ground_truth(split)      -> COCO-format dict (category_id = label + 1)
    source.report(split)            -> {counter: int}: what listing skipped (empty if nothing can)
    source.examples_at(split, positions)
                                    -> decoded examples at a tf.data.Dataset of int64 positions
                                       of the unshuffled split, in that order, reading only
                                       those (the resumable training stream,
                                       mgdet.data.datasets.build_train_dataset); None for a source
                                       that can only be read in sequence (TFDS)
    source.subset(split, indices, shuffle) / source.subset_ground_truth(split, indices)
                                    -> the same for the examples at those positions of the
                                       unshuffled split (the held-out validation split,
                                       mgdet.data.holdout); generic here, cheap in subclasses

File formats subclass :class:`RecordSource` and implement only ``records(split)`` (the parsed
annotations, with a :class:`mgdet.data.common.SourceReport`) and ``class_names()``. Sources are
looked up by ``data.source`` in :data:`mgdet.data.SOURCES`; a new format is one module holding
one subclass plus its line in that table and its name in :data:`mgdet.config.SOURCES` (the
``data.source`` values the config accepts).
"""
import abc

import numpy as np

from mgdet.config import DEFAULT_MAX_PIXELS
from mgdet.data.common import DataError, records_at, records_to_dataset, to_coco

SPLITS = ("train", "eval")


class Source(abc.ABC):
    """Base class: see the module docstring. ``name`` is the ``data.source`` value."""

    name = ""

    def __init__(self, data_config, image_size=None):
        self.cfg = data_config
        self.image_size = image_size

    # -- configuration helpers --------------------------------------------------------------
    def option(self, key, default=None):
        """``cfg.data.<key>``, or ``default`` when absent or None."""
        value = getattr(self.cfg, key, default)
        return default if value is None else value

    @property
    def seed(self):
        return int(self.option("seed", 0))

    @property
    def max_pixels(self):
        return int(self.option("max_pixels", DEFAULT_MAX_PIXELS))

    def sets(self, split, default):
        """``data.train_sets`` / ``data.eval_sets`` for ``split``, or ``default`` when empty."""
        check_split(split)
        sets = tuple(self.option("train_sets" if split == "train" else "eval_sets", ()) or ())
        return sets or tuple(default)

    def require(self, key, what):
        """``cfg.data.<key>``; a :class:`DataError` saying ``what`` it must name when unset."""
        value = self.option(key)
        if not value:
            raise DataError(f"data.{key} must name {what} for source {self.name!r}")
        return value

    # -- the interface -------------------------------------------------------------------------
    @abc.abstractmethod
    def class_names(self):
        """The class names, index = class id."""

    @abc.abstractmethod
    def dataset(self, split, shuffle=False):
        """Decoded examples of ``split`` (``tf.data.Dataset`` of example dicts), reshuffled
        every epoch when ``shuffle``."""

    @abc.abstractmethod
    def num_examples(self, split):
        """Number of examples of ``split``."""

    def ground_truth(self, split):
        """Default: one pass over the decoded split (sources that know their annotations
        without decoding override this)."""
        return to_coco(self.dataset(split, shuffle=False), self.class_names())

    def report(self, split):
        return {}

    def examples_at(self, split, positions):
        """Decoded examples at ``positions`` (``tf.data.Dataset`` of int64 positions in the
        unshuffled ``split``), in that order, or None: this source is read in sequence only."""
        return None

    def subset(self, split, indices, shuffle=False):
        """Decoded examples at ``indices`` (positions in the unshuffled ``split``), in that
        order, or reshuffled every epoch (seeded by ``data.seed``) when ``shuffle``.

        Generic: one pass over the unshuffled split keeping those positions; subclasses that
        list their examples before decoding override it with a cheaper selection.
        """
        import tensorflow as tf  # on use: mgdet.data imports without TensorFlow (the CLI's start)

        indices = np.asarray(indices, np.int64)
        n = self.num_examples(split)
        keep = np.zeros(max(n, int(indices.max(initial=-1)) + 1), bool)
        keep[indices] = True
        keep = tf.constant(keep)
        ds = self.dataset(split, shuffle=False).enumerate()
        ds = ds.filter(lambda i, ex: keep[i]).map(lambda i, ex: ex)
        if shuffle and len(indices):
            ds = ds.shuffle(len(indices), seed=self.seed, reshuffle_each_iteration=True)
        return ds

    def subset_ground_truth(self, split, indices):
        """COCO ground truth of :meth:`subset` (default: one pass over it)."""
        return to_coco(self.subset(split, indices), self.class_names())


class RecordSource(Source):
    """A file format: annotations parsed in Python (``records``), images decoded in tf.data.

    ``records(split)`` returns ``(records, report)``: a list of record dicts (path, boxes
    normalized xyxy, labels, image_id, width, height, optional difficult / is_crowd / area)
    and the :class:`~mgdet.data.common.SourceReport` of what listing skipped. The number of
    examples is ``len(records)``: only images the header check accepted are listed, so it is
    exact unless a file passes the header check and still fails to decode (counted as
    ``images_failed_decode`` in :mod:`mgdet.data.stats`).
    """

    @abc.abstractmethod
    def records(self, split):
        """``(records, report)`` of ``split``: see the class docstring."""

    def dataset(self, split, shuffle=False):
        return records_to_dataset(self.records(split)[0], shuffle, self.seed)

    def num_examples(self, split):
        return len(self.records(split)[0])

    def ground_truth(self, split):
        return to_coco(self.records(split)[0], self.class_names())

    def report(self, split):
        return self.records(split)[1].as_dict()

    def examples_at(self, split, positions):
        return records_at(self.records(split)[0], positions)

    def _records_at(self, split, indices):
        records = self.records(split)[0]
        return [records[int(i)] for i in indices]

    def subset(self, split, indices, shuffle=False):
        return records_to_dataset(self._records_at(split, indices), shuffle, self.seed)

    def subset_ground_truth(self, split, indices):
        return to_coco(self._records_at(split, indices), self.class_names())


def check_split(split):
    if split not in SPLITS:
        raise DataError(f"data: split must be one of {SPLITS}, got {split!r}")

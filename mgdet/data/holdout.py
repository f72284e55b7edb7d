"""A validation split held out from the training records, for model selection.

``best.weights.h5`` must be chosen on images the model is neither trained on nor reported on:
with ``data.val_fraction > 0``, :func:`holdout_indices` draws that fraction of the training
split's positions (seeded by ``data.seed``) and :class:`HeldOutSource` serves them as the
``"val"`` split while ``"train"`` keeps the rest. The ``"eval"`` split is untouched. Works for
every :class:`~mgdet.data.source.Source` through :meth:`~mgdet.data.source.Source.subset`.
"""
import numpy as np

from mgdet.data.common import DataError
from mgdet.data.source import Source

VAL = "val"


def holdout_indices(n, fraction, seed):
    """``(train, val)``: sorted int64 positions of an ``n``-example split, disjoint, covering
    ``range(n)``; ``val`` holds ``round(fraction * n)`` of them (at least 1, at most ``n - 1``),
    drawn by a permutation seeded by ``seed`` (same arguments -> same split).

    Raises DataError when ``fraction`` is not in (0, 1) or ``n < 2``.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.val_fraction must be in (0, 1) to hold out images, got {fraction}")
    if n < 2:
        raise DataError(f"data.val_fraction {fraction}: the training split has {n} image(s), "
                        "too few to hold any out; add images or set data.val_fraction: 0")
    n_val = min(max(int(round(fraction * n)), 1), n - 1)
    order = np.random.default_rng([int(seed), 0x7A1]).permutation(n)
    return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)


class HeldOutSource(Source):
    """``source`` with ``"train"`` split into ``"train"`` (the rest) and ``"val"`` (held out).

    Same interface as any source; ``"eval"`` and :meth:`class_names` pass through.
    """

    def __init__(self, source, fraction, seed):
        super().__init__(source.cfg, source.image_size)
        self.source, self.name = source, source.name
        self.train_indices, self.val_indices = holdout_indices(
            source.num_examples("train"), float(fraction), seed)

    def _indices(self, split):
        if split not in ("train", VAL):
            raise DataError(f"data: split must be one of ('train', 'val', 'eval'), got {split!r}")
        return self.train_indices if split == "train" else self.val_indices

    def class_names(self):
        return self.source.class_names()

    def dataset(self, split, shuffle=False):
        if split == "eval":
            return self.source.dataset(split, shuffle)
        return self.source.subset("train", self._indices(split), shuffle)

    def subset(self, split, indices, shuffle=False):
        if split == "eval":
            return self.source.subset(split, indices, shuffle)
        return self.source.subset("train", self._indices(split)[np.asarray(indices, np.int64)],
                                  shuffle)

    def examples_at(self, split, positions):
        if split == "eval":
            return self.source.examples_at(split, positions)
        import tensorflow as tf  # on use: mgdet.data imports without TensorFlow (the CLI's start)

        indices = self._indices(split)
        return self.source.examples_at("train", positions.map(lambda i: tf.gather(indices, i)))

    def num_examples(self, split):
        if split == "eval":
            return self.source.num_examples(split)
        return len(self._indices(split))

    def ground_truth(self, split):
        if split == "eval":
            return self.source.ground_truth(split)
        return self.source.subset_ground_truth("train", self._indices(split))

    def report(self, split):
        return self.source.report("eval" if split == "eval" else "train")


def with_validation(source, fraction, seed):
    """``source`` itself when ``fraction`` is 0, else its :class:`HeldOutSource`."""
    return HeldOutSource(source, fraction, seed) if fraction else source

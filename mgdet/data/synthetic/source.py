"""``data.source: synthetic``: the generated images as ``tf.data`` datasets of decoded
examples (:func:`synthetic_dataset`) and as a :class:`~mgdet.data.source.Source`."""
import numpy as np
import tensorflow as tf

from mgdet.data.common import to_coco
from mgdet.data.source import Source, check_split
from mgdet.data.synthetic.generated import generate
from mgdet.data.synthetic.shapes import CLASS_NAMES


def synthetic_dataset(num_images, image_size=160, seed=0, split="train", shuffle=False,
                      shuffle_seed=None, indices=None):
    """The synthetic dataset as a ``tf.data.Dataset`` of decoded examples.

    Args:
      num_images: images in the split.
      image_size: square image side in pixels (objects are sized with COCO's pixel thresholds at
        this size, so train the model at the same size).
      seed: dataset seed; ``split`` ("train", "val"/"validation", "test") picks a disjoint stream.
      shuffle: shuffle the (cheap) image indices each epoch, before anything is materialized.
      shuffle_seed: seed of that shuffle (default ``seed``).
      indices: only the images at these positions (default all), in that order.
    Returns:
      Dataset of ``{"image": uint8 [S, S, 3], "boxes": float32 [K, 4], "labels": int32 [K],
      "image_id": int64 []}``.
    """
    if indices is None:
        indices = np.arange(int(num_images), dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
    if shuffle and len(indices):
        ds = ds.shuffle(len(indices), seed=seed if shuffle_seed is None else shuffle_seed,
                        reshuffle_each_iteration=True)
    return synthetic_at(num_images, image_size, seed, split, ds)


def synthetic_at(num_images, image_size, seed, split, positions):
    """The examples of :func:`synthetic_dataset` at ``positions`` (``tf.data.Dataset`` of
    int64 image indices), in that order."""
    data = generate(num_images, image_size, seed, split)
    if getattr(data, "_tensors", None) is None:
        # once, eagerly even inside a tf.data function (a stream's passes): functions then
        # capture these tensors instead of holding a copy of every image as a constant
        with tf.init_scope():
            data._tensors = tuple(tf.convert_to_tensor(a) for a in (
                data.images, data.boxes, data.labels, data.row_splits, data.image_ids))
    images, boxes, labels, row_splits, ids = data._tensors

    def _get(i):
        a, b = row_splits[i], row_splits[i + 1]
        return {"image": images[i], "boxes": boxes[a:b], "labels": labels[a:b], "image_id": ids[i]}

    return positions.map(_get, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class SyntheticSource(Source):
    """``synthetic``: ``data.num_train`` / ``data.num_eval`` generated images at the model's
    input size (default 160); the eval split is the generator's "val" stream."""

    name = "synthetic"
    DEFAULT_SIZE = 160

    def _args(self, split):
        check_split(split)
        key, default = ("num_train", 2000) if split == "train" else ("num_eval", 300)
        return (int(self.option(key, default)), int(self.image_size or self.DEFAULT_SIZE),
                self.seed, "train" if split == "train" else "val")

    def class_names(self):
        return list(CLASS_NAMES)

    def dataset(self, split, shuffle=False):
        return synthetic_dataset(*self._args(split), shuffle=shuffle)

    def num_examples(self, split):
        return self._args(split)[0]

    def ground_truth(self, split):
        return generate(*self._args(split)).to_coco()

    def subset(self, split, indices, shuffle=False):
        return synthetic_dataset(*self._args(split), shuffle=shuffle, indices=indices)

    def examples_at(self, split, positions):
        return synthetic_at(*self._args(split), positions)

    def subset_ground_truth(self, split, indices):
        examples = list(generate(*self._args(split)).coco_examples())
        return to_coco([examples[int(i)] for i in indices], CLASS_NAMES)

"""Synthetic images generated once per ``(num_images, image_size, seed, split)`` and cached
in memory (:func:`generate`), as numpy arrays (:class:`SyntheticData`)."""
import concurrent.futures
import functools
import multiprocessing
import time

import numpy as np

from mgdet.data.common import DataError, to_coco
from mgdet.data.synthetic.painter import render_image
from mgdet.data.synthetic.shapes import CLASS_NAMES

SPLITS = {"train": 0, "val": 1, "validation": 1, "test": 2}
_CACHE_MAX = 4


class SyntheticData:
    """Generated images and annotations as numpy arrays.

    Attributes:
      images: uint8 ``[N, S, S, 3]``.
      boxes: float32 ``[T, 4]`` normalized xyxy of all images, concatenated.
      labels: int32 ``[T]``.
      row_splits: int64 ``[N + 1]``: image ``i`` owns ``boxes[row_splits[i]:row_splits[i + 1]]``.
      image_ids: int64 ``[N]`` (``1..N``).
      seconds: generation time.
    """

    def __init__(self, images, boxes, labels, row_splits, seconds=0.0):
        self.images, self.boxes, self.labels, self.row_splits = images, boxes, labels, row_splits
        self.image_ids = np.arange(1, len(images) + 1, dtype=np.int64)
        self.seconds = seconds
        self.class_names = CLASS_NAMES

    def __len__(self):
        return len(self.images)

    def example(self, i):
        a, b = self.row_splits[i], self.row_splits[i + 1]
        return {"image": self.images[i], "boxes": self.boxes[a:b], "labels": self.labels[a:b],
                "image_id": self.image_ids[i]}

    def coco_examples(self):
        """Light examples (sizes instead of pixels) for :func:`to_coco`."""
        s = self.images.shape[1:3]
        for i in range(len(self)):
            a, b = self.row_splits[i], self.row_splits[i + 1]
            yield {"height": s[0], "width": s[1], "boxes": self.boxes[a:b],
                   "labels": self.labels[a:b], "image_id": self.image_ids[i]}

    def to_coco(self):
        return to_coco(self, CLASS_NAMES)


def _split_key(split):
    if split not in SPLITS:
        raise DataError(f"synthetic: unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return SPLITS[split]


def _render_range(seed, key, start, stop, image_size):
    """Images ``start..stop-1`` of stream ``(seed, key)`` (runs in worker processes too)."""
    tile_rng = np.random.default_rng([seed, key, 2**31 - 1])
    noise_tile = tile_rng.standard_normal((2 * image_size, 2 * image_size, 3), dtype=np.float32)
    images = np.empty((stop - start, image_size, image_size, 3), np.uint8)
    boxes, labels = [], []
    for i in range(start, stop):
        img, b, lab = render_image(np.random.default_rng([seed, key, i]), image_size, noise_tile)
        images[i - start] = img
        boxes.append(b)
        labels.append(lab)
    return images, boxes, labels


@functools.lru_cache(maxsize=_CACHE_MAX)
def generate(num_images, image_size=160, seed=0, split="train", workers=None):
    """Generates (once; cached in memory) ``num_images`` images of ``image_size`` x ``image_size``.

    Deterministic: image ``i`` of ``(seed, split)`` depends on nothing else (not on
    ``num_images``, not on ``workers``).

    Args:
      workers: processes drawing images in parallel (opt-in; default 1). They are forked (the
        fastest start; a child only runs numpy code), so use it from the main thread of a
        POSIX process; the result is the same for any number of workers.
    Returns:
      a :class:`SyntheticData`.
    """
    num_images, image_size, seed = int(num_images), int(image_size), int(seed)
    if num_images < 0 or image_size < 32:
        raise DataError(f"synthetic: need num_images >= 0 and image_size >= 32, got "
                        f"{num_images}, {image_size}")
    key = _split_key(split)
    workers = 1 if workers is None else max(1, int(workers))
    t0 = time.perf_counter()
    if workers == 1 or num_images < 2 * workers:
        images, all_boxes, all_labels = _render_range(seed, key, 0, num_images, image_size)
    else:
        bounds = np.linspace(0, num_images, 4 * workers + 1).astype(int)
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            parts = list(pool.map(_render_range, *zip(*[(seed, key, int(a), int(b), image_size)
                                                        for a, b in zip(bounds[:-1], bounds[1:])])))
        images = np.concatenate([p[0] for p in parts], 0)
        all_boxes = [b for p in parts for b in p[1]]
        all_labels = [lab for p in parts for lab in p[2]]
    splits = np.concatenate([[0], np.cumsum([len(lab) for lab in all_labels])]).astype(np.int64)
    boxes = np.concatenate(all_boxes, 0) if all_boxes else np.zeros((0, 4), np.float32)
    labels = np.concatenate(all_labels, 0) if all_labels else np.zeros((0,), np.int32)
    return SyntheticData(images, boxes.astype(np.float32), labels.astype(np.int32), splits,
                         seconds=time.perf_counter() - t0)


def describe(data):
    """Statistics of a :class:`SyntheticData`: objects per image, class and COCO size counts."""
    n = len(data)
    per_image = np.diff(data.row_splits)
    s = data.images.shape[1]
    wh = (data.boxes[:, 2:] - data.boxes[:, :2]) * s
    sqrt_area = np.sqrt(wh[:, 0] * wh[:, 1])
    return {
        "images": n,
        "objects": int(len(data.labels)),
        "empty_images": int((per_image == 0).sum()),
        "objects_per_image_max": int(per_image.max()) if n else 0,
        "class_counts": {c: int((data.labels == i).sum()) for i, c in enumerate(CLASS_NAMES)},
        "small": int((sqrt_area < 32).sum()),
        "medium": int(((sqrt_area >= 32) & (sqrt_area < 96)).sum()),
        "large": int((sqrt_area >= 96).sum()),
        "aspect_min": float((wh[:, 0] / wh[:, 1]).min()) if len(wh) else 0.0,
        "aspect_max": float((wh[:, 0] / wh[:, 1]).max()) if len(wh) else 0.0,
        "seconds": data.seconds,
    }

"""Anchor boxes of the authors' released code (docs/design.md, "Anchors").

Level k (k = 0..L-1) has stride 2^(3+k), feature size ceil(S / 2^(3+k)) and base size
s = base_size * 2^k pixels. Each cell holds 6 anchors, in this order:
s x s, (s*sqrt2) x (s/sqrt2), (s/sqrt2) x (s*sqrt2), then the same three with s' = s*sqrt2
(width x height). L = 4 below 512 px, 5 from 512.

As in the authors' ``prior_box``, widths and heights normalized by S are capped at 1 in centre
form (w = min(w, 1), h = min(h, 1)) and the corners are **not** clipped at the image border: a
border anchor keeps its full size and reaches past [0, 1]. ``clip=True`` gives the older
corner-clipped anchors (kept only for the old-vs-new anchors ablation).

Centres and half-sizes are rounded to multiples of 2^-22 (< 1e-6 of the image) so that every
coordinate difference is exact in float32: anchors of one shape then have bit-identical widths
and heights in every cell, and mathematically equal IoUs (a small object inside two neighbouring
anchors, say) compare equal, so the tie rule of docs/design.md ("Label assignment": lower
anchor index) really applies.
"""
import math

import numpy as np

ANCHORS_PER_CELL = 6
_GRID = 2.0 ** 22


def num_levels(image_size):
    """Pyramid levels for a square input of ``image_size`` pixels: 4 below 512, 5 from 512."""
    return 5 if image_size >= 512 else 4


def feature_sizes(image_size):
    """Feature-map side per level: ``[ceil(S / 8), ceil(S / 16), ...]``."""
    return [int(math.ceil(image_size / 2 ** (3 + k))) for k in range(num_levels(image_size))]


def cell_shapes(base):
    """The 6 (width, height) pairs in pixels for a cell whose base size is ``base``."""
    r = math.sqrt(2.0)
    shapes = []
    for s in (base, base * r):
        shapes += [(s, s), (s * r, s / r), (s / r, s * r)]
    return shapes


def num_anchors(image_size):
    """Total anchor count N for ``image_size`` (12,750 at 320)."""
    return ANCHORS_PER_CELL * sum(f * f for f in feature_sizes(image_size))


def generate_anchors(image_size=320, base_size=24.0, clip=False):
    """Anchors for a square ``image_size`` input.

    Args:
      image_size: S, a positive multiple of 64.
      base_size: anchor side of level 0 in pixels.
      clip: clip the corners to [0, 1] (not the authors' anchors; for ablations only).
    Returns:
      ``tf.Tensor [N, 4]`` float32, xyxy normalized by S (centres in (0, 1), sizes <= 1,
      corners may lie outside [0, 1] unless ``clip``), ordered by level, then row (y), then
      column (x), then the 6 shapes.
    """
    if image_size <= 0 or image_size % 64:
        raise ValueError(f"image_size must be a positive multiple of 64, got {image_size}")
    per_level = []
    for k, f in enumerate(feature_sizes(image_size)):
        wh = np.minimum(np.array(cell_shapes(base_size * 2 ** k), np.float64) / image_size, 1.0)
        half = wh / 2  # [6, 2]
        half = np.round(half * _GRID) / _GRID
        centers = np.round((np.arange(f, dtype=np.float64) + 0.5) / f * _GRID) / _GRID
        cy, cx = np.meshgrid(centers, centers, indexing="ij")  # [f, f], rows then columns
        c = np.stack([cx, cy], -1).reshape(f * f, 1, 2)  # [f*f, 1, 2]
        boxes = np.concatenate([c - half, c + half], -1)  # [f*f, 6, 4]
        per_level.append(boxes.reshape(-1, 4))
    import tensorflow as tf  # here: the sizes and counts above serve drawing code without TF

    anchors = np.concatenate(per_level, 0)
    if clip:
        anchors = np.clip(anchors, 0.0, 1.0)
    return tf.constant(anchors, tf.float32)

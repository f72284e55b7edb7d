"""The embedded default dataset: procedurally generated shapes, no download.

Every image is drawn with numpy from its own random stream ``(seed, split, index)``, so image ``i``
is the same whatever ``num_images`` is, and the train / val / test splits never share an image.
The generated arrays are cached in memory per ``(num_images, image_size, seed, split)``.

What an image holds (painter's order, back to front):
  1. background: a two-colour linear gradient + low-frequency colour noise, sometimes faint
     stripes or a checkerboard;
  2. clutter that is not a class: thick lines, random curves, irregular blobs, arcs, dots;
  3. 0..14 objects of the :data:`CLASS_NAMES` classes (about 7 % of images have none), each
     with a random colour and a texture (solid, stripes, noise, gradient), scale drawn from the
     COCO small / medium / large ranges *in pixels at ``image_size``* (sqrt of the box area below
     32, 32..96, above 96), aspect ratio and rotation per class; objects are often placed next to
     earlier ones, so they overlap and occlude each other;
  4. a few occluders drawn over the objects (lines, curves, blobs);
  5. pixel noise over everything.
A box is the full extent of its object's mask (inside the image) even when the object is partly
hidden; an object with more than 70 % of its pixels hidden (``MIN_VISIBLE``) is dropped from the
annotations (it stays painted, as in real data).
"""
import colorsys
import functools
import math
import time

import numpy as np

from mgdet.data.common import DataError, to_coco  # noqa: F401  (to_coco is part of this API)
from mgdet.data.source import Source, check_split

CLASS_NAMES = ("circle", "ring", "rectangle", "triangle", "cross", "star", "ellipse")
NUM_CLASSES = len(CLASS_NAMES)
SPLITS = {"train": 0, "val": 1, "validation": 1, "test": 2}
MIN_VISIBLE = 0.5          # drop objects with less than 50 % of their mask visible
MIN_INSIDE = 0.4           # drop objects with less than 40 % of their mask inside the image
MIN_BOX_PX = 4             # drop objects whose box is thinner than this (pixels)
EMPTY_FRACTION = 0.07      # images with no object at all
SIZE_PROBS = (0.20, 0.50, 0.30)  # small / medium / large (COCO ranges at image_size)
SMALLEST_PX = 14.0         # smallest sqrt(box area) drawn (~0.6 x the smallest anchor, 24 px)

_CACHE_MAX = 4


# --------------------------------------------------------------------------------------------
# Masks in a local frame: every shape lives in [-1, 1]^2 before scaling / rotation.
# --------------------------------------------------------------------------------------------

def _poly_mask(u, v, verts):
    """Even-odd point-in-polygon test, vectorized over the pixel grid and the edges. verts: [V, 2]."""
    verts = np.asarray(verts, np.float32)
    nxt = np.roll(verts, 1, axis=0)
    horizontal = verts[:, 1] == nxt[:, 1]
    verts, nxt = verts[~horizontal], nxt[~horizontal]          # horizontal edges never cross
    xi, yi = verts[:, 0, None, None], verts[:, 1, None, None]
    xj, yj = nxt[:, 0, None, None], nxt[:, 1, None, None]
    crosses = ((yi > v) != (yj > v)) & (u < (xj - xi) * (v - yi) / (yj - yi) + xi)
    return (np.count_nonzero(crosses, axis=0) & 1).astype(bool)


def _shape_mask(cls, u, v, p):
    r2 = u * u + v * v
    if cls in (0, 6):                      # circle, ellipse (aspect / rotation set by caller)
        return r2 <= 1.0
    if cls == 1:                           # ring
        return (r2 <= 1.0) & (r2 >= p["inner"] ** 2)
    if cls == 2:                           # rectangle
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if cls == 3:                           # triangle, apex at (a, -1), base on v = 1
        return _poly_mask(u, v, np.array([[p["apex"], -1.0], [-1.0, 1.0], [1.0, 1.0]]))
    if cls == 4:                           # cross / plus
        t = p["arm"]
        au, av = np.abs(u), np.abs(v)
        return ((au <= 1.0) & (av <= t)) | ((au <= t) & (av <= 1.0))
    if cls == 5:                           # 5-point star
        k = np.arange(10)
        rad = np.where(k % 2 == 0, 1.0, p["inner"])
        ang = -np.pi / 2 + k * np.pi / 5
        return _poly_mask(u, v, np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1))
    raise ValueError(cls)


def _class_params(rng, cls):
    """Aspect ratio (w/h before rotation), rotation (radians) and shape parameters per class."""
    p = {}
    rot = 0.0
    if cls == 0:
        aspect = 1.0
    elif cls == 1:
        aspect = math.exp(rng.uniform(-0.25, 0.25))
        p["inner"] = rng.uniform(0.45, 0.72)
    elif cls == 2:
        aspect = math.exp(rng.uniform(-1.0, 1.0))
        rot = rng.uniform(-0.15, 0.15) if rng.random() < 0.3 else 0.0
    elif cls == 3:
        aspect = math.exp(rng.uniform(-0.5, 0.5))
        p["apex"] = rng.uniform(-0.7, 0.7)
        rot = rng.choice([0.0, np.pi / 2, np.pi, -np.pi / 2]) + rng.uniform(-0.35, 0.35)
    elif cls == 4:
        aspect = math.exp(rng.uniform(-0.45, 0.45))
        p["arm"] = rng.uniform(0.2, 0.38)
        rot = rng.uniform(-0.3, 0.3) if rng.random() < 0.4 else 0.0
    elif cls == 5:
        aspect = math.exp(rng.uniform(-0.25, 0.25))
        p["inner"] = rng.uniform(0.38, 0.55)
        rot = rng.uniform(-np.pi, np.pi)
    else:  # ellipse: clearly elongated, any orientation
        aspect = rng.uniform(1.8, 3.0) ** rng.choice([-1.0, 1.0])
        rot = rng.uniform(-np.pi, np.pi) if rng.random() < 0.5 else 0.0
    return aspect, rot, p


# --------------------------------------------------------------------------------------------
# Colours and textures
# --------------------------------------------------------------------------------------------

def _hsv(rng, s_range, v_range):
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*s_range), rng.uniform(*v_range)),
                    np.float32) * 255.0


def _object_colour(rng, bg):
    """A colour at least ~45 levels (mean abs) away from the background colour ``bg``."""
    best, best_d = None, -1.0
    for _ in range(4):
        c = _hsv(rng, (0.25, 1.0), (0.2, 1.0))
        d = float(np.abs(c - bg).mean())
        if d > 45:
            return c
        if d > best_d:
            best, best_d = c, d
    return np.clip(255.0 - bg + rng.uniform(-30, 30, 3), 0, 255).astype(np.float32)


def _texture(rng, u, v, colour, bg, noise=None):
    """[h, w, 3] float32 fill for a shape in local coords (u, v); ``noise(shape)`` gives N(0, 1)."""
    kind = rng.random()
    shape = np.broadcast(u, v).shape + (3,)
    if kind < 0.42:                                          # solid
        return np.broadcast_to(colour, shape)
    second = _object_colour(rng, bg) if rng.random() < 0.5 else np.clip(colour * rng.uniform(0.3, 0.7), 0, 255)
    if kind < 0.68:                                          # stripes
        th = rng.uniform(0, np.pi)
        freq = rng.uniform(2.0, 6.0)
        on = np.sin((u * np.cos(th) + v * np.sin(th)) * freq * np.pi) > 0
        return np.where(on[..., None], colour, second)
    if kind < 0.86:                                          # noisy
        n = noise(shape) if noise is not None else rng.standard_normal(shape, dtype=np.float32)
        return np.clip(colour + n * np.float32(rng.uniform(15, 40)), 0, 255)
    th = rng.uniform(0, 2 * np.pi)                           # gradient
    t = np.clip((u * np.cos(th) + v * np.sin(th) + 1.0) * 0.5, 0, 1)[..., None]
    return colour + t * (second - colour)


# --------------------------------------------------------------------------------------------
# The renderer
# --------------------------------------------------------------------------------------------

class _Canvas:
    def __init__(self, rng, size, noise_tile):
        self.rng, self.size = rng, size
        self.img = self._background(noise_tile)
        self.owner = np.full((size, size), -1, np.int16)
        self.coords = np.arange(size, dtype=np.float32) + 0.5   # pixel centres

    def _background(self, noise_tile):
        rng, s = self.rng, self.size
        self._noise_tile = noise_tile
        c1 = _hsv(rng, (0.0, 0.6), (0.15, 0.95))
        c2 = _hsv(rng, (0.0, 0.6), (0.15, 0.95))
        # A two-colour linear gradient plus low-frequency colour noise, both defined on a k x k
        # grid and bilinearly upsampled with two small matrices (exact for the linear gradient).
        k = int(rng.integers(3, 8))
        th = rng.uniform(0, 2 * np.pi)
        g = np.linspace(0.0, 1.0, k, dtype=np.float32)
        t = g[None, :] * np.cos(th) + g[:, None] * np.sin(th)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        grid = c1 + t[..., None] * (c2 - c1)
        grid += rng.normal(0, rng.uniform(8, 30), (k, k, 3)).astype(np.float32)
        pos = np.linspace(0, k - 1, s, dtype=np.float32)
        i0 = np.minimum(pos.astype(int), k - 2)
        w = pos - i0
        interp = np.zeros((s, k), np.float32)
        interp[np.arange(s), i0] = 1 - w
        interp[np.arange(s), i0 + 1] = w
        img = (interp @ grid.transpose(2, 0, 1) @ interp.T).transpose(1, 2, 0)  # [S, S, 3]
        r = rng.random()
        if r < 0.15:                                            # faint stripes
            th2, per = rng.uniform(0, np.pi), rng.uniform(4, 16)
            ph = (np.arange(s)[None, :] * np.cos(th2) + np.arange(s)[:, None] * np.sin(th2)) / per
            img += (np.sin(ph * 2 * np.pi) * rng.uniform(6, 20))[..., None].astype(np.float32)
        elif r < 0.25:                                          # faint checkerboard
            per = int(rng.integers(6, 20))
            chk = ((np.arange(s)[None, :] // per + np.arange(s)[:, None] // per) % 2) * 2.0 - 1.0
            img += (chk * rng.uniform(6, 18))[..., None].astype(np.float32)
        return np.ascontiguousarray(img, np.float32)

    def noise(self, shape):
        """A slice of the dataset's standard-normal noise tile (cheaper than fresh normals)."""
        tile = self._noise_tile
        h, w = min(shape[0], tile.shape[0]), min(shape[1], tile.shape[1])
        oy = int(self.rng.integers(0, tile.shape[0] - h + 1))
        ox = int(self.rng.integers(0, tile.shape[1] - w + 1))
        out = tile[oy:oy + h, ox:ox + w]
        if (h, w) != tuple(shape[:2]):
            out = np.resize(out, tuple(shape[:2]) + (3,))
        return out

    def _window(self, cx, cy, ext_x, ext_y):
        """Unclipped integer window around a shape and its in-image part."""
        x0, x1 = int(math.floor(cx - ext_x)), int(math.ceil(cx + ext_x)) + 1
        y0, y1 = int(math.floor(cy - ext_y)), int(math.ceil(cy + ext_y)) + 1
        return x0, x1, y0, y1

    def _local(self, x0, x1, y0, y1, cx, cy, hw, hh, rot):
        xs = np.arange(x0, x1, dtype=np.float32) + 0.5 - cx
        ys = np.arange(y0, y1, dtype=np.float32) + 0.5 - cy
        if rot == 0.0:
            return xs[None, :] / hw, ys[:, None] / hh
        c, s = math.cos(rot), math.sin(rot)
        u = (xs[None, :] * c + ys[:, None] * s) / hw
        v = (-xs[None, :] * s + ys[:, None] * c) / hh
        return u, v

    def paint(self, mask_full, x0, y0, fill, owner_id):
        """Paints ``fill`` where ``mask_full`` (over the unclipped window) is set; returns the
        in-image mask and its offset."""
        s = self.size
        h, w = mask_full.shape
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + w, s), min(y0 + h, s)
        if cx1 <= cx0 or cy1 <= cy0:
            return None, cx0, cy0
        sl = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        m = mask_full[sl]
        fill = np.asarray(fill, np.float32)
        if fill.ndim == 3:
            fill = fill[sl]
        np.copyto(self.img[cy0:cy1, cx0:cx1], fill, where=m[..., None])
        np.copyto(self.owner[cy0:cy1, cx0:cx1], np.int16(owner_id), where=m)
        return m, cx0, cy0

    # ---------------------------------------------------------------- objects
    def draw_object(self, cls, cx, cy, size_px, owner_id):
        rng = self.rng
        aspect, rot, p = _class_params(rng, cls)
        hw = 0.5 * size_px * math.sqrt(aspect)
        hh = 0.5 * size_px / math.sqrt(aspect)
        ext = math.hypot(hw, hh) if rot else None
        x0, x1, y0, y1 = self._window(cx, cy, ext or hw, ext or hh)
        u, v = self._local(x0, x1, y0, y1, cx, cy, hw, hh, rot)
        mask = _shape_mask(cls, u, v, p)
        total = int(mask.sum())
        if total == 0:
            return None
        ic = (min(max(int(cy), 0), self.size - 1), min(max(int(cx), 0), self.size - 1))
        colour = _object_colour(rng, self.img[ic])
        fill = _texture(rng, u, v, colour, self.img[ic], self.noise)
        m, ox, oy = self.paint(mask, x0, y0, fill, owner_id)
        if m is None:
            return None
        inside = int(m.sum())
        if inside < MIN_INSIDE * total:
            return None
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        box = (ox + cols[0], oy + rows[0], ox + cols[-1] + 1, oy + rows[-1] + 1)  # pixel edges
        return box, inside

    # ---------------------------------------------------------------- clutter
    def _stroke(self, pts, width, colour):
        """A polyline of the given width (pixels)."""
        s = self.size
        r = width / 2.0 + 0.5
        x0 = max(int(math.floor(pts[:, 0].min() - r)), 0)
        x1 = min(int(math.ceil(pts[:, 0].max() + r)) + 1, s)
        y0 = max(int(math.floor(pts[:, 1].min() - r)), 0)
        y1 = min(int(math.ceil(pts[:, 1].max() + r)) + 1, s)
        if x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), bool)
        r2 = (width / 2.0) ** 2
        for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:]):
            # each segment only touches its own bounding window
            sx0 = max(int(math.floor(min(ax, bx) - r)), x0)
            sx1 = min(int(math.ceil(max(ax, bx) + r)) + 1, x1)
            sy0 = max(int(math.floor(min(ay, by) - r)), y0)
            sy1 = min(int(math.ceil(max(ay, by) + r)) + 1, y1)
            if sx1 <= sx0 or sy1 <= sy0:
                continue
            px = self.coords[sx0:sx1][None, :] - ax
            py = self.coords[sy0:sy1][:, None] - ay
            dx, dy = bx - ax, by - ay
            t = np.clip((px * dx + py * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
            mask[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] |= (px - t * dx) ** 2 + (py - t * dy) ** 2 <= r2
        self.paint(mask, x0, y0, colour, -1)

    def draw_distractor(self, kind=None):
        rng, s = self.rng, self.size
        kind = kind if kind is not None else rng.choice(["line", "curve", "blob", "arc", "dots"],
                                                        p=[0.28, 0.28, 0.2, 0.12, 0.12])
        colour = _hsv(rng, (0.0, 1.0), (0.1, 1.0))
        if kind == "line":
            a = rng.uniform(0, s, 2)
            ang, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 1.0) * s
            b = a + length * np.array([math.cos(ang), math.sin(ang)])
            self._stroke(np.stack([a, b]), rng.uniform(1.0, 4.0), colour)
        elif kind == "curve":
            n = int(rng.integers(5, 12))
            step = rng.uniform(0.04, 0.12) * s
            ang = rng.uniform(0, 2 * np.pi)
            pts = [rng.uniform(0, s, 2)]
            for _ in range(n):
                ang += rng.normal(0, 0.6)
                pts.append(pts[-1] + step * np.array([math.cos(ang), math.sin(ang)]))
            self._stroke(np.array(pts), rng.uniform(1.0, 3.5), colour)
        elif kind == "blob":
            nv = int(rng.integers(8, 15))
            ang = np.sort(rng.uniform(0, 2 * np.pi, nv))
            rad = rng.uniform(0.45, 1.0, nv)
            verts = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
            size = math.exp(rng.uniform(math.log(8), math.log(0.4 * s)))
            cx, cy = rng.uniform(0, s, 2)
            x0, x1, y0, y1 = self._window(cx, cy, size / 2, size / 2)
            u, v = self._local(x0, x1, y0, y1, cx, cy, size / 2, size / 2, 0.0)
            fill = _texture(rng, u, v, colour, colour * 0.5, self.noise)
            self.paint(_poly_mask(u, v, verts), x0, y0, fill, -1)
        elif kind == "arc":
            size = math.exp(rng.uniform(math.log(10), math.log(0.5 * s)))
            cx, cy = rng.uniform(0, s, 2)
            x0, x1, y0, y1 = self._window(cx, cy, size / 2, size / 2)
            u, v = self._local(x0, x1, y0, y1, cx, cy, size / 2, size / 2, 0.0)
            r2 = u * u + v * v
            start, span = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 3.4)
            dang = np.mod(np.arctan2(v, u) - start, 2 * np.pi)
            mask = (r2 <= 1) & (r2 >= rng.uniform(0.4, 0.8) ** 2) & (dang <= span)
            self.paint(mask, x0, y0, colour, -1)
        else:  # dots: a few tiny discs, smaller than the smallest object
            for _ in range(int(rng.integers(2, 7))):
                r = rng.uniform(1.0, 2.2)
                cx, cy = rng.uniform(0, s, 2)
                x0, x1, y0, y1 = self._window(cx, cy, r, r)
                u, v = self._local(x0, x1, y0, y1, cx, cy, r, r, 0.0)
                self.paint(u * u + v * v <= 1, x0, y0, _hsv(rng, (0, 1), (0.1, 1)), -1)

    def finish(self):
        rng, s = self.rng, self.size
        tile = self._noise_tile
        oy, ox = rng.integers(0, tile.shape[0] - s + 1, 2)
        noise = tile[oy:oy + s, ox:ox + s]
        if rng.random() < 0.5:
            noise = noise[::-1]
        img = self.img + noise * rng.uniform(2.0, 12.0)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _sample_size(rng, image_size, large_budget):
    lo_hi = [(SMALLEST_PX, 32.0), (32.0, 96.0), (96.0, 0.92 * image_size)]
    probs = np.array(SIZE_PROBS, np.float64)
    if lo_hi[2][1] <= lo_hi[2][0] or large_budget <= 0:
        probs[2] = 0.0
    if lo_hi[1][1] > 0.92 * image_size:
        lo_hi[1] = (32.0, max(33.0, 0.92 * image_size))
    cat = int(rng.choice(3, p=probs / probs.sum()))
    lo, hi = lo_hi[cat]
    return math.exp(rng.uniform(math.log(lo), math.log(hi))), cat


def render_image(rng, image_size, noise_tile):
    """One image and its annotations.

    Returns:
      ``(image uint8 [S, S, 3], boxes float32 [K, 4] normalized xyxy, labels int32 [K])``.
    """
    s = image_size
    canvas = _Canvas(rng, s, noise_tile)
    for _ in range(int(rng.integers(1, 6))):
        canvas.draw_distractor()
    if rng.random() < EMPTY_FRACTION:
        n_obj = 0
    else:
        n_obj = int(min(1 + rng.poisson(2.5), 10))
    placed = []                      # (cx, cy, size) of drawn objects, for clustered placement
    results = []                     # (owner_id, box, inside_pixels, label)
    large_budget = 1 if rng.random() < 0.8 else 2
    for k in range(n_obj):
        size, cat = _sample_size(rng, s, large_budget)
        large_budget -= cat == 2
        cls = int(rng.integers(0, NUM_CLASSES))
        if placed and rng.random() < 0.35:   # next to an earlier object: overlap / occlusion
            pcx, pcy, psz = placed[int(rng.integers(len(placed)))]
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(0.3, 0.8) * (psz + size) / 2
            cx, cy = pcx + dist * math.cos(ang), pcy + dist * math.sin(ang)
        else:
            margin = 0.3 * size
            cx, cy = rng.uniform(-margin, s + margin, 2) if size < 0.5 * s else rng.uniform(0.3 * s, 0.7 * s, 2)
        cx, cy = float(np.clip(cx, 0.2 * size, s - 0.2 * size)), float(np.clip(cy, 0.2 * size, s - 0.2 * size))
        if rng.random() < 0.25:
            canvas.draw_distractor()
        out = canvas.draw_object(cls, cx, cy, size, owner_id=k)
        placed.append((cx, cy, size))
        if out is not None:
            results.append((k, out[0], out[1], cls))
    for _ in range(int(rng.choice([0, 0, 1, 1, 2]))):
        canvas.draw_distractor(rng.choice(["line", "curve", "blob"], p=[0.4, 0.4, 0.2]))
    visible = np.bincount(canvas.owner.ravel().astype(np.int64) + 1, minlength=n_obj + 1)[1:]
    boxes, labels = [], []
    for k, box, inside, cls in results:
        if visible[k] < MIN_VISIBLE * inside:
            continue
        if box[2] - box[0] < MIN_BOX_PX or box[3] - box[1] < MIN_BOX_PX:
            continue
        boxes.append(box)
        labels.append(cls)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) / np.float32(s)
    return canvas.finish(), boxes, np.asarray(labels, np.int32)


# --------------------------------------------------------------------------------------------
# Dataset API
# --------------------------------------------------------------------------------------------

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
        import concurrent.futures
        import multiprocessing

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
    import tensorflow as tf

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
    import tensorflow as tf

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


def load_synthetic(num_images=2000, image_size=160, seed=0, split="train", shuffle=False):
    """Source-loader form: ``(dataset, class_names)``."""
    return synthetic_dataset(num_images, image_size, seed, split, shuffle=shuffle), list(CLASS_NAMES)


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


if __name__ == "__main__":  # python -m mgdet.data.synthetic [N] [SIZE] -> stats + a preview PNG
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 160
    d = generate(n, size, 0, "train")
    print(json.dumps(describe(d), indent=1))
    print(f"{n / max(d.seconds, 1e-9):.0f} images/s")


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

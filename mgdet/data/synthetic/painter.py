"""The painter of one synthetic image (:func:`render_image`): background, clutter, objects,
occluders and noise, back to front (the package docstring lists the layers)."""
import math

import numpy as np

from mgdet.data.synthetic.shapes import (NUM_CLASSES, class_params, hsv, object_colour, poly_mask,
                                         shape_mask, texture)

MIN_VISIBLE = 0.5          # drop objects with less than 50 % of their mask visible
MIN_INSIDE = 0.4           # drop objects with less than 40 % of their mask inside the image
MIN_BOX_PX = 4             # drop objects whose box is thinner than this (pixels)
EMPTY_FRACTION = 0.07      # images with no object at all
SIZE_PROBS = (0.20, 0.50, 0.30)  # small / medium / large (COCO ranges at image_size)
SMALLEST_PX = 14.0         # smallest sqrt(box area) drawn (~0.6 x the smallest anchor, 24 px)


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
        c1 = hsv(rng, (0.0, 0.6), (0.15, 0.95))
        c2 = hsv(rng, (0.0, 0.6), (0.15, 0.95))
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
        aspect, rot, p = class_params(rng, cls)
        hw = 0.5 * size_px * math.sqrt(aspect)
        hh = 0.5 * size_px / math.sqrt(aspect)
        ext = math.hypot(hw, hh) if rot else None
        x0, x1, y0, y1 = self._window(cx, cy, ext or hw, ext or hh)
        u, v = self._local(x0, x1, y0, y1, cx, cy, hw, hh, rot)
        mask = shape_mask(cls, u, v, p)
        total = int(mask.sum())
        if total == 0:
            return None
        ic = (min(max(int(cy), 0), self.size - 1), min(max(int(cx), 0), self.size - 1))
        colour = object_colour(rng, self.img[ic])
        fill = texture(rng, u, v, colour, self.img[ic], self.noise)
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
        colour = hsv(rng, (0.0, 1.0), (0.1, 1.0))
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
            fill = texture(rng, u, v, colour, colour * 0.5, self.noise)
            self.paint(poly_mask(u, v, verts), x0, y0, fill, -1)
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
                self.paint(u * u + v * v <= 1, x0, y0, hsv(rng, (0, 1), (0.1, 1)), -1)

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

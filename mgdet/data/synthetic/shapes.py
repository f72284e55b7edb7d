"""The synthetic classes' shapes (masks in a local frame, per-class shape parameters) and their
colours and textures."""
import colorsys
import math

import numpy as np

CLASS_NAMES = ("circle", "ring", "rectangle", "triangle", "cross", "star", "ellipse")
NUM_CLASSES = len(CLASS_NAMES)


# --------------------------------------------------------------------------------------------
# Masks in a local frame: every shape lives in [-1, 1]^2 before scaling / rotation.
# --------------------------------------------------------------------------------------------

def poly_mask(u, v, verts):
    """Even-odd point-in-polygon test, vectorized over the pixel grid and the edges. verts: [V, 2]."""
    verts = np.asarray(verts, np.float32)
    nxt = np.roll(verts, 1, axis=0)
    horizontal = verts[:, 1] == nxt[:, 1]
    verts, nxt = verts[~horizontal], nxt[~horizontal]          # horizontal edges never cross
    xi, yi = verts[:, 0, None, None], verts[:, 1, None, None]
    xj, yj = nxt[:, 0, None, None], nxt[:, 1, None, None]
    crosses = ((yi > v) != (yj > v)) & (u < (xj - xi) * (v - yi) / (yj - yi) + xi)
    return (np.count_nonzero(crosses, axis=0) & 1).astype(bool)


def shape_mask(cls, u, v, p):
    """bool mask of class ``cls`` (parameters ``p``) over local coords ``(u, v)`` in [-1, 1]."""
    r2 = u * u + v * v
    if cls in (0, 6):                      # circle, ellipse (aspect / rotation set by caller)
        return r2 <= 1.0
    if cls == 1:                           # ring
        return (r2 <= 1.0) & (r2 >= p["inner"] ** 2)
    if cls == 2:                           # rectangle
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if cls == 3:                           # triangle, apex at (a, -1), base on v = 1
        return poly_mask(u, v, np.array([[p["apex"], -1.0], [-1.0, 1.0], [1.0, 1.0]]))
    if cls == 4:                           # cross / plus
        t = p["arm"]
        au, av = np.abs(u), np.abs(v)
        return ((au <= 1.0) & (av <= t)) | ((au <= t) & (av <= 1.0))
    if cls == 5:                           # 5-point star
        k = np.arange(10)
        rad = np.where(k % 2 == 0, 1.0, p["inner"])
        ang = -np.pi / 2 + k * np.pi / 5
        return poly_mask(u, v, np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1))
    raise ValueError(cls)


def class_params(rng, cls):
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

def hsv(rng, s_range, v_range):
    """A random RGB colour (0..255, float32 [3]): any hue, saturation and value in the ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*s_range), rng.uniform(*v_range)),
                    np.float32) * 255.0


def object_colour(rng, bg):
    """A colour at least ~45 levels (mean abs) away from the background colour ``bg``."""
    best, best_d = None, -1.0
    for _ in range(4):
        c = hsv(rng, (0.25, 1.0), (0.2, 1.0))
        d = float(np.abs(c - bg).mean())
        if d > 45:
            return c
        if d > best_d:
            best, best_d = c, d
    return np.clip(255.0 - bg + rng.uniform(-30, 30, 3), 0, 255).astype(np.float32)


def texture(rng, u, v, colour, bg, noise=None):
    """[h, w, 3] float32 fill for a shape in local coords (u, v); ``noise(shape)`` gives N(0, 1)."""
    kind = rng.random()
    shape = np.broadcast(u, v).shape + (3,)
    if kind < 0.42:                                          # solid
        return np.broadcast_to(colour, shape)
    second = object_colour(rng, bg) if rng.random() < 0.5 else np.clip(colour * rng.uniform(0.3, 0.7), 0, 255)
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

"""The authors' training augmentation (``data.augment: paper``), as pure TF ops with stateless
random draws like :mod:`mgdet.data.augment`: IoU-constrained crop, photometric distortion,
zoom-out with aspect jitter, flip, resize with a random interpolation, 1% box drop
(:func:`paper_augment`)."""
import tensorflow as tf

from mgdet.data.augment import MEAN_RGB, coin, photometric_distort, uniform
from mgdet.ops import boxes as box_ops

# Interpolations of the final resize, one drawn per image (OpenCV's linear, cubic, area, nearest,
# Lanczos in the authors' code; TF's Lanczos-3 stands for OpenCV's 8x8 Lanczos-4).
PAPER_INTERPOLATIONS = ("bilinear", "bicubic", "area", "nearest", "lanczos3")
# Crop modes: None = no crop, a float = every object's IoU with the crop >= it, -inf = any crop.
PAPER_CROP_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9, float("-inf"))


def _floor_int(x):
    return tf.cast(tf.floor(x), tf.int32)


def paper_crop_window(boxes, seed, height, width, min_ious=PAPER_CROP_MIN_IOUS, rounds=16,
                      trials=50):
    """The authors' IoU-constrained crop sampler, drawn at once for ``rounds`` modes.

    Each round draws a mode from ``min_ious``; a ``None`` mode keeps the whole image. Otherwise
    ``trials`` windows of scale ``s ~ U(0.3, 1)`` and ``r^2 ~ U(max(0.5, s^2), min(2, 1/s^2))``
    (``w = floor(s r W)``, ``h = floor(s / r H)`` pixels, top-left uniform over the integer
    positions) are tried; a window qualifies when the IoU of **every** box with it is >= the
    mode's minimum and at least one box centre lies strictly inside. The first round whose mode
    is ``None`` or has a qualifying window decides (its first qualifying window); if no round
    does, the whole image is kept (the authors' loop would draw further modes until one does).

    Args:
      boxes: float32 ``[K, 4]`` normalized xyxy (K >= 0).
      seed: int ``[2]`` stateless seed.
      height, width: image size in pixels (int32 scalars).
    Returns:
      int32 ``[4]`` window ``(x0, y0, w, h)`` in pixels (the whole image when not cropping).
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
    h_img, w_img = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    modes = tf.constant([-2.0 if m is None else max(float(m), -1.0) for m in min_ious])
    mode = tf.gather(modes, tf.random.stateless_uniform([rounds], seeds[0], 0, len(min_ious),
                                                        tf.int32))            # [R]
    scale = uniform(seeds[1], 0.3, 1.0, [rounds, trials])
    u = tf.random.stateless_uniform([3, rounds, trials], seeds[2])
    lo, hi = tf.maximum(0.5, scale ** 2), tf.minimum(2.0, 1.0 / scale ** 2)
    ratio = tf.sqrt(lo + u[0] * (hi - lo))
    w = tf.clip_by_value(_floor_int(scale * ratio * w_img), 1, width)
    h = tf.clip_by_value(_floor_int(scale / ratio * h_img), 1, height)
    x0 = _floor_int(u[1] * tf.cast(tf.maximum(width - w, 1), tf.float32))
    y0 = _floor_int(u[2] * tf.cast(tf.maximum(height - h, 1), tf.float32))
    x0, y0 = tf.minimum(x0, width - w), tf.minimum(y0, height - h)
    norm = tf.stack([tf.cast(x0, tf.float32) / w_img, tf.cast(y0, tf.float32) / h_img,
                     tf.cast(x0 + w, tf.float32) / w_img, tf.cast(y0 + h, tf.float32) / h_img],
                    axis=-1)                                                     # [R, T, 4]
    iou = box_ops.iou(norm, boxes)                                               # [R, T, K]
    min_iou = tf.reduce_min(tf.concat([iou, tf.ones_like(iou[..., :1])], -1), axis=-1)
    centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5                                 # [K, 2]
    inside = tf.reduce_all((centre > norm[..., None, :2]) & (centre < norm[..., None, 2:]), -1)
    ok = (min_iou >= mode[:, None]) & tf.reduce_any(inside, axis=-1)             # [R, T]
    done = (mode < -1.5) | tf.reduce_any(ok, axis=1)                             # [R]
    r = tf.argmax(tf.cast(done, tf.int32), output_type=tf.int32)
    t = tf.argmax(tf.cast(ok[r], tf.int32), output_type=tf.int32)
    crop = tf.reduce_any(done) & (mode[r] > -1.5)
    window = tf.stack([x0[r, t], y0[r, t], w[r, t], h[r, t]])
    return tf.where(crop, window, tf.stack([0, 0, width, height]))


def paper_expand_placement(seed, height, width, output_size, p=0.6, max_expand=4.0, trials=50):
    """Where the authors' zoom-out puts an ``height x width`` image inside the ``S x S`` output.

    With probability ``p``: canvas scale ``s ~ U(1, max_expand)``, ``r^2 ~ U(max(0.5, 1/s^2),
    min(2, s^2))``, canvas ``floor(s r W) x floor(s / r H)`` pixels (tries with ``s r < 1`` or
    ``s / r < 1`` are redrawn, up to ``trials``), image at a uniform integer offset. The canvas is
    then resized to ``S x S``, so the image lands on the output pixels returned here (rounded,
    at least one pixel).

    Returns:
      int32 ``[4]`` ``(x0, y0, x1, y1)`` output pixels covered by the image (``(0, 0, S, S)``
      without zoom-out).
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    w_img, h_img = tf.cast(width, tf.float32), tf.cast(height, tf.float32)
    scale = uniform(seeds[0], 1.0, max_expand, [trials])
    u = tf.random.stateless_uniform([3, trials], seeds[1])
    lo, hi = tf.maximum(0.5, 1.0 / scale ** 2), tf.minimum(2.0, scale ** 2)
    ratio = tf.sqrt(lo + u[0] * (hi - lo))
    ws, hs = scale * ratio, scale / ratio
    ok = (ws >= 1.0) & (hs >= 1.0)
    t = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)
    canvas_w = tf.maximum(_floor_int(ws[t] * w_img), width)
    canvas_h = tf.maximum(_floor_int(hs[t] * h_img), height)
    left = tf.minimum(_floor_int(u[1, t] * tf.cast(canvas_w - width + 1, tf.float32)),
                      canvas_w - width)
    top = tf.minimum(_floor_int(u[2, t] * tf.cast(canvas_h - height + 1, tf.float32)),
                     canvas_h - height)
    size = tf.cast(output_size, tf.float32)

    def to_output(a, n):
        return tf.cast(tf.round(tf.cast(a, tf.float32) * size / tf.cast(n, tf.float32)), tf.int32)

    x0, y0 = to_output(left, canvas_w), to_output(top, canvas_h)
    x1 = tf.clip_by_value(to_output(left + width, canvas_w), x0 + 1, output_size)
    y1 = tf.clip_by_value(to_output(top + height, canvas_h), y0 + 1, output_size)
    x0, y0 = tf.minimum(x0, x1 - 1), tf.minimum(y0, y1 - 1)
    expand = coin(seeds[2], p) & tf.reduce_any(ok)
    return tf.where(expand, tf.stack([x0, y0, x1, y1]), tf.constant([0, 0, 1, 1]) * output_size)


def resize_with(image, size_hw, method_index, methods=PAPER_INTERPOLATIONS):
    """Resize ``image`` to ``size_hw`` (int32 ``[2]``) with ``methods[method_index]`` (a tensor),
    float32 clipped to [0, 255] (cubic and Lanczos overshoot)."""
    image = tf.cast(image, tf.float32)
    branches = [lambda m=m: tf.image.resize(image, size_hw, method=m) for m in methods]
    return tf.clip_by_value(tf.switch_case(method_index, branches), 0.0, 255.0)


def paper_augment(image, boxes, labels, seed, output_size, max_expand=4.0, expand_p=0.6,
                  min_ious=PAPER_CROP_MIN_IOUS, min_size=0.01, mean=MEAN_RGB, photometric=True,
                  extras=None):
    """The authors' training transform (``data/data_augment.py`` of MutualGuide), in graph mode.

    1. crop (:func:`paper_crop_window`), boxes whose centre left it dropped, the rest clipped;
    2. photometric distortion: brightness +-32, contrast x U(0.5, 1.5), saturation
       x U(0.5, 1.5), hue +-36 degrees (+-18 on OpenCV's 0..180 scale), each with p 1/2;
    3. zoom-out with p ``expand_p`` onto a mean-filled canvas with aspect jitter
       (:func:`paper_expand_placement`);
    4. horizontal flip with p 1/2;
    5. resize to ``S x S`` with an interpolation drawn from :data:`PAPER_INTERPOLATIONS`;
    6. boxes whose shorter side is <= ``min_size`` (of the output) are dropped; if none is left
       (or there was none), the result is the original image resized (same interpolation) with
       all its boxes, not augmented.

    Steps 3 and 5 are done as one resize of the crop into the output pixels the canvas would put
    it on (the canvas is never materialized), and step 2 runs on that resized crop (pointwise,
    so only clipping at 0 / 255 differs from distorting before the resize). Boxes are placed on
    the rounded output pixels, so they follow the pixels exactly.

    Args:
      image: uint8 or float ``[H, W, 3]`` RGB (0..255).
      boxes: float32 ``[K, 4]`` normalized xyxy.
      labels: int32 ``[K]``.
      seed: int ``[2]`` stateless seed (same seed, same output).
      output_size: ``S`` (int).
      max_expand: largest canvas scale (the authors: 4).
      expand_p: probability of the zoom-out (the authors: 0.6).
      min_ious: crop modes (see :data:`PAPER_CROP_MIN_IOUS`).
      min_size: boxes whose shorter normalized side is <= this are dropped.
      mean: RGB fill colour of the canvas.
      photometric: apply step 2.
      extras: optional dict of other per-box ``[K, ...]`` tensors, filtered like ``labels``.
    Returns:
      ``(image float32 [S, S, 3] in [0, 255], boxes [K', 4], labels [K'])`` (+ the filtered
      ``extras`` as a fourth element when given), boxes normalized xyxy within [0, 1].
    """
    size = int(output_size)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
    image = tf.convert_to_tensor(image)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    labels = tf.convert_to_tensor(labels)
    extras = dict(extras or {})
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    method = tf.random.stateless_uniform([], seeds[0], 0, len(PAPER_INTERPOLATIONS), tf.int32)

    # 1. crop
    x0, y0, cw, ch = tf.unstack(paper_crop_window(boxes, seeds[1], height, width, min_ious))
    crop = tf.image.crop_to_bounding_box(image, y0, x0, ch, cw)
    h_img, w_img = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    win = tf.stack([tf.cast(x0, tf.float32) / w_img, tf.cast(y0, tf.float32) / h_img,
                    tf.cast(x0 + cw, tf.float32) / w_img, tf.cast(y0 + ch, tf.float32) / h_img])
    centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    keep = tf.reduce_all((centre > win[:2]) & (centre < win[2:]), axis=1)
    whole = tf.reduce_all(tf.equal(tf.stack([x0, y0, cw, ch]), tf.stack([0, 0, width, height])))
    keep = keep | whole   # no crop: every box stays (even one whose centre is on the border)
    span = tf.concat([win[2:] - win[:2]] * 2, 0)
    in_crop = tf.clip_by_value((boxes - tf.concat([win[:2]] * 2, 0)) / span, 0.0, 1.0)

    # 3 + 5. the crop's place in the output, one resize; 2. photometric on it
    px0, py0, px1, py1 = tf.unstack(paper_expand_placement(seeds[2], ch, cw, size, expand_p,
                                                           max_expand))
    patch = resize_with(crop, tf.stack([py1 - py0, px1 - px0]), method)
    if photometric:
        patch = photometric_distort(patch, seeds[3], hue_delta=0.1)
    mean_t = tf.constant(mean, tf.float32)
    out = tf.pad(patch - mean_t, [[py0, size - py1], [px0, size - px1], [0, 0]]) + mean_t
    place = tf.cast(tf.stack([px0, py0, px1, py1]), tf.float32) / size
    scale = tf.concat([place[2:] - place[:2]] * 2, 0)
    new = in_crop * scale + tf.concat([place[:2]] * 2, 0)

    # 4. flip
    flip = coin(seeds[4])
    out = tf.where(flip, tf.reverse(out, axis=[1]), out)
    new = tf.where(flip, tf.stack([1.0 - new[:, 2], new[:, 1], 1.0 - new[:, 0], new[:, 3]], 1),
                   new)

    # 6. drop tiny boxes; none left: the original image, not augmented
    keep &= tf.reduce_min(new[:, 2:] - new[:, :2], axis=1) > min_size
    found = tf.reduce_any(keep)

    def augmented():
        return (out, tf.boolean_mask(new, keep), tf.boolean_mask(labels, keep),
                {k: tf.boolean_mask(v, keep) for k, v in extras.items()})

    def original():
        return (resize_with(image, tf.constant([size, size]), method), boxes, labels, extras)

    out, new_boxes, new_labels, new_extras = tf.cond(found, augmented, original)
    out = tf.ensure_shape(out, [size, size, 3])
    if extras:
        return out, new_boxes, new_labels, new_extras
    return out, new_boxes, new_labels

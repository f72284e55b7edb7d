"""Training augmentation as pure TF ops (graph mode, stateless random, no ``py_function``).

Two transforms (``data.augment``): :func:`ssd_augment` (``"ssd"``, below) and
:func:`paper_augment` (``"paper"``: the authors' order — crop, photometric, zoom-out with aspect
jitter, flip, resize with a random interpolation, 1% box drop — see its docstring).

``ssd_augment`` is the training transform of SSD (Liu et al. 2016):

1. photometric distortion — random brightness, contrast, saturation and hue, each applied with
   probability 1/2 (composed into one affine colour transform, see
   :func:`photometric_distort`); random channel order optional;
2. zoom-out *expand* — with probability 1/2 the image is placed at a random position on a
   canvas ``r`` times larger (``r ~ U[1, max_expand]``) filled with the mean colour;
3. IoU-constrained random crop — one of {whole image, min IoU 0.1, 0.3, 0.5, 0.7, 0.9, any crop}
   is drawn; up to ``max_trials`` windows (sides in [0.3, 1] of the canvas, aspect in [1/2, 2])
   are drawn at once and the first one that overlaps some object with IoU >= min IoU and
   contains at least one box centre is kept (the whole canvas if none qualifies); boxes whose
   centres fall outside the window are dropped, the others clipped to it;
4. horizontal flip with probability 1/2;
5. resize to ``output_size`` x ``output_size``.

Steps 2-5 are one ``tf.image.crop_and_resize`` of the *original* image: the expand canvas, the
crop window and the flip are composed into a single sampling box (outside the image the
sampler returns the mean colour), so a 4x zoom-out never materializes a 4x canvas. Sampling is
half-pixel exact: output pixel ``i`` samples input position ``(a + (i + .5) (b - a) / S) W``.
The photometric step runs on the ``S x S`` output (pointwise ops, so only the fill colour of the
expand border is distorted too — a deliberate, much cheaper order than SSD's).

Every random draw is a ``tf.random.stateless_*`` op keyed by the ``seed`` argument (shape [2]),
so the same seed gives the same output; the pipeline feeds one seed per example from
``tf.data.Dataset.random``.
"""
import tensorflow as tf

from mgdet.ops import boxes as box_ops

# ImageNet mean (RGB, 0..255): the fill colour of the zoom-out canvas.
MEAN_RGB = (123.675, 116.28, 103.53)
# Crop modes of the SSD sampler: None = keep the whole (expanded) image, a float = min IoU,
# -1.0 = any window (no IoU constraint).
CROP_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9, -1.0)


def _coin(seed, p=0.5):
    return tf.random.stateless_uniform([], seed=seed) < p


def _uniform(seed, lo, hi, shape=()):
    return tf.random.stateless_uniform(shape, seed=seed, minval=lo, maxval=hi)


# RGB <-> YIQ: a hue shift is a rotation of the (I, Q) chroma plane, a saturation change scales it.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def _colour_matrix(saturation, hue_turns, perm=None):
    """3x3 matrix (acting on RGB column vectors) that scales chroma by ``saturation`` and rotates
    hue by ``hue_turns`` of a full turn (exactly linear in RGB; grey stays grey)."""
    t = tf.constant(_RGB_TO_YIQ, tf.float32)
    theta = hue_turns * 2.0 * 3.141592653589793
    c, s = tf.cos(theta) * saturation, tf.sin(theta) * saturation
    one, zero = tf.ones_like(c), tf.zeros_like(c)
    rot = tf.stack([tf.stack([one, zero, zero]), tf.stack([zero, c, -s]), tf.stack([zero, s, c])])
    m = tf.linalg.inv(t) @ rot @ t
    if perm is not None:
        m = tf.gather(m, perm, axis=0)
    return m


def photometric_distort(image, seed, brightness_delta=32.0, contrast_range=(0.5, 1.5),
                        saturation_range=(0.5, 1.5), hue_delta=0.05, channel_swap=False,
                        exact_hsv=False):
    """SSD's photometric distortion: brightness, contrast, saturation, hue (each with probability
    1/2), optionally a random channel order.

    With ``exact_hsv=False`` (default) the four distortions are composed into one affine colour
    transform ``alpha * (M x + beta)``: brightness adds ``beta``, contrast multiplies by ``alpha``
    (SSD's contrast scales the pixel values), and saturation / hue scale and rotate the chroma
    plane of YIQ (a linear stand-in for the HSV operations; since all steps are linear, SSD's
    "contrast before or after HSV" order makes no difference). It costs one 3x3 matmul per pixel,
    several times cheaper than ``tf.image.adjust_saturation`` + ``adjust_hue``. ``exact_hsv=True``
    applies ``tf.image.adjust_saturation`` / ``adjust_hue`` in SSD's order instead.

    Args:
      image: float32 ``[H, W, 3]`` RGB in [0, 255].
      seed: int ``[2]`` stateless seed.
      brightness_delta: added value drawn from ``U[-d, d]`` (0..255 scale).
      contrast_range: multiplicative factor range.
      saturation_range: chroma scale range.
      hue_delta: hue shift range as a fraction of the colour circle (0.05 = 18 degrees).
      channel_swap: also permute the RGB channels at random with probability 1/2.
    Returns:
      float32 ``[H, W, 3]`` in [0, 255].
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=11)
    image = tf.convert_to_tensor(image, tf.float32)
    beta = tf.where(_coin(seeds[0]), _uniform(seeds[1], -brightness_delta, brightness_delta), 0.0)
    alpha = tf.where(_coin(seeds[4]), _uniform(seeds[3], contrast_range[0], contrast_range[1]), 1.0)
    sat = tf.where(_coin(seeds[6]), _uniform(seeds[5], saturation_range[0], saturation_range[1]), 1.0)
    hue = tf.where(_coin(seeds[8]), _uniform(seeds[7], -hue_delta, hue_delta), 0.0)
    perm = None
    if channel_swap:
        perm = tf.where(_coin(seeds[10]), tf.argsort(_uniform(seeds[9], 0.0, 1.0, [3])), tf.range(3))

    if not exact_hsv:
        m = _colour_matrix(sat, hue, perm)
        out = tf.einsum("hwc,dc->hwd", image, m)
        return tf.clip_by_value(alpha * (out + beta), 0.0, 255.0)

    contrast_first = _coin(seeds[2])
    image = image + beta
    image = tf.where(contrast_first, image * alpha, image)
    image = tf.clip_by_value(image, 0.0, 255.0) / 255.0
    image = tf.image.adjust_saturation(image, sat)
    image = tf.image.adjust_hue(image, hue)
    image = image * 255.0
    image = tf.where(contrast_first, image, image * alpha)
    if perm is not None:
        image = tf.gather(image, perm, axis=-1)
    return tf.clip_by_value(image, 0.0, 255.0)


def _sample_crop(boxes, valid, seed, aspect_wh, max_trials, min_ious):
    """SSD's crop sampler on the unit canvas.

    Args:
      boxes: ``[K, 4]`` xyxy in canvas coordinates ([0, 1]).
      valid: ``[K]`` bool (boxes that take part in the IoU / centre tests).
      aspect_wh: canvas pixel aspect W / H (the window's pixel aspect must lie in [1/2, 2]).
    Returns:
      ``[4]`` window xyxy in canvas coordinates.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    modes = tf.constant([-2.0 if m is None else float(m) for m in min_ious], tf.float32)
    mode = tf.gather(modes, tf.random.stateless_uniform([], seeds[0], 0, len(min_ious), tf.int32))
    fw = _uniform(seeds[1], 0.3, 1.0, [max_trials])
    fh = _uniform(seeds[2], 0.3, 1.0, [max_trials])
    fx = _uniform(seeds[3], 0.0, 1.0, [max_trials]) * (1.0 - fw)
    fy = _uniform(seeds[4], 0.0, 1.0, [max_trials]) * (1.0 - fh)
    windows = tf.stack([fx, fy, fx + fw, fy + fh], axis=-1)                      # [T, 4]
    pixel_aspect = (fh / fw) / aspect_wh                                         # h / w in pixels
    aspect_ok = (pixel_aspect >= 0.5) & (pixel_aspect <= 2.0)

    # IoU [T, K] of every window with every box.
    wx1, wy1, wx2, wy2 = [t[:, None] for t in tf.unstack(windows, axis=-1)]
    bx1, by1, bx2, by2 = [t[None, :] for t in tf.unstack(boxes, axis=-1)]
    inter = (tf.maximum(tf.minimum(wx2, bx2) - tf.maximum(wx1, bx1), 0.0)
             * tf.maximum(tf.minimum(wy2, by2) - tf.maximum(wy1, by1), 0.0))
    union = (wx2 - wx1) * (wy2 - wy1) + (bx2 - bx1) * (by2 - by1) - inter
    iou = tf.math.divide_no_nan(inter, union)
    cx, cy = (bx1 + bx2) * 0.5, (by1 + by2) * 0.5
    centre_in = (cx > wx1) & (cx < wx2) & (cy > wy1) & (cy < wy2) & valid[None, :]
    iou_ok = tf.reduce_any((iou >= mode) & valid[None, :], axis=1)
    any_valid = tf.reduce_any(valid)
    ok = aspect_ok & ((iou_ok & tf.reduce_any(centre_in, axis=1)) | tf.logical_not(any_valid))
    found = tf.reduce_any(ok)
    first = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)
    whole = tf.constant([0.0, 0.0, 1.0, 1.0])
    use_crop = found & (mode > -1.5)
    return tf.where(use_crop, windows[first], whole)


def _sampling_box(window_u, flip, height, width, out_h, out_w):
    """``crop_and_resize`` box (y1, x1, y2, x2) for a window in image coordinates.

    ``crop_and_resize`` maps normalized y to pixel-centre index ``y * (H - 1)``; this picks the
    box that makes output pixel ``i`` sample the input at ``(a + (i + .5)(b - a)/S) * H - .5``
    (edge-aligned convention, as the boxes use). The image is padded by one pixel first, hence
    the ``+ 1`` and ``H + 2``.
    """
    x1, y1, x2, y2 = tf.unstack(window_u)
    x1, x2 = tf.where(flip, x2, x1), tf.where(flip, x1, x2)

    def axis(a, b, n, s):
        n = tf.cast(n, tf.float32)
        s = tf.cast(s, tf.float32)
        denom = n + 1.0   # padded size - 1
        start = (a * n + 0.5 * (b - a) * n / s - 0.5 + 1.0) / denom
        span = (b - a) * n * (s - 1.0) / (s * denom)
        return start, start + span

    ya, yb = axis(y1, y2, height, out_h)
    xa, xb = axis(x1, x2, width, out_w)
    return tf.stack([ya, xa, yb, xb])


def resample(image, window_u, flip, output_size, mean=MEAN_RGB):
    """Samples ``window_u`` (xyxy in the image's normalized coordinates, may exceed [0, 1]) of
    ``image`` into ``output_size`` (int or (h, w)), bilinear, mean-coloured outside the image,
    mirrored when ``flip``. Returns float32 ``[h, w, 3]`` in [0, 255]."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    shape = tf.shape(image)
    mean = tf.constant(mean, tf.float32)
    # Edge-replicate one pixel (so samples within half a pixel of the border see the border),
    # subtract the mean so that the sampler's zero fill outside the image is the mean colour.
    # (Sampling the uint8 image with a -1 fill and replacing those pixels was measured slower.)
    padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    padded = tf.cast(padded, tf.float32) - mean
    box = _sampling_box(window_u, flip, shape[0], shape[1], out_h, out_w)
    out = tf.image.crop_and_resize(padded[None], box[None], [0], [out_h, out_w],
                                   method="bilinear", extrapolation_value=0.0)[0]
    return out + mean


def ssd_augment(image, boxes, labels, seed, output_size, photometric=True, expand=True,
                max_expand=4.0, crop=True, flip=True, channel_swap=False, exact_hsv=False,
                mean=MEAN_RGB, min_ious=CROP_MIN_IOUS, max_trials=50, extras=None):
    """The full SSD training transform (see module docstring).

    Args:
      image: uint8 or float ``[H, W, 3]`` RGB (0..255).
      boxes: float32 ``[K, 4]`` normalized xyxy.
      labels: int32 ``[K]``.
      seed: int ``[2]`` stateless seed.
      output_size: model input side ``S`` (or ``(h, w)``).
      photometric, expand, crop, flip: enable each step.
      max_expand: largest zoom-out ratio.
      channel_swap: random channel permutation inside the photometric step.
      exact_hsv: photometric step through ``tf.image`` HSV ops (slower) instead of the linear
        colour transform.
      mean: RGB fill colour of the zoom-out canvas.
      min_ious: the crop modes (see :data:`CROP_MIN_IOUS`).
      max_trials: windows drawn per crop.
      extras: optional dict of other per-box ``[K, ...]`` tensors, filtered like ``labels``.
    Returns:
      ``(image float32 [S, S, 3] in [0, 255], boxes [K', 4], labels [K'])`` (+ the filtered
      ``extras`` dict as a fourth element when given). Boxes are clipped to [0, 1]; boxes whose
      centre left the crop are gone.
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)

    # 1. zoom-out: canvas = [ox, oy, ox + r, oy + r] in image coordinates.
    if expand:
        rs = tf.random.experimental.stateless_split(seeds[0], num=3)
        ratio = tf.where(_coin(rs[0]), _uniform(rs[1], 1.0, max_expand), 1.0)
        offset = -_uniform(rs[2], 0.0, 1.0, [2]) * (ratio - 1.0)
    else:
        ratio, offset = tf.constant(1.0), tf.zeros([2])
    origin = tf.concat([offset, offset], 0)
    canvas_boxes = (boxes - origin) / ratio

    # 2. crop window in canvas coordinates.
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if crop:
        window = _sample_crop(canvas_boxes, valid, seeds[1], width / height, max_trials, min_ious)
    else:
        window = tf.constant([0.0, 0.0, 1.0, 1.0])

    # boxes: keep those whose centre is inside the window, re-express and clip.
    wxy, wwh = window[:2], window[2:] - window[:2]
    centre = (canvas_boxes[:, :2] + canvas_boxes[:, 2:]) * 0.5
    keep = tf.reduce_all((centre > wxy) & (centre < window[2:]), axis=1) & valid
    new = (canvas_boxes - tf.concat([wxy, wxy], 0)) / tf.concat([wwh, wwh], 0)
    new = tf.clip_by_value(new, 0.0, 1.0)

    do_flip = _coin(seeds[2]) if flip else tf.constant(False)
    new = tf.where(do_flip, tf.stack([1.0 - new[:, 2], new[:, 1], 1.0 - new[:, 0], new[:, 3]], 1), new)
    new_boxes = tf.boolean_mask(new, keep)
    new_labels = tf.boolean_mask(labels, keep)

    # image: the window back in original image coordinates, one resampling.
    window_u = window * ratio + origin
    out = resample(image, window_u, do_flip, (out_h, out_w), mean)
    if photometric:
        out = photometric_distort(out, seeds[3], channel_swap=channel_swap, exact_hsv=exact_hsv)
    out = tf.ensure_shape(out, [out_h, out_w, 3])
    if extras is not None:
        return out, new_boxes, new_labels, {k: tf.boolean_mask(v, keep) for k, v in extras.items()}
    return out, new_boxes, new_labels


def resize(image, output_size):
    """Evaluation transform: plain (non aspect-preserving, as SSD) resize to ``output_size``,
    float32 in [0, 255]. Normalized boxes are unchanged. Half-pixel bilinear, matching
    :func:`resample` for the identity window."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    out = tf.image.resize(tf.cast(image, tf.float32), [out_h, out_w], method="bilinear",
                          antialias=False)
    return tf.ensure_shape(out, [out_h, out_w, 3])


# --- The authors' augmentation (``data.augment: paper``) ----------------------------------------

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
    scale = _uniform(seeds[1], 0.3, 1.0, [rounds, trials])
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
    scale = _uniform(seeds[0], 1.0, max_expand, [trials])
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
    expand = _coin(seeds[2], p) & tf.reduce_any(ok)
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
    flip = _coin(seeds[4])
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

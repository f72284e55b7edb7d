"""Training augmentation as pure TF ops (graph mode, stateless random, no ``py_function``).

Two transforms (``data.augment``): :func:`ssd_augment` (``"ssd"``, below) and
:func:`mgdet.data.augment_paper.paper_augment` (``"paper"``: the authors' order — crop,
photometric, zoom-out with aspect jitter, flip, resize with a random interpolation, 1% box
drop — see its docstring).

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

# ImageNet mean (RGB, 0..255): the fill colour of the zoom-out canvas.
MEAN_RGB = (123.675, 116.28, 103.53)
# Crop modes of the SSD sampler: None = keep the whole (expanded) image, a float = min IoU,
# -1.0 = any window (no IoU constraint).
CROP_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9, -1.0)


def coin(seed, p=0.5):
    """A stateless coin flip: True with probability ``p``."""
    return tf.random.stateless_uniform([], seed=seed) < p


def uniform(seed, lo, hi, shape=()):
    """Stateless uniform draws in ``[lo, hi)``."""
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
    beta = tf.where(coin(seeds[0]), uniform(seeds[1], -brightness_delta, brightness_delta), 0.0)
    alpha = tf.where(coin(seeds[4]), uniform(seeds[3], contrast_range[0], contrast_range[1]), 1.0)
    sat = tf.where(coin(seeds[6]), uniform(seeds[5], saturation_range[0], saturation_range[1]), 1.0)
    hue = tf.where(coin(seeds[8]), uniform(seeds[7], -hue_delta, hue_delta), 0.0)
    perm = None
    if channel_swap:
        perm = tf.where(coin(seeds[10]), tf.argsort(uniform(seeds[9], 0.0, 1.0, [3])), tf.range(3))

    if not exact_hsv:
        m = _colour_matrix(sat, hue, perm)
        out = tf.einsum("hwc,dc->hwd", image, m)
        return tf.clip_by_value(alpha * (out + beta), 0.0, 255.0)

    contrast_first = coin(seeds[2])
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
    fw = uniform(seeds[1], 0.3, 1.0, [max_trials])
    fh = uniform(seeds[2], 0.3, 1.0, [max_trials])
    fx = uniform(seeds[3], 0.0, 1.0, [max_trials]) * (1.0 - fw)
    fy = uniform(seeds[4], 0.0, 1.0, [max_trials]) * (1.0 - fh)
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
        ratio = tf.where(coin(rs[0]), uniform(rs[1], 1.0, max_expand), 1.0)
        offset = -uniform(rs[2], 0.0, 1.0, [2]) * (ratio - 1.0)
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

    do_flip = coin(seeds[2]) if flip else tf.constant(False)
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
    """Evaluation transform: plain (non aspect-preserving, as SSD) resize of an image
    ``[H, W, 3]`` or a batch ``[B, H, W, 3]`` (any dtype, 0..255) to ``output_size``, float32
    in [0, 255]. Normalized boxes are unchanged. Half-pixel bilinear, matching :func:`resample`
    for the identity window. Serving and ``predict`` resize with it too."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    out = tf.image.resize(tf.cast(image, tf.float32), [out_h, out_w], method="bilinear",
                          antialias=False)
    return tf.ensure_shape(out, [out_h, out_w, 3]) if out.shape.rank == 3 else out

"""Drawing detections on images (paper Figure 5 style). Depends on numpy and Pillow only:
nothing here loads a model, so :mod:`mgdet.inference`, the training's TensorBoard pictures and
:mod:`mgdet.viz.show_assign` all build on it.
"""
import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WHITE = (255, 255, 255)


def load_font(size):
    """PIL's built-in font at ``size`` pixels (a fixed bitmap font on old Pillow)."""
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: scalable built-in font
    except TypeError:  # older Pillow: fixed bitmap font
        return ImageFont.load_default()


def class_color(label):
    """A distinct, saturated RGB colour per class id (golden-ratio hue walk)."""
    hue = (0.61803398875 * int(label) + 0.07) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def to_pil(image):
    """An RGB PIL image of a PIL image or an [H, W, 3+] array / tensor (rounded to uint8)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image.numpy() if hasattr(image, "numpy") else image)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(arr[..., :3])


def text_size(draw, text, font):
    """``(width, height)`` in pixels of ``text`` drawn with ``font``."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def draw_label(draw, xy, text, fill, font, image_size):
    """A filled tag with ``text`` whose bottom-left corner sits at ``xy`` (moved inside)."""
    tw, th = text_size(draw, text, font)
    pad = 2
    x, y = xy
    w, h = image_size
    x = min(max(x, 0), max(w - tw - 2 * pad, 0))
    y = y - th - 2 * pad
    if y < 0:
        y = xy[1]  # no room above the box: put the tag inside it
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    draw.rectangle([x, y, x + tw + 2 * pad, y + th + 2 * pad], fill=fill)
    draw.text((x + pad, y + pad - 1), text, fill=(0, 0, 0) if luminance > 140 else WHITE,
              font=font)


def draw_detections(image_uint8, boxes_xyxy_norm, scores, classes, class_names=None,
                    score_threshold=0.0, line_width=None, font_size=None):
    """Draw detections (paper Figure 5 style): a box per detection in its class colour and a
    tag "name 0.87".

    Args:
      image_uint8: ``[H, W, 3]`` uint8 array (or tensor / PIL image).
      boxes_xyxy_norm: ``[K, 4]`` normalized xyxy boxes relative to the image.
      scores: ``[K]`` floats.
      classes: ``[K]`` 0-based class ids.
      class_names: names indexed by class id (None: the id).
      score_threshold: skip detections scoring below it.
      line_width, font_size: default scale with the image.
    Returns:
      ``PIL.Image`` (RGB), the same size as the input. Higher scores are drawn last (on top).
    """
    img = to_pil(image_uint8).copy()
    w, h = img.size
    boxes = np.asarray(boxes_xyxy_norm, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes).astype(np.int64).reshape(-1)
    line_width = line_width or max(1, round(min(w, h) / 160))
    font = load_font(font_size or max(9, round(min(w, h) / 28)))
    draw = ImageDraw.Draw(img)
    for k in np.argsort(scores, kind="stable"):
        if scores[k] < score_threshold:
            continue
        x1, y1, x2, y2 = np.clip(boxes[k], 0.0, 1.0) * [w - 1, h - 1, w - 1, h - 1]
        if x2 <= x1 or y2 <= y1:
            continue
        c = int(classes[k])
        color = class_color(c)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=line_width)
        name = (class_names[c] if class_names is not None and 0 <= c < len(class_names)
                else str(c))
        draw_label(draw, (x1, y1), f"{name} {scores[k]:.2f}", color, font, (w, h))
    return img

"""Pictures: detections (paper Figure 5) and label-assignment differences (paper Figure 4).

- :func:`draw_detections`: boxes, class name and score on an image.
- :func:`assignment_masks`: for a batch and a model, the positives of the static IoU-anchor
  assignment and of Localize to Classify (classification) / Classify to Localize (regression),
  all from :func:`mgdet.assign.assign` with the model's own predictions.
- :func:`draw_assignment`: Figure 4 as two panels side by side. Left, classification labels:
  IoU-anchor vs L2C; right, regression labels: IoU-anchor vs C2L. Ground truth: white dashed
  boxes. Red: positive under IoU-anchor only; green: positive under L2C only (left panel);
  yellow: positive under C2L only (right panel); thin grey: positive under both.
- :func:`run_show_assign`: the ``cli.py show-assign`` command.
"""
import math
import os

import numpy as np
from PIL import Image, ImageDraw

from mgdet.drawing import (  # noqa: F401  (draw_detections, class_color: re-exported)
    _font, _label, _text_size, _to_pil, class_color, draw_detections)

RED = (235, 40, 40)
GREEN = (40, 220, 60)
YELLOW = (255, 225, 0)
WHITE = (255, 255, 255)
GREY = (150, 150, 150)


# --------------------------------------------------------------------------------------------
# Figure 4: label assignment
# --------------------------------------------------------------------------------------------

def assignment_masks(model, images, targets):
    """Positive anchors of the batch under IoU-anchor, L2C and C2L, from one forward pass.

    Args:
      model: an mgdet Detector (``model(images) -> (deltas [B, N, 4], logits [B, N, C])``,
        ``model.anchors``; its ``sigma`` / ``pos_iou`` / ``neg_iou`` are used when it has them).
      images: float32 ``[B, S, S, 3]`` in 0..255.
      targets: ``{"boxes" [B, M, 4], "labels" [B, M], "valid" [B, M]}``.
    Returns:
      dict of numpy arrays ``[B, N]`` bool: ``iou_cls`` / ``iou_reg`` (static positives, the
      same mask), ``iou_ignored``, ``l2c_cls`` (L2C classification positives), ``l2c_ignored``,
      ``c2l_reg`` (C2L regression positives); int32 ``[B, N]`` ``iou_gt`` / ``l2c_gt`` /
      ``c2l_gt``: the object index of each of those positives (-1 elsewhere); and ``anchors``
      ``[N, 4]``.
    """
    import tensorflow as tf

    from mgdet.assign import assign
    deltas, logits = model(images, training=False)
    anchors = model.anchors
    kw = {k: float(getattr(model, k)) for k in ("sigma", "pos_iou", "neg_iou")
          if isinstance(getattr(model, k, None), (int, float))}
    gt = (targets["boxes"], targets["labels"], targets["valid"])
    static = assign("iou", anchors, *gt, **kw)
    l2c = assign("l2c", anchors, *gt, pred_deltas=deltas, **kw)
    c2l = assign("c2l", anchors, *gt, pred_logits=logits, **kw)

    def np_(t):
        return t.numpy() if isinstance(t, tf.Tensor) else np.asarray(t)

    return {
        "iou_cls": np_(static.cls_labels) >= 0,
        "iou_ignored": np_(static.cls_labels) == -2,
        "iou_reg": np_(static.reg_positive),
        "l2c_cls": np_(l2c.cls_labels) >= 0,
        "l2c_ignored": np_(l2c.cls_labels) == -2,
        "c2l_reg": np_(c2l.reg_positive),
        # Owner object of each positive (-1 elsewhere): per-object counts.
        "iou_gt": np.where(np_(static.cls_labels) >= 0, np_(static.cls_gt_index), -1),
        "l2c_gt": np.where(np_(l2c.cls_labels) >= 0, np_(l2c.cls_gt_index), -1),
        "c2l_gt": np.where(np_(c2l.reg_positive), np_(c2l.reg_gt_index), -1),
        "anchors": np_(anchors),
    }


def assignment_counts(masks, index):
    """Positives per strategy for image ``index`` of :func:`assignment_masks`' output."""
    m = {k: v[index] for k, v in masks.items() if k != "anchors"}
    m = {k: (v if k.endswith("_gt") else v.astype(bool)) for k, v in m.items()}
    return {
        "iou": int(m["iou_cls"].sum()),
        "l2c": int(m["l2c_cls"].sum()),
        "c2l": int(m["c2l_reg"].sum()),
        "iou_ignored": int(m["iou_ignored"].sum()),
        "l2c_ignored": int(m["l2c_ignored"].sum()),
        "cls_iou_only": int((m["iou_cls"] & ~m["l2c_cls"]).sum()),
        "cls_l2c_only": int((m["l2c_cls"] & ~m["iou_cls"]).sum()),
        "reg_iou_only": int((m["iou_reg"] & ~m["c2l_reg"]).sum()),
        "reg_c2l_only": int((m["c2l_reg"] & ~m["iou_reg"]).sum()),
        "per_object": _per_object(m),
    }


def _per_object(m):
    """Positives per object index under each strategy: ``{"iou": [...], "l2c": [...],
    "c2l": [...]}`` (lists as long as the highest owning index + 1)."""
    if "iou_gt" not in m:
        return {}
    owners = {k: np.asarray(m[k + "_gt"]).reshape(-1) for k in ("iou", "l2c", "c2l")}
    n = max([int(v.max()) + 1 for v in owners.values() if v.size] + [0])
    return {k: np.bincount(v[v >= 0], minlength=n).tolist() for k, v in owners.items()}


def _dashed_rectangle(draw, box, fill, width=1, dash=6, gap=4):
    x1, y1, x2, y2 = box
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)),
                               ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = math.hypot(bx - ax, by - ay)
        if length == 0:
            continue
        ux, uy = (bx - ax) / length, (by - ay) / length
        t = 0.0
        while t < length:
            e = min(t + dash, length)
            draw.line([(ax + ux * t, ay + uy * t), (ax + ux * e, ay + uy * e)], fill=fill,
                      width=width)
            t += dash + gap


def _panel(base, gt_px, anchors_px, common, only_static, only_dynamic, dynamic_color, title,
           font, line):
    img = base.copy()
    draw = ImageDraw.Draw(img)
    for i in np.flatnonzero(common):
        draw.rectangle(anchors_px[i].tolist(), outline=GREY, width=1)
    for i in np.flatnonzero(only_static):
        draw.rectangle(anchors_px[i].tolist(), outline=RED, width=line)
    for i in np.flatnonzero(only_dynamic):
        draw.rectangle(anchors_px[i].tolist(), outline=dynamic_color, width=line)
    for box in gt_px:
        _dashed_rectangle(draw, box.tolist(), WHITE, width=line, dash=4 * line + 2, gap=3 * line)
    # Title strip above the picture: the items, wrapped onto as many lines as needed.
    _, th = _text_size(draw, "Ag", font)
    positions, x, y = [], 4, 3
    for text, _ in title:
        tw = _text_size(draw, text, font)[0]
        if x > 4 and x + tw > img.width - 4:
            x, y = 4, y + th + 5
        positions.append((x, y))
        x += tw + 10
    strip = Image.new("RGB", (img.width, y + th + 8), (20, 20, 20))
    sd = ImageDraw.Draw(strip)
    for (text, color), xy in zip(title, positions):
        sd.text(xy, text, fill=color, font=font)
    out = Image.new("RGB", (img.width, img.height + strip.height), (20, 20, 20))
    out.paste(strip, (0, 0))
    out.paste(img, (0, strip.height))
    return out


def draw_assignment(image, gt_boxes, masks, anchors, scale=None, show_common=True):
    """Paper Figure 4 for one image: two panels, classification (IoU-anchor vs L2C) and
    regression (IoU-anchor vs C2L).

    Args:
      image: ``[S, S, 3]`` uint8 (or float 0..255) model-input image.
      gt_boxes: ``[M, 4]`` normalized xyxy (valid objects only).
      masks: dict of ``[N]`` bool for this image with keys ``iou_cls``, ``l2c_cls``,
        ``iou_reg``, ``c2l_reg`` (one row of :func:`assignment_masks`).
      anchors: ``[N, 4]`` normalized xyxy.
      scale: upscaling factor of the picture (default: to at least 320 px wide).
      show_common: also draw anchors positive under both strategies (thin grey).
    Returns:
      ``PIL.Image``: the two panels side by side, each with a title strip giving the counts.
    """
    base = _to_pil(image)
    if scale is None:
        scale = max(1, math.ceil(320 / base.width))
    if scale != 1:
        base = base.resize((base.width * scale, base.height * scale), Image.BILINEAR)
    w, h = base.size
    size = np.array([w - 1, h - 1, w - 1, h - 1], np.float64)
    anchors_px = np.asarray(anchors, np.float64).reshape(-1, 4) * size
    gt_px = np.asarray(gt_boxes, np.float64).reshape(-1, 4) * size
    m = {k: np.asarray(masks[k], bool).reshape(-1) for k in ("iou_cls", "l2c_cls", "iou_reg",
                                                              "c2l_reg")}
    font = _font(max(10, round(w / 30)))
    line = max(1, round(w / 320))
    none = np.zeros_like(m["iou_cls"])
    cls_common = (m["iou_cls"] & m["l2c_cls"]) if show_common else none
    reg_common = (m["iou_reg"] & m["c2l_reg"]) if show_common else none
    cls_static_only = m["iou_cls"] & ~m["l2c_cls"]
    cls_dynamic_only = m["l2c_cls"] & ~m["iou_cls"]
    reg_static_only = m["iou_reg"] & ~m["c2l_reg"]
    reg_dynamic_only = m["c2l_reg"] & ~m["iou_reg"]
    left = _panel(base, gt_px, anchors_px, cls_common, cls_static_only, cls_dynamic_only, GREEN,
                  [("cls", WHITE), (f"IoU-anchor only {cls_static_only.sum()}", RED),
                   (f"L2C only {cls_dynamic_only.sum()}", GREEN),
                   (f"both {(m['iou_cls'] & m['l2c_cls']).sum()}", GREY)], font, line)
    right = _panel(base, gt_px, anchors_px, reg_common, reg_static_only, reg_dynamic_only, YELLOW,
                   [("reg", WHITE), (f"IoU-anchor only {reg_static_only.sum()}", RED),
                    (f"C2L only {reg_dynamic_only.sum()}", YELLOW),
                    (f"both {(m['iou_reg'] & m['c2l_reg']).sum()}", GREY)], font, line)
    gap = 6
    out = Image.new("RGB", (left.width + gap + right.width, left.height), (20, 20, 20))
    out.paste(left, (0, 0))
    out.paste(right, (left.width + gap, 0))
    return out


def run_show_assign(config, weights=None, num_images=4, out_dir="runs/show_assign", split="eval",
                    print_fn=print):
    """``cli.py show-assign``: Figure 4 pictures for the first ``num_images`` images of a split.

    The images go through the evaluation transform (plain resize to the model's input, no
    augmentation); the model (``weights``, or its initialization) predicts once and the three
    assignments are computed from that prediction.

    Args:
      config: :class:`mgdet.config.Config`.
      weights: ``.weights.h5`` file or None.
      num_images: pictures to draw.
      out_dir: output folder (``assign_<k>_image<id>.png``).
      split: "eval" or "train" (the images, not augmented either way).
      print_fn: where the per-image count lines go.
    Returns:
      list of ``(png_path, counts)``: counts are :func:`assignment_counts` plus ``image_id`` and
      ``objects``.
    """
    from mgdet.data import load_source
    from mgdet.data.pipeline import make_dataset
    from mgdet.predict import load_detector
    model, _ = load_detector(config, weights)
    size = int(config.model.image_size)
    source, _ = load_source(config.data, split, image_size=size, shuffle=False)
    ds = make_dataset(source.take(num_images), size, num_images, config.data.max_objects,
                      training=False, name="show_assign")
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for images, targets in ds.take(1):
        masks = assignment_masks(model, images, targets)
        anchors = masks["anchors"]
        image_ids = targets["image_id"].numpy()
        for b in range(int(images.shape[0])):
            valid = targets["valid"][b].numpy()
            gt = targets["boxes"][b].numpy()[valid]
            counts = {"image_id": int(image_ids[b]), "objects": int(valid.sum()),
                      **assignment_counts(masks, b)}
            pic = draw_assignment(images[b].numpy(), gt,
                                  {k: v[b] for k, v in masks.items() if k != "anchors"}, anchors)
            path = os.path.join(out_dir, f"assign_{b:02d}_image{int(image_ids[b])}.png")
            pic.save(path)
            print_fn(f"image {counts['image_id']}: {counts['objects']} objects, positives "
                     f"IoU-anchor {counts['iou']} | L2C {counts['l2c']} (IoU-anchor only "
                     f"{counts['cls_iou_only']}, L2C only {counts['cls_l2c_only']}) | C2L "
                     f"{counts['c2l']} (IoU-anchor only {counts['reg_iou_only']}, C2L only "
                     f"{counts['reg_c2l_only']}) -> {path}")
            results.append((path, counts))
    return results

"""Label-assignment differences drawn per object (paper Figure 4); the detections of paper
Figure 5 are drawn by :func:`mgdet.viz.drawing.draw_detections`.

- :func:`assignment_masks`: for a batch and a model, the positives of the static IoU-anchor
  assignment and of Localize to Classify (classification) / Classify to Localize (regression),
  all from :func:`mgdet.assign.assign` with the model's own predictions.
- :func:`draw_assignment`: Figure 4, one row per object (a few objects), two panels per row.
  Left, classification labels: IoU-anchor vs L2C; right, regression labels: IoU-anchor vs C2L.
  Each of the object's positive anchors is a dot at its centre: red, IoU-anchor only; green,
  L2C only; blue, C2L only; white, both. The object's box is dashed white.
- :func:`run_show_assign`: the ``cli.py show-assign`` command.
"""
import math
import os

import numpy as np
from PIL import Image, ImageDraw

import tensorflow as tf

from mgdet.assign import IGNORED, assign
from mgdet.data import get_source
from mgdet.data.pipeline import make_dataset
from mgdet.ops.anchors import ANCHORS_PER_CELL, feature_sizes, num_anchors
from mgdet.training.trained import load_detector
from mgdet.viz.drawing import load_font, text_size, to_pil

RED = (235, 40, 40)
GREEN = (40, 220, 60)
WHITE = (255, 255, 255)
GREY = (150, 150, 150)
BLUE = (60, 150, 255)
DARK = (20, 20, 20)


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
        "iou_ignored": np_(static.cls_labels) == IGNORED,
        "iou_reg": np_(static.reg_positive),
        "l2c_cls": np_(l2c.cls_labels) >= 0,
        "l2c_ignored": np_(l2c.cls_labels) == IGNORED,
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


def _centre_offsets(radius):
    """Pixel offsets of the 6 anchor shapes of a cell around the cell centre (a small ring), so
    that anchors sharing a centre are drawn as separate dots."""
    angles = np.arange(ANCHORS_PER_CELL) * (2 * math.pi / ANCHORS_PER_CELL) - math.pi / 2
    return np.stack([np.cos(angles), np.sin(angles)], -1) * radius


def _title_strip(width, items, font):
    """A dark strip with ``items`` [(text, colour)] written left to right, wrapped."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    _, th = text_size(probe, "Ag", font)
    positions, x, y = [], 4, 3
    for text, _ in items:
        tw = text_size(probe, text, font)[0]
        if x > 4 and x + tw > width - 4:
            x, y = 4, y + th + 5
        positions.append((x, y))
        x += tw + 12
    strip = Image.new("RGB", (width, y + th + 8), DARK)
    draw = ImageDraw.Draw(strip)
    for (text, color), xy in zip(items, positions):
        draw.text(xy, text, fill=color, font=font)
    return strip


def _object_panel(base, gt_px, obj, centres_px, static, dynamic, dynamic_color, names, font,
                  dot):
    """One object, one task: its positive anchors as centre dots (red: static only, colour:
    dynamic only, white: both) over the dimmed image, its box dashed white, the others grey."""
    img = Image.blend(base, Image.new("RGB", base.size, DARK), 0.55)
    draw = ImageDraw.Draw(img)
    for j, box in enumerate(gt_px):
        if j != obj:
            _dashed_rectangle(draw, box.tolist(), GREY, width=1, dash=4, gap=4)
    _dashed_rectangle(draw, gt_px[obj].tolist(), WHITE, width=max(1, dot // 2), dash=3 * dot,
                      gap=2 * dot)
    both, static_only, dynamic_only = static & dynamic, static & ~dynamic, dynamic & ~static
    for mask, color in ((both, WHITE), (static_only, RED), (dynamic_only, dynamic_color)):
        for i in np.flatnonzero(mask):
            x, y = centres_px[i]
            draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=color, outline=DARK)
    items = [(f"object {obj}: {names[0]} {int(static.sum())}, {names[1]} {int(dynamic.sum())}",
              WHITE), (f"both {int(both.sum())}", WHITE),
             (f"{names[0]} only {int(static_only.sum())}", RED),
             (f"{names[1]} only {int(dynamic_only.sum())}", dynamic_color)]
    strip = _title_strip(img.width, items, font)
    out = Image.new("RGB", (img.width, img.height + strip.height), DARK)
    out.paste(strip, (0, 0))
    out.paste(img, (0, strip.height))
    return out


def pick_objects(gt_boxes, masks, max_objects=3):
    """Indices of up to ``max_objects`` objects to draw: those whose positives change most
    between IoU-anchor and L2C / C2L, larger objects first on ties."""
    boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    owners = {k: np.asarray(masks[k], np.int64).reshape(-1) for k in ("iou_gt", "l2c_gt",
                                                                      "c2l_gt")}
    changed = [int(((owners["iou_gt"] == j) != (owners["l2c_gt"] == j)).sum()
                   + ((owners["iou_gt"] == j) != (owners["c2l_gt"] == j)).sum())
               for j in range(len(boxes))]
    area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), -1)
    order = sorted(range(len(boxes)), key=lambda j: (-changed[j], -area[j], j))
    return sorted(order[:max_objects])


def draw_assignment(image, gt_boxes, masks, anchors, objects=None, max_objects=3, scale=None):
    """Paper Figure 4: per object, the anchors each strategy makes positive for it.

    One row per object, two panels: classification labels (IoU-anchor vs L2C) and regression
    labels (IoU-anchor vs C2L). Each positive anchor of the object is a dot at its centre (the 6
    shapes of a cell on a small ring around it, bigger dots for coarser levels): red, positive
    under IoU-anchor only; green, L2C only; blue, C2L only; white, both. The object's box is
    dashed white, the other objects dashed grey; the title strip gives the counts.

    Args:
      image: ``[S, S, 3]`` uint8 (or float 0..255) model-input image.
      gt_boxes: ``[M, 4]`` normalized xyxy (valid objects only).
      masks: dict of ``[N]`` int for this image: ``iou_gt``, ``l2c_gt``, ``c2l_gt``, the object
        owning each positive anchor (-1 elsewhere) under IoU-anchor (both tasks), L2C
        (classification) and C2L (regression): one row of :func:`assignment_masks`.
      anchors: ``[N, 4]`` normalized xyxy in :func:`mgdet.ops.anchors.generate_anchors` order.
      objects: object indices to draw (default :func:`pick_objects`).
      max_objects: rows when ``objects`` is None.
      scale: upscaling factor of the picture (default: to at least 512 px wide).
    Returns:
      ``PIL.Image``: rows of two panels (a dark placeholder panel when there is no object).
    """
    base = to_pil(image)
    if scale is None:
        scale = max(1, math.ceil(512 / base.width))
    if scale != 1:
        base = base.resize((base.width * scale, base.height * scale), Image.BILINEAR)
    w, h = base.size
    size = np.array([w - 1, h - 1, w - 1, h - 1], np.float64)
    gt_px = np.asarray(gt_boxes, np.float64).reshape(-1, 4) * size
    anchors = np.asarray(anchors, np.float64).reshape(-1, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2 * size[:2]
    # Dots and rings scale with each anchor's level (its size): the cell's stride in pixels.
    image_size = _input_size(len(anchors))
    level = np.concatenate([np.full(ANCHORS_PER_CELL * f * f, k) for k, f in
                            enumerate(feature_sizes(image_size))]) if image_size else \
        np.zeros(len(anchors), np.int64)
    stride_px = w / np.array(feature_sizes(image_size) if image_size else [1.0])[level]
    shape = np.arange(len(anchors)) % ANCHORS_PER_CELL
    ring = _centre_offsets(1.0)[shape] * np.minimum(stride_px * 0.3, 18)[:, None]
    centres_px = centres + ring
    dot = max(2, round(w / 110))
    font = load_font(max(10, round(w / 32)))
    owners = {k: np.asarray(masks[k], np.int64).reshape(-1) for k in ("iou_gt", "l2c_gt",
                                                                      "c2l_gt")}
    objects = pick_objects(gt_boxes, masks, max_objects) if objects is None else list(objects)
    rows = []
    for j in objects:
        static = owners["iou_gt"] == j
        left = _object_panel(base, gt_px, j, centres_px, static, owners["l2c_gt"] == j, GREEN,
                             ("IoU-anchor", "L2C"), font, dot)
        right = _object_panel(base, gt_px, j, centres_px, static, owners["c2l_gt"] == j, BLUE,
                              ("IoU-anchor", "C2L"), font, dot)
        rows.append((left, right))
    if not rows:
        empty = Image.blend(base, Image.new("RGB", base.size, DARK), 0.45)
        rows.append((empty, empty))
    gap = 6
    width = rows[0][0].width + gap + rows[0][1].width
    height = sum(r[0].height for r in rows) + gap * (len(rows) - 1)
    out = Image.new("RGB", (width, height), DARK)
    y = 0
    for left, right in rows:
        out.paste(left, (0, y))
        out.paste(right, (left.width + gap, y))
        y += left.height + gap
    return out


def _input_size(num):
    """The square input side whose anchor count is ``num`` (None if none up to 2048)."""
    for size in range(64, 2049, 64):
        if num_anchors(size) == num:
            return size
    return None


def run_show_assign(config, weights=None, num_images=4, out_dir="runs/show_assign", split="eval",
                    print_fn=print, max_objects=3):
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
      max_objects: objects drawn per picture (see :func:`draw_assignment`).
    Returns:
      list of ``(png_path, counts)``: counts are :func:`assignment_counts` plus ``image_id`` and
      ``objects``.
    """
    model, _ = load_detector(config, weights)
    size = int(config.model.image_size)
    source = get_source(config.data, image_size=size).dataset(split, shuffle=False)
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
                                  {k: v[b] for k, v in masks.items() if k != "anchors"}, anchors,
                                  max_objects=max_objects)
            path = os.path.join(out_dir, f"assign_{b:02d}_image{int(image_ids[b])}.png")
            pic.save(path)
            print_fn(f"image {counts['image_id']}: {counts['objects']} objects, positives "
                     f"IoU-anchor {counts['iou']} | L2C {counts['l2c']} (IoU-anchor only "
                     f"{counts['cls_iou_only']}, L2C only {counts['cls_l2c_only']}) | C2L "
                     f"{counts['c2l']} (IoU-anchor only {counts['reg_iou_only']}, C2L only "
                     f"{counts['reg_c2l_only']}) -> {path}")
            results.append((path, counts))
    return results

"""The authors' VOC metric (the paper's VOC07 columns), pure numpy.

VOC07 11-point interpolated mAP computed at each IoU threshold 0.50, 0.55, ..., 0.95 and
averaged ("AP"), and at 0.50 ("AP50") and 0.75 ("AP75"); at most ``max_detections`` (300)
detections per image, the highest scoring; difficult objects ignored (a detection whose best
match is a difficult object is neither a true nor a false positive, and difficult objects do not
count in the recall). Matching as VOC's ``voc_eval``: in descending score order (stable), each
detection takes its highest-IoU object of the same class in its image; it is a true positive when
that IoU >= the threshold and the object is not yet taken, otherwise a false positive. Boxes are
continuous pixel boxes (no "+1" pixel convention). Classes without non-difficult ground truth are
left out of the mean.

Inputs are COCO-style: ground truth as a COCO dict (``mgdet.data.common.to_coco``; ``difficult``
or ``iscrowd`` annotations are the difficult ones), detections as COCO result dicts
(``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``).
"""
import numpy as np

IOU_THRESHOLDS = tuple(np.round(np.arange(10) * 0.05 + 0.5, 2).tolist())  # 0.50 .. 0.95


def voc07_ap(tp, fp, npos):
    """11-point AP from per-detection flags in descending score order.

    Args:
      tp, fp: ``[D]`` 0/1 arrays (ignored detections are 0 in both).
      npos: number of non-difficult ground-truth objects (> 0).
    Returns:
      mean over recall points t in {0, 0.1, ..., 1} of the best precision at recall >= t.
    """
    tp_cum, fp_cum = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
    if tp_cum.size == 0:
        return 0.0
    recall = tp_cum / npos
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    # k / 10 exactly, so that a recall of 3/10 reaches the 0.3 point.
    points = [precision[recall >= t] for t in np.arange(11) / 10.0]
    return float(sum(p.max() if p.size else 0.0 for p in points) / 11.0)


def _iou(a, b):
    """Pairwise IoU of ``[D, 4]`` and ``[G, 4]`` xyxy boxes -> ``[D, G]``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=-1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0.0, None), axis=-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _xyxy(bbox):
    b = np.asarray(bbox, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)


def _cap_per_image(detections, max_detections):
    """The ``max_detections`` highest-scoring detections of each image (stable order)."""
    by_image = {}
    for d in detections:
        by_image.setdefault(d["image_id"], []).append(d)
    out = []
    for dets in by_image.values():
        out += sorted(dets, key=lambda d: -d["score"])[:max_detections]
    return out


def class_flags(gt_boxes, gt_difficult, det_image, det_boxes, det_scores, thresholds):
    """True/false positives of one class at several IoU thresholds.

    Args:
      gt_boxes: ``{image_id: [G, 4] xyxy}``; gt_difficult: ``{image_id: [G] bool}``.
      det_image: ``[D]`` image ids; det_boxes: ``[D, 4]`` xyxy; det_scores: ``[D]``.
      thresholds: IoU thresholds ``[T]``.
    Returns:
      ``(tp, fp)``: ``[T, D]`` 0/1 arrays in descending score order (stable).
    """
    order = np.argsort(-np.asarray(det_scores, np.float64), kind="stable")
    det_image = np.asarray(det_image)[order]
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)[order]
    best_iou = np.zeros(len(order))
    best_gt = np.full(len(order), -1)  # global object index
    difficult = []
    offset = 0
    by_image = {}
    for k, img in enumerate(det_image.tolist()):
        by_image.setdefault(img, []).append(k)
    for img, boxes in gt_boxes.items():
        sel = np.asarray(by_image.get(img, []), np.int64)
        if len(boxes) and len(sel):
            ious = _iou(det_boxes[sel], boxes)
            best_iou[sel] = ious.max(1)
            best_gt[sel] = offset + ious.argmax(1)
        difficult.append(np.asarray(gt_difficult[img], bool))
        offset += len(boxes)
    difficult = np.concatenate(difficult) if difficult else np.zeros(0, bool)
    is_difficult = np.zeros(len(order), bool)
    is_difficult[best_gt >= 0] = difficult[best_gt[best_gt >= 0]]
    tp = np.zeros((len(thresholds), len(order)))
    fp = np.zeros_like(tp)
    for i, t in enumerate(thresholds):
        hit = (best_gt >= 0) & (best_iou >= t)
        match = np.flatnonzero(hit & ~is_difficult)
        _, first = np.unique(best_gt[match], return_index=True)  # first claim of each object
        tp[i, match[first]] = 1
        fp[i] = ~hit
        fp[i, match] = 1
        fp[i, match[first]] = 0
    return tp, fp


def voc_metrics(gt_coco, detections, thresholds=IOU_THRESHOLDS, max_detections=300):
    """The authors' VOC metric.

    Args:
      gt_coco: COCO ground-truth dict (or an object with a ``dataset`` dict, e.g. ``COCO``).
      detections: COCO result dicts (pixel ``bbox``).
      thresholds: IoU thresholds whose mAPs are averaged into "AP".
      max_detections: per image, only the highest scoring ones count (None: all).
    Returns:
      ``{"AP", "AP50", "AP75"}`` floats in [0, 1] (nan without ground truth; AP50 / AP75 nan
      when not among ``thresholds``), ``"per_threshold"``: ``{iou: mAP}`` and ``"per_class"``:
      ``{category name: AP averaged over the thresholds}``.
    """
    gt = getattr(gt_coco, "dataset", gt_coco)
    thresholds = tuple(float(t) for t in thresholds)
    if max_detections is not None:
        detections = _cap_per_image(detections, int(max_detections))
    per_class, names = [], []
    anns_by_cat, dets_by_cat = {}, {}
    for a in gt["annotations"]:
        anns_by_cat.setdefault(a["category_id"], []).append(a)
    for d in detections:
        dets_by_cat.setdefault(d["category_id"], []).append(d)
    for cat, name in sorted((c["id"], c.get("name", str(c["id"]))) for c in gt["categories"]):
        boxes, diff = {}, {}
        for a in anns_by_cat.get(cat, []):
            boxes.setdefault(a["image_id"], []).append(a["bbox"])
            diff.setdefault(a["image_id"], []).append(bool(a.get("difficult", 0)
                                                          or a.get("iscrowd", 0)))
        npos = sum(not d for ds in diff.values() for d in ds)
        if npos == 0:
            continue
        boxes = {k: _xyxy(v) for k, v in boxes.items()}
        dets = dets_by_cat.get(cat, [])
        tp, fp = class_flags(boxes, diff, [d["image_id"] for d in dets],
                             _xyxy([d["bbox"] for d in dets]), [d["score"] for d in dets],
                             thresholds)
        per_class.append([voc07_ap(tp[i], fp[i], npos) for i in range(len(thresholds))])
        names.append(name)
    per_t = (np.mean(per_class, 0) if per_class else np.full(len(thresholds), np.nan)).tolist()
    table = dict(zip(thresholds, per_t))
    return {"AP": float(np.mean(per_t)), "AP50": table.get(0.5, float("nan")),
            "AP75": table.get(0.75, float("nan")), "per_threshold": table,
            "per_class": {n: float(np.mean(v)) for n, v in zip(names, per_class)}}


def format_voc_table(metrics, title=None):
    """A one-row markdown table (percent) of :func:`voc_metrics`'s AP / AP50 / AP75."""
    cells = ["-" if not np.isfinite(metrics[k]) else f"{100 * metrics[k]:.1f}"
             for k in ("AP", "AP50", "AP75")]
    lines = [title] if title else []
    lines += ["| VOC07 AP | VOC07 AP50 | VOC07 AP75 |", "|---|---|---|",
              "| " + " | ".join(cells) + " |"]
    return "\n".join(lines)

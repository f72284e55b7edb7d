"""Detection metrics: COCO AP through pycocotools (the evaluator of record) and VOC07 mAP.

Ground truth is a COCO-format dict (``mgdet.data.common.to_coco`` makes one from any source, with
``category_id = label + 1``; VOC's difficult objects become ``iscrowd = 1``). Detections are COCO
result dicts ``{"image_id", "category_id", "bbox": [x, y, w, h] pixels of the original image,
"score"}``; :func:`detections_to_coco` makes them from a detector's batched outputs.

    dets = detections_to_coco(ids, out["boxes"], out["scores"], out["classes"],
                              out["num_detections"], orig_sizes)
    print(format_table(coco_metrics(gt, dets)))
    metrics = evaluate(model, eval_dataset, gt)          # the whole loop, + "VOC07_mAP50"

Metric values are floats in [0, 1]. Where pycocotools reports -1 (no ground truth in that area
range, e.g. no small objects) the value is ``nan`` and :func:`format_table` prints "-".
"""
import contextlib
import io
import json
import logging
import os
import time

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm.auto import tqdm

from mgdet.evaluation import voc_metric
from mgdet.evaluation.analysis import confusion_matrix, pr_curves

log = logging.getLogger("mgdet.evaluation.coco")

# COCOeval.stats order (bbox): AP at IoU .50:.95 / .50 / .75, AP small / medium / large, then AR
# with 1 / 10 / 100 detections and AR small / medium / large (at 100).
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
             "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
TABLE_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
VOC_KEY = "VOC07_mAP50"
# the confusion matrix counts detections at or above this score matched at this IoU
CONFUSION_IOU, CONFUSION_SCORE = 0.5, 0.25


# --------------------------------------------------------------------------------------------
# COCO metrics
# --------------------------------------------------------------------------------------------

def _quiet():
    """Context that swallows pycocotools' prints (it writes progress to stdout)."""
    return contextlib.redirect_stdout(io.StringIO())


def _coco_api(gt_coco):
    if isinstance(gt_coco, COCO):
        return gt_coco
    if isinstance(gt_coco, str):
        with open(gt_coco) as f:
            gt_coco = json.load(f)
    dataset = dict(gt_coco)
    dataset.setdefault("info", {})
    dataset.setdefault("annotations", [])
    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


def coco_metrics(gt_coco, detections, per_class=False, curves=False):
    """COCO box metrics of ``detections`` against ``gt_coco`` (pycocotools ``COCOeval``, bbox).

    Args:
      gt_coco: COCO-format ground truth: a dict (``images``, ``annotations``, ``categories``), the
        path of an ``instances_*.json`` file, or a ``pycocotools.coco.COCO``.
      detections: list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` in
        pixels. Not modified. Image ids must belong to ``gt_coco``.
      per_class: also return ``"per_class"``: ``{category name: AP}`` (AP@[.5:.95], ``nan`` for
        a category without ground truth).
      curves: also return ``"pr_curves"``: :func:`mgdet.evaluation.analysis.pr_curves`.
    Returns:
      ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
      "ARl"}`` floats in [0, 1] (``nan`` where the ground truth has nothing to measure).
      No detections at all gives 0 everywhere (``nan`` where there is no ground truth).
    """
    gt = _coco_api(gt_coco)
    gt_ids = set(gt.getImgIds())
    unknown = {d["image_id"] for d in detections} - gt_ids
    if unknown:
        raise ValueError(f"coco_metrics: {len(unknown)} detection image ids are not in the ground "
                         f"truth, e.g. {sorted(unknown)[:5]}")
    known_cats = set(gt.getCatIds())
    bad_cats = {d["category_id"] for d in detections} - known_cats
    if bad_cats:
        raise ValueError(f"coco_metrics: detection category ids {sorted(bad_cats)[:5]} are not in "
                         f"the ground truth's categories {sorted(known_cats)[:10]}")
    no_detections = not detections
    if no_detections:
        if not gt.getImgIds() or not known_cats:
            result = _stats_to_dict(np.full(len(COCO_KEYS), -1.0))
            if per_class:
                result["per_class"] = {c["name"]: float("nan")
                                       for c in gt.loadCats(sorted(known_cats))}
            if curves:
                result["pr_curves"] = {}
            return result
        # pycocotools cannot load an empty result list. One zero-area detection matches nothing
        # (IoU 0), so it gives exactly the metrics of no detections: 0 where there is ground
        # truth, -1 (-> nan) where there is none.
        detections = [{"image_id": gt.getImgIds()[0], "category_id": sorted(known_cats)[0],
                       "bbox": [0.0, 0.0, 0.0, 0.0], "score": 1e-9}]
    with _quiet():
        dt = gt.loadRes([dict(d, bbox=[float(v) for v in d["bbox"]]) for d in detections])
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    result = _stats_to_dict(ev.stats)
    if per_class:
        result["per_class"] = _per_class_ap(gt, ev)
    if curves:
        result["pr_curves"] = pr_curves(ev, gt)
    return result


def _stats_to_dict(stats):
    return {k: (float(v) if v >= 0 else float("nan")) for k, v in zip(COCO_KEYS, stats)}


def _per_class_ap(gt, ev):
    """AP@[.5:.95] per category from ``ev.eval['precision']`` [T, R, K, A, M] (area all, 100)."""
    precision = ev.eval["precision"][:, :, :, 0, -1]  # [T, R, K]
    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k]
        p = p[p > -1]
        out[gt.loadCats([cat_id])[0]["name"]] = float(p.mean()) if p.size else float("nan")
    return out


# --------------------------------------------------------------------------------------------
# VOC07 11-point mAP
# --------------------------------------------------------------------------------------------

def voc07_map(gt_coco, detections, iou_threshold=0.5):
    """PASCAL VOC 2007 11-point interpolated mAP at IoU ``iou_threshold`` (an extra line; COCO AP
    is the metric of record): :func:`mgdet.evaluation.voc_metric.voc_metrics` at one threshold, all
    detections counted, difficult (or ``iscrowd``) objects ignored.

    Returns:
      ``{"mAP": float, "per_class": {category name: AP}}``.
    """
    out = voc_metric.voc_metrics(_coco_api(gt_coco).dataset, detections, (iou_threshold,),
                                 max_detections=None)
    return {"mAP": out["per_threshold"][float(iou_threshold)], "per_class": out["per_class"]}


# --------------------------------------------------------------------------------------------
# Model outputs -> COCO results
# --------------------------------------------------------------------------------------------

def default_label_to_category(gt_coco):
    """Label ``i`` -> the ``i``-th category id of ``gt_coco`` in increasing id order (``i + 1``
    for ``to_coco`` ground truth; COCO's 80 non-contiguous ids for ``instances_*.json``)."""
    gt = _coco_api(gt_coco)
    return sorted(gt.getCatIds())


def detections_to_coco(image_ids, boxes_xyxy_norm, scores, classes, num_detections, image_sizes,
                       label_to_category=None):
    """Batched detector outputs -> COCO result dicts in pixels of the original images.

    Args:
      image_ids: ``[B]`` ints.
      boxes_xyxy_norm: ``[B, K, 4]`` normalized xyxy boxes (relative to the model input, which is
        the whole image resized, so also relative to the original image).
      scores: ``[B, K]`` floats.
      classes: ``[B, K]`` 0-based labels.
      num_detections: ``[B]`` valid rows per image (the rest is padding).
      image_sizes: ``[B, 2]`` original (height, width) in pixels.
      label_to_category: label -> COCO category id, as a list / array (indexed by label), a dict,
        or None for ``label + 1``.
    Returns:
      list of ``{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}``,
      boxes clipped to the image; zero-area boxes are dropped.
    """
    boxes = np.asarray(boxes_xyxy_norm, np.float64)
    scores = np.asarray(scores, np.float64)
    classes = np.asarray(classes).astype(np.int64)
    num = np.asarray(num_detections).astype(np.int64).reshape(-1)
    sizes = np.asarray(image_sizes, np.float64).reshape(-1, 2)
    ids = np.asarray(image_ids).reshape(-1)
    if label_to_category is None:
        def to_cat(c):
            return int(c) + 1
    elif isinstance(label_to_category, dict):
        def to_cat(c):
            return int(label_to_category[int(c)])
    else:
        table = list(label_to_category)

        def to_cat(c):
            return int(table[int(c)])
    results = []
    for b in range(len(ids)):
        h, w = sizes[b]
        n = int(min(num[b], boxes.shape[1]))
        px = np.clip(boxes[b, :n], 0.0, 1.0) * np.array([w, h, w, h])  # [n, 4] pixels
        for k in range(n):
            x1, y1, x2, y2 = px[k]
            if x2 <= x1 or y2 <= y1:
                continue
            results.append({"image_id": int(ids[b]), "category_id": to_cat(classes[b, k]),
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                            "score": float(scores[b, k])})
    return results


# --------------------------------------------------------------------------------------------
# The evaluation loop
# --------------------------------------------------------------------------------------------

# Original (height, width) per image in the eval targets: "image_size" is what
# mgdet.data.pipeline.make_dataset(training=False) yields; "orig_size" is accepted too.
_SIZE_KEYS = ("orig_size", "image_size")


def _to_numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def run_detector(model, dataset, label_to_category=None, progress=True, max_batches=None,
                 image_ids=None):
    """Run ``model.detect`` over an eval dataset and collect COCO result dicts.

    Args:
      model: a detector with ``detect(images) -> {"boxes", "scores", "classes",
        "num_detections"}`` (mgdet's Detector), or any Keras model whose ``predict_on_batch``
        returns that dict.
      dataset: yields ``(images [B, S, S, 3] float32, meta)`` with ``meta["image_id"]`` [B] and
        ``meta["orig_size"]`` or ``meta["image_size"]`` [B, 2] (height, width of the original
        image), as ``mgdet.data.pipeline.make_dataset(..., training=False)`` yields.
      label_to_category: see :func:`detections_to_coco`.
      progress: show a tqdm bar.
      max_batches: stop after that many batches (None: all).
      image_ids: optional set that receives the id of every image run.
    Returns:
      ``(detections, num_images, seconds)``.
    """
    detect = getattr(model, "detect", None) or model.predict_on_batch
    detections, num_images = [], 0
    start = time.perf_counter()
    bar = tqdm(dataset, desc="eval", unit="batch", disable=not progress, leave=False)
    for step, (images, meta) in enumerate(bar):
        if max_batches is not None and step >= max_batches:
            break
        size_key = next((k for k in _SIZE_KEYS if k in meta), None)
        if "image_id" not in meta or size_key is None:
            raise ValueError("evaluate: the eval dataset must yield (images, meta) with "
                             "meta['image_id'] and meta['orig_size'] (or 'image_size'), got keys "
                             f"{sorted(meta)}")
        out = detect(images)
        ids = _to_numpy(meta["image_id"])
        if image_ids is not None:
            image_ids.update(int(i) for i in ids.reshape(-1))
        detections += detections_to_coco(
            ids, _to_numpy(out["boxes"]), _to_numpy(out["scores"]), _to_numpy(out["classes"]),
            _to_numpy(out["num_detections"]), _to_numpy(meta[size_key]), label_to_category)
        num_images += len(ids)
    return detections, num_images, time.perf_counter() - start


def evaluate(model, dataset, gt_coco, label_to_category=None, voc07=True, per_class=False,
             results_path=None, progress=True, max_batches=None, analysis=False):
    """COCO metrics (and VOC07 mAP@0.5) of ``model`` on an eval dataset.

    Args:
      model: a detector with ``detect`` (see :func:`run_detector`); its own score threshold,
        NMS IoU and max detections apply (the paper's 0.005 / 0.5 / 300 by default).
      dataset: ``(images, {"image_id" [B], "image_size" (or "orig_size") [B, 2] (h, w), ...})``
        batches: ``mgdet.data.pipeline.make_dataset(source, S, batch, training=False)``.
      gt_coco: the dataset's COCO ground truth (dict, path or COCO object).
      label_to_category: label -> category id; None: :func:`default_label_to_category`.
      voc07: add ``"VOC07_mAP50"`` and ``"voc07"``: the authors' VOC metric
        (:func:`mgdet.evaluation.voc_metric.voc_metrics`: AP, AP50, AP75, at most 300 detections).
      per_class: add ``"per_class"`` (COCO AP per category name).
      results_path: also write the detections there as a COCO results JSON.
      progress: tqdm bar over batches.
      max_batches: evaluate on the first batches only (ground truth restricted to their images).
      analysis: add ``"pr_curves"`` and ``"confusion"`` (``{"matrix", "names", "iou",
        "score_threshold"}``), :mod:`mgdet.evaluation.analysis`.
    Returns:
      dict: the :func:`coco_metrics` keys, ``"VOC07_mAP50"``, ``"num_images"``,
      ``"num_detections"``, ``"seconds"`` (detector loop wall time), ``"wall_seconds"`` (the
      whole evaluation, metrics included), ``"images_dropped"``:
      ground-truth images the dataset never yielded (they failed to decode, for file sources).
      Those are removed from the ground truth too (with a warning naming a few ids), so the
      metrics score exactly the images that were run, never count an unreadable image's boxes
      as misses.
    """
    start = time.perf_counter()
    gt = _coco_api(gt_coco)
    if label_to_category is None:
        label_to_category = default_label_to_category(gt)
    seen = set()
    detections, num_images, seconds = run_detector(model, dataset, label_to_category, progress,
                                                   max_batches, image_ids=seen)
    dropped = []
    if max_batches is not None:
        gt = _restrict(gt, {d["image_id"] for d in detections}, dataset, max_batches)
    else:
        dropped = sorted(set(gt.getImgIds()) - seen)
        if dropped:
            log.warning("evaluate: %d ground-truth images were not in the evaluated dataset "
                        "(undecodable?) and are left out of the metrics: ids %s", len(dropped),
                        dropped[:10])
            gt = _subset(gt, seen)
    if results_path:
        os.makedirs(os.path.dirname(os.path.abspath(results_path)), exist_ok=True)
        with open(results_path, "w") as f:
            json.dump(detections, f)
    metrics = coco_metrics(gt, detections, per_class=per_class, curves=analysis)
    if analysis:
        matrix, names = confusion_matrix(gt.dataset, detections, CONFUSION_IOU, CONFUSION_SCORE)
        metrics["confusion"] = {"matrix": matrix.tolist(), "names": names, "iou": CONFUSION_IOU,
                                "score_threshold": CONFUSION_SCORE}
    if voc07:
        metrics["voc07"] = voc_metric.voc_metrics(gt.dataset, detections)  # the paper's VOC07
        metrics[VOC_KEY] = voc07_map(gt, detections)["mAP"]
    metrics.update(num_images=num_images, num_detections=len(detections), seconds=seconds,
                   wall_seconds=time.perf_counter() - start, images_dropped=len(dropped))
    return metrics


def _restrict(gt, image_ids, dataset, max_batches):
    """Ground truth limited to the images of the first ``max_batches`` batches."""
    ids = set()
    for step, (_, meta) in enumerate(dataset):
        if step >= max_batches:
            break
        ids |= {int(i) for i in _to_numpy(meta["image_id"]).reshape(-1)}
    ids |= set(image_ids)
    return _subset(gt, ids)


def _subset(gt, ids):
    """The ground truth (COCO API object) restricted to the images in ``ids``."""
    d = gt.dataset
    return _coco_api({"info": d.get("info", {}), "categories": d["categories"],
                      "images": [im for im in d["images"] if im["id"] in ids],
                      "annotations": [a for a in d["annotations"] if a["image_id"] in ids]})


def format_table(metrics, title=None):
    """A small markdown table of the COCO metrics in percent (plus VOC07 mAP when present)::

        | AP   | AP50 | AP75 | APs  | APm  | APl  | VOC07 mAP50 |
        |------|------|------|------|------|------|-------------|
        | 27.0 | 42.9 | 28.2 |  9.5 | 29.7 | 43.0 |        75.1 |
    """
    keys = [k for k in TABLE_KEYS if k in metrics]
    headers = keys + (["VOC07 mAP50"] if VOC_KEY in metrics else [])
    values = [metrics[k] for k in keys] + ([metrics[VOC_KEY]] if VOC_KEY in metrics else [])

    def cell(v):
        return "-" if v is None or not np.isfinite(v) else f"{100.0 * v:.1f}"

    cells = [cell(v) for v in values]
    widths = [max(len(h), len(c)) for h, c in zip(headers, cells)]
    lines = []
    if title:
        lines.append(title)
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |")
    if "per_class" in metrics:
        lines.append("")
        lines.append("| class | AP |")
        lines.append("|---|---|")
        for name, v in metrics["per_class"].items():
            lines.append(f"| {name} | {cell(v)} |")
    return "\n".join(lines)

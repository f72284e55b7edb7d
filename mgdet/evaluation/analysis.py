"""Error analysis beside the COCO numbers: precision-recall curves per class, a confusion matrix,
and their pictures (``mgdet eval`` writes both PNGs beside its JSON).

- :func:`pr_curves`: per class, COCO's interpolated precision at the 101 recall points
  0, 0.01, ..., 1 at IoU 0.5 (all areas, 100 detections), from pycocotools' ``COCOeval``:
  the curve whose mean is the class's AP50.
- :func:`confusion_matrix`: rows are the true class, columns the predicted class, the last row
  and column "background" (a missed object / a false detection). Detections at or above a
  score threshold are matched to objects of any class by IoU, greedily from the highest IoU,
  each object and detection at most once (a tie goes to the higher score). Crowd / difficult objects are left out, and a
  detection that overlaps one by the IoU threshold is neither matched nor counted as a false
  detection.
"""
import numpy as np

from mgdet.evaluation.voc_metric import _iou, _xyxy

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def pr_curves(ev, gt):
    """``{class name: precision [101]}`` at IoU 0.5 from an evaluated ``COCOeval`` (after
    ``accumulate``); ``nan`` entries where the class has no ground truth."""
    precision = ev.eval["precision"][0, :, :, 0, -1]  # IoU .5, [R, K], area all, maxDets 100
    curves = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, k].astype(float)
        curves[gt.loadCats([cat_id])[0]["name"]] = np.where(p < 0, np.nan, p).tolist()
    return curves


def confusion_matrix(gt_coco, detections, iou_threshold=0.5, score_threshold=0.25):
    """The confusion matrix of ``detections`` against ``gt_coco`` (see the module docstring).

    Args:
      gt_coco: COCO-format dict (``images``, ``annotations``, ``categories``).
      detections: COCO results ``{"image_id", "category_id", "bbox" [x, y, w, h], "score"}``.
    Returns:
      ``(matrix int64 [C + 1, C + 1], names)``: ``names`` are the C category names in
      ``categories`` order then ``"background"``; ``matrix[i, j]`` counts objects of class i
      detected as class j.
    """
    cats = [c["id"] for c in gt_coco["categories"]]
    index = {c: i for i, c in enumerate(cats)}
    bg = len(cats)
    matrix = np.zeros((bg + 1, bg + 1), np.int64)
    objects, dets = {}, {}
    for a in gt_coco.get("annotations", []):
        objects.setdefault(a["image_id"], []).append(a)
    for d in detections:
        if d["score"] >= score_threshold:
            dets.setdefault(d["image_id"], []).append(d)
    for image in gt_coco["images"]:
        anns, found = objects.get(image["id"], []), dets.get(image["id"], [])
        real = [a for a in anns if not a.get("iscrowd", 0)]
        crowd = [a for a in anns if a.get("iscrowd", 0)]
        found_xyxy = _xyxy([d["bbox"] for d in found])
        iou = _iou(_xyxy([a["bbox"] for a in real]), found_xyxy)  # [objects, detections]
        # highest IoU first; a tie goes to the higher-scoring detection
        pairs = sorted(((iou[i, j], i, j) for i, j in zip(*np.nonzero(iou >= iou_threshold))),
                       key=lambda t: (-t[0], -found[t[2]]["score"]))
        used_gt, used_det = set(), set()
        for _, i, j in pairs:
            if i not in used_gt and j not in used_det:
                used_gt.add(i)
                used_det.add(j)
                matrix[index[real[i]["category_id"]], index[found[j]["category_id"]]] += 1
        for i, a in enumerate(real):
            if i not in used_gt:
                matrix[index[a["category_id"]], bg] += 1
        covered = (_iou(_xyxy([a["bbox"] for a in crowd]), found_xyxy)
                   >= iou_threshold).any(axis=0) if crowd else np.zeros(len(found), bool)
        for j, d in enumerate(found):
            if j not in used_det and not covered[j]:
                matrix[bg, index[d["category_id"]]] += 1
    return matrix, [c["name"] for c in gt_coco["categories"]] + ["background"]


def plot_pr_curves(curves, path, title="precision-recall at IoU 0.5"):
    """One line per class (its AP50 in the legend) on recall x precision; writes a PNG."""
    import matplotlib  # here: the file backend is chosen before pyplot loads, on use
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5), dpi=110)
    aps = []
    for name, precision in curves.items():
        p = np.asarray(precision, float)
        if np.isnan(p).all():
            continue
        aps.append(float(np.nanmean(p)))
        ax.plot(RECALL_POINTS, p, lw=1.3, label=f"{name} {100 * aps[-1]:.1f}")
    if aps:
        ax.plot([], [], " ", label=f"mean AP50 {100 * np.mean(aps):.1f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2 if len(aps) > 12 else 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(matrix, names, path, title=None):
    """The confusion matrix as a heat map, each row normalized by its objects (counts in the
    cells for up to 30 classes); writes a PNG."""
    import matplotlib  # here: the file backend is chosen before pyplot loads, on use
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, float)
    rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(names)
    side = min(4 + 0.45 * n, 24)
    fig, ax = plt.subplots(figsize=(side, side * 0.85), dpi=100)
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix (row-normalized)")
    if n <= 31:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rows[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

"""Clipped vs unclipped anchors: how many anchors change and how many IoU-anchor positives an
object gets.

    python bench/anchors.py [--image-size 320] [--images 600]

Anchors as the authors generate them (sizes capped at 1, corners not clipped; mgdet's default)
against corners clipped to the image (``model.clip_anchors: true``). Boxes: the ground truth of
the embedded synthetic data at the same size. Positives: anchors the IoU-anchor strategy makes
positive for each object (IoU >= 0.5, plus each object's best anchor), per image as in training.
Prints a table and writes bench/results/anchors.json.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.common import print_table, write_json  # noqa: E402
from mgdet.ops import anchors as anchor_ops# noqa: E402
from mgdet.assign import assign  # noqa: E402
from mgdet.data.synthetic.generated import generate  # noqa: E402


def positives_per_object(anchors, data, batch=32):
    """[T] IoU-anchor regression positives of each object of ``data`` (image by image)."""
    splits = data.row_splits
    m = int(np.max(np.diff(splits)))
    counts = []
    for start in range(0, len(splits) - 1, batch):
        idx = range(start, min(start + batch, len(splits) - 1))
        boxes = np.zeros((len(idx), m, 4), np.float32)
        valid = np.zeros((len(idx), m), bool)
        for r, i in enumerate(idx):
            b = data.boxes[splits[i]:splits[i + 1]]
            boxes[r, :len(b)], valid[r, :len(b)] = b, True
        out = assign("iou", anchors, boxes, np.zeros(valid.shape, np.int32), valid)
        gt = out.reg_gt_index.numpy()
        for r in range(len(idx)):
            counts.append(np.bincount(gt[r][gt[r] >= 0], minlength=m)[:valid[r].sum()])
    return np.concatenate(counts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "anchors.json"))
    args = p.parse_args(argv)
    size = args.image_size
    new = anchor_ops.generate_anchors(size).numpy()
    old = anchor_ops.generate_anchors(size, clip=True).numpy()
    changed = np.any(new != old, axis=1)
    levels, first = [], 0
    for k, f in enumerate(anchor_ops.feature_sizes(size)):
        n = 6 * f * f
        levels.append(f"L{k}: {int(changed[first:first + n].sum())}/{n}")
        first += n
    data = generate(args.images, size, seed=0, split="train")
    wh = data.boxes[:, 2:] - data.boxes[:, :2]
    large = np.maximum(wh[:, 0], wh[:, 1]) > 0.5
    rows = []
    for name, anc in (("clipped (old)", old), ("authors' (new)", new)):
        pos = positives_per_object(anc, data)
        rows.append({"anchors": name, "mean_pos": round(float(pos.mean()), 2),
                     "mean_pos_large": round(float(pos[large].mean()), 2) if large.any() else None,
                     "mean_pos_small": round(float(pos[~large].mean()), 2)})
    print(f"{size} px: {int(changed.sum())} of {len(new)} anchors differ ({', '.join(levels)}); "
          f"{len(data.boxes)} objects, {int(large.sum())} larger than half the image")
    print_table(rows, [("anchors", "anchors", None), ("mean_pos", "positives / object", None),
                       ("mean_pos_large", "objects > S/2", None), ("mean_pos_small", "others", None)])
    write_json(args.out, {"image_size": size, "anchors": len(new), "changed": int(changed.sum()),
                          "changed_per_level": levels, "objects": int(len(data.boxes)),
                          "large_objects": int(large.sum()), "rows": rows})


if __name__ == "__main__":
    main()

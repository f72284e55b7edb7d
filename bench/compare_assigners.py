"""Mutual Guidance beside IoU-anchor, ATSS and TOOD's task-aligned assignment, paired by seed.

    python bench/compare_assigners.py [--config configs/default.yaml] [--epochs 28] [--seeds 5]
        [--strategies iou atss tal mg] [--small-objects] [--set section.key=value ...]

Trains the config's detector under each strategy for ``--seeds`` seeds at the same budget (same
data, schedule and seed per pair: the seed fixes initialization, shuffling and augmentation),
evaluates each with pycocotools on the held-out split (AP, AP50, AP75, AP small / medium /
large), and counts the positives each object gets from the trained model's own assignment on
the held-out batches (classification and regression positives per object, share of objects with
none, and that share among small objects: sqrt(area) < 32 px). Then each strategy against MG,
paired by seed: mean difference, paired t-test and Wilcoxon signed-rank test (two-sided;
scipy.stats). Prints the tables and writes bench/results/compare_assigners[_small].json.

Each strategy uses its own defaults: ATSS topk 9, TAL topk 13, alpha 1, beta 6 with the quality
focal loss on its soft targets (``loss.cls_loss: auto``); change them with ``--set``.
``--small-objects`` draws the embedded data with 60 % small, 30 % medium, 10 % large objects
(instead of 20 / 50 / 30 %): the synthetic source has no config key for object sizes or
counts, so the script sets ``mgdet.data.synthetic.painter.SIZE_PROBS`` in its own process.
An interrupted comparison resumes from ``<out>.partial`` (finished runs are kept), and a
finished one from ``<out>`` (more ``--seeds`` extend it); each run records its CPU. On a
2-core machine, one process per strategy pinned to a core (``taskset -c 0 ... --strategies iou
--out a.json``) nearly doubles the throughput of these small models; ``--include a.json ...``
then gathers their runs into one comparison. The records
of the comparisons in docs/results.md are kept in git (bench/results/compare_assigners*.json).
"""
import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.ablation import run_one  # noqa: E402
from bench.ablation_report import mean_std, paired, diff_cell  # noqa: E402
from bench.common import (include_runs, machine, print_table, read_runs, run_paired,  # noqa: E402
                          write_results)

STRATEGIES = ("iou", "atss", "tal", "mg")
KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
SMALL_SIZE_PROBS = (0.6, 0.3, 0.1)
SMALL_PX = 32.0  # COCO's small objects: sqrt(area) below 32 px


def positives_per_object(model, dataset):
    """Positives each valid object gets from ``model``'s assignment (its strategy, its own
    predictions) on ``dataset``'s batches: mean classification / regression positives per
    object, share of objects with none, and that share among small objects (or None)."""
    import numpy as np
    cls_counts, reg_counts, small = [], [], []
    for images, targets in dataset:
        deltas, logits = model(images, training=False)
        a = model.assign_targets(targets, deltas, logits)
        cls_gt = np.where(a.cls_labels.numpy() >= 0, a.cls_gt_index.numpy(), -1)
        reg_gt = np.where(a.reg_positive.numpy(), a.reg_gt_index.numpy(), -1)
        valid, boxes = targets["valid"].numpy(), targets["boxes"].numpy()
        for b, j in zip(*np.nonzero(valid)):
            cls_counts.append(int((cls_gt[b] == j).sum()))
            reg_counts.append(int((reg_gt[b] == j).sum()))
            w, h = (boxes[b, j, 2:] - boxes[b, j, :2]) * model.image_size
            small.append(float(np.sqrt(max(w, 0) * max(h, 0))) < SMALL_PX)
    cls_counts, reg_counts, small = map(np.array, (cls_counts, reg_counts, small))
    return {"objects": int(len(cls_counts)),
            "cls_pos_per_object": float(cls_counts.mean()) if len(cls_counts) else None,
            "reg_pos_per_object": float(reg_counts.mean()) if len(reg_counts) else None,
            "no_cls_pos": float((cls_counts == 0).mean()) if len(cls_counts) else None,
            "no_reg_pos": float((reg_counts == 0).mean()) if len(reg_counts) else None,
            "small_objects": int(small.sum()),
            "no_cls_pos_small": float((cls_counts[small] == 0).mean()) if small.any() else None}


def run_strategy(args, strategy, seed):
    """Train one (strategy, seed); returns its record (metrics in %, positives)."""
    import keras
    from mgdet.config import load_config
    from mgdet.data.datasets import build_eval_dataset

    keep = keras.callbacks.Callback()  # Keras sets keep.model: the trained detector
    out_dir = os.path.join(args.runs_dir, f"{strategy}_seed{seed}")
    metrics = run_one(args.config, strategy, seed, args.epochs, args.set, out_dir,
                      callbacks=[keep])
    cfg = load_config(args.config, list(args.set) + [f"assign.strategy={strategy}"])
    eval_ds, _ = build_eval_dataset(cfg)
    # pycocotools has no AP for an area range without objects: None instead of -1 / NaN
    scores = {k: 100 * metrics[k] if math.isfinite(metrics[k]) and metrics[k] >= 0 else None
              for k in KEYS}
    return {"strategy": strategy, "seed": seed, **scores,
            **positives_per_object(keep.model, eval_ds)}


def _percent(share):
    return None if share is None else round(100 * share, 2)


def against_mg(runs, strategies):
    """Each strategy − MG per metric, paired by seed: paired() of bench/ablation_report (mean,
    std, t-test, Wilcoxon signed-rank test), over the seeds where both have the metric."""
    out = []
    for s in strategies:
        if s == "mg":
            continue
        result = {"comparison": f"{s} − mg"}
        for k in KEYS:
            a, b = ({r["seed"]: r for r in runs if r["strategy"] == name and r[k] is not None}
                    for name in ("mg", s))
            row = paired(a, b, (k,))
            result[k] = row[k]
            result[k]["seeds"] = row["seeds"]
        out.append(result)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per run (default: the config's)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES),
                   choices=("iou", "l2c", "c2l", "mg", "atss", "tal"))
    p.add_argument("--small-objects", action="store_true",
                   help=f"synthetic data with small / medium / large shares {SMALL_SIZE_PROBS}")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--out", default=None,
                   help="default bench/results/compare_assigners[_small].json")
    p.add_argument("--runs-dir", default=None, help="default runs/compare_assigners[_small]")
    p.add_argument("--include", nargs="+", default=[], metavar="FILE",
                   help="finished runs of the same budget from other processes (their --out "
                        "or .partial files), e.g. one process per strategy and core")
    args = p.parse_args(argv)
    suffix = "_small" if args.small_objects else ""
    args.out = args.out or f"bench/results/compare_assigners{suffix}.json"
    args.runs_dir = args.runs_dir or f"runs/compare_assigners{suffix}"
    if args.small_objects:
        from mgdet.data.synthetic import painter
        painter.SIZE_PROBS = SMALL_SIZE_PROBS

    runs, partial = [], args.out + ".partial"
    if os.path.exists(partial):  # resume: keep the finished runs
        runs = read_runs([partial])
    elif os.path.exists(args.out):  # extend a finished comparison of the same budget
        with open(args.out) as f:
            done = json.load(f)
        budget = (args.config, args.epochs, list(args.set), bool(args.small_objects))
        if (done["config"], done["epochs"], done["overrides"], done["small_objects"]) != budget:
            sys.exit(f"{args.out} holds a comparison of another budget ({done['config']}, "
                     f"{done['epochs']} epochs, {done['overrides']}): choose another --out")
        runs = done["runs"]
    include_runs(runs, args.include, "strategy")  # the same budget, made by other processes
    start = time.perf_counter()
    run_paired("strategy", args.strategies, args.seeds,
               lambda strategy, seed: run_strategy(args, strategy, seed), runs, partial,
               lambda r: (f"AP {r['AP']:.1f}, AP50 {r['AP50']:.1f}, AP75 {r['AP75']:.1f}, "
                          f"{r['cls_pos_per_object'] or 0:.1f} positives per object, "
                          f"{_percent(r['no_cls_pos'])}% without"))

    rows = []
    for s in args.strategies:
        mine = [r for r in runs if r["strategy"] == s]
        row = {"strategy": s, "runs": len(mine)}
        row.update({k: mean_std([r[k] for r in mine]) for k in KEYS})
        row["pos"] = mean_std([r["cls_pos_per_object"] for r in mine])
        row["reg_pos"] = mean_std([r["reg_pos_per_object"] for r in mine])
        row["none"] = mean_std([_percent(r["no_cls_pos"]) for r in mine])
        row["none_small"] = mean_std([_percent(r["no_cls_pos_small"]) for r in mine])
        rows.append(row)
    budget = f"{args.epochs} epochs" if args.epochs else "the config's epochs"
    print(f"\n{args.seeds} seeds x {budget}, {args.config} {' '.join(args.set)}"
          f"{' (small objects)' if args.small_objects else ''}; COCO metrics (%) on the held-out "
          "split and positives per object (trained model's assignment), mean ± std over seeds")
    print_table(rows, [("strategy", "strategy", None), ("runs", "runs", None)]
                + [(k, k, None) for k in KEYS]
                + [("pos", "cls pos / object", None), ("reg_pos", "reg pos / object", None),
                   ("none", "% objects without", None), ("none_small", "% small without", None)])
    comparisons = []
    try:
        comparisons = against_mg(runs, args.strategies) if "mg" in args.strategies else []
    except ImportError:
        print("\nno paired tests: scipy is not installed (pip install 'mgdet[bench]')")
    if comparisons:
        print("\nPaired by seed, strategy − MG in points: mean (paired t-test p, Wilcoxon p)")
        print_table([{"comparison": c["comparison"], "pairs": len(c["AP"]["seeds"]),
                      **{k: diff_cell(c[k]) for k in KEYS}} for c in comparisons],
                    [("comparison", "comparison", None), ("pairs", "pairs", None)]
                    + [(k, k, None) for k in KEYS])
    write_results(args.out, {"machine": machine(), "config": args.config, "epochs": args.epochs,
                             "seeds": args.seeds, "overrides": args.set,
                             "small_objects": args.small_objects, "runs": runs, "summary": rows,
                             "comparisons": comparisons, "seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()

"""The default run in float32 and in mixed bfloat16, paired by seed: what bf16 costs in accuracy.

    python bench/compare_precision.py [--config configs/default.yaml] [--seeds 3]
        [--precisions float32 mixed_bfloat16] [--set section.key=value ...]
        [--out bench/results/compare_precision.json] [--include FILE ...]

Trains the config once per (precision, seed) with ``train.precision`` set and everything else
equal (the seed fixes initialization, data order and augmentation: both members of a pair see
the same batches and take the same number of steps), evaluates each with pycocotools on the
held-out split and prints AP, AP50, AP75 (mean ± std), then mixed_bfloat16 − float32 paired by
seed (mean, paired t-test, Wilcoxon signed-rank; scipy.stats) and the wall-time ratio of each
pair. Writes the JSON with every run and its CPU.

The time ratio compares like with like only when both runs of a pair ran under the same
conditions: on a 2-core machine run the two precisions side by side, one process per core
(``taskset -c 0 ... --precisions float32 --out a.json`` and ``taskset -c 1 ...
--precisions mixed_bfloat16 --out b.json``), then ``--include a.json b.json`` gathers them.
An interrupted comparison resumes from ``<out>.partial``.
"""
import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.ablation_report import diff_cell, mean_std, paired  # noqa: E402
from bench.common import (include_runs, machine, print_table, read_runs, run_paired,  # noqa: E402
                          write_results)

PRECISIONS = ("float32", "mixed_bfloat16")
KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def run_precision(args, precision, seed):
    """Train and evaluate the config in ``precision`` with ``seed``; its record (metrics in %)."""
    import keras
    from mgdet.config import load_config
    from mgdet.training.loop import train
    keras.backend.clear_session()
    cfg = load_config(args.config, list(args.set) + [f"train.precision={precision}",
                                                     f"train.seed={seed}"])
    t0 = time.perf_counter()
    metrics = train(cfg, verbose=0, overwrite=True,
                    out_dir=os.path.join(args.runs_dir, f"{precision}_seed{seed}"))
    record = {"precision": precision, "seed": seed, "train_seconds": time.perf_counter() - t0,
              "epochs": cfg.train.epochs, "threads": len(os.sched_getaffinity(0))}
    # pycocotools has no AP for an area range without objects: None instead of -1 / NaN
    record.update({k: 100 * metrics[k] if math.isfinite(metrics[k]) and metrics[k] >= 0 else None
                   for k in KEYS})
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--out", default="bench/results/compare_precision.json")
    p.add_argument("--runs-dir", default="runs/compare_precision")
    p.add_argument("--include", nargs="+", default=[], metavar="FILE",
                   help="finished runs from other processes (their --out or .partial files)")
    args = p.parse_args(argv)

    partial = args.out + ".partial"
    runs = read_runs([partial])
    include_runs(runs, args.include, "precision")
    start = time.perf_counter()
    run_paired("precision", args.precisions, args.seeds,
               lambda precision, seed: run_precision(args, precision, seed), runs, partial,
               lambda r: ", ".join(f"{k} {r[k]:.1f}" for k in KEYS[:3]))

    rows = []
    for precision in args.precisions:
        mine = [r for r in runs if r["precision"] == precision]
        row = {"precision": precision, "runs": len(mine),
               "seconds": statistics.mean(r["seconds"] for r in mine)}
        row.update({k: mean_std([r[k] for r in mine]) for k in KEYS})
        rows.append(row)
    print(f"\n{args.config} {' '.join(args.set)}: COCO metrics (%) on the held-out split, "
          "mean ± std over seeds")
    print_table(rows, [("precision", "precision", None), ("runs", "runs", None)]
                + [(k, k, None) for k in KEYS] + [("seconds", "s / run", "{:.0f}")])

    comparison = None
    if set(PRECISIONS) <= set(args.precisions):
        fp32, bf16 = ({r["seed"]: r for r in runs if r["precision"] == name} for name in PRECISIONS)
        comparison = paired(fp32, bf16, KEYS[:3] + ("seconds",))
        comparison["time_ratio"] = [fp32[s]["seconds"] / bf16[s]["seconds"]
                                    for s in comparison["seeds"]]
        cells = {"pairs": len(comparison["seeds"]), **{k: diff_cell(comparison[k]) for k in KEYS[:3]}}
        cells["speed"] = ", ".join(f"{x:.2f}x" for x in comparison["time_ratio"])
        print("\nmixed_bfloat16 − float32, paired by seed, in points (paired tests); "
              "speed: float32 / bf16 wall time per pair")
        print_table([cells], [("pairs", "pairs", None)] + [(k, k, None) for k in KEYS[:3]]
                    + [("speed", "bf16 speed-up", None)])
    write_results(args.out, {"machine": machine(), "config": args.config, "overrides": args.set,
                             "seeds": args.seeds, "runs": runs, "summary": rows,
                             "comparison": comparison, "seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()

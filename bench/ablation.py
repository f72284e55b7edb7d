"""The paper's Table 1 on the embedded dataset: IoU-anchor vs L2C vs C2L vs Mutual Guidance.

    python bench/ablation.py [--config configs/default.yaml] [--epochs 8] [--seeds 3]

Trains the default detector under each strategy for ``--seeds`` seeds with identical budgets
(same data, same schedule; the seed changes initialization, shuffling and augmentation), evaluates
each with pycocotools on the held-out split, and prints mean ± std of AP, AP50 and AP75 per
strategy. Writes bench/results/ablation.json and a bar chart of AP75 (bench/results/ablation.png).
Scale the budget with --epochs / --seeds (or --set key=value for anything in the config).
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import machine, print_table, read_runs, run_paired, write_results  # noqa: E402

STRATEGIES = ("iou", "l2c", "c2l", "mg")
KEYS = ("AP", "AP50", "AP75")


def run_one(config, strategy, seed, epochs, overrides, out_dir, callbacks=()):
    """Train + evaluate one (strategy, seed) in this process; returns the metrics dict
    (``callbacks``: extra Keras callbacks of the training run)."""
    import keras
    from mgdet.config import load_config
    from mgdet.training.loop import train
    keras.backend.clear_session()
    extra = list(overrides) + [f"assign.strategy={strategy}", f"train.seed={seed}"]
    if epochs:
        extra.append(f"train.epochs={epochs}")
    cfg = load_config(config, extra)
    return train(cfg, verbose=0, out_dir=out_dir, overwrite=True,  # a rerun replaces its runs
                 callbacks=callbacks)


def summarize(results):
    rows = []
    for strategy in STRATEGIES:
        runs = [r for r in results if r["strategy"] == strategy]
        if not runs:
            continue
        row = {"strategy": strategy, "runs": len(runs)}
        for k in KEYS:
            values = [100 * r[k] for r in runs]
            row[k] = statistics.mean(values)
            row[k + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            row[k + "_cell"] = f"{row[k]:.1f} ± {row[k + '_std']:.1f}"
        rows.append(row)
    return rows


def bar_chart(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    names = [r["strategy"] for r in rows]
    ax.bar(names, [r["AP75"] for r in rows], yerr=[r["AP75_std"] for r in rows], capsize=4,
           color=["#888888", "#4c9be8", "#e8b44c", "#d9534f"][:len(rows)])
    ax.set_ylabel("AP75 (%)")
    ax.set_title("AP75 per assignment strategy (mean ± std over seeds)")
    lo = min(r["AP75"] - r["AP75_std"] for r in rows)
    ax.set_ylim(max(0.0, lo - 5), None)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--epochs", type=int, default=8, help="epochs per run (default %(default)s)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--out", default="bench/results/ablation.json")
    p.add_argument("--runs-dir", default="runs/ablation")
    args = p.parse_args(argv)

    partial = args.out + ".partial"
    results = read_runs([partial])  # resume an interrupted ablation: keep finished runs
    start = time.perf_counter()

    def one(strategy, seed):
        metrics = run_one(args.config, strategy, seed, args.epochs, args.set,
                          os.path.join(args.runs_dir, f"{strategy}_seed{seed}"))
        return {"strategy": strategy, "seed": seed,
                **{k: metrics[k] for k in KEYS + ("APs", "APm", "APl")}}

    run_paired("strategy", args.strategies, args.seeds, one, results, partial,
               lambda r: ", ".join(f"{k} {100 * r[k]:.1f}" for k in KEYS))
    rows = summarize(results)
    print(f"\n{args.seeds} seeds x {args.epochs} epochs, {args.config}; COCO metrics (%) on the "
          f"held-out synthetic split, mean ± std")
    print_table(rows, [("strategy", "strategy", None), ("AP_cell", "AP", None),
                       ("AP50_cell", "AP50", None), ("AP75_cell", "AP75", None)])
    base = next((r for r in rows if r["strategy"] == "iou"), None)
    mg = next((r for r in rows if r["strategy"] == "mg"), None)
    if base and mg:
        print(f"\nMG - IoU-anchor: AP {mg['AP'] - base['AP']:+.1f}, AP50 {mg['AP50'] - base['AP50']:+.1f}, "
              f"AP75 {mg['AP75'] - base['AP75']:+.1f} points")
    write_results(args.out, {"machine": machine(), "config": args.config, "epochs": args.epochs,
                             "seeds": args.seeds, "overrides": args.set, "runs": results,
                             "summary": rows, "seconds": time.perf_counter() - start})
    bar_chart(rows, os.path.splitext(args.out)[0] + ".png")


if __name__ == "__main__":
    main()

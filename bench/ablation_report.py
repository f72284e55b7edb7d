"""Paired comparison of ablation runs: IoU-anchor vs Mutual Guidance, and new vs old anchors.

    python bench/ablation_report.py bench/results/ablation_new_anchors.json \
        --old bench/results/ablation_old_anchors.json [--chart docs/ablation.png]

Reads what ``bench/ablation.py`` wrote (its final JSON, or its ``.partial`` file of finished
runs), pairs runs by seed (a seed fixes the data order, augmentation and initialization shared by
both members of a pair) and prints, in COCO % points:
1. mean ± std per (anchors, strategy);
2. MG − IoU-anchor per seed, with a paired t-test (``scipy.stats.ttest_rel``) on AP, AP50, AP75;
3. new − old anchors per strategy, paired the same way.
Writes the numbers to ``--out`` (JSON) and a chart of AP and AP75 with every seed as a dot.
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import machine, print_table, write_json  # noqa: E402

KEYS = ("AP", "AP50", "AP75")
SHORT = {"iou": "IoU-anchor", "mg": "MG", "l2c": "L2C", "c2l": "C2L"}
NAMES = {"iou": "IoU-anchor", "mg": "Mutual Guidance", "l2c": "Localize to Classify",
         "c2l": "Classify to Localize"}


def load_runs(path):
    """Runs ``[{"strategy", "seed", "AP", ...}]`` of an ablation JSON or of its ``.partial``."""
    for candidate in (path, path + ".partial"):
        if os.path.exists(candidate):
            with open(candidate) as f:
                data = json.load(f)
            return data["runs"] if isinstance(data, dict) else data
    raise SystemExit(f"error: {path} (or {path}.partial) not found: run bench/ablation.py first")


def by_seed(runs, strategy):
    """{seed: {metric: value in %}} of one strategy's runs."""
    return {r["seed"]: {k: 100 * r[k] for k in KEYS} for r in runs if r["strategy"] == strategy}


def paired(a, b, keys=KEYS):
    """Paired comparison of b − a over the seeds both have: per-seed differences, mean, std, the
    paired t-test (t, two-sided p) and the Wilcoxon signed-rank test (``wilcoxon_p``) per metric
    of ``keys``; ``None`` statistics with fewer than 2 pairs."""
    from scipy import stats
    seeds = sorted(set(a) & set(b))
    out = {"seeds": seeds}
    for k in keys:
        diffs = [b[s][k] - a[s][k] for s in seeds]
        row = {"diffs": diffs, "mean": statistics.mean(diffs) if diffs else None,
               "std": statistics.stdev(diffs) if len(diffs) > 1 else None, "t": None, "p": None,
               "wilcoxon_p": None}
        if len(diffs) > 1 and any(d != diffs[0] for d in diffs):
            test = stats.ttest_rel([b[s][k] for s in seeds], [a[s][k] for s in seeds])
            row["t"], row["p"] = float(test.statistic), float(test.pvalue)
        if len(diffs) > 1 and any(d != 0 for d in diffs):
            row["wilcoxon_p"] = float(stats.wilcoxon(diffs).pvalue)
        out[k] = row
    return out


def mean_std(values, digits=1):
    """``"mean ± std"`` of the values that are not None (``"-"`` without any)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def diff_cell(row):
    """One metric of :func:`paired` as ``"+0.59 (t = 1.98, p = 0.100; Wilcoxon p = 0.062)"``."""
    if row["mean"] is None:
        return "-"
    text = f"{row['mean']:+.2f}"
    if row["t"] is not None:
        text += f" (t = {row['t']:.2f}, p = {row['p']:.3f}"
        text += f"; Wilcoxon p = {row['wilcoxon_p']:.3f})" if row["wilcoxon_p"] is not None else ")"
    return text


def chart(groups, path):
    """Bars of mean AP and AP75 per (anchors, strategy), each seed as a dot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=120)
    colors = {"iou": "#888888", "mg": "#d9534f", "l2c": "#4c9be8", "c2l": "#e8b44c"}
    for ax, key in zip(axes, ("AP", "AP75")):
        labels = []
        for i, (anchors, strategy, seeds) in enumerate(groups):
            values = [v[key] for v in seeds.values()]
            ax.bar(i, statistics.mean(values), color=colors.get(strategy, "#999999"), alpha=0.8)
            ax.plot([i] * len(values), values, "k.", markersize=4)
            labels.append(f"{SHORT.get(strategy, strategy)}\n{anchors}")
        ax.set_xticks(range(len(groups)), labels, fontsize=8)
        ax.set_ylabel(f"{key} (%)")
        low = min(v[key] for _, _, seeds in groups for v in seeds.values())
        ax.set_ylim(max(0.0, low - 3), None)
    fig.suptitle("per seed (dots) and mean (bars)", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path)
    print(f"wrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("new", help="ablation JSON with the current anchors")
    p.add_argument("--old", help="ablation JSON with model.clip_anchors=true (the old anchors)")
    p.add_argument("--out", default="bench/results/ablation_report.json")
    p.add_argument("--chart", default="bench/results/ablation_report.png")
    args = p.parse_args(argv)

    sets = {"new anchors": load_runs(args.new)}
    if args.old:
        sets["old anchors"] = load_runs(args.old)
    groups, rows = [], []
    for anchors, runs in sets.items():
        for strategy in ("iou", "l2c", "c2l", "mg"):
            seeds = by_seed(runs, strategy)
            if not seeds:
                continue
            groups.append((anchors, strategy, seeds))
            rows.append({"anchors": anchors, "strategy": NAMES[strategy], "seeds": len(seeds),
                         **{k: mean_std([v[k] for v in seeds.values()]) for k in KEYS}})
    print("COCO metrics (%) on the held-out split, mean ± std over seeds")
    print_table(rows, [("anchors", "anchors", None), ("strategy", "strategy", None),
                       ("seeds", "seeds", None)] + [(k, k, None) for k in KEYS])

    comparisons = []
    for anchors, runs in sets.items():
        result = paired(by_seed(runs, "iou"), by_seed(runs, "mg"))
        comparisons.append({"comparison": f"MG − IoU-anchor, {anchors}", **result})
    if args.old:
        for strategy in ("iou", "mg"):
            result = paired(by_seed(sets["old anchors"], strategy),
                            by_seed(sets["new anchors"], strategy))
            comparisons.append({"comparison": f"new − old anchors, {NAMES[strategy]}", **result})
    print("\nPaired by seed: mean difference (paired t-test, two-sided p), points")
    print_table([{"comparison": c["comparison"], "pairs": len(c["seeds"]),
                  "AP75 per seed": " ".join(f"{d:+.1f}" for d in c["AP75"]["diffs"]),
                  **{k: diff_cell(c[k]) for k in KEYS}} for c in comparisons],
                [("comparison", "comparison", None), ("pairs", "pairs", None)]
                + [(k, k, None) for k in KEYS] + [("AP75 per seed", "AP75 per seed", None)])
    write_json(args.out, {"machine": machine(), "inputs": {"new": args.new, "old": args.old},
                          "groups": [{"anchors": a, "strategy": s, "per_seed": v}
                                     for a, s, v in groups],
                          "comparisons": comparisons})
    chart(groups, args.chart)


if __name__ == "__main__":
    main()

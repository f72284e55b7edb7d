"""Where a training run's wall time goes besides its train steps.

    python bench/step_gaps.py [--epochs 3] [--set key=value ...]

Runs ``mgdet.training.loop.train`` on a config (default: the embedded default,
``train.eval_every=1``, so that every epoch boundary holds an evaluation) with one more callback, last in the list, that
timestamps every batch and epoch. Per epoch it reports the median step, the first step (iterator
start and shuffle-buffer fill land there), the epoch-end callbacks (evaluation, checkpoint,
TensorBoard, data counters: from the last batch's end to this callback's ``on_epoch_end``) and
what Keras does between epochs; then the run's wall time against ``steps x median step +
evaluation``. Prints the CPU model and flags, a table, and writes bench/results/step_gaps.json.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from bench.common import cpu_line, machine, print_table, write_json  # noqa: E402


class StepClock(keras.callbacks.Callback):
    """Timestamps of every batch and epoch boundary (``time.perf_counter``)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append({"epoch": epoch + 1, "begin": time.perf_counter(), "batch_begin": [],
                            "batch_end": []})

    def on_train_batch_begin(self, batch, logs=None):
        self.epochs[-1]["batch_begin"].append(time.perf_counter())

    def on_train_batch_end(self, batch, logs=None):
        self.epochs[-1]["batch_end"].append(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[-1]["end"] = time.perf_counter()


def summarize(clock):
    """Per-epoch rows (ms) from a :class:`StepClock`."""
    rows = []
    for k, e in enumerate(clock.epochs):
        ends = e["batch_end"]
        steps = [b - a for a, b in zip(ends, ends[1:])]  # batch end to batch end: a whole step
        median = statistics.median(steps) if steps else float("nan")
        nxt = clock.epochs[k + 1]["begin"] if k + 1 < len(clock.epochs) else e["end"]
        rows.append({
            "epoch": e["epoch"], "steps": len(ends), "median_step_ms": 1000 * median,
            "first_step_ms": 1000 * (ends[0] - e["begin"]),
            "first_step_excess_ms": 1000 * (ends[0] - e["begin"] - median),
            "epoch_end_callbacks_ms": 1000 * (e["end"] - ends[-1]),
            "between_epochs_ms": 1000 * (nxt - e["end"]),
            "epoch_wall_ms": 1000 * (nxt - e["begin"])})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="default")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=os.path.join("bench", "results", "step_gaps.json"))
    args = p.parse_args()
    from mgdet.config import load_config
    from mgdet.training.loop import train
    out_dir = tempfile.mkdtemp(prefix="step_gaps_")
    cfg = load_config(args.config, [f"train.epochs={args.epochs}", "train.eval_every=1",
                                    f"train.out_dir={out_dir}"] + args.set)
    info = machine()
    print(cpu_line(info))
    clock = StepClock()
    start = time.perf_counter()
    result = train(cfg, verbose=0, callbacks=[clock])
    wall = time.perf_counter() - start
    rows = summarize(clock)
    all_steps = [b - a for e in clock.epochs for a, b in zip(e["batch_end"], e["batch_end"][1:])]
    median = statistics.median(all_steps)
    steps = sum(r["steps"] for r in rows)
    eval_s = sum(h.get("wall_seconds", 0.0) for h in result["history"])
    fit_s = clock.epochs[-1]["end"] - clock.epochs[0]["begin"]
    expected = steps * median + eval_s
    # on a shared machine the step time drifts with other load: per-epoch medians follow it
    expected_per_epoch = sum(r["steps"] * r["median_step_ms"] for r in rows) / 1000 + eval_s
    print_table(rows, [("epoch", "epoch", "{}"), ("steps", "steps", "{}"),
                       ("median_step_ms", "median step ms", "{:.0f}"),
                       ("first_step_excess_ms", "first step - median, ms", "{:.0f}"),
                       ("epoch_end_callbacks_ms", "epoch-end callbacks ms", "{:.0f}"),
                       ("between_epochs_ms", "between epochs ms", "{:.0f}"),
                       ("epoch_wall_ms", "epoch wall ms", "{:.0f}")])
    summary = {"steps": steps, "median_step_s": median, "eval_s": eval_s, "fit_s": fit_s,
               "train_call_s": wall, "expected_s": expected, "fit_over_expected": fit_s / expected,
               "expected_per_epoch_medians_s": expected_per_epoch,
               "fit_over_expected_per_epoch_medians": fit_s / expected_per_epoch,
               "first_step_excess_s": rows[0]["first_step_excess_ms"] / 1000}
    print(f"\n{steps} steps x {1000 * median:.0f} ms + evaluations {eval_s:.1f} s (metrics "
          f"included) = "
          f"{expected:.1f} s; fit took {fit_s:.1f} s ({fit_s / expected:.3f}x); the whole "
          f"train() call {wall:.1f} s (dataset and model set-up, final save included)")
    print(f"with each epoch's own median step: {expected_per_epoch:.1f} s expected, fit "
          f"{fit_s / expected_per_epoch:.3f}x; of the excess, the first step's compilation "
          f"{rows[0]['first_step_excess_ms'] / 1000:.1f} s")
    write_json(args.out, {"machine": info, "config": args.config, "overrides": args.set,
                          "epochs": rows, "summary": summary})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

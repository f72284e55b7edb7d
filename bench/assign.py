"""Label-assignment speed: ms per batch of ``mgdet.assign.assign`` for each strategy (the
Mutual Guidance family, ATSS and TOOD's task-aligned assignment, at their default
hyper-parameters).

    python bench/assign.py [--batches 8 32] [--objects 5 20 100] [--no-jit] [--reps 15]

12,750 anchors (320x320), 20 classes, random boxes, deltas and logits; graph mode (``tf.function``,
the library's default: three XLA clusters and the sorts between them) and, where it compiles, the
whole assignment under ``jit_compile=True``. The strategies of one row are timed interleaved (one
call of each per round), so that load from other processes hits them alike; each cell is the
median of ``--reps`` rounds, and ``spread`` is the largest p90/median of the row. Prints the CPU
model and its bf16/AMX/AVX-512 flags, the load average, a table, and writes
bench/results/assign.json.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.common import cpu_line, machine, print_table, write_json  # noqa: E402
from mgdet.ops.anchors import generate_anchors  # noqa: E402
from mgdet.assign import STRATEGIES, assign  # noqa: E402


def random_inputs(rng, batch, objects, num_anchors, num_classes=20):
    c = rng.uniform(0.1, 0.9, (batch, objects, 2))
    wh = rng.uniform(0.03, 0.6, (batch, objects, 2))
    boxes = np.clip(np.concatenate([c - wh / 2, c + wh / 2], -1), 0, 1).astype(np.float32)
    labels = rng.integers(0, num_classes, (batch, objects)).astype(np.int32)
    valid = np.ones((batch, objects), bool)
    deltas = rng.normal(0, 1, (batch, num_anchors, 4)).astype(np.float32)
    logits = rng.normal(-4, 2, (batch, num_anchors, num_classes)).astype(np.float32)
    return [tf.constant(x) for x in (boxes, labels, valid, deltas, logits)]


def time_interleaved(calls, reps, warmup=2):
    """``{name: fn}`` -> ``{name: (median_ms, p90_ms)}``, one call of each per round."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in calls}
    for _ in range(reps):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000.0)
    out = {}
    for name, ts in times.items():
        ts.sort()
        out[name] = (statistics.median(ts), ts[min(len(ts) - 1, int(round(0.9 * (len(ts) - 1))))])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    p.add_argument("--objects", type=int, nargs="+", default=[5, 20, 100])
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--no-jit", action="store_true", help="skip the jit_compile=True columns")
    p.add_argument("--out", default="bench/results/assign.json")
    args = p.parse_args(argv)

    info = machine()
    print(cpu_line(info))
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in info['load_average'])}")
    anchors = generate_anchors(args.image_size)
    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batches:
        for objects in args.objects:
            inputs = random_inputs(rng, batch, objects, anchors.shape[0])
            calls = {}
            for strategy in STRATEGIES:
                for jit in ([False] if args.no_jit else [False, True]):
                    fn = tf.function(lambda b, l, v, d, s, _s=strategy: assign(_s, anchors, b, l, v, d, s),
                                     jit_compile=jit)
                    calls[f"{strategy}{'_xla' if jit else ''}"] = (
                        lambda fn=fn: [x.numpy() for x in fn(*inputs) if x is not None])
            for key, fn in list(calls.items()):
                try:
                    fn()
                except Exception as err:  # noqa: BLE001 - report, keep going
                    del calls[key]
                    print(f"{key} b={batch} m={objects}: {type(err).__name__}", file=sys.stderr)
            timed = time_interleaved(calls, args.reps)
            row = {"batch": batch, "objects": objects}
            row.update({k: v[0] for k, v in timed.items()})
            row["mg/iou"] = row["mg"] / row["iou"]
            for s in ("atss", "tal"):
                row[f"{s}/mg"] = row[s] / row["mg"]
            row["spread"] = max(v[1] / v[0] for v in timed.values())
            row["load"] = os.getloadavg()[0]
            rows.append(row)
            print(f"batch {batch:3d} objects {objects:3d}: " +
                  ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k not in ("batch", "objects")),
                  flush=True)
    cols = [("batch", "batch", None), ("objects", "objects", None)]
    cols += [(s, f"{s} ms", "{:.1f}") for s in STRATEGIES]
    if not args.no_jit:
        cols += [(f"{s}_xla", f"{s} ms (XLA)", "{:.1f}") for s in STRATEGIES]
    cols += [("mg/iou", "mg/iou", "{:.2f}"), ("atss/mg", "atss/mg", "{:.2f}"),
             ("tal/mg", "tal/mg", "{:.2f}"), ("spread", "p90/median", "{:.2f}"),
             ("load", "load", "{:.1f}")]
    print(f"\nanchors: {anchors.shape[0]}, classes: 20, median of {args.reps} interleaved rounds")
    print_table(rows, cols)
    write_json(args.out, {"machine": info, "anchors": int(anchors.shape[0]), "reps": args.reps,
                          "rows": rows})


if __name__ == "__main__":
    main()

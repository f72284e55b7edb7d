"""Label-assignment speed: ms per batch of ``mgdet.assign.assign`` for each strategy.

    python bench/assign.py [--batches 8 32] [--objects 5 20 100] [--no-jit]

12,750 anchors (320x320), 20 classes, random boxes, deltas and logits; graph mode (``tf.function``,
the library's default: its dense stage is an XLA cluster) and, where it compiles, the whole
assignment under ``jit_compile=True``. Prints a table and writes bench/results/assign.json.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.common import machine, print_table, time_call, write_json  # noqa: E402
from mgdet.anchors import generate_anchors  # noqa: E402
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    p.add_argument("--objects", type=int, nargs="+", default=[5, 20, 100])
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--no-jit", action="store_true", help="skip the jit_compile=True column")
    p.add_argument("--out", default="bench/results/assign.json")
    args = p.parse_args(argv)

    anchors = generate_anchors(args.image_size)
    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batches:
        for objects in args.objects:
            inputs = random_inputs(rng, batch, objects, anchors.shape[0])
            row = {"batch": batch, "objects": objects}
            for strategy in STRATEGIES:
                for jit in ([False] if args.no_jit else [False, True]):
                    fn = tf.function(lambda b, l, v, d, s, _s=strategy: assign(_s, anchors, b, l, v, d, s),
                                     jit_compile=jit)
                    key = f"{strategy}{'_xla' if jit else ''}"
                    try:
                        t = time_call(lambda: [x.numpy() for x in fn(*inputs)], reps=args.reps)
                        row[key] = t["median_ms"]
                    except Exception as err:  # noqa: BLE001 - report, keep going
                        row[key] = None
                        print(f"{key} b={batch} m={objects}: {type(err).__name__}", file=sys.stderr)
            row["mg/iou"] = row["mg"] / row["iou"]
            rows.append(row)
            print(f"batch {batch:3d} objects {objects:3d}: " +
                  ", ".join(f"{k} {v:.1f}" for k, v in row.items()
                            if k not in ("batch", "objects") and v is not None), flush=True)
    cols = [("batch", "batch", None), ("objects", "objects", None)]
    for s in STRATEGIES:
        cols.append((s, f"{s} ms", "{:.1f}"))
    if not args.no_jit:
        cols += [(f"{s}_xla", f"{s} ms (XLA)", "{:.1f}") for s in STRATEGIES]
    cols.append(("mg/iou", "mg/iou", "{:.2f}"))
    print(f"\nanchors: {anchors.shape[0]}, classes: 20, median of {args.reps} runs")
    print_table(rows, cols)
    write_json(args.out, {"machine": machine(), "anchors": int(anchors.shape[0]), "rows": rows})


if __name__ == "__main__":
    main()

"""Which oneDNN kernels a train step runs, and how long each kind takes, fp32 vs mixed_bfloat16.

    python bench/onednn_profile.py [--pair retinanet:resnet18] [--batch 4] [--image-size 320]

Runs the MG train step of one detector (random weights, 20 classes, 5 objects per image) in a
subprocess per precision with ``ONEDNN_VERBOSE=1``, skips the warm-up steps, and sums oneDNN's
own execution times of the timed steps by (primitive, implementation, source data type):
whether the convolutions really run in bf16 on this CPU (``avx512_core_bf16`` / ``amx``
implementations) and how much time reorders (layout and type conversions) take. The times of
the primitives add up to more than the step's wall time: TensorFlow runs independent ops at once. Prints the CPU model and flags and a table
per precision, and writes bench/results/onednn_profile.json.
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MARK = "mgdet-timed-steps"


def run_steps(pair, batch, image_size, precision, steps):
    """In this process (with ONEDNN_VERBOSE set by the caller): warm up, print MARK, time."""
    import keras
    import tensorflow as tf
    from bench.train_step import random_batch
    from mgdet.models import MODELS
    from mgdet.training.optim import SGDWithL2
    if precision != "float32":
        keras.mixed_precision.set_global_policy(precision)
    arch, backbone = pair.split(":")
    images, targets = random_batch(batch, image_size, 5, 20)
    images, targets = tf.constant(images), {k: tf.constant(v) for k, v in targets.items()}
    model = MODELS[arch](num_classes=20, backbone=backbone, image_size=image_size, strategy="mg")
    model.compile(optimizer=SGDWithL2(learning_rate=1e-3, momentum=0.9))
    model.optimizer.build(model.trainable_variables)
    step = tf.function(model.train_step)
    for _ in range(2):
        float(step((images, targets))["loss"])
    print(MARK, flush=True)
    t0 = time.perf_counter()
    for _ in range(steps):
        float(step((images, targets))["loss"])
    print(json.dumps({"wall_s": (time.perf_counter() - t0) / steps}), flush=True)


def summarize(lines, steps):
    """ms per step by (primitive, implementation, source type) from oneDNN verbose exec lines."""
    totals = collections.defaultdict(float)
    counts = collections.Counter()
    for line in lines:
        parts = line.strip().split(",")
        if not parts[0].startswith("onednn_verbose") or "exec" not in parts:
            continue
        at = parts.index("exec")
        try:
            primitive, impl = parts[at + 2], parts[at + 3]
            dtypes = parts[at + 5]
            ms = float(parts[-1])
        except (IndexError, ValueError):
            continue
        src = next((d[4:].split(":")[0] for d in dtypes.split()
                    if d.startswith(("src:", "src_"))), "?")  # oneDNN 3: src:f32, 2: src_f32
        key = (primitive, impl, src)
        totals[key] += ms
        counts[key] += 1
    rows = [{"primitive": k[0], "implementation": k[1], "src": k[2],
             "ms_per_step": v / steps, "calls_per_step": counts[k] / steps}
            for k, v in totals.items()]
    return sorted(rows, key=lambda r: -r["ms_per_step"])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pair", default="retinanet:resnet18")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    p.add_argument("--out", default=os.path.join("bench", "results", "onednn_profile.json"))
    p.add_argument("--one", help=argparse.SUPPRESS)  # subprocess mode: the precision
    args = p.parse_args()
    if args.one:
        run_steps(args.pair, args.batch, args.image_size, args.one, args.steps)
        return
    from bench.common import cpu_line, machine, print_table, write_json
    info = machine()
    print(cpu_line(info))
    result = {"machine": info, "args": vars(args), "precisions": {}}
    for precision in args.precisions:
        env = dict(os.environ, ONEDNN_VERBOSE="1", TF_ENABLE_ONEDNN_OPTS="1")
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", precision,
                              "--pair", args.pair, "--batch", str(args.batch), "--image-size",
                              str(args.image_size), "--steps", str(args.steps)],
                             capture_output=True, text=True, env=env, cwd=ROOT)
        if out.returncode:
            print(f"{precision}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        lines = out.stdout.splitlines()
        timed = lines[lines.index(MARK) + 1:]
        wall_ms = 1000 * json.loads(timed[-1])["wall_s"]
        rows = summarize(timed, args.steps)
        onednn_ms = sum(r["ms_per_step"] for r in rows)
        print(f"\n{args.pair}, {args.image_size} px, batch {args.batch}, {precision}: step "
              f"{wall_ms:.0f} ms (verbose logging included); oneDNN primitives {onednn_ms:.0f} "
              "ms added up (more than the step: TensorFlow runs independent ops at once)")
        print_table(rows[:12], [("primitive", "primitive", None),
                                ("implementation", "implementation", None),
                                ("src", "src type", None),
                                ("ms_per_step", "ms/step", "{:.0f}"),
                                ("calls_per_step", "calls/step", "{:.0f}")])
        result["precisions"][precision] = {"step_ms": wall_ms, "onednn_ms": onednn_ms,
                                           "rows": rows}
    write_json(args.out, result)


if __name__ == "__main__":
    main()

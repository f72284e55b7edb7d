"""This machine's limit for the detectors' main operation: a 3x3 convolution, in fp32 and bf16.

    python bench/peak.py [--reps 15]

Times ``tf.nn.conv2d`` (graph mode, NHWC, batch 8, 80x80, 128 -> 128 channels: a mid-network
layer of the 320-px detectors at the C3 level, 15.1 GFLOP counting a multiply-add as 2) and the
same in bfloat16; medians over ``--reps`` interleaved calls. The other benchmarks divide their
achieved GFLOP/s by these figures. Prints the CPU model and flags and writes
bench/results/peak.json.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from bench.common import cpu_line, machine, write_json  # noqa: E402

SHAPE, CHANNELS, KERNEL = (8, 80, 80, 128), 128, 3


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--out", default=os.path.join("bench", "results", "peak.json"))
    args = p.parse_args()
    b, h, w, c = SHAPE
    gflop = 2 * b * h * w * c * CHANNELS * KERNEL * KERNEL / 1e9
    x32 = tf.random.normal(SHAPE)
    k32 = tf.random.normal([KERNEL, KERNEL, c, CHANNELS]) * 0.05
    conv = tf.function(lambda x, k: tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME")[:1, :1, :1]))
    inputs = {"fp32": (x32, k32), "bf16": (tf.cast(x32, tf.bfloat16), tf.cast(k32, tf.bfloat16))}
    for x, k in inputs.values():  # trace and warm up
        for _ in range(2):
            conv(x, k).numpy()
    times = {name: [] for name in inputs}
    for _ in range(args.reps):
        for name, (x, k) in inputs.items():
            t0 = time.perf_counter()
            conv(x, k).numpy()
            times[name].append(time.perf_counter() - t0)
    info = machine()
    gflops = {name: gflop / statistics.median(t) for name, t in times.items()}
    print(cpu_line(info))
    print(f"3x3 conv {SHAPE} -> {CHANNELS} ch ({gflop:.2f} GFLOP): fp32 {gflops['fp32']:.0f} "
          f"GFLOP/s, bf16 {gflops['bf16']:.0f} GFLOP/s (bf16/fp32 {gflops['bf16'] / gflops['fp32']:.2f}x)")
    write_json(args.out, {"machine": info, "gflop_per_call": gflop, "gflops": gflops,
                          "median_s": {n: statistics.median(t) for n, t in times.items()}})


if __name__ == "__main__":
    main()

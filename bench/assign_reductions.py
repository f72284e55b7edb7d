"""Where ``own()``'s time goes on CPU: the reductions of one ``[B, M, N]`` quality matrix.

    python bench/assign_reductions.py [--batch 32] [--objects 20] [--reps 15]

``own()`` needs, for each quality matrix, each object's best anchor (the first arg-max over the
N anchors: a reduction along the matrix's minor axis) and each anchor's best object with its
value (the first arg-max over the M objects: along a major axis). This times, on the IoU matrix
of random boxes with the 12,750 anchors of 320x320 (the same inputs as ``bench/assign.py``), each
way of computing them that gives exactly ``tf.argmax``'s answer (lowest index on ties), beside a
copy and a max-reduction of the same matrix (what one pass over its 32 MB costs), in XLA
(``jit_compile=True``, as the assignment runs) and as TF kernels. Every variant is checked
against ``tf.argmax`` before it is timed; calls are interleaved (one of each per round) and each
cell is the median of ``--reps`` rounds. Prints the CPU, a table, writes
bench/results/assign_reductions.json.
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

from bench.assign import random_inputs  # noqa: E402
from bench.common import cpu_line, machine, print_table, write_json  # noqa: E402
from mgdet.ops import boxes as box_ops# noqa: E402
from mgdet.ops.anchors import generate_anchors  # noqa: E402
from mgdet.assign.ownership import own_masked  # noqa: E402


def ordered_bits(x):
    """float32 -> int32 with the float's order (finite values)."""
    bits = tf.bitcast(tf.where(x == 0.0, 0.0, x), tf.int32)
    return tf.bitwise.bitwise_xor(bits, tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 31),
                                                                0x7FFFFFFF))


def argmax_int64_key(q, axis):
    """One max-reduction of int64 keys: the value's ordered bits above the reversed index."""
    size = q.shape[axis]
    shape = [1] * q.shape.rank
    shape[axis] = size
    reversed_index = tf.reshape(tf.range(size - 1, -1, -1, dtype=tf.int64), shape)
    keys = tf.bitwise.bitwise_or(tf.bitwise.left_shift(tf.cast(ordered_bits(q), tf.int64), 32),
                                 reversed_index)
    best = tf.reduce_max(keys, axis=axis)
    return size - 1 - tf.cast(tf.bitwise.bitwise_and(best, 0xFFFFFFFF), tf.int32)


def argmax_two_max_passes(q, axis):
    """A float max, then a float max of minus the index where the value equals it."""
    size = q.shape[axis]
    shape = [1] * q.shape.rank
    shape[axis] = size
    top = tf.reduce_max(q, axis=axis, keepdims=True)
    minus_index = tf.reshape(-tf.range(size, dtype=tf.float32), shape)
    first = -tf.reduce_max(tf.where(q == top, minus_index, -np.inf), axis=axis)
    return tf.cast(first, tf.int32)


def argmax_lanes(q, lanes):
    """Arg-max over the last axis as a column reduction: N viewed as [N / lanes, lanes] (no
    padding: lanes divides N), arg-max down the columns, then the first of the lanes' maxima."""
    n = q.shape[-1]
    rows = n // lanes
    q4 = tf.reshape(q, q.shape[:-1] + [rows, lanes])
    lane_max = tf.reduce_max(q4, axis=-2)
    lane_row = tf.argmax(q4, axis=-2, output_type=tf.int32)
    top = tf.reduce_max(lane_max, axis=-1, keepdims=True)
    index = lane_row * lanes + tf.range(lanes)
    return tf.reduce_min(tf.where(lane_max == top, index, n), axis=-1)


def variants(q, n):
    """name -> (function, axis reduced, what it computes)."""
    jit = lambda f: tf.function(f, jit_compile=True)  # noqa: E731
    kernel = tf.function
    lanes = max(d for d in range(16, 1025) if n % d == 0)
    out = {
        "copy (q * 2)": (jit(lambda: q * 2.0), None, "one read, one write"),
        "max over N": (jit(lambda: tf.reduce_max(q, -1)), None, "one read"),
        "max over M": (jit(lambda: tf.reduce_max(q, 1)), None, "one read"),
        "argmax over N, XLA": (jit(lambda: tf.argmax(q, -1, output_type=tf.int32)), -1, ""),
        "argmax over N, TF kernel": (kernel(lambda: tf.argmax(q, -1, output_type=tf.int32)), -1,
                                     ""),
        "argmax over N, int64 keys, XLA": (jit(lambda: argmax_int64_key(q, 2)), -1, ""),
        "argmax over N, two max passes, XLA": (jit(lambda: argmax_two_max_passes(q, 2)), -1, ""),
        f"argmax over N, {lanes} lanes, XLA": (jit(lambda: argmax_lanes(q, lanes)), -1, ""),
        "argmax over M, XLA": (jit(lambda: tf.argmax(q, 1, output_type=tf.int32)), 1, ""),
        "argmax over M, TF kernel": (kernel(lambda: tf.argmax(q, 1, output_type=tf.int32)), 1,
                                     ""),
        "argmax over M, int64 keys, XLA": (jit(lambda: argmax_int64_key(q, 1)), 1, ""),
        "own() of one matrix (today)": (
            jit(lambda: own_masked(q, tf.ones(q.shape[:2], tf.bool))), None, ""),
    }
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--out", default="bench/results/assign_reductions.json")
    args = p.parse_args(argv)

    info = machine()
    print(cpu_line(info))
    anchors = generate_anchors(args.image_size)
    boxes = random_inputs(np.random.default_rng(0), args.batch, args.objects, anchors.shape[0])[0]
    q = tf.function(lambda: box_ops.iou(boxes, anchors), jit_compile=True)()
    n = int(q.shape[-1])
    calls = variants(q, n)
    for name, (fn, axis, _) in calls.items():
        result = fn()
        if axis is not None:  # exactly tf.argmax's answer, ties to the lowest index
            want = np.argmax(q.numpy(), axis=axis)
            if not np.array_equal(np.asarray(result), want):
                raise AssertionError(f"{name} differs from the first arg-max")
        fn()
    times = {name: [] for name in calls}
    for _ in range(args.reps):
        for name, (fn, _, _) in calls.items():
            t0 = time.perf_counter()
            tf.nest.map_structure(lambda x: x.numpy(), fn())
            times[name].append((time.perf_counter() - t0) * 1000.0)
    copy_ms = statistics.median(times["copy (q * 2)"])
    rows = [{"variant": name, "ms": statistics.median(ts),
             "vs_copy": statistics.median(ts) / copy_ms, "note": calls[name][2]}
            for name, ts in times.items()]
    print(f"\n[{args.batch}, {args.objects}, {n}] float32 IoU matrix ({q.numpy().nbytes / 2**20:.0f} MiB), "
          f"median of {args.reps} interleaved rounds, load {os.getloadavg()[0]:.1f}")
    print_table(rows, [("variant", "variant", None), ("ms", "ms", "{:.2f}"),
                       ("vs_copy", "x copy", "{:.2f}"), ("note", "note", None)])
    write_json(args.out, {"machine": info, "shape": [args.batch, args.objects, n],
                          "reps": args.reps, "rows": rows})


if __name__ == "__main__":
    main()

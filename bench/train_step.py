"""Train-step speed per detector, IoU-anchor vs Mutual Guidance side by side.

    python bench/train_step.py [--pairs fssd:resnet18 ...] [--batch 8] [--image-size 320]

For each detector/backbone pair at 320x320, batch 8, 20 classes, random images with 5 objects
each: images/s of the compiled train step (forward, assignment, losses, backward, SGD update)
under ``iou`` and under ``mg``, measured interleaved in the same process (iou step, mg step, ...)
so that both see the same machine load; the ratio mg/iou of the median step times; and the
process's peak resident memory, and on a GPU the device's peak allocation (each pair runs in
its own subprocess); the forward GFLOP per image (TF profiler) and the achieved GFLOP/s of the
MG step (3x forward), against the conv peak of ``bench/peak.py`` when it has been run (its bf16
peak for a bf16 run). ``--precisions float32 mixed_bfloat16`` runs each pair in both, one after
the other, and gives the bf16 MG step's speed-up over fp32 beside each one's share of its peak.
Prints a table and writes bench/results/train_step.json.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PAIRS = ("fssd:vgg16", "fssd:resnet18", "retinanet:vgg16", "retinanet:resnet18", "rfbnet:vgg16")


def random_batch(batch, image_size, objects, num_classes, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch, image_size, image_size, 3)).astype("float32")
    c = rng.uniform(0.2, 0.8, (batch, objects, 2))
    wh = rng.uniform(0.05, 0.5, (batch, objects, 2))
    boxes = np.clip(np.concatenate([c - wh / 2, c + wh / 2], -1), 0, 1).astype("float32")
    targets = {"boxes": boxes, "labels": rng.integers(0, num_classes, (batch, objects)).astype("int32"),
               "valid": np.ones((batch, objects), bool)}
    return images, targets


def measure_pair(arch, backbone, batch, image_size, objects, num_classes, steps, width,
                 precision="float32", jit=False):
    """Interleaved iou / mg train steps of one pair; returns a result dict."""
    import keras
    import tensorflow as tf
    from mgdet.models import MODELS
    from mgdet.training.optim import SGDWithL2
    if precision != "float32":
        keras.mixed_precision.set_global_policy(precision)
    images, targets = random_batch(batch, image_size, objects, num_classes)
    images, targets = tf.constant(images), {k: tf.constant(v) for k, v in targets.items()}
    steps_fn = {}
    for strategy in ("iou", "mg"):
        model = MODELS[arch](num_classes=num_classes, backbone=backbone, image_size=image_size,
                             width=width, strategy=strategy)
        model.compile(optimizer=SGDWithL2(learning_rate=1e-3, momentum=0.9))
        model.optimizer.build(model.trainable_variables)
        fn = tf.function(model.train_step, jit_compile=jit)
        steps_fn[strategy] = (model, fn)
    params = sum(int(tf.size(v)) for v in steps_fn["mg"][0].trainable_variables)
    from bench.common import forward_gflop
    gflop = forward_gflop(steps_fn["mg"][0], image_size)  # per image, forward
    t_compile = {}
    for strategy, (_, fn) in steps_fn.items():
        t0 = time.perf_counter()
        float(fn((images, targets))["loss"])
        t_compile[strategy] = time.perf_counter() - t0
        float(fn((images, targets))["loss"])  # one more warm-up step
    times = {"iou": [], "mg": []}
    for _ in range(steps):
        for strategy in ("iou", "mg"):
            t0 = time.perf_counter()
            float(steps_fn[strategy][1]((images, targets))["loss"])
            times[strategy].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    gpu_peak_mb = None
    if tf.config.list_physical_devices("GPU"):
        gpu_peak_mb = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return {"pair": f"{arch}:{backbone}", "params": params, "batch": batch,
            "image_size": image_size, "precision": precision, "jit": jit,
            "iou_step_s": med["iou"], "mg_step_s": med["mg"],
            "iou_img_s": batch / med["iou"], "mg_img_s": batch / med["mg"],
            "mg/iou": med["mg"] / med["iou"], "compile_s": t_compile,
            "gflop_fwd_per_image": gflop,
            # a training step: forward + backward (activations and weights) ~ 3x the forward
            "mg_gflops": 3 * gflop * batch / med["mg"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "peak_gpu_mb": gpu_peak_mb}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", default=list(PAIRS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--objects", type=int, default=5)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--steps", type=int, default=5, help="timed steps per strategy")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--precisions", nargs="+", default=["float32"],
                   choices=["float32", "mixed_bfloat16", "mixed_float16"],
                   help="one or more: each pair runs in each, one after the other, and the "
                        "table gives each precision's MG step speed-up over the first")
    p.add_argument("--jit", action="store_true", help="XLA-compile the train step")
    p.add_argument("--out", default="bench/results/train_step.json")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # subprocess mode
    args = p.parse_args(argv)

    if args.one:
        arch, backbone = args.pairs[0].split(":")
        print(json.dumps(measure_pair(arch, backbone, args.batch, args.image_size, args.objects,
                                      args.classes, args.steps, args.width, args.precisions[0],
                                      args.jit)))
        return
    from bench.common import machine, peak_gflops, print_table, write_json
    peak = peak_gflops()
    rows = []
    for pair in args.pairs:
        for precision in args.precisions:
            cmd = [sys.executable, os.path.abspath(__file__), "--one", "--pairs", pair,
                   "--batch", str(args.batch), "--image-size", str(args.image_size),
                   "--objects", str(args.objects), "--classes", str(args.classes),
                   "--steps", str(args.steps), "--width", str(args.width),
                   "--precision", precision] + (["--jit"] if args.jit else [])
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                print(f"{pair} {precision}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            if peak:  # how close to this machine's measured conv throughput (bench/peak.py)
                row["of_peak"] = row["mg_gflops"] / peak["bf16" if "bfloat16" in precision
                                                          else "fp32"]
            first = next((r for r in rows if r["pair"] == pair
                          and r["precision"] == args.precisions[0]), None)
            row["speedup"] = first["mg_step_s"] / row["mg_step_s"] if first else None
            rows.append(row)
            print(f"{pair} {precision}: iou {row['iou_img_s']:.2f} img/s, mg "
                  f"{row['mg_img_s']:.2f} img/s, mg/iou {row['mg/iou']:.3f}, peak "
                  f"{row['peak_rss_mb']:.0f} MB", flush=True)
    print(f"\n{args.image_size}x{args.image_size}, batch {args.batch}, {args.classes} classes, "
          f"{args.objects} objects/image{', XLA' if args.jit else ''}; median of "
          f"{args.steps} interleaved steps; speed-up: MG step time in {args.precisions[0]} / in "
          "this precision (the precisions of a pair run one after the other)")
    print_table(rows, [("pair", "detector", None), ("precision", "precision", None),
                       ("params", "params", "{:,}"),
                       ("iou_img_s", "iou img/s", "{:.2f}"), ("mg_img_s", "mg img/s", "{:.2f}"),
                       ("mg/iou", "mg/iou step time", "{:.3f}"),
                       ("gflop_fwd_per_image", "GFLOP/img fwd", "{:.1f}"),
                       ("mg_gflops", "train GFLOP/s", "{:.0f}"),
                       ("of_peak", "of conv peak", "{:.0%}"),
                       ("speedup", "speed-up", "{:.2f}x"),
                       ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
                       ("peak_gpu_mb", "peak GPU MB", "{:.0f}")])
    write_json(args.out, {"machine": machine(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()

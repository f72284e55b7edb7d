"""Inference latency per detector: the exported SavedModel (``serving_default``, uint8 input,
resize + network + decode + NMS in the graph) and the Keras ``detect``/``predict_step``.

    python bench/inference.py [--pairs fssd:resnet18 ...] [--batches 1 8] [--image-size 320]

Median and p90 latency in ms (and SavedModel images/s) at batch 1 and 8, 320x320, 20 classes,
random weights, with the forward GFLOP per image (TF profiler) and the achieved GFLOP/s against
``bench/peak.py``'s fp32 conv peak. Note: at initialization every score is the prior 0.01, above the paper's 0.005
threshold, so NMS sees all N x C candidates — the worst case; a trained model's NMS input is much
smaller. Each pair runs in its own subprocess. Prints a table and writes bench/results/inference.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PAIRS = ("fssd:vgg16", "fssd:resnet18", "retinanet:vgg16", "retinanet:resnet18", "rfbnet:vgg16")


def measure_pair(arch, backbone, batches, image_size, classes, reps, score_threshold):
    import numpy as np
    import tensorflow as tf
    from bench.common import time_call
    from mgdet.export.saved_model import export_saved_model
    from mgdet.models import MODELS
    model = MODELS[arch](num_classes=classes, backbone=backbone, image_size=image_size,
                         score_threshold=score_threshold)
    from bench.common import forward_gflop, peak_gflops
    gflop = forward_gflop(model, image_size)
    peak = peak_gflops()
    row = {"pair": f"{arch}:{backbone}", "gflop_per_image": gflop}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_saved_model(model, os.path.join(tmp, "1"), [f"c{i}" for i in range(classes)],
                                  score_threshold=score_threshold)
        serving = tf.saved_model.load(path).signatures["serving_default"]
        rng = np.random.default_rng(0)
        for b in batches:
            images = rng.integers(0, 255, (b, image_size, image_size, 3), dtype=np.uint8)
            t = time_call(lambda: serving(images=tf.constant(images))["num_detections"].numpy(),
                          warmup=2, reps=reps)
            row[f"savedmodel_b{b}_median"], row[f"savedmodel_b{b}_p90"] = t["median_ms"], t["p90_ms"]
            row[f"savedmodel_b{b}_img_s"] = 1000.0 * b / t["median_ms"]
            row[f"savedmodel_b{b}_gflops"] = gflop * row[f"savedmodel_b{b}_img_s"]
            if peak:  # network only: resize, decoding and NMS do no convolution
                row[f"savedmodel_b{b}_of_peak"] = row[f"savedmodel_b{b}_gflops"] / peak["fp32"]
            float_images = tf.constant(images, tf.float32)
            t = time_call(lambda: model.detect(float_images)["num_detections"].numpy(),
                          warmup=2, reps=reps)
            row[f"keras_b{b}_median"], row[f"keras_b{b}_p90"] = t["median_ms"], t["p90_ms"]
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", default=list(PAIRS))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--score-threshold", type=float, default=0.005)
    p.add_argument("--out", default="bench/results/inference.json")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        arch, backbone = args.pairs[0].split(":")
        print(json.dumps(measure_pair(arch, backbone, args.batches, args.image_size, args.classes,
                                      args.reps, args.score_threshold)))
        return
    from bench.common import machine, print_table, write_json
    rows = []
    for pair in args.pairs:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", "--pairs", pair,
               "--batches", *map(str, args.batches), "--image-size", str(args.image_size),
               "--classes", str(args.classes), "--reps", str(args.reps),
               "--score-threshold", str(args.score_threshold)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            print(f"{pair}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    cols = [("pair", "detector", None), ("gflop_per_image", "GFLOP/img", "{:.1f}")]
    for b in args.batches:
        cols += [(f"savedmodel_b{b}_median", f"SavedModel b{b} median ms", "{:.1f}"),
                 (f"savedmodel_b{b}_p90", "p90", "{:.1f}"),
                 (f"savedmodel_b{b}_img_s", "img/s", "{:.1f}"),
                 (f"savedmodel_b{b}_gflops", "GFLOP/s", "{:.0f}"),
                 (f"savedmodel_b{b}_of_peak", "of fp32 conv peak", "{:.0%}"),
                 (f"keras_b{b}_median", f"Keras b{b} median ms", "{:.1f}"),
                 (f"keras_b{b}_p90", "p90", "{:.1f}")]
    print(f"\n{args.image_size}x{args.image_size}, {args.classes} classes, score >= "
          f"{args.score_threshold}, NMS IoU 0.5, <= 300 detections; {args.reps} runs")
    print_table(rows, cols)
    write_json(args.out, {"machine": machine(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()

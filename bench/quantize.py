"""CPU inference of the quantized TFLite export against the fp32 SavedModel: batch-1 latency
for a detector at 320 (random weights) and the COCO AP drop of int8 on the embedded eval split
(a trained run of the default config).

    python bench/quantize.py [--pair fssd:resnet18] [--image-size 320] [--rounds 7]
                             [--weights runs/default]   # also the AP of Keras vs int8 TFLite

Latency: one image, already resized (float32 S x S x 3). The SavedModel runs ``serving_default``
with ``score_threshold`` 0.3, at which a random-weights model (scores ~ 0.01) sends nothing to NMS,
so all three variants do network + box decoding only (TFLite has no NMS inside). TFLite runs with
``num_threads`` = the CPU count (XNNPACK). The variants are interleaved round by round (each round
times every variant ``--reps`` times, in a rotated order) so that load changes on a shared machine
hit them alike; medians over all rounds. Prints a table and the machine (CPU, flags, load) and
writes bench/results/quantize.json.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tflite_runner(path):
    """``images float32 [1, S, S, 3] -> {"boxes", "scores"}`` with the stock interpreter."""
    import tensorflow as tf
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=os.cpu_count())
    return interpreter.get_signature_runner()


def latency(args):
    """Median batch-1 latency (ms) of the fp32 SavedModel and the float32 / float16 / int8
    TFLite exports of a random-weights detector, interleaved."""
    import numpy as np
    import tensorflow as tf
    from mgdet.export.files import export_tflite
    from mgdet.export.saved_model import export_saved_model
    from mgdet.models import MODELS
    arch, backbone = args.pair.split(":")
    size = args.image_size
    model = MODELS[arch](num_classes=args.classes, backbone=backbone, image_size=size)
    rng = np.random.default_rng(0)
    calib = [rng.uniform(0, 255, (size, size, 3)).astype(np.float32)
             for _ in range(args.calibration)]
    image = rng.integers(0, 256, (1, size, size, 3)).astype(np.float32)
    variants, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_saved_model(model, os.path.join(tmp, "sm", "1"),
                                  [f"c{i}" for i in range(args.classes)], score_threshold=0.3)
        serving = tf.saved_model.load(path).signatures["serving_default"]
        uint8 = tf.constant(image.astype(np.uint8))
        variants["SavedModel fp32"] = lambda: serving(images=uint8)["num_detections"].numpy()
        for quantize in ("none", "float16", "int8"):
            t0 = time.perf_counter()
            file = export_tflite(model, os.path.join(tmp, f"{quantize}.tflite"), quantize=quantize,
                                 representative_images=calib)
            print(f"tflite {quantize}: converted in {time.perf_counter() - t0:.0f} s", flush=True)
            sizes[quantize] = os.path.getsize(file)
            runner = tflite_runner(file)
            variants[f"TFLite {'float32' if quantize == 'none' else quantize}"] = (
                lambda r=runner: r(images=image)["scores"])
        times = {k: [] for k in variants}
        names = list(variants)
        for fn in variants.values():  # warm-up
            fn(), fn()
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for k in order:
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    variants[k]()
                    times[k].append((time.perf_counter() - t0) * 1000.0)
    base = statistics.median(times["SavedModel fp32"])
    rows = []
    for k in names:
        med = statistics.median(times[k])
        rows.append({"variant": k, "median_ms": med,
                     "p10_ms": float(np.percentile(times[k], 10)),
                     "p90_ms": float(np.percentile(times[k], 90)), "speedup": base / med,
                     "mb": (sizes.get({"TFLite float32": "none", "TFLite float16": "float16",
                                       "TFLite int8": "int8"}.get(k)) or 0) / 1e6 or None})
    return rows


class TFLiteDetector:
    """``detect(images [B, S, S, 3] float32)`` of a TFLite export (one image at a time) plus the
    class-wise NMS the Keras model does, for :func:`mgdet.evaluation.coco.evaluate`."""

    def __init__(self, path, score_threshold, nms_iou, max_detections):
        self.run = tflite_runner(path)
        self.settings = (score_threshold, nms_iou, max_detections)

    def detect(self, images):
        import numpy as np
        import tensorflow as tf
        from mgdet.ops import boxes as box_ops
        outs = [self.run(images=np.asarray(x, np.float32)[None]) for x in images]
        boxes = np.concatenate([o["boxes"] for o in outs])      # [B, N, 4] yxyx
        scores = np.concatenate([o["scores"] for o in outs])    # [B, N, C]
        threshold, iou, k = self.settings
        b, s, c, n = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :], scores, max_output_size_per_class=k, max_total_size=k,
            iou_threshold=iou, score_threshold=threshold, pad_per_class=False, clip_boxes=False)
        return {"boxes": box_ops.yxyx_to_xyxy(b), "scores": s, "classes": tf.cast(c, tf.int32),
                "num_detections": n}


def accuracy(args):
    """COCO AP (%) on the eval split: the Keras model, its float32 and int8 TFLite exports."""
    from mgdet.config import load_config
    from mgdet.evaluation.coco import evaluate
    from mgdet.export.files import export_tflite, representative_images
    from mgdet.training.rundir import resolve_weights
    from mgdet.training.trained import load_detector
    from mgdet.data.datasets import build_eval_dataset
    cfg = load_config(args.config, args.set or [])
    model, _ = load_detector(cfg, resolve_weights(args.weights))
    eval_ds, gt = build_eval_dataset(cfg)
    e = cfg.eval
    rows = [{"variant": "Keras fp32", **_ap(evaluate(model, eval_ds, gt, progress=False))}]
    calib = representative_images(cfg, args.calibration)
    with tempfile.TemporaryDirectory() as tmp:
        for quantize in ("none", "int8"):
            path = export_tflite(model, os.path.join(tmp, f"{quantize}.tflite"), quantize=quantize,
                                 representative_images=calib)
            det = TFLiteDetector(path, e.score_threshold, e.nms_iou, e.max_detections)
            name = "TFLite " + ("float32" if quantize == "none" else quantize)
            rows.append({"variant": name, **_ap(evaluate(det, eval_ds, gt, progress=False))})
    for row in rows:
        row["ap_drop"] = rows[0]["AP"] - row["AP"]
    return rows


def _ap(metrics):
    return {"AP": 100.0 * metrics["AP"], "AP50": 100.0 * metrics["AP50"],
            "num_images": metrics["num_images"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", default="fssd:resnet18", help="arch:backbone for the latency")
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    p.add_argument("--reps", type=int, default=5, help="timed calls per variant and round")
    p.add_argument("--calibration", type=int, default=32, help="int8 calibration images")
    p.add_argument("--weights", help="trained run / weights of --config: also measure the AP")
    p.add_argument("--config", default="default")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--out", default="bench/results/quantize.json")
    args = p.parse_args(argv)
    from bench.common import machine, print_table, write_json
    host = machine()
    payload = {"machine": host, "args": vars(args)}
    print(f"CPU: {host['cpu']} ({host['cores']} cores), flags: "
          + " ".join(f for f, on in host["cpu_flags"].items() if on)
          + f"; load average {host['load_average']}", flush=True)
    if not args.skip_latency:
        payload["latency"] = latency(args)
        print(f"\n{args.pair} at {args.image_size}, {args.classes} classes, random weights, "
              f"batch 1; {args.rounds} interleaved rounds x {args.reps} calls")
        print_table(payload["latency"], [
            ("variant", "variant", None), ("median_ms", "median ms", "{:.1f}"),
            ("p10_ms", "p10", "{:.1f}"), ("p90_ms", "p90", "{:.1f}"),
            ("speedup", "vs SavedModel fp32", "{:.2f}x"), ("mb", "file MB", "{:.1f}")])
    if args.weights:
        payload["accuracy"] = accuracy(args)
        print(f"\nCOCO AP (%) on the eval split of {args.config}, weights {args.weights}")
        print_table(payload["accuracy"], [
            ("variant", "variant", None), ("AP", "AP", "{:.2f}"), ("AP50", "AP50", "{:.2f}"),
            ("ap_drop", "AP drop", "{:+.2f}"), ("num_images", "images", None)])
    payload["load_average_end"] = list(os.getloadavg())
    print(f"load average at the end: {payload['load_average_end']}")
    write_json(args.out, payload)


if __name__ == "__main__":
    main()

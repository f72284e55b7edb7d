"""keras-hub's RetinaNet trained with its stock encoder and with Mutual Guidance, paired by seed.

    python bench/keras_hub_mg.py [--seeds 3] [--steps 300] [--image-size 64] [--batch 8]
        [--train 1200] [--eval 200] [--out bench/results/keras_hub_mg.json]

The same small keras-hub RetinaNet (:func:`mgdet.keras_hub.small_retinanet`: a random-weight
ResNet with one basic block per stage, keras-hub's FPN, heads and anchors, P3-P7) is trained on
mgdet's embedded synthetic dataset (``mgdet.data.synthetic``, 7 classes) twice per seed: as
keras-hub's ``RetinaNetObjectDetector`` (its own ``RetinaNetLabelEncoder``) and as
``MGRetinaNetObjectDetector(strategy="mg")``. Within a pair everything else is equal: the initial
weights (the MG model is ``from_detector`` of the stock one), the batches, the optimizer (Adam,
cosine decay) and keras-hub's losses (focal + Huber, ``compile()`` defaults). Both are evaluated
with pycocotools on the held-out ``val`` split (keras-hub's NMS, confidence >= 0.05), then MG
against stock: per-seed differences, mean, paired t-test (scipy). Prints the table and writes the
JSON. An interrupted comparison resumes from ``<out>.partial`` (finished seeds are kept).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.ablation_report import mean_std, paired, diff_cell  # noqa: E402
from bench.common import machine, print_table, write_json, write_results  # noqa: E402

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
ARMS = ("stock", "mg")


def keras_hub_arrays(data, max_objects):
    """``SyntheticData`` -> images float32 [N, S, S, 3] scaled to [-1, 1] and keras-hub targets
    (xyxy pixels, ``-1`` padding to ``max_objects`` rows)."""
    n, size = len(data), data.images.shape[1]
    boxes = np.full((n, max_objects, 4), -1.0, np.float32)
    labels = np.full((n, max_objects), -1.0, np.float32)
    for i in range(n):
        ex = data.example(i)
        k = min(len(ex["labels"]), max_objects)
        boxes[i, :k] = ex["boxes"][:k] * size
        labels[i, :k] = ex["labels"][:k]
    images = data.images.astype(np.float32) / 127.5 - 1.0
    return images, {"boxes": boxes, "labels": labels}


def evaluate(model, images, data, batch):
    """pycocotools metrics (fractions) of ``model`` on the eval arrays."""
    from mgdet.evaluation.coco import coco_metrics, detections_to_coco
    size = images.shape[1]
    out = model.predict(images, batch_size=batch, verbose=0)
    num = out["num_detections"] if "num_detections" in out else (out["labels"] >= 0).sum(-1)
    detections = detections_to_coco(data.image_ids, out["boxes"] / size, out["confidence"],
                                    out["labels"], num, np.full((len(images), 2), size))
    return coco_metrics(data.to_coco(), detections)


def run_pair(seed, args, train, evaluation):
    """Train and evaluate the stock and the MG model of one seed -> {arm: metrics}."""
    import keras
    import keras_hub
    import tensorflow as tf

    from mgdet.keras_hub import MGRetinaNetObjectDetector, set_head_priors, small_retinanet
    from mgdet.data.synthetic.shapes import NUM_CLASSES

    (x, y), (eval_x, eval_data) = train, evaluation
    keras.utils.set_random_seed(seed)
    stock = small_retinanet(NUM_CLASSES, args.image_size, "xyxy", mg=False)
    if not args.keras_hub_priors:
        set_head_priors(stock)  # RetinaNet's initialization of the heads' output biases
    models = {"stock": stock,
              "mg": MGRetinaNetObjectDetector.from_detector(stock, strategy="mg")}
    results = {}
    for arm in ARMS:
        model = models[arm]
        schedule = keras.optimizers.schedules.CosineDecay(args.lr, args.steps, alpha=0.01)
        model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=10.0))
        model.prediction_decoder = keras_hub.layers.NonMaxSuppression(
            bounding_box_format="xyxy", from_logits=True, confidence_threshold=0.05,
            max_detections=100)
        dataset = (tf.data.Dataset.from_tensor_slices((x, y))
                   .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
                   .repeat().batch(args.batch, drop_remainder=True).take(args.steps))
        start = time.perf_counter()
        history = model.fit(dataset, epochs=1, verbose=0).history
        seconds = time.perf_counter() - start
        metrics = evaluate(model, eval_x, eval_data, args.batch)
        results[arm] = {**{k: 100.0 * metrics[k] for k in KEYS},
                        "final_loss": float(history["loss"][-1]), "train_seconds": seconds}
        print(f"seed {seed} {arm}: AP {results[arm]['AP']:.1f} AP50 {results[arm]['AP50']:.1f} "
              f"AP75 {results[arm]['AP75']:.1f} ({seconds:.0f} s)", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="training steps per model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train", type=int, default=1200, help="training images")
    parser.add_argument("--eval", type=int, default=200, help="held-out images")
    parser.add_argument("--max-objects", type=int, default=15)
    parser.add_argument("--keras-hub-priors", action="store_true",
                        help="keep keras-hub 0.32's initial head biases (prior on the box head)")
    parser.add_argument("--out", default="bench/results/keras_hub_mg.json")
    args = parser.parse_args(argv)

    import keras_hub

    from mgdet.data.synthetic.generated import generate
    train = keras_hub_arrays(generate(args.train, args.image_size, 0, "train"), args.max_objects)
    eval_data = generate(args.eval, args.image_size, 0, "val")
    evaluation = (keras_hub_arrays(eval_data, args.max_objects)[0], eval_data)
    runs = {s: r for s, r in _finished(args).items() if s < args.seeds}
    for seed in range(args.seeds):
        if seed not in runs:
            runs[seed] = run_pair(seed, args, train, evaluation)
            write_json(args.out + ".partial", {"settings": vars(args), "runs": runs})
    stock = {s: r["stock"] for s, r in runs.items()}
    mg = {s: r["mg"] for s, r in runs.items()}
    # APl is nan at 64 px (no object above 96 x 96 px): test the metrics every run measured
    keys = [k for k in KEYS if all(np.isfinite(r[a][k]) for r in runs.values() for a in ARMS)]
    test = paired(stock, mg, keys)

    print(f"\nkeras-hub {keras_hub.__version__} RetinaNet, {args.image_size} px, {args.steps} "
          f"steps of {args.batch}, {args.train} training / {args.eval} held-out synthetic "
          f"images, {args.seeds} paired seeds (COCO AP, %)")
    rows = []
    for arm, values in (("stock encoder", stock), ("MG", mg)):
        rows.append({"arm": arm, **{k: mean_std([v[k] for v in values.values()]) for k in keys}})
    rows.append({"arm": "MG - stock", **{k: diff_cell(test[k]) for k in keys}})
    print_table(rows, [("arm", "", None)] + [(k, k, None) for k in keys])
    write_results(args.out, {"settings": vars(args), "keras_hub": keras_hub.__version__,
                             "machine": machine(), "runs": runs, "paired_mg_minus_stock": test})


def _finished(args):
    """The finished seeds of an interrupted comparison with the same budget (``<out>.partial``;
    any ``--seeds``)."""
    path = args.out + ".partial"
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        saved = json.load(f)
    def budget(settings):  # what a finished seed depends on (more --seeds extend a comparison)
        return {k: v for k, v in settings.items() if k not in ("seeds", "out")}

    if budget(saved["settings"]) != budget(vars(args)):
        return {}
    print(f"resuming from {path}: seeds {sorted(saved['runs'])} done")
    return {int(seed): runs for seed, runs in saved["runs"].items()}


if __name__ == "__main__":
    main()

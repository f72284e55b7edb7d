"""Input-pipeline throughput: images/s of ``mgdet.data.pipeline.make_dataset``.

    python bench/input_pipeline.py [--image-size 320] [--batch-size 32] [--images 512]

Rows: the embedded synthetic dataset (in memory) and VOC-like JPEG files on disk (written to a
temporary VOCdevkit: 500x375 JPEGs + XML, so decoding is included), each through the training
pipeline with full SSD augmentation, the authors' (``augment="paper"``), without the photometric
step, resize only, and the eval
pipeline. Also times the synthetic generator itself. Prints a table and writes
bench/results/input_pipeline.json.

``measure_pipeline`` returns a dict per row; the ``train_step_images_per_s`` column is filled by
:func:`train_step_images_per_s` when a model config is given (``--config``), so the table shows
whether the input pipeline or the model is the bottleneck.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from bench.common import machine, print_table, write_json  # noqa: E402
from mgdet.data.synthetic import generated, shapes  # noqa: E402
from mgdet.data.synthetic.source import synthetic_dataset  # noqa: E402
from mgdet.data.pipeline import make_dataset  # noqa: E402

VARIANTS = {
    "train_full_aug": dict(training=True),
    "train_paper_aug": dict(training=True, augment="paper"),
    "train_no_photometric": dict(training=True, augment={"photometric": False}),
    "train_resize_only": dict(training=True, augment=False),
    "eval": dict(training=False),
}


def measure_pipeline(source, image_size=320, batch_size=32, max_objects=50, num_batches=24,
                     warmup_batches=3, seed=0, **make_kwargs):
    """Iterates ``make_dataset(source, ..., repeat=True)`` and times it in steady state.

    The source is repeated so the shuffle buffer keeps refilling while it is timed (timing one
    short epoch would hide the decoding in the buffer's initial fill).

    Args:
      source: dataset of decoded examples.
      num_batches: batches timed after ``warmup_batches``.
      make_kwargs: passed to ``make_dataset`` (``training``, ``augment``, ``cache`` ...).
    Returns:
      ``{"images_per_s", "batches_per_s", "images", "seconds", "image_size", "batch_size"}``.
    """
    make_kwargs.setdefault("training", True)
    make_kwargs.setdefault("name", "bench")
    make_kwargs.setdefault("repeat", True)
    ds = make_dataset(source, image_size, batch_size, max_objects, seed=seed, **make_kwargs)
    it = iter(ds)
    for _ in range(warmup_batches):
        next(it)
    images, batches = 0, 0
    t0 = time.perf_counter()
    for images_batch, _ in it:
        images += int(images_batch.shape[0])
        batches += 1
        if batches >= num_batches:
            break
    seconds = time.perf_counter() - t0
    return {"images_per_s": images / max(seconds, 1e-9), "batches_per_s": batches / max(seconds, 1e-9),
            "images": images, "seconds": seconds, "image_size": image_size, "batch_size": batch_size}


def train_step_images_per_s(config_path, image_size, batch_size, steps=10, num_classes=20):
    """Hook for the training-step column: images/s of ``model.train_on_batch`` for the model of
    ``config_path`` on random batches of the same size as the pipeline rows. Returns ``None``
    (and says why) when the model cannot be built here."""
    try:
        import keras
        from mgdet import build_model
        from mgdet.config import load_config
        cfg = load_config(config_path, [f"model.image_size={image_size}"])
        model = build_model(cfg, num_classes=cfg.model.num_classes or num_classes)
        model.compile(optimizer=keras.optimizers.SGD(1e-3))
    except Exception as err:  # noqa: BLE001 - the column is optional
        print(f"train-step column skipped: {type(err).__name__}: {err}")
        return None
    m = 5
    c = tf.random.uniform([batch_size, m, 2], 0.2, 0.8, seed=1)
    images = tf.random.uniform([batch_size, image_size, image_size, 3], 0, 255, seed=0)
    targets = {"boxes": tf.concat([c - 0.1, c + 0.1], -1),
               "labels": tf.zeros([batch_size, m], tf.int32), "valid": tf.ones([batch_size, m], tf.bool)}
    model.train_on_batch(images, targets)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, targets)
    return steps * batch_size / (time.perf_counter() - t0)


def voc_like_source(num_images, workdir, seed=0):
    """A temporary VOCdevkit of 500x375 JPEGs (synthetic images, upscaled) + XML, loaded back."""
    import types

    from PIL import Image

    from mgdet.data import get_source

    data = generated.generate(num_images, 160, seed, "test")
    d = os.path.join(workdir, "VOCdevkit", "VOC2007")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    names = list(shapes.CLASS_NAMES)
    ids = []
    for i in range(num_images):
        ex = data.example(i)
        iid = f"{i + 1:06d}"
        ids.append(iid)
        Image.fromarray(ex["image"]).resize((500, 375), Image.BILINEAR).save(
            os.path.join(d, "JPEGImages", iid + ".jpg"), quality=90)
        objs = "".join(
            f"<object><name>{names[l]}</name><difficult>0</difficult><bndbox>"
            f"<xmin>{b[0] * 500 + 1:.0f}</xmin><ymin>{b[1] * 375 + 1:.0f}</ymin>"
            f"<xmax>{b[2] * 500:.0f}</xmax><ymax>{b[3] * 375:.0f}</ymax></bndbox></object>"
            for b, l in zip(ex["boxes"], ex["labels"]))
        with open(os.path.join(d, "Annotations", iid + ".xml"), "w") as f:
            f.write(f"<annotation><filename>{iid}.jpg</filename><size><width>500</width>"
                    f"<height>375</height><depth>3</depth></size>{objs}</annotation>")
    with open(os.path.join(d, "ImageSets", "Main", "trainval.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    source = get_source(types.SimpleNamespace(
        source="voc", root=os.path.join(workdir, "VOCdevkit"), train_sets=("2007/trainval",),
        class_names=tuple(names), seed=seed))
    return source.dataset("train", shuffle=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--images", type=int, default=512, help="images per source")
    p.add_argument("--batches", type=int, default=24, help="batches timed per row")
    p.add_argument("--synthetic-size", type=int, default=160)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--no-jpeg", action="store_true", help="skip the JPEG-on-disk rows")
    p.add_argument("--config", default=None, help="model config for the train-step column")
    p.add_argument("--out", default="bench/results/input_pipeline.json")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    data = generated.generate(args.images, args.synthetic_size, 0, "train")
    gen_s = time.perf_counter() - t0
    gen = {"images": args.images, "image_size": args.synthetic_size, "seconds": gen_s,
           "images_per_s": args.images / gen_s, "objects": int(len(data.labels))}
    print(f"synthetic generation: {args.images} images of {args.synthetic_size} px in {gen_s:.2f} s "
          f"({gen['images_per_s']:.0f} images/s)")

    step_ips = None
    if args.config:
        step_ips = train_step_images_per_s(args.config, args.image_size, args.batch_size)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"synthetic": lambda: synthetic_dataset(
            args.images, args.synthetic_size, 0, "train", shuffle=True)}
        if not args.no_jpeg:
            jpeg_ds = voc_like_source(args.images, tmp)
            sources["voc_jpeg_500x375"] = lambda: jpeg_ds
        for src_name, make_src in sources.items():
            for variant in args.variants:
                r = measure_pipeline(make_src(), args.image_size, args.batch_size,
                                     num_batches=args.batches, **VARIANTS[variant])
                r.update(source=src_name, variant=variant, train_step_images_per_s=step_ips)
                rows.append(r)
                print(f"  {src_name:18s} {variant:22s} {r['images_per_s']:8.0f} images/s")
    print()
    print_table(rows, [("source", "source", None), ("variant", "pipeline", None),
                       ("image_size", "size", None), ("batch_size", "batch", None),
                       ("images_per_s", "images/s", "{:.0f}"),
                       ("train_step_images_per_s", "train step images/s", "{:.1f}")])
    write_json(args.out, {"machine": machine(), "synthetic_generation": gen, "rows": rows,
                          "note": "images/s of the tf.data pipeline alone (no model); "
                                  "tf.data uses every core of the machine"})


if __name__ == "__main__":
    main()

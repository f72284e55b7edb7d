"""Does a resumed run reproduce an uninterrupted one? (tiny default model, CPU)

    python bench/resume_stream.py [--epochs 2]

Trains the same tiny config three times with op determinism on: A and B uninterrupted for
``--epochs`` epochs, C for one epoch then ``--resume`` to ``--epochs``, and prints the largest
absolute difference of the final weights (A vs B: the run-to-run noise; A vs C: what resuming
changes). Writes bench/results/resume_stream.json.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import machine, print_table, write_json  # noqa: E402

TINY = ["model.image_size=64", "model.width=0.25", "data.num_train=16", "data.num_eval=4",
        "data.max_objects=10", "train.batch_size=4", "train.warmup_steps=0",
        "train.eval_every=0", "eval.batch_size=4"]


def final_weights(epochs, out_dir, resume_after=None):
    import keras
    from mgdet.config import load_config
    from mgdet.training.loop import train
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = os.path.join(root, "configs", "default.yaml")
    if resume_after:
        keras.backend.clear_session()
        train(load_config(config, TINY + [f"train.epochs={resume_after}"]), verbose=0,
              out_dir=out_dir)
    keras.backend.clear_session()
    train(load_config(config, TINY + [f"train.epochs={epochs}"]), verbose=0, out_dir=out_dir,
          resume=bool(resume_after))
    import h5py
    import numpy as np
    values = []
    with h5py.File(os.path.join(out_dir, "final.weights.h5"), "r") as f:
        f.visititems(lambda name, obj: values.append(np.asarray(obj)) if hasattr(obj, "shape")
                     else None)
    return values


def max_diff(a, b):
    import numpy as np
    return max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", default="bench/results/resume_stream.json")
    args = p.parse_args()
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    with tempfile.TemporaryDirectory() as tmp:
        a = final_weights(args.epochs, os.path.join(tmp, "a"))
        b = final_weights(args.epochs, os.path.join(tmp, "b"))
        c = final_weights(args.epochs, os.path.join(tmp, "c"), resume_after=1)
    rows = [{"pair": "A vs B (both uninterrupted)", "max_abs_diff": max_diff(a, b)},
            {"pair": f"A vs C (1 epoch, then --resume to {args.epochs})",
             "max_abs_diff": max_diff(a, c)}]
    print_table(rows, [("pair", "final weights", None), ("max_abs_diff", "max |diff|", "{:.3g}")])
    write_json(args.out, {"machine": machine(), "epochs": args.epochs, "rows": rows})


if __name__ == "__main__":
    main()

"""A resumed run trains on the batches of the uninterrupted one (issue: resume after SIGTERM
gives the same weights and AP): the training stream is a function of (data seed, global step)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import ROOT

TINY = ["model.image_size=64", "model.width=0.125", "data.num_train=18", "data.num_eval=4",
        "data.max_objects=10", "train.batch_size=4", "train.warmup_steps=0", "train.epochs=2",
        "train.eval_every=0", "eval.batch_size=4", "eval.max_detections=20"]


def _config(*extra):
    from mgdet.config import load_config
    return load_config(os.path.join(ROOT, "configs", "default.yaml"), TINY + list(extra))


def _batches(cfg, start_step, steps):
    """``(images, boxes)`` of ``steps`` training batches from global step ``start_step``."""
    from mgdet.data import get_source
    from mgdet.data.datasets import build_train_dataset
    ds = build_train_dataset(cfg, get_source(cfg.data, cfg.model.image_size), None, start_step)
    return [(images.numpy(), targets["boxes"].numpy()) for images, targets in ds.take(steps)]


@pytest.mark.slow
def test_the_stream_from_step_k_is_the_uninterrupted_stream_after_k_batches():
    # 18 images, batches of 4: passes end inside batches, steps 5.. read the third pass
    for extra in ((), ("data.cache=true",), ("data.val_fraction=0.25",)):
        cfg = _config(*extra)
        full = _batches(cfg, 0, 12)
        for k in (3, 4, 9):  # inside the first pass, on a pass boundary, inside pass 3
            resumed = _batches(cfg, k, 12 - k)
            for step, (a, b) in enumerate(zip(full[k:], resumed), k):
                assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]), (extra, k, step)
    # every pass is a new order of all the images: the boxes of pass 1 and pass 2 differ
    assert not np.array_equal(full[0][1], full[5][1])


def test_pass_order_is_a_seeded_permutation_new_each_pass():
    from mgdet.data.pipeline import pass_order
    orders = [pass_order(50, 7, p).numpy() for p in range(3)]
    assert all(sorted(o) == list(range(50)) for o in orders)
    assert not np.array_equal(orders[0], orders[1])
    assert np.array_equal(orders[2], pass_order(50, 7, 2).numpy())  # stateless
    assert not np.array_equal(orders[0], pass_order(50, 8, 0).numpy())


SCRIPT = r"""
import json, os, signal, sys
import h5py, keras, numpy as np, tensorflow as tf
tf.config.experimental.enable_op_determinism()
from mgdet.config import load_config
from mgdet.training.faults import TrainingPreempted
from mgdet.training.loop import train

ROOT, OUT, TINY = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cfg = lambda epochs: load_config(os.path.join(ROOT, "configs", "default.yaml"),
                                 TINY + [f"train.epochs={epochs}"])

class SigtermAt(keras.callbacks.Callback):  # SIGTERM during global step `step`
    def __init__(self, step):
        super().__init__()
        self.step = step
    def on_train_batch_begin(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)

def weights(run):
    with h5py.File(os.path.join(run, "final.weights.h5"), "r") as f:
        out = []
        f.visititems(lambda name, d: out.append(d[()]) if isinstance(d, h5py.Dataset) else None)
        return out

result = {"stop": []}
full = train(cfg(2), verbose=0, out_dir=f"{OUT}/full")
resumed = {}
for name, step in (("epoch", 4), ("term", 6)):  # stopped after epoch 1, inside epoch 2
    try:
        train(cfg(2), verbose=0, out_dir=f"{OUT}/{name}", callbacks=[SigtermAt(step)])
    except TrainingPreempted as e:
        result["stop"].append(str(e))
    resumed[name] = train(cfg(2), resume=True, verbose=0, out_dir=f"{OUT}/{name}")
epoch, term = resumed["epoch"], resumed["term"]
w = weights(f"{OUT}/full")
for name, res in (("epoch", epoch), ("term", term)):
    other = weights(f"{OUT}/{name}")
    result[name] = {"n": len(other), "max_diff": max(float(np.max(np.abs(a.astype(np.float64) - b)))
                                                     if a.size else 0.0 for a, b in zip(w, other)),
                    "AP": res["AP"], "steps": res["steps"]}
result["full"] = {"n": len(w), "AP": full["AP"], "steps": full["steps"]}
print("RESULT " + json.dumps(result))
"""


@pytest.mark.slow
def test_resumed_runs_end_with_the_uninterrupted_runs_weights_bit_for_bit(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, ROOT, str(tmp_path), json.dumps(TINY)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    result = json.loads(line[0][len("RESULT "):])
    # (a run of train.epochs=1 continued to 2 differs: its learning-rate schedule spans 1 epoch)
    assert "(global step 4)" in result["stop"][0] and "(global step 6)" in result["stop"][1]
    assert result["full"]["steps"] == 8 and result["full"]["n"] > 10
    for name in ("epoch", "term"):
        assert result[name]["n"] == result["full"]["n"] and result[name]["steps"] == 8
        assert result[name]["max_diff"] == 0.0, (name, result)
        assert result[name]["AP"] == result["full"]["AP"], (name, result)

"""Targets handed to ``model.fit`` that cannot be trained on (a NaN box, a box outside the
image, no area, a label past the class count) are dropped and counted in ``targets_dropped``,
in a plain, an XLA-compiled and a MirroredStrategy train step: training on them gives the
weights of training on the same batch without those objects."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.batches import painted_batch

from tests import ROOT as REPO

pytestmark = pytest.mark.slow  # fits detectors, one under MirroredStrategy in a fresh process

S, B, C = 64, 4, 3

# Shared by this process and the MirroredStrategy worker: a batch of 4 images with 1-3 real
# objects each, and one extra row per image holding an object that cannot be trained on (the
# clean twin has padding there).
_BATCHES = textwrap.dedent('''
    def batches(painted_batch, np):
        images, clean = painted_batch(64, 4, 4, 3, seed=1)
        clean = {k: np.concatenate([v, np.zeros_like(v[:, :1])], 1) for k, v in clean.items()}
        bad = {k: v.copy() for k, v in clean.items()}
        bad["valid"][:, 4] = True
        bad["labels"][:, 4] = 1
        bad["boxes"][0, 4] = [0.1, np.nan, 0.5, 0.5]     # NaN coordinate
        bad["boxes"][1, 4] = [0.2, 0.2, 0.6, 0.6]
        bad["labels"][1, 4] = 3                           # label == num_classes
        bad["boxes"][2, 4] = [0.3, 0.3, 0.3, 0.7]         # no width
        bad["boxes"][3, 4] = [1.2, 0.1, 1.6, 0.5]         # outside the image: no area once clipped
        return images, clean, bad
''')
exec(_BATCHES)
DROPPED = 4


def _fit_both(images, bad, clean, jit_compile):
    """Weights and history of 2 epochs on ``bad``, then on ``clean`` from the same start (one
    compiled step for both)."""
    import keras
    from mgdet.models import FSSD
    keras.utils.set_random_seed(0)
    model = FSSD(num_classes=C, backbone="resnet18", image_size=S, width=0.125)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
                  jit_compile=jit_compile)
    start = model.get_weights()
    runs = []
    for targets in (bad, clean):
        model.set_weights(start)
        for v in model.optimizer.variables:  # momentum and step count back to 0
            v.assign(np.zeros(v.shape, v.dtype))
        history = model.fit(images, targets, batch_size=B, epochs=2, verbose=0).history
        runs.append((model.get_weights(), history))
    return runs


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_drops_and_counts_targets_that_cannot_be_trained_on(jit_compile):
    images, clean, bad = batches(painted_batch, np)
    (weights, history), (clean_weights, clean_history) = _fit_both(images, bad, clean,
                                                                   jit_compile)
    assert all(np.isfinite(w).all() for w in weights)
    assert history["targets_dropped"] == [DROPPED, DROPPED]  # objects per epoch
    assert clean_history["targets_dropped"] == [0, 0]
    for a, b in zip(weights, clean_weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(history["loss"], clean_history["loss"])


_WORKER = _BATCHES + textwrap.dedent(r'''
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    from mgdet.models import FSSD
    from tests.batches import painted_batch

    images, clean, bad = batches(painted_batch, np)
    out = {}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = FSSD(num_classes=3, backbone="resnet18", image_size=64, width=0.125)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9))
    start = model.get_weights()
    for name, targets in (("bad", bad), ("clean", clean)):
        model.set_weights(start)
        for v in model.optimizer.variables:
            v.assign(np.zeros(v.shape, v.dtype))
        data = tf.data.Dataset.from_tensors((images, targets))  # one global batch: 2 per replica
        history = model.fit(data, epochs=1, verbose=0).history
        out[name] = {"dropped": history["targets_dropped"][0], "loss": history["loss"][0],
                     "weights": [w.tolist() for w in model.get_weights()[:6]],
                     "finite": all(bool(np.isfinite(w).all()) for w in model.get_weights())}
    print("RESULT " + json.dumps(out))
''')


def test_mirrored_fit_drops_and_counts_them_over_all_replicas():
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, "-c", _WORKER], capture_output=True, text=True,
                         timeout=600, env=env, cwd=REPO)
    lines = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["bad"]["finite"] and out["bad"]["dropped"] == DROPPED  # both replicas' objects
    assert out["clean"]["dropped"] == 0
    assert out["bad"]["loss"] == out["clean"]["loss"]
    for a, b in zip(out["bad"]["weights"], out["clean"]["weights"]):
        np.testing.assert_array_equal(a, b)

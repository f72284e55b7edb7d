"""One training step under MirroredStrategy on 2 logical CPU devices gives the same weights and
metrics as one device on the same global batch.

The CPU must be split before TensorFlow initializes its devices, and other test modules
initialize TF on import, so the check runs in a fresh Python process.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests import ROOT as REPO

pytestmark = pytest.mark.slow  # trains in fresh processes

_WORKER = textwrap.dedent(r'''
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    from mgdet.models import MODELS
    from mgdet.training.optim import SGDWithL2
    from tests.batches import painted_batch

    arch, backbone, strategy_name = sys.argv[1:4]
    S, B, M, C = 64, 4, 4, 3

    def global_batch():
        """4 images with 1-3 real objects each (and padding rows), objects painted in."""
        return painted_batch(S, B, M, C, seed=1)

    def make(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = MODELS[arch](num_classes=C, backbone=backbone, image_size=S, width=0.25,
                                 strategy=strategy_name)
            model.compile(optimizer=SGDWithL2(l2=5e-4, learning_rate=0.05, momentum=0.9))
        return model

    images, targets = global_batch()
    dataset = tf.data.Dataset.from_tensors((images, targets))  # one global batch of 4

    single = make(tf.distribute.OneDeviceStrategy("/cpu:0"))
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored = make(mirrored_strategy)
    initial = single.get_weights()
    mirrored.set_weights(initial)

    h1 = single.fit(dataset, epochs=1, verbose=0).history
    h2 = mirrored.fit(dataset, epochs=1, verbose=0).history
    w1, w2 = single.get_weights(), mirrored.get_weights()
    names = [v.path for v in single.weights]
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(w1, w2)]
    trainable = {v.path for v in single.trainable_weights}
    moved = [float(np.max(np.abs(a - b))) for a, b, n in zip(w1, initial, names) if n in trainable]
    worst = int(np.argmax(diffs))
    print(json.dumps({
        "replicas": mirrored_strategy.num_replicas_in_sync,
        "max_weight_diff": max(diffs), "worst": names[worst],
        "max_trainable_update": max(moved),
        "single": {k: float(v[-1]) for k, v in h1.items()},
        "mirrored": {k: float(v[-1]) for k, v in h2.items()},
    }))
''')


def _run(arch, backbone, strategy):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _WORKER, arch, backbone, strategy], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arch,backbone,strategy", [("fssd", "resnet18", "mg")])
def test_mirrored_step_equals_single_device(arch, backbone, strategy):
    result = _run(arch, backbone, strategy)
    assert result["replicas"] == 2
    assert result["max_trainable_update"] > 1e-3  # the step really changed the weights
    assert result["max_weight_diff"] < 1e-5, result
    for key in ("loss", "cls_loss", "reg_loss", "num_pos_cls", "num_pos_reg"):
        single, mirrored = result["single"][key], result["mirrored"][key]
        assert mirrored == pytest.approx(single, rel=1e-4, abs=1e-6), (key, result)

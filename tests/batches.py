"""Small painted training batches shared by the model tests (numpy only: safe to import before
TensorFlow configures its devices)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TWO_REPLICAS = """
import json
import tensorflow as tf
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
"""


def on_two_replicas(body):
    """Run ``body`` (Python source that may use ``tf``, ``json`` and ``strategy``, a
    MirroredStrategy over 2 logical CPUs) in a fresh process (TF splits the CPU only before it
    starts its devices) and return the JSON value of its last printed line."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _TWO_REPLICAS + textwrap.dedent(body)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def painted_batch(image_size=64, batch=2, max_objects=4, num_classes=3, seed=0):
    """Images with painted boxes (class c painted in channel c) and padded targets: image b has
    1 + b % 3 objects, the other rows are padding."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 50, [batch, image_size, image_size, 3]).astype(np.float32)
    boxes = np.zeros([batch, max_objects, 4], np.float32)
    labels = np.zeros([batch, max_objects], np.int32)
    valid = np.zeros([batch, max_objects], bool)
    for b in range(batch):
        for j in range(1 + b % 3):
            w, h = rng.uniform(0.2, 0.6, 2)
            x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            boxes[b, j] = [x0, y0, x0 + w, y0 + h]
            labels[b, j] = rng.integers(0, num_classes)
            valid[b, j] = True
            c0, r0, c1, r1 = (boxes[b, j] * image_size).astype(int)
            images[b, r0:r1, c0:c1, labels[b, j]] = 255.0
    return images, {"boxes": boxes, "labels": labels, "valid": valid}

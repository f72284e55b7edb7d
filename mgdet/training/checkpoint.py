"""The training checkpoint: every variable of the model and of the optimizer, and the epoch.

Why not ``tf.train.Checkpoint(model=model, optimizer=optimizer)``: TensorFlow's checkpoint
follows attribute tracking, which does not see the layers a Keras 3 layer holds in a Python list
(Keras converts its tracked lists only for SavedModel export, in
``keras/src/backend/tensorflow/layer.py``). Backbone blocks and the neck / head conv lists were
missing: such a checkpoint held 12 of RetinaNet-R18's 206 variables (FSSD 7 of 130, RFBNet 25 of
520); the trainable weights came back only through the optimizer's references to them, and the
batch-norm statistics restarted from their initial values.

Here the checkpoint is built from the flat variable lists, so no layer, present or future, can
be left out: each of ``model.variables`` (trainable or not) under its Keras ``path`` relative to
the model (``backbone/layer1_0/conv1/bn/moving_mean``: unique and the same in every process that
builds the model), each of ``optimizer.variables`` under its position (the order is fixed by the
optimizer class and the model's trainable variables; their paths carry auto-numbered optimizer
names such as ``sgd_with_l2_1`` that differ between processes). :func:`restore` fails unless
every one of them is restored. The ``.weights.h5`` files are Keras's own format, unchanged.

    ckpt = training_checkpoint(model, model.optimizer, epoch_var)
    manager = tf.train.CheckpointManager(ckpt, "runs/x/checkpoints", max_to_keep=2)
    path = restore_newest(ckpt, "runs/x/checkpoints")
"""
import glob
import logging
import os
import re

import tensorflow as tf

from mgdet.training.rundir import BEST_WEIGHTS, FINAL_WEIGHTS, ResumeError

log = logging.getLogger("mgdet")


def model_keys(model):
    """``{key: variable}`` of every variable of ``model``: its path without the model's name."""
    prefix = model.name + "/"
    return _unique({v.path[len(prefix):] if v.path.startswith(prefix) else v.path: v
                    for v in model.variables}, len(model.variables), model.name)


def optimizer_keys(optimizer):
    """``{key: variable}`` of every variable of ``optimizer``: its position, as a string."""
    return {str(i): v for i, v in enumerate(optimizer.variables)}


def _unique(by_key, count, owner):
    if len(by_key) != count:
        raise ValueError(f"{owner}: {count - len(by_key)} variables share a path; the training "
                         "checkpoint needs one key per variable")
    return by_key


def training_checkpoint(model, optimizer, epoch):
    """A ``tf.train.Checkpoint`` of every variable of ``model`` and ``optimizer`` (the compiled
    one, ``model.optimizer``: with mixed_float16 its loss-scale state too) and the ``epoch``
    variable (see the module docstring)."""
    return tf.train.Checkpoint(model=tf.train.Checkpoint(**model_keys(model)),
                               optimizer=tf.train.Checkpoint(**optimizer_keys(optimizer)),
                               epoch=epoch)


def restore(ckpt, path):
    """Restore ``ckpt`` (from :func:`training_checkpoint`) from ``path``.

    Raises:
      ResumeError: a variable of the model or the optimizer is not in the checkpoint, or has
        another shape (a checkpoint of another model, or written before checkpoints held every
        variable).
    """
    try:
        ckpt.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError) as err:
        detail = " ".join(str(err).split())[:160]
        final = os.path.join(os.path.dirname(os.path.dirname(path)), FINAL_WEIGHTS)  # the run's
        raise ResumeError(
            f"checkpoint {path} does not hold every variable of this model and optimizer "
            f"({detail}...): it was written by another model or optimizer, or by an mgdet "
            "version whose checkpoints missed most layers, and cannot be resumed without losing "
            "weights or batch-norm statistics; start a new run from that run's weights with "
            f"--set model.init_from={final} (or {BEST_WEIGHTS})") from None


def checkpoint_paths(directory):
    """The ``ckpt-<step>`` checkpoints under ``directory`` (those with an ``.index`` file),
    newest (highest step) last. The ``checkpoint`` index file is not read: it may be the
    broken file."""
    found = []
    for index in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.index")):
        match = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(index))
        if match:
            found.append((int(match.group(1)), index[:-len(".index")]))
    return [path for _, path in sorted(found)]


def unreadable(path):
    """None if every tensor of checkpoint ``path`` can be read, else the reason (one line)."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as err:  # noqa: BLE001 - any failure to read (the reader raises
        # OpError, ValueError, IndexError... depending on where the file is cut) means damaged
        return " ".join(str(err).split())[:200]
    return None


def restore_newest(ckpt, directory):
    """Restore ``ckpt`` from the newest intact checkpoint under ``directory`` and return its
    path; a truncated or unreadable newer one is skipped with a one-line warning.

    Raises:
      FileNotFoundError: no checkpoint, or none intact.
      ResumeError: the newest intact checkpoint does not fit (see :func:`restore`).
    """
    paths = checkpoint_paths(directory)
    for path in reversed(paths):
        problem = unreadable(path)
        if problem is None:
            restore(ckpt, path)
            return path
        log.warning("checkpoint %s is damaged (%s); using an older one", path, problem)
    if paths:
        raise FileNotFoundError(f"--resume: no intact checkpoint under {directory} (all "
                                f"{len(paths)} are damaged); start a new run")
    raise FileNotFoundError(f"--resume: no checkpoint under {directory}; train without "
                            "--resume first")

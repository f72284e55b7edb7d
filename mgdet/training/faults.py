"""Stopping a training run safely: a non-finite loss or weights, and SIGTERM (preemption).

``RunGuard`` is a Keras callback that watches every step. On a non-finite loss (or non-finite
weights at an epoch end) it stops ``fit`` at that step and records where; the other callbacks
check ``guard.stop`` and then save nothing, so the last checkpoint on disk stays the last
finite one. On SIGTERM it writes a checkpoint at the next step boundary and stops ``fit``;
``--resume`` continues from that step. ``train`` then raises :class:`TrainingDiverged` or
:class:`TrainingPreempted`, whose message says what happened and what is on disk.
"""
import contextlib
import math
import signal
import threading

import keras
import numpy as np

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # 143, what a shell reports for a SIGTERM'd job


class TrainingStopped(RuntimeError):
    """Training stopped before its last epoch; the message says where and what was kept."""


class TrainingDiverged(TrainingStopped):
    """The loss or the weights became NaN / inf."""


class TrainingPreempted(TrainingStopped):
    """SIGTERM arrived; a checkpoint was written at the step boundary."""


def weights_finite(model):
    """Whether every weight of ``model`` (trainable and statistics) is finite."""
    return all(np.isfinite(np.asarray(w.numpy())).all() for w in model.weights)


class RunGuard(keras.callbacks.Callback):
    """Stops ``fit`` on a non-finite loss or a SIGTERM; see the module docstring.

    Args:
      steps_per_epoch: steps of a full epoch (to report the step inside the epoch).
      save_checkpoint: ``() -> path``, writes a checkpoint (called on SIGTERM).
    Attributes:
      stop: None while training runs, else a dict ``{"reason": "nan" | "sigterm", "epoch",
        "step", "global_step", "value", "checkpoint"}`` (epoch and step 1-based).
    """

    def __init__(self, steps_per_epoch, save_checkpoint):
        super().__init__()
        self.steps_per_epoch = int(steps_per_epoch)
        self.save_checkpoint = save_checkpoint
        self.stop = None
        self._epoch = 0
        self._sigterm = threading.Event()

    @contextlib.contextmanager
    def catch_sigterm(self):
        """Within this block SIGTERM only sets a flag (main thread only; a no-op elsewhere)."""
        try:
            previous = signal.signal(signal.SIGTERM, lambda *_: self._sigterm.set())
        except ValueError:  # not the main thread: signals cannot be handled here
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _where(self, reason, value=None):
        step = int(self.model.optimizer.iterations.numpy())
        in_epoch = step - self._epoch * self.steps_per_epoch
        self.stop = {"reason": reason, "epoch": self._epoch + 1, "step": in_epoch,
                     "global_step": step, "value": value, "checkpoint": None}
        self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.stop is not None:
            return
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._where("nan", float(loss))
        elif self._sigterm.is_set():
            if not weights_finite(self.model):
                self._where("nan", "non-finite weights")
                return
            self._where("sigterm")
            self.stop["checkpoint"] = self.save_checkpoint()

    def on_epoch_end(self, epoch, logs=None):
        if self.stop is None and not weights_finite(self.model):
            self._where("nan", "non-finite weights")


def stop_message(stop, run_dir, last_checkpoint, resume_hint):
    """The one-paragraph report of a stopped run (``stop`` as in ``RunGuard.stop``)."""
    where = (f"epoch {stop['epoch']}, step {stop['step']} of this epoch (global step "
             f"{stop['global_step']})")
    if stop["reason"] == "sigterm":
        return (f"stopped by SIGTERM at {where}: checkpoint {stop['checkpoint']} written. "
                f"Continue with: {resume_hint}")
    value = stop["value"] if isinstance(stop["value"], str) else f"loss {stop['value']}"
    kept = (f"the last finite checkpoint {last_checkpoint} is kept"
            if last_checkpoint else "no checkpoint was written")
    return (f"training diverged ({value}) at {where}; stopped without saving it: {kept}, "
            f"outputs in {run_dir}. Lower train.lr or set train.clip_norm (e.g. --set "
            f"train.clip_norm=10), then start again or continue with: {resume_hint}")

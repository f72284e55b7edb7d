"""The callbacks of a training run (:func:`mgdet.training.loop.train`): checkpoints, COCO
evaluation with best-weights selection and TensorBoard pictures, the learning rate in the logs."""
import os

import keras
import numpy as np
import tensorflow as tf

from mgdet.evaluation.coco import evaluate
from mgdet.training import rundir
from mgdet.viz.drawing import draw_detections


def atomic_save_weights(model, path):
    """Write ``model``'s weights to ``path`` through a temporary file and an atomic rename."""
    tmp = path + ".tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)


def save_checkpoint(manager, optimizer):
    """A checkpoint numbered by the global step; returns its path."""
    return manager.save(checkpoint_number=int(optimizer.iterations.numpy()))


class CheckpointCallback(keras.callbacks.Callback):
    """Saves model + optimizer state + epoch at each epoch end with ``tf.train.CheckpointManager``
    (TF writes checkpoint files under temporary names and renames them, and updates the
    ``checkpoint`` index atomically), so an interrupted run never leaves a broken checkpoint.
    Nothing is saved once ``guard`` has stopped the run (non-finite loss or weights, SIGTERM)."""

    def __init__(self, manager, epoch_var, guard):
        super().__init__()
        self.manager, self.epoch_var, self.guard = manager, epoch_var, guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.stop is not None:
            return
        self.epoch_var.assign(epoch + 1)
        save_checkpoint(self.manager, self.model.optimizer)


NUM_PICTURES, PICTURE_SCORE = 4, 0.3  # eval images with detections in TensorBoard


class EvalCallback(keras.callbacks.Callback):
    """COCO evaluation every ``every`` epochs and after the last (``epochs``).

    The eval split (``dataset``, ``gt_coco``) is evaluated for reporting only (TensorBoard
    ``eval/*`` with AP per class and the first eval images with their detections, the history,
    which keeps AP per class too). With a held-out validation split (``val``: ``(dataset, gt_coco)``
    of ``data.val_fraction`` of the training images) that split is evaluated too
    (``val/*``) and ``best.weights.h5`` keeps the weights of the best *validation* AP; without
    one no best weights are kept. The best AP, its epoch and the history go to the run's state
    file (``state``: ``mgdet.training.rundir.load_state``'s dict, restored on resume)."""

    def __init__(self, every, epochs, dataset, gt_coco, writer, out_dir, guard, state=None,
                 label_to_category=None, val=None):
        super().__init__()
        self.every, self.epochs, self.dataset, self.gt_coco = every, epochs, dataset, gt_coco
        self.writer, self.out_dir, self.label_to_category = writer, out_dir, label_to_category
        self.guard, self.val = guard, val
        state = state or rundir.load_state(out_dir, up_to_epoch=0)
        self.best, self.best_epoch = state["best_ap"], state["best_epoch"]
        self.history = list(state["history"])
        self.last = None  # (epoch, metrics) of the latest evaluation of the eval split
        self._picture_images = None

    def _evaluate(self, dataset, gt_coco):
        return evaluate(self.model, dataset, gt_coco, self.label_to_category, progress=False,
                        per_class=True)

    def _pictures(self):
        """The first ``NUM_PICTURES`` eval images with the model's detections (score >= 0.3)
        drawn, uint8 [K, S, S, 3], for TensorBoard."""
        if self._picture_images is None:
            # the whole first batch: detect() is already traced for its shape (a slice of it
            # would trace it again); the first NUM_PICTURES are drawn
            self._picture_images = next(iter(self.dataset))[0]  # float32, as evaluation's
        out = self.model.detect(self._picture_images)
        pixels = tf.cast(tf.clip_by_value(self._picture_images, 0, 255), tf.uint8)
        names = getattr(self.model, "class_names", None)
        drawn = []
        for k in range(min(NUM_PICTURES, int(self._picture_images.shape[0]))):
            n = int(out["num_detections"][k])
            drawn.append(np.asarray(draw_detections(
                pixels[k].numpy(), out["boxes"][k, :n].numpy(),
                out["scores"][k, :n].numpy(), out["classes"][k, :n].numpy(), names,
                score_threshold=PICTURE_SCORE)))
        return np.stack(drawn)

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == self.epochs
        if self.guard.stop is not None or not self.every or ((epoch + 1) % self.every and not last):
            return
        splits = {"eval": self._evaluate(self.dataset, self.gt_coco)}
        if self.val is not None:
            splits["val"] = self._evaluate(*self.val)
        self.last = (epoch + 1, splits["eval"])
        entry = {"epoch": epoch + 1, **scalars(splits["eval"]),
                 "per_class": splits["eval"].get("per_class", {})}
        if "val" in splits:
            entry.update({f"val_{k}": v for k, v in scalars(splits["val"]).items()})
        self.history.append(entry)
        with self.writer.as_default(step=epoch + 1):
            for split, metrics in splits.items():
                for key, value in scalars(metrics).items():
                    tf.summary.scalar(f"{split}/{key}", value)
                for name, value in metrics.get("per_class", {}).items():
                    if np.isfinite(value):
                        tf.summary.scalar(f"{split}_AP_per_class/{name}", value)
            if hasattr(self.model, "detect"):  # a detector (not a bare Keras model)
                tf.summary.image("eval/detections", self._pictures(), max_outputs=NUM_PICTURES)
        print(f"\nepoch {epoch + 1}: " + "; ".join(
            f"{split} " + ", ".join(f"{k} {100 * m[k]:.1f}" for k in ("AP", "AP50", "AP75") if k in m)
            for split, m in splits.items()))
        if logs is not None:
            for split, metrics in splits.items():
                logs.update({f"{split}_{k}": v for k, v in scalars(metrics).items()})
        if "val" in splits and splits["val"].get("AP", -1) > self.best:
            self.best, self.best_epoch = splits["val"]["AP"], epoch + 1
            atomic_save_weights(self.model, rundir.output(self.out_dir, rundir.BEST_WEIGHTS))
        rundir.save_state(self.out_dir, self.best, self.best_epoch, self.history)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the current learning rate to the epoch logs (TensorBoard picks it up)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            opt = self.model.optimizer
            lr = opt.learning_rate
            logs["lr"] = float(lr(opt.iterations) if callable(lr) else lr)


def scalars(metrics):
    """The numbers of a metrics dict (AP, AP50, ...) as floats."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}

"""Training: the paper's recipe around ``model.fit``, with evaluation, TensorBoard logs, atomic
checkpoints and resumption. Run folders and the resumed state: ``mgdet.rundir``; stopping on a
non-finite loss or SIGTERM: ``mgdet.faults``.

    from mgdet.config import load_config
    from mgdet.train import train
    metrics = train(load_config("configs/default.yaml"))
"""
import os
import time

import keras
import numpy as np
import tensorflow as tf

from mgdet import build_model, checkpoint, cpu, distributed, faults
from mgdet.config import ConfigError, check_files
from mgdet.data import get_source
from mgdet.data import pipeline as data_pipeline
from mgdet.data import stats as data_stats
from mgdet.distributed import build_strategy, split_cpu  # noqa: F401 (re-exported)
from mgdet.evaluation import evaluate, format_table
from mgdet.models import transfer
from mgdet.optim import build_optimizer
from mgdet.rundir import CHECKPOINT_DIR, json_safe, write_json  # noqa: F401  (json_safe: API)
from mgdet import rundir

BEST_WEIGHTS = "best.weights.h5"
FINAL_WEIGHTS = "final.weights.h5"


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
    file (``state``: ``mgdet.rundir.load_state``'s dict, restored on resume)."""

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
        from mgdet.drawing import draw_detections
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
        entry = {"epoch": epoch + 1, **_scalars(splits["eval"]),
                 "per_class": splits["eval"].get("per_class", {})}
        if "val" in splits:
            entry.update({f"val_{k}": v for k, v in _scalars(splits["val"]).items()})
        self.history.append(entry)
        with self.writer.as_default(step=epoch + 1):
            for split, metrics in splits.items():
                for key, value in _scalars(metrics).items():
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
                logs.update({f"{split}_{k}": v for k, v in _scalars(metrics).items()})
        if "val" in splits and splits["val"].get("AP", -1) > self.best:
            self.best, self.best_epoch = splits["val"]["AP"], epoch + 1
            atomic_save_weights(self.model, rundir.output(self.out_dir, BEST_WEIGHTS))
        rundir.save_state(self.out_dir, self.best, self.best_epoch, self.history)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the current learning rate to the epoch logs (TensorBoard picks it up)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            opt = self.model.optimizer
            lr = opt.learning_rate
            logs["lr"] = float(lr(opt.iterations) if callable(lr) else lr)


def _scalars(metrics):
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def build_eval_dataset(cfg, source=None, split="eval"):
    """Evaluation batches of ``split`` ("eval", or "val": the images held out of the training
    split by ``data.val_fraction``) and its COCO ground truth."""
    d, m = cfg.data, cfg.model
    source = source or get_source(d, image_size=m.image_size)
    eval_ds = data_pipeline.make_dataset(source.dataset(split), m.image_size,
                                         cfg.eval.batch_size, d.max_objects, training=False,
                                         name=split)
    return eval_ds, source.ground_truth(split)


def build_train_dataset(cfg, source, worker=None, start_step=0):
    """The training batches of ``source`` from global step ``start_step`` on, repeated forever.

    The stream (:class:`mgdet.data.pipeline.Stream`) is a function of ``data.seed`` and the
    step only: each pass over the training images is a fresh seeded permutation, each
    example's augmentation seed is drawn from its position in the stream, and a run resumed
    at step ``k`` skips the ``k`` batches' positions before reading any image, so it trains on
    the batches of the uninterrupted run from step ``k`` on. A source read in sequence only
    (TFDS) falls back to a shuffle buffer and restarts its stream on resume.

    ``worker``: see :func:`build_datasets`; a worker's stream advances ``batch_size / count``
    examples per step (each step it feeds its replicas their share of a global batch).
    """
    d, m = cfg.data, cfg.model
    batch = cfg.train.batch_size
    kwargs = dict(training=True, seed=d.seed, cache=d.cache, difficult=d.difficult,
                  augment={"mode": d.augment, "max_expand": d.max_expand})
    num_train = source.num_examples("train")
    index, count = worker if worker is not None and worker[1] > 1 else (0, 1)
    share = np.arange(index, num_train, count)
    if count > 1:
        at = lambda positions: source.examples_at(  # noqa: E731
            "train", positions.map(lambda i: tf.gather(share, i)))
    else:
        at = lambda positions: source.examples_at("train", positions)  # noqa: E731
    if source.examples_at("train", tf.data.Dataset.range(0)) is None:  # read in sequence only
        examples = (source.subset("train", share, shuffle=True) if count > 1
                    else source.dataset("train", shuffle=True))
        return data_pipeline.make_dataset(examples, m.image_size, batch, d.max_objects,
                                          repeat=True, **kwargs)
    stream = data_pipeline.Stream(at, len(share), int(start_step) * batch // count)
    return data_pipeline.make_dataset(stream, m.image_size, batch, d.max_objects, **kwargs)


def build_datasets(cfg, worker=None):
    """Training and evaluation datasets, class names, COCO ground truth of the eval split and
    the number of steps per epoch.

    The training dataset (:func:`build_train_dataset`, from step 0) repeats forever and an
    epoch is ``steps_per_epoch`` batches:
    ``train.steps_per_epoch``, else the full batches in one pass over the usable examples (less
    the ``data.val_fraction`` held out for model selection, :mod:`mgdet.data.holdout`). That
    number comes from the source's records, known after listing and header checks and before
    any image is decoded, so the training set is never decoded just to count it. An image that
    passes the header check and still fails to decode is skipped in the graph; the repeated
    stream then fills the epoch from the next pass, so every epoch trains exactly
    ``steps_per_epoch`` full batches (a dataset of asserted cardinality would fail instead).

    ``worker``: ``(index, count)`` from :func:`mgdet.distributed.input_shard` to read only this
    worker's share of the training images, every ``count``-th one from ``index``, chosen before
    decoding (``data.worker_sharding: files``); the batches keep the global batch size and the
    steps per epoch those of the whole split.
    """
    d, m = cfg.data, cfg.model
    source = get_source(d, image_size=m.image_size)
    class_names = source.class_names()
    num_train = source.num_examples("train")
    steps_per_epoch = cfg.train.steps_per_epoch or num_train // cfg.train.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"the training set yields no full batch: {num_train} "
                          f"usable images for train.batch_size {cfg.train.batch_size}; lower "
                          "train.batch_size or add images")
    if source.num_examples("eval") < 1:  # evaluated after training (and every eval_every)
        raise ConfigError("the eval split has no usable images: every run evaluates it; point "
                          "it at images (data.eval_sets, data.eval_ann / data.eval_images, or "
                          "data.num_eval for the synthetic source)")
    train_ds = build_train_dataset(cfg, source, worker)
    eval_ds, gt_coco = build_eval_dataset(cfg, source)
    for split in ("train", "eval"):
        report = {k: v for k, v in source.report(split).items() if v}
        if report:
            print(f"data {split}: " + " ".join(f"{k}={v}" for k, v in report.items()))
    return train_ds, eval_ds, class_names, gt_coco, steps_per_epoch


def fit_plan(epochs, completed_epochs, global_step, steps_per_epoch):
    """The ``model.fit`` calls that finish a run: ``[(epochs, initial_epoch, steps_per_epoch)]``.

    A run stopped inside an epoch (SIGTERM checkpoint at ``global_step``) first trains the
    steps left of that epoch, then the remaining full epochs.
    """
    plan = []
    done = global_step - completed_epochs * steps_per_epoch
    if done >= steps_per_epoch:  # stopped on the last step of an epoch: that epoch is complete
        completed_epochs += done // steps_per_epoch
        done %= steps_per_epoch
    if 0 < done < steps_per_epoch and completed_epochs < epochs:
        plan.append((completed_epochs + 1, completed_epochs, steps_per_epoch - done))
        completed_epochs += 1
    if completed_epochs < epochs:
        plan.append((epochs, completed_epochs, steps_per_epoch))
    return plan


def train(cfg, resume=False, verbose="auto", out_dir=None, overwrite=False, callbacks=()):
    """Train ``cfg`` end to end; returns the final COCO metrics (also written to
    ``<run folder>/eval.json``, with ``run_dir``).

    The run folder (``mgdet.rundir.resolve_run_dir``): ``out_dir`` if given (refused when not
    empty unless ``resume`` or ``overwrite``), else ``cfg.train.out_dir``, else ``runs/<name>``
    or, when that holds an earlier run, the next free ``runs/<name>-2``, ``-3``... A new run
    claims its folder atomically and removes its claim if it fails before writing anything.
    ``resume`` continues a run from its newest intact checkpoint (by default the newest run of
    that name), with its best AP and evaluation history, once the run's config is found to
    match (``mgdet.rundir.check_compatible``; nothing is written before); a finished run is
    not trained again, a larger ``train.epochs`` trains the added epochs. The folder receives
    ``checkpoints/`` (every model and optimizer variable and the epoch, :mod:`mgdet.checkpoint`),
    ``best.weights.h5`` (best AP on the validation split held out of the training images, only
    with ``data.val_fraction > 0``; the eval split never picks it), ``final.weights.h5`` (what
    ``eval`` / ``export`` use by default), ``config.json``, ``eval.json``,
    ``train_state.json``, ``logs/`` (TensorBoard: losses, lr, positives, AP) and the manifest
    ``mgdet_run.json`` (what was written, for ``--overwrite``).

    Raises:
      mgdet.faults.TrainingDiverged: a non-finite loss or weights; nothing of that step or later
        is saved, the last finite checkpoint stays.
      mgdet.faults.TrainingPreempted: SIGTERM; a checkpoint was written at the step boundary.
      mgdet.rundir.ResumeError: ``resume`` of a run this config does not continue, or of a
        finished run.
      KeyboardInterrupt: Ctrl-C; its message says which checkpoint, if any, is kept.
    """
    strategy = build_strategy(cfg.train)  # first: multi_worker must precede other TF ops
    check_files(cfg)  # before any work: a missing ImageNet file says how to make it
    chief = distributed.is_chief(strategy)
    chief_dir = None
    if chief or resume:  # other workers only read the chief's checkpoint (and never clear it)
        chief_dir = rundir.resolve_run_dir(cfg.name, out_dir or cfg.train.out_dir, resume=resume,
                                           overwrite=overwrite and chief)
    if resume:
        rundir.check_resumable(chief_dir)
    out_dir = distributed.write_dir(chief_dir, strategy)  # a temporary folder on other workers
    try:
        return _train(cfg, strategy, chief, chief_dir, out_dir, resume, verbose, callbacks)
    except BaseException:
        if chief and not resume:
            rundir.release(out_dir)  # a run that wrote nothing leaves no folder behind
        raise


def _train(cfg, strategy, chief, chief_dir, out_dir, resume, verbose, callbacks):
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.precision != "float32":
        cpu.warn_if_slow_bf16(cfg.train.precision, bool(tf.config.list_physical_devices("GPU")))
        keras.mixed_precision.set_global_policy(cfg.train.precision)
    sharding = cfg.data.worker_sharding
    worker = distributed.input_shard(strategy) if sharding == "files" else None
    train_ds, eval_ds, class_names, gt_coco, steps_per_epoch = build_datasets(cfg, worker)
    if resume:
        rundir.check_compatible(chief_dir, cfg.to_dict(), class_names, steps_per_epoch)
    train_ds = distributed.shard(train_ds, strategy, sharding)
    total_steps = steps_per_epoch * cfg.train.epochs
    with strategy.scope():
        model = build_model(cfg, class_names=class_names)
        optimizer = build_optimizer(cfg.train, total_steps)
        model.compile(optimizer=optimizer, jit_compile=cfg.train.jit_compile)
        model.optimizer.build(model.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    ckpt = checkpoint.training_checkpoint(model, model.optimizer, epoch_var)
    if resume:  # every worker restores the chief's checkpoint
        latest = checkpoint.restore_newest(ckpt, os.path.join(chief_dir, CHECKPOINT_DIR))
        print(f"resumed from {latest}: epoch {int(epoch_var.numpy())}, "
              f"step {int(optimizer.iterations.numpy())}")
    elif cfg.model.init_from:  # fine-tuning; a resumed run has its own weights
        kept = transfer.init_from(model, cfg.model.init_from)
        print(f"initialized from {cfg.model.init_from}"
              + (f" (class head re-initialized for {len(class_names)} classes)" if kept else ""))
    completed = int(epoch_var.numpy())
    plan = fit_plan(cfg.train.epochs, completed, int(optimizer.iterations.numpy()),
                    steps_per_epoch)
    if resume:
        _check_not_finished(chief_dir, completed, plan, cfg.train.epochs)
    # the first output: from here on the folder is this run's (nothing is written before)
    write_json(rundir.output(out_dir, "config.json"),
               {**cfg.to_dict(), "class_names": class_names})
    rundir.update_manifest(out_dir, steps_per_epoch=steps_per_epoch)
    manager = tf.train.CheckpointManager(ckpt, rundir.output(out_dir, CHECKPOINT_DIR),
                                         max_to_keep=2)
    guard = faults.RunGuard(steps_per_epoch, lambda: save_checkpoint(manager, optimizer))
    logs = rundir.output(out_dir, "logs")
    writer = tf.summary.create_file_writer(os.path.join(logs, "eval"))
    val = build_eval_dataset(cfg, split="val") if cfg.data.val_fraction and chief else None
    eval_cb = EvalCallback(cfg.train.eval_every, cfg.train.epochs, eval_ds, gt_coco, writer,
                           out_dir, guard, state=rundir.load_state(out_dir, up_to_epoch=completed),
                           val=val)
    # Order matters: the guard first (it stops the run before anything is saved), evaluation
    # before the checkpoint (a run killed between them redoes that epoch and its evaluation).
    all_callbacks = [guard, LearningRateLogger(), eval_cb,
                     CheckpointCallback(manager, epoch_var, guard), data_stats.StatsCallback(),
                     keras.callbacks.TensorBoard(logs, update_freq="epoch", write_graph=False),
                     *callbacks]
    all_callbacks = distributed.chief_only(all_callbacks, strategy,
                                           (EvalCallback, data_stats.StatsCallback,
                                            keras.callbacks.TensorBoard))
    verbose = verbose if chief else 0  # one progress bar
    start = time.perf_counter()
    try:
        with guard.catch_sigterm():
            for epochs, initial_epoch, steps in plan:
                # each fit reads a new iterator: the stream from the step it starts at
                step = int(optimizer.iterations.numpy())
                if step:
                    train_ds = distributed.shard(
                        build_train_dataset(cfg, get_source(cfg.data, cfg.model.image_size),
                                            worker, step), strategy, sharding)
                model.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch,
                          steps_per_epoch=steps, callbacks=all_callbacks, verbose=verbose,
                          shuffle=False)
                if guard.stop is not None:
                    break
    except KeyboardInterrupt:
        latest = manager.latest_checkpoint
        raise KeyboardInterrupt(
            f"checkpoint {latest} (epoch {int(epoch_var.numpy())}) is kept; continue with "
            f"--resume --out-dir {out_dir}" if latest else
            f"no checkpoint was written yet (the first is written at the end of epoch "
            f"{completed + 1}); start the run again") from None
    train_seconds = time.perf_counter() - start
    if guard.stop is not None:
        _raise_stopped(guard.stop, cfg, out_dir, manager)
    if not chief:  # evaluation and outputs are the chief's
        return {"train_seconds": train_seconds, "steps": int(optimizer.iterations.numpy())}
    atomic_save_weights(model, rundir.output(out_dir, FINAL_WEIGHTS))
    if eval_cb.last is not None and eval_cb.last[0] == cfg.train.epochs:
        metrics = eval_cb.last[1]  # the last epoch was just evaluated with these weights
    else:
        metrics = evaluate(model, eval_ds, gt_coco, per_class=True)
    result = {**_scalars(metrics), "per_class": metrics["per_class"],
              "train_seconds": train_seconds, "epochs": cfg.train.epochs,
              "steps": int(optimizer.iterations.numpy()), "strategy": cfg.assign.strategy,
              "history": eval_cb.history, "best_AP": eval_cb.best,
              "best_epoch": eval_cb.best_epoch, "best_on": "val" if val else None,
              "run_dir": out_dir}
    write_json(rundir.output(out_dir, "eval.json"), result)
    print(format_table({k: v for k, v in metrics.items() if k != "per_class"},  # in eval.json
                       title=f"{cfg.name}: COCO metrics on {metrics.get('num_images')} "
                             f"held-out images (%)"))
    best = "best.weights.h5 (best validation AP), " if val else ""
    print(f"outputs in {os.path.abspath(out_dir)}: final.weights.h5, {best}eval.json, "
          "checkpoints/, logs/ (TensorBoard)")
    return result


def _check_not_finished(run_dir, completed, plan, epochs):
    """Raise ``ResumeError`` when a resumed run has nothing left to train and its outputs are
    written (``--resume`` must not overwrite them), or is past ``epochs``."""
    if completed > epochs:
        raise rundir.ResumeError(f"--resume: the run in {run_dir} has trained {completed} "
                                 f"epochs, more than train.epochs {epochs}: pass --epochs "
                                 f"{completed} or more")
    if not plan and os.path.isfile(os.path.join(run_dir, FINAL_WEIGHTS)):
        raise rundir.ResumeError(f"--resume: the run in {run_dir} is finished ({epochs} epochs; "
                                 "final.weights.h5 and eval.json are written); nothing was "
                                 "changed: to train more epochs pass a larger --epochs")


def _raise_stopped(stop, cfg, out_dir, manager):
    """Print where the outputs are and raise the ``TrainingStopped`` of ``stop``."""
    hint = f"the same command with --resume --out-dir {out_dir}"
    message = faults.stop_message(stop, out_dir, manager.latest_checkpoint, hint)
    print(f"outputs in {os.path.abspath(out_dir)}: checkpoints/ "
          f"(last: {manager.latest_checkpoint}), logs/")
    if stop["reason"] == "sigterm":
        raise faults.TrainingPreempted(message)
    raise faults.TrainingDiverged(message)

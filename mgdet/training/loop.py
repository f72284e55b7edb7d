"""Training: the paper's recipe around ``model.fit``, with evaluation, TensorBoard logs, atomic
checkpoints and resumption. Run folders and the resumed state: :mod:`mgdet.training.rundir`;
stopping on a non-finite loss or SIGTERM: :mod:`mgdet.training.faults`; the callbacks:
:mod:`mgdet.training.callbacks`.

    from mgdet.config import load_config
    from mgdet.training.loop import train
    metrics = train(load_config("configs/default.yaml"))
"""
import os
import time

import keras
import tensorflow as tf

from mgdet.config import check_files
from mgdet.data import get_source, stats
from mgdet.data.datasets import build_datasets, build_eval_dataset, build_train_dataset
from mgdet.evaluation.coco import evaluate, format_table
from mgdet.models.build import build_model
from mgdet.training import checkpoint, cpu, distributed, faults, rundir, transfer
from mgdet.training.callbacks import (CheckpointCallback, EvalCallback, LearningRateLogger,
                                      atomic_save_weights, save_checkpoint, scalars)
from mgdet.training.optim import build_optimizer


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

    The run folder (``mgdet.training.rundir.resolve_run_dir``): ``out_dir`` if given (refused
    when not empty unless ``resume`` or ``overwrite``), else ``cfg.train.out_dir``, else
    ``runs/<name>`` or, when that holds an earlier run, the next free ``runs/<name>-2``,
    ``-3``... A new run claims its folder atomically and removes its claim if it fails before
    writing anything. ``resume`` continues a run from its newest intact checkpoint (by default
    the newest run of that name), with its best AP and evaluation history, once the run's
    config is found to match (``mgdet.training.rundir.check_compatible``; nothing is written
    before); a finished run is not trained again, a larger ``train.epochs`` trains the added
    epochs. The folder receives ``checkpoints/`` (every model and optimizer variable and the
    epoch, :mod:`mgdet.training.checkpoint`), ``best.weights.h5`` (best AP on the validation split held out of the training images, only
    with ``data.val_fraction > 0``; the eval split never picks it), ``final.weights.h5`` (what
    ``eval`` / ``export`` use by default), ``config.json``, ``eval.json``,
    ``train_state.json``, ``logs/`` (TensorBoard: losses, lr, positives, AP) and the manifest
    ``mgdet_run.json`` (what was written, for ``--overwrite``, and the precision trained in).

    ``train.precision`` sets Keras' global policy for the run, and the policy found before is
    set back when it ends (``auto``: resolved on this machine,
    :func:`mgdet.training.cpu.resolve_precision`); the start prints one line
    ``precision: <policy> (<why>)``.

    Raises:
      mgdet.training.faults.TrainingDiverged: a non-finite loss or weights; nothing of that step
        or later is saved, the last finite checkpoint stays.
      mgdet.training.faults.TrainingPreempted: SIGTERM; a checkpoint was written at the step
        boundary.
      mgdet.training.rundir.ResumeError: ``resume`` of a run this config does not continue, or of a
        finished run.
      KeyboardInterrupt: Ctrl-C; its message says which checkpoint, if any, is kept.
    """
    strategy = distributed.build_strategy(cfg.train)  # first: multi_worker must precede other TF ops
    check_files(cfg)  # before any work: a missing ImageNet file says how to make it
    chief = distributed.is_chief(strategy)
    chief_dir = None
    if chief or resume:  # other workers only read the chief's checkpoint (and never clear it)
        chief_dir = rundir.resolve_run_dir(cfg.name, out_dir or cfg.train.out_dir, resume=resume,
                                           overwrite=overwrite and chief)
    if resume:
        rundir.check_resumable(chief_dir)
    out_dir = distributed.write_dir(chief_dir, strategy)  # a temporary folder on other workers
    policy = keras.mixed_precision.global_policy()
    try:
        return _train(cfg, strategy, chief, chief_dir, out_dir, resume, verbose, callbacks)
    except BaseException:
        if chief and not resume:
            rundir.release(out_dir)  # a run that wrote nothing leaves no folder behind
        raise
    finally:
        keras.mixed_precision.set_global_policy(policy)  # the run's precision was the run's


def _train(cfg, strategy, chief, chief_dir, out_dir, resume, verbose, callbacks):
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)
    # auto resolves on this machine; always set, so that no earlier policy of this process stays
    precision = cpu.choose_precision(cfg.train.precision)  # (policy, reason)
    keras.mixed_precision.set_global_policy(precision[0])
    print(cpu.precision_line(*precision))
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
        latest = checkpoint.restore_newest(ckpt, os.path.join(chief_dir, rundir.CHECKPOINT_DIR))
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
    rundir.write_json(rundir.output(out_dir, rundir.RUN_CONFIG),
                      {**cfg.to_dict(), "class_names": class_names})
    rundir.update_manifest(out_dir, steps_per_epoch=steps_per_epoch,
                           precision=_precision_history(out_dir, precision,
                                                        int(optimizer.iterations.numpy())))
    manager = tf.train.CheckpointManager(ckpt, rundir.output(out_dir, rundir.CHECKPOINT_DIR),
                                         max_to_keep=2)
    guard = faults.RunGuard(steps_per_epoch, lambda: save_checkpoint(manager, optimizer))
    logs = rundir.output(out_dir, rundir.LOGS_DIR)
    writer = tf.summary.create_file_writer(os.path.join(logs, "eval"))
    val = build_eval_dataset(cfg, split="val") if cfg.data.val_fraction and chief else None
    eval_cb = EvalCallback(cfg.train.eval_every, cfg.train.epochs, eval_ds, gt_coco, writer,
                           out_dir, guard, state=rundir.load_state(out_dir, up_to_epoch=completed),
                           val=val)
    # Order matters: the guard first (it stops the run before anything is saved), evaluation
    # before the checkpoint (a run killed between them redoes that epoch and its evaluation).
    all_callbacks = [guard, LearningRateLogger(), eval_cb,
                     CheckpointCallback(manager, epoch_var, guard), stats.StatsCallback(),
                     keras.callbacks.TensorBoard(logs, update_freq="epoch", write_graph=False),
                     *callbacks]
    all_callbacks = distributed.chief_only(all_callbacks, strategy,
                                           (EvalCallback, stats.StatsCallback,
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
    atomic_save_weights(model, rundir.output(out_dir, rundir.FINAL_WEIGHTS))
    if eval_cb.last is not None and eval_cb.last[0] == cfg.train.epochs:
        metrics = eval_cb.last[1]  # the last epoch was just evaluated with these weights
    else:
        metrics = evaluate(model, eval_ds, gt_coco, per_class=True)
    result = {**scalars(metrics), "per_class": metrics["per_class"],
              "train_seconds": train_seconds, "epochs": cfg.train.epochs,
              "steps": int(optimizer.iterations.numpy()), "strategy": cfg.assign.strategy,
              "history": eval_cb.history, "best_AP": eval_cb.best,
              "best_epoch": eval_cb.best_epoch, "best_on": "val" if val else None,
              "run_dir": out_dir}
    rundir.write_json(rundir.output(out_dir, rundir.EVAL_FILE), result)
    print(format_table({k: v for k, v in metrics.items() if k != "per_class"},  # in eval.json
                       title=f"{cfg.name}: COCO metrics on {metrics.get('num_images')} "
                             f"held-out images (%)"))
    best = "best.weights.h5 (best validation AP), " if val else ""
    print(f"outputs in {os.path.abspath(out_dir)}: final.weights.h5, {best}eval.json, "
          "checkpoints/, logs/ (TensorBoard)")
    return result


def _precision_history(run_dir, precision, step):
    """The manifest's ``precision`` list of ``run_dir`` with ``precision`` ``(policy, reason)``
    from global ``step`` on (:func:`mgdet.training.rundir.precision_history`); say so when a
    resumed run goes on in another policy than it trained in."""
    before = (rundir.read_manifest(run_dir) or {}).get("precision") or []
    history = rundir.precision_history(before, *precision, step)
    earlier = [h for h in history if h["from_step"] < step]
    if earlier and earlier[-1]["policy"] != precision[0]:
        print(f"precision: this run trained in {earlier[-1]['policy']} up to step {step} "
              f"({earlier[-1]['reason']}); it goes on in {precision[0]}")
    return history


def _check_not_finished(run_dir, completed, plan, epochs):
    """Raise ``ResumeError`` when a resumed run has nothing left to train and its outputs are
    written (``--resume`` must not overwrite them), or is past ``epochs``."""
    if completed > epochs:
        raise rundir.ResumeError(f"--resume: the run in {run_dir} has trained {completed} "
                                 f"epochs, more than train.epochs {epochs}: pass --epochs "
                                 f"{completed} or more")
    if not plan and os.path.isfile(os.path.join(run_dir, rundir.FINAL_WEIGHTS)):
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

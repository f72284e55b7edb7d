"""Training: the paper's recipe around ``model.fit``, with evaluation, TensorBoard logs, atomic
checkpoints and resumption.

    from mgdet.config import load_config
    from mgdet.train import train
    metrics = train(load_config("configs/default.yaml"))
"""
import json
import os
import time

import keras
import tensorflow as tf

from mgdet import build_model, distributed
from mgdet.data import load_ground_truth, load_source
from mgdet.data import pipeline as data_pipeline
from mgdet.data import stats as data_stats
from mgdet.distributed import build_strategy, split_cpu  # noqa: F401 (re-exported)
from mgdet.evaluation import evaluate, format_table
from mgdet.optim import build_optimizer

CHECKPOINT_DIR = "checkpoints"
BEST_WEIGHTS = "best.weights.h5"
FINAL_WEIGHTS = "final.weights.h5"


def atomic_save_weights(model, path):
    """Write ``model``'s weights to ``path`` through a temporary file and an atomic rename."""
    tmp = path + ".tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)


def json_safe(value):
    """``value`` with NaN (e.g. APs when there are no small objects) as None: strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / TF scalars
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _write_json(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(json_safe(payload), f, indent=2)
    os.replace(tmp, path)


class CheckpointCallback(keras.callbacks.Callback):
    """Saves model + optimizer state + epoch at each epoch end with ``tf.train.CheckpointManager``
    (TF writes checkpoint files under temporary names and renames them, and updates the
    ``checkpoint`` index atomically), so an interrupted run never leaves a broken checkpoint."""

    def __init__(self, manager, epoch_var):
        super().__init__()
        self.manager, self.epoch_var = manager, epoch_var

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_var.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


class EvalCallback(keras.callbacks.Callback):
    """COCO evaluation every ``every`` epochs: logs AP to TensorBoard, keeps the best weights."""

    def __init__(self, every, dataset, gt_coco, writer, out_dir, label_to_category=None):
        super().__init__()
        self.every, self.dataset, self.gt_coco = every, dataset, gt_coco
        self.writer, self.out_dir, self.label_to_category = writer, out_dir, label_to_category
        self.best = -1.0
        self.history = []
        self.last = None  # (epoch, metrics) of the latest evaluation

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == self.params.get("epochs")
        if not self.every or ((epoch + 1) % self.every and not last):
            return
        metrics = evaluate(self.model, self.dataset, self.gt_coco, self.label_to_category,
                           progress=False)
        self.last = (epoch + 1, metrics)
        self.history.append({"epoch": epoch + 1, **_scalars(metrics)})
        with self.writer.as_default(step=epoch + 1):
            for key, value in _scalars(metrics).items():
                tf.summary.scalar(f"eval/{key}", value)
        print(f"\nepoch {epoch + 1}: " + ", ".join(
            f"{k} {100 * metrics[k]:.1f}" for k in ("AP", "AP50", "AP75") if k in metrics))
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in _scalars(metrics).items()})
        if metrics.get("AP", -1) > self.best:
            self.best = metrics["AP"]
            atomic_save_weights(self.model, os.path.join(self.out_dir, BEST_WEIGHTS))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the current learning rate to the epoch logs (TensorBoard picks it up)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            opt = self.model.optimizer
            lr = opt.learning_rate
            logs["lr"] = float(lr(opt.iterations) if callable(lr) else lr)


def _scalars(metrics):
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def build_eval_dataset(cfg):
    """Evaluation batches of the eval split and its COCO ground truth."""
    d, m = cfg.data, cfg.model
    eval_src, _ = load_source(d, "eval", image_size=m.image_size)
    eval_ds = data_pipeline.make_dataset(eval_src, m.image_size, cfg.eval.batch_size,
                                         d.max_objects, training=False)
    return eval_ds, load_ground_truth(d, "eval", image_size=m.image_size)


def build_datasets(cfg):
    """Training and evaluation datasets, class names and COCO ground truth of the eval split."""
    d, m = cfg.data, cfg.model
    train_src, class_names = load_source(d, "train", image_size=m.image_size, shuffle=True)
    train_ds = data_pipeline.make_dataset(
        train_src, m.image_size, cfg.train.batch_size, d.max_objects, training=True,
        seed=d.seed, cache=d.cache,
        augment={"max_expand": d.max_expand, "expand": d.max_expand > 1} if d.augment else False)
    eval_ds, gt_coco = build_eval_dataset(cfg)
    return train_ds, eval_ds, class_names, gt_coco


def _count_batches(dataset):
    n = dataset.cardinality()
    if n >= 0:
        return int(n)
    return sum(1 for _ in dataset)


def train(cfg, resume=False, verbose="auto", out_dir=None):
    """Train ``cfg`` end to end; returns the final COCO metrics (also written to
    ``<out_dir>/eval.json``).

    Writes to ``out_dir`` (default ``cfg.out_dir``): ``checkpoints/`` (model, optimizer, epoch;
    resumable), ``best.weights.h5`` (best AP), ``final.weights.h5``, ``config.json``,
    ``logs/`` (TensorBoard: losses, lr, positives per task, AP).
    """
    strategy = build_strategy(cfg.train)  # first: multi_worker must precede other TF ops
    out_dir = out_dir or cfg.out_dir
    chief_dir, out_dir = out_dir, distributed.write_dir(out_dir, strategy)
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.precision != "float32":
        keras.mixed_precision.set_global_policy(cfg.train.precision)
    train_ds, eval_ds, class_names, gt_coco = build_datasets(cfg)
    steps_per_epoch = cfg.train.steps_per_epoch or _count_batches(train_ds)
    if steps_per_epoch < 1:
        raise ValueError("the training set yields no full batch: lower train.batch_size or add "
                         "images")
    if cfg.train.steps_per_epoch:
        train_ds = train_ds.repeat()
    train_ds = distributed.shard(train_ds, strategy)
    total_steps = steps_per_epoch * cfg.train.epochs
    with strategy.scope():
        model = build_model(cfg, num_classes=len(class_names))
        optimizer = build_optimizer(cfg.train, total_steps)
        model.compile(optimizer=optimizer, jit_compile=cfg.train.jit_compile)
        optimizer.build(model.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    _write_json(os.path.join(out_dir, "config.json"), {**cfg.to_dict(), "class_names": class_names})
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(out_dir, CHECKPOINT_DIR), max_to_keep=2)
    initial_epoch = 0
    if resume:  # every worker restores the chief's checkpoint
        latest = tf.train.latest_checkpoint(os.path.join(chief_dir, CHECKPOINT_DIR))
        if not latest:
            raise FileNotFoundError(f"--resume: no checkpoint under "
                                    f"{os.path.join(chief_dir, CHECKPOINT_DIR)}; train "
                                    "without --resume first")
        ckpt.restore(latest).assert_existing_objects_matched()
        initial_epoch = int(epoch_var.numpy())
        print(f"resumed from {latest}: epoch {initial_epoch}, "
              f"step {int(optimizer.iterations.numpy())}")
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "logs", "eval"))
    eval_cb = EvalCallback(cfg.train.eval_every, eval_ds, gt_coco, writer, out_dir)
    callbacks = [LearningRateLogger(), CheckpointCallback(manager, epoch_var), eval_cb,
                 data_stats.StatsCallback(),
                 keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), update_freq="epoch",
                                             write_graph=False)]
    callbacks = distributed.chief_only(callbacks, strategy, (EvalCallback, data_stats.StatsCallback,
                                                             keras.callbacks.TensorBoard))
    chief = distributed.is_chief(strategy)
    verbose = verbose if chief else 0  # one progress bar
    start = time.perf_counter()
    if initial_epoch < cfg.train.epochs:
        model.fit(train_ds, epochs=cfg.train.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose,
                  shuffle=False)
    train_seconds = time.perf_counter() - start
    if not chief:  # evaluation and outputs are the chief's
        return {"train_seconds": train_seconds, "steps": int(optimizer.iterations.numpy())}
    atomic_save_weights(model, os.path.join(out_dir, FINAL_WEIGHTS))
    if eval_cb.last is not None and eval_cb.last[0] == cfg.train.epochs:
        metrics = eval_cb.last[1]  # the last epoch was just evaluated with these weights
    else:
        metrics = evaluate(model, eval_ds, gt_coco)
    result = {**_scalars(metrics), "train_seconds": train_seconds, "epochs": cfg.train.epochs,
              "steps": int(optimizer.iterations.numpy()), "strategy": cfg.assign.strategy,
              "history": eval_cb.history}
    _write_json(os.path.join(out_dir, "eval.json"), result)
    print(format_table(metrics, title=f"{cfg.name}: COCO metrics on {metrics.get('num_images')} "
                                      f"held-out images (%)"))
    return result

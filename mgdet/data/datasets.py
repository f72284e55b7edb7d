"""The datasets of a config: training batches (a replayable stream), evaluation batches with
their COCO ground truth, and the steps per epoch (:func:`build_datasets`)."""
import numpy as np
import tensorflow as tf

from mgdet.config import ConfigError
from mgdet.data import get_source, pipeline


def build_eval_dataset(cfg, source=None, split="eval"):
    """Evaluation batches of ``split`` ("eval", or "val": the images held out of the training
    split by ``data.val_fraction``) and its COCO ground truth."""
    d, m = cfg.data, cfg.model
    source = source or get_source(d, image_size=m.image_size)
    eval_ds = pipeline.make_dataset(source.dataset(split), m.image_size, cfg.eval.batch_size,
                                    d.max_objects, training=False, name=split)
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
        return pipeline.make_dataset(examples, m.image_size, batch, d.max_objects, repeat=True,
                                     **kwargs)
    stream = pipeline.Stream(at, len(share), int(start_step) * batch // count)
    return pipeline.make_dataset(stream, m.image_size, batch, d.max_objects, **kwargs)


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

    ``worker``: ``(index, count)`` from :func:`mgdet.training.distributed.input_shard` to read
    only this worker's share of the training images, every ``count``-th one from ``index``,
    chosen before decoding (``data.worker_sharding: files``); the batches keep the global batch
    size and the steps per epoch those of the whole split.
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

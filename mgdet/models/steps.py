"""What a detector's constructor checks and what its train / test steps do to a batch and to
their logs: arguments checked against the config's ranges (:func:`check_arguments`), objects
that cannot be trained on dropped (:func:`drop_invalid_objects`), logs made reducible across
workers (:func:`reducible_logs`, :func:`is_multi_worker`)."""
import tensorflow as tf

from mgdet.config import check_value

# Detector arguments -> the config keys that declare their ranges (mgdet.config.schema).
ARGUMENT_KEYS = {
    "num_classes": "model.num_classes", "image_size": "model.image_size", "width": "model.width",
    "qfl_beta": "loss.qfl_beta", "focal_alpha": "loss.focal_alpha",
    "focal_gamma": "loss.focal_gamma", "bl1_alpha": "loss.bl1_alpha",
    "bl1_gamma": "loss.bl1_gamma", "bl1_beta": "loss.bl1_beta",
    "score_threshold": "eval.score_threshold", "nms_iou": "eval.nms_iou",
    "max_detections": "eval.max_detections",
}


def check_arguments(**arguments):
    """Refuse a detector argument outside its config key's range (``ValueError``, a
    ConfigError, naming the argument and the value)."""
    for name, value in arguments.items():
        if value is None:  # an unset Optional passes the config's check; not an argument's
            raise ValueError(f"{name} must be given, got None")
        check_value(ARGUMENT_KEYS[name], value, name)


def drop_invalid_objects(targets, num_classes):
    """The objects of a batch's targets that cannot be trained on, dropped as mgdet's input
    pipeline drops them from files (:func:`mgdet.data.pipeline.sanitize`): a box with a
    non-finite coordinate or without area once clipped to the image, or a label outside
    ``[0, num_classes)``. Boxes are clipped to the image. Plain tensor ops, so it runs in a
    ``tf.function``, an XLA-compiled step and under ``tf.distribute`` alike (none of which can
    raise from inside a compiled step).

    Args:
      targets: the detector's targets (:func:`mgdet.ops.targets.standardize_targets`): ``boxes``
        [B, M, 4] relative xyxy, ``labels`` int32 [B, M], ``valid`` bool [B, M] (+ ``ignore``).
      num_classes: C.
    Returns:
      ``(targets, dropped)``: the same targets with those objects made padding (``valid``
      False, box and label 0), and int32 the number of valid objects dropped.
    """
    boxes, labels, valid = targets["boxes"], targets["labels"], targets["valid"]
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    clipped = tf.clip_by_value(tf.where(finite[..., None], boxes, 0.0), 0.0, 1.0)
    good = (finite & (clipped[..., 2] > clipped[..., 0]) & (clipped[..., 3] > clipped[..., 1])
            & (labels >= 0) & (labels < num_classes))
    keep = valid & good
    out = dict(targets, boxes=tf.where(keep[..., None], clipped, 0.0),
               labels=tf.where(keep, labels, 0), valid=keep)
    if "ignore" in targets:
        out["ignore"] = tf.cast(targets["ignore"], tf.bool) & keep
    return out, tf.reduce_sum(tf.cast(valid & ~good, tf.int32))


def is_multi_worker(strategy):
    """True for a MultiWorkerMirroredStrategy over more than one worker (the test
    :mod:`mgdet.training.distributed` uses too)."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())  # noqa: SLF001 (no public accessor)


def reducible_logs(logs):
    """``logs`` (a train/test step's scalar metrics) as Keras can reduce them across workers.

    Keras 3 (checked on 3.15) reduces a step's per-replica logs across workers with
    ``strategy.reduce("MEAN", value, axis=0)``, which fails on scalars; inside a multi-worker
    replica context each scalar becomes shape [1] (the mean over replicas is then a scalar
    again). Unchanged elsewhere.
    """
    if not is_multi_worker(tf.distribute.get_strategy()):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}

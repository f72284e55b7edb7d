"""Optimizer and learning-rate schedule of the paper's recipe.

SGD with momentum and *coupled* L2 weight decay (the gradient gets ``decay * w`` before momentum,
as PyTorch's ``SGD(weight_decay=...)`` of the authors' code does), applied to convolution and
dense kernels only: biases and batch-norm parameters are not decayed. Keras's own
``weight_decay`` argument is decoupled (``w -= lr * decay * w`` outside momentum), which with
momentum 0.9 decays ~10x less than the paper, so it is not used.

Schedule: linear warm-up from ``warmup_lr`` to ``lr`` over ``warmup_steps`` iterations, then
cosine decay to ``min_lr`` (``keras.optimizers.schedules.CosineDecay`` with warm-up). The
warm-up takes at most a third of the run (``total_steps // 3``; logged when shortened), so a
short run on a small dataset still decays.

``train.clip_norm`` (None by default) clips the global norm of all gradients (Keras's
``global_clipnorm``; for SGD the L2 term is added first, so it is part of the clipped norm).
"""
import logging

import keras
import tensorflow as tf

log = logging.getLogger("mgdet.training.optim")

DECAYED_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


def is_decayed(variable):
    """Weight decay applies to kernels only, not to biases or batch-norm gamma/beta."""
    return variable.name.split("/")[-1].split(":")[0] in DECAYED_NAMES


@keras.saving.register_keras_serializable(package="mgdet")
class SGDWithL2(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` whose gradients get ``l2 * w`` added for decayed variables."""

    def __init__(self, l2=5e-4, **kwargs):
        super().__init__(**kwargs)
        self.l2 = float(l2)

    def apply(self, grads, trainable_variables=None):
        variables = trainable_variables if trainable_variables is not None else self._trainable_variables
        if self.l2:
            # Under tf.distribute the replicas' gradients are summed: add each replica's share.
            ctx = tf.distribute.get_replica_context()
            share = self.l2 / (ctx.num_replicas_in_sync if ctx is not None else 1)
            grads = [g if g is None or not is_decayed(v) else g + share * tf.cast(v, g.dtype)
                     for g, v in zip(grads, variables)]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def learning_rate_schedule(lr, total_steps, warmup_steps=500, warmup_lr=1e-6, min_lr=1e-6):
    """Linear warm-up ``warmup_lr -> lr`` over ``min(warmup_steps, total_steps // 3)`` steps,
    then cosine ``lr -> min_lr`` at ``total_steps``; step ``s`` of the decay (``s = 0`` at the
    warm-up's end, ``D = total_steps - warm-up``) has ``min_lr + (lr - min_lr) (1 + cos(pi s /
    D)) / 2``."""
    total_steps = int(total_steps)
    longest = total_steps // 3
    if warmup_steps > longest:
        log.info("train.warmup_steps %d shortened to %d: warm-up takes at most a third of the "
                 "run's %d steps", warmup_steps, longest, total_steps)
    warmup_steps = int(min(warmup_steps, longest))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=warmup_lr if warmup_steps else lr,
        decay_steps=max(total_steps - warmup_steps, 1),
        alpha=min(min_lr / lr, 1.0),
        warmup_target=lr if warmup_steps else None,
        warmup_steps=warmup_steps)


def build_optimizer(train_cfg, total_steps):
    """The optimizer of a :class:`mgdet.config.TrainConfig`: the paper's SGD (``sgd``), or
    ``keras.optimizers.AdamW`` (``adamw``: decoupled decay, same kernels-only exclusion), which
    trains the small from-scratch CPU default much faster. Same warm-up + cosine schedule."""
    schedule = learning_rate_schedule(train_cfg.lr, total_steps, train_cfg.warmup_steps,
                                      train_cfg.warmup_lr, train_cfg.min_lr)
    if train_cfg.optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=train_cfg.weight_decay,
                                     global_clipnorm=train_cfg.clip_norm)
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        return opt
    return SGDWithL2(l2=train_cfg.weight_decay, learning_rate=schedule,
                     momentum=train_cfg.momentum, global_clipnorm=train_cfg.clip_norm)

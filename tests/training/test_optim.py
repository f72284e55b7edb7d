"""The optimizer recipe against numpy written from its formulas: the warm-up + cosine learning
rate, and SGD's coupled L2 term on kernels only, with momentum."""
import logging
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mgdet.config import load_config
from mgdet.training.optim import SGDWithL2, build_optimizer, is_decayed, learning_rate_schedule
from tests.batches import on_two_replicas


def lr_formula(step, lr, total, warmup, warmup_lr, min_lr):
    """Linear ``warmup_lr -> lr`` over ``warmup`` steps, then half a cosine ``lr -> min_lr``
    over the remaining ``total - warmup`` steps (flat at ``min_lr`` after them)."""
    if step < warmup:
        return warmup_lr + (lr - warmup_lr) * step / warmup
    t = min(step - warmup, total - warmup) / (total - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t))


@pytest.mark.parametrize("lr,total,warmup,warmup_lr,min_lr", [
    (0.01, 1000, 100, 1e-6, 1e-5), (0.003, 56, 20, 1e-4, 3e-5), (0.1, 7, 3, 0.0, 0.0)])
def test_learning_rate_at_start_end_of_warmup_middle_and_last_step(lr, total, warmup,
                                                                   warmup_lr, min_lr):
    schedule = learning_rate_schedule(lr, total, warmup, warmup_lr, min_lr)
    warmup = min(warmup, total // 3)  # the documented cap: at most a third of the run
    middle = warmup + (total - warmup) // 2
    steps = [0, warmup // 2, warmup, middle, total - 1, total, total + 5]
    got = [float(schedule(s)) for s in steps]
    want = [lr_formula(s, lr, total, warmup, warmup_lr, min_lr) for s in steps]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    # the landmarks themselves, by hand
    assert got[0] == pytest.approx(warmup_lr, abs=1e-9)
    assert got[2] == pytest.approx(lr, rel=1e-6)
    assert got[5] == pytest.approx(min_lr, abs=1e-9)


def test_learning_rate_without_warmup_and_with_warmup_longer_than_the_run():
    schedule = learning_rate_schedule(0.02, 10, warmup_steps=0, min_lr=0.002)
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 5, 10)],
                               [lr_formula(s, 0.02, 10, 0, 0.02, 0.002) for s in (0, 5, 10)],
                               rtol=1e-6)
    # warm-up cut to a third of the run (4 // 3 = 1 step): lr at step 1, then the cosine
    schedule = learning_rate_schedule(0.02, 4, warmup_steps=50, warmup_lr=0.0, min_lr=0.001)
    np.testing.assert_allclose([float(schedule(s)) for s in range(5)],
                               [lr_formula(s, 0.02, 4, 1, 0.0, 0.001) for s in range(5)],
                               rtol=1e-6)
    assert float(schedule(1)) == pytest.approx(0.02, rel=1e-6)


def test_a_shortened_warmup_is_logged_once_with_its_numbers(caplog):
    with caplog.at_level(logging.INFO, logger="mgdet.training.optim"):
        learning_rate_schedule(0.02, 4, warmup_steps=50)
        learning_rate_schedule(0.02, 9, warmup_steps=3)  # exactly a third: kept as it is
    assert [r.getMessage() for r in caplog.records] == [
        "train.warmup_steps 50 shortened to 1: warm-up takes at most a third of the run's 4 steps"]


def _layers():
    """A conv (kernel, bias), a depthwise conv, a batch norm and a dense layer, built."""
    x = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3, name="conv")
    depthwise = keras.layers.DepthwiseConv2D(3, use_bias=False, name="dw")
    bn = keras.layers.BatchNormalization(name="bn")
    dense = keras.layers.Dense(2, name="dense")
    y = dense(keras.layers.Flatten()(bn(depthwise(conv(x)))))
    return keras.Model(x, y)


def test_only_kernels_are_decayed():
    model = _layers()
    decayed = sorted(v.path for v in model.trainable_variables if is_decayed(v))
    assert decayed == ["conv/kernel", "dense/kernel", "dw/kernel"]
    kept = sorted(v.path for v in model.trainable_variables if not is_decayed(v))
    assert kept == ["bn/beta", "bn/gamma", "conv/bias", "dense/bias"]
    # TF's own variable names carry the scope and the output index: the last part counts
    for name, decayed in (("block/conv/kernel", True), ("block/dw/depthwise_kernel", True),
                          ("block/kernel_scale/bias", False), ("block/bn/gamma", False)):
        assert is_decayed(tf.Variable(1.0, name=name)) == decayed, name


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_two_sgd_steps_equal_numpy_with_l2_on_kernels_only(momentum):
    """Configured through ``build_optimizer`` (the training recipe's optimizer): constant lr,
    ``train.momentum`` and ``train.weight_decay`` as given."""
    lr, l2 = 0.1, 0.05
    cfg = load_config(None, ["train.optimizer=sgd", f"train.lr={lr}", f"train.min_lr={lr}",
                             "train.warmup_steps=0", f"train.momentum={momentum}",
                             f"train.weight_decay={l2}"])
    opt = build_optimizer(cfg.train, total_steps=10)
    assert isinstance(opt, SGDWithL2) and opt.l2 == l2
    model = _layers()
    rng = np.random.default_rng(0)
    for v in model.trainable_variables:  # non-zero everywhere: the L2 term shows on every entry
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
    variables = model.trainable_variables
    w = [v.numpy().astype(np.float64) for v in variables]
    velocity = [np.zeros_like(x) for x in w]
    for _ in range(2):
        grads = [rng.normal(0, 1, v.shape).astype(np.float32) for v in variables]
        opt.apply_gradients(zip([tf.constant(g) for g in grads], variables))
        for i, v in enumerate(variables):
            g = grads[i] + (l2 * w[i] if is_decayed(v) else 0.0)
            velocity[i] = momentum * velocity[i] - lr * g
            w[i] = w[i] + velocity[i]
    for v, want in zip(variables, w):
        np.testing.assert_allclose(v.numpy(), want, rtol=1e-5, atol=1e-6, err_msg=v.path)


def test_one_sgd_step_by_hand():
    """No momentum, one step: ``w - lr * (g + l2 * w)`` for a kernel, ``w - lr * g`` for a bias."""
    dense = keras.layers.Dense(1, name="dense")
    dense.build((None, 1))
    dense.kernel.assign([[2.0]])
    dense.bias.assign([2.0])
    opt = SGDWithL2(l2=0.5, learning_rate=0.1, momentum=0.0)
    opt.apply_gradients([(tf.constant([[1.0]]), dense.kernel), (tf.constant([1.0]), dense.bias)])
    assert float(dense.kernel[0, 0]) == pytest.approx(2.0 - 0.1 * (1.0 + 0.5 * 2.0))
    assert float(dense.bias[0]) == pytest.approx(2.0 - 0.1 * 1.0)
    # built first, then `apply` without the variables: the built ones, kernel decayed as above
    opt = SGDWithL2(l2=0.5, learning_rate=0.1, momentum=0.0)
    opt.build([dense.kernel, dense.bias])
    opt.apply([tf.constant([[1.0]]), tf.constant([1.0])])
    assert float(dense.kernel[0, 0]) == pytest.approx(1.8 - 0.1 * (1.0 + 0.5 * 1.8))
    assert float(dense.bias[0]) == pytest.approx(1.9 - 0.1 * 1.0)


_TWO_REPLICAS_STEP = r'''
    import keras
    from mgdet.training.optim import SGDWithL2
    with strategy.scope():
        dense = keras.layers.Dense(1)
        dense.build((None, 1))
        dense.kernel.assign([[2.0]])
        dense.bias.assign([2.0])
        opt = SGDWithL2(l2=0.5, learning_rate=0.1, momentum=0.0)
        opt.build(dense.trainable_variables)

    @tf.function
    def step():
        def replica():  # replica 0 has gradient 1, replica 1 gradient 2: 3 summed
            ctx = tf.distribute.get_replica_context()
            g = tf.cast(ctx.replica_id_in_sync_group, tf.float32) + 1.0
            opt.apply([tf.reshape(g, [1, 1]), tf.reshape(g, [1])], dense.trainable_variables)
        strategy.run(replica)

    step()
    print(json.dumps([strategy.num_replicas_in_sync, float(dense.kernel[0, 0]),
                      float(dense.bias[0])]))
'''


def test_l2_enters_once_over_two_replicas():
    """MirroredStrategy on 2 logical CPUs sums the replicas' gradients: each adds half the L2
    term, so a step equals one device's with the summed gradient (3): ``w - lr (3 + l2 w)``. The
    CPU is split before TF starts its devices: the 2-replica step runs in a fresh process."""
    dense = keras.layers.Dense(1)
    dense.build((None, 1))
    dense.kernel.assign([[2.0]])
    dense.bias.assign([2.0])
    opt = SGDWithL2(l2=0.5, learning_rate=0.1, momentum=0.0)
    opt.apply([tf.constant([[3.0]]), tf.constant([3.0])], dense.trainable_variables)
    one_device = [float(dense.kernel[0, 0]), float(dense.bias[0])]
    assert one_device == pytest.approx([2.0 - 0.1 * (3.0 + 0.5 * 2.0), 2.0 - 0.1 * 3.0])
    replicas, kernel, bias = on_two_replicas(_TWO_REPLICAS_STEP)
    assert replicas == 2
    assert [kernel, bias] == pytest.approx(one_device, rel=1e-6)


def test_one_step_runs_no_warmup_and_min_lr_above_lr_keeps_lr():
    schedule = learning_rate_schedule(0.02, 1, warmup_steps=5, warmup_lr=0.001, min_lr=0.001)
    assert float(schedule(0)) == pytest.approx(0.02)  # no room for a warm-up in one step
    assert float(schedule(1)) == pytest.approx(0.001)  # and the decay is over after it
    schedule = learning_rate_schedule(0.02, 10, warmup_steps=0, min_lr=0.05)
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 5, 10)], 0.02, rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_build_optimizer_takes_every_setting_from_the_config(name):
    lr, min_lr, warmup, warmup_lr, decay, total = 0.02, 0.001, 4, 0.0005, 0.01, 20
    cfg = load_config(None, [f"train.optimizer={name}", f"train.lr={lr}", f"train.min_lr={min_lr}",
                             f"train.warmup_steps={warmup}", f"train.warmup_lr={warmup_lr}",
                             f"train.weight_decay={decay}", "train.clip_norm=2.0",
                             "train.momentum=0.8"])
    opt = build_optimizer(cfg.train, total_steps=total)
    model = _layers()
    opt.build(model.trainable_variables)
    assert opt.global_clipnorm == 2.0
    lrs = []
    for step in (0, 2, warmup, 12, total):
        opt.iterations.assign(step)
        lrs.append(float(opt.learning_rate))
    np.testing.assert_allclose(
        lrs, [lr_formula(s, lr, total, warmup, warmup_lr, min_lr) for s in (0, 2, warmup, 12, total)],
        rtol=1e-5)
    if name == "sgd":
        assert type(opt) is SGDWithL2 and opt.l2 == decay and opt.momentum == 0.8
        return
    assert type(opt) is keras.optimizers.AdamW and opt.weight_decay == decay
    # zero gradients: Adam's step is 0, only the decoupled decay moves the kernels
    opt.iterations.assign(0)
    rng = np.random.default_rng(1)
    for v in model.trainable_variables:  # biases and beta too: a decay would show
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
    before = [v.numpy() for v in model.trainable_variables]
    opt.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    for v, w in zip(model.trainable_variables, before):
        want = w * (1 - warmup_lr * decay) if is_decayed(v) else w
        np.testing.assert_allclose(v.numpy(), want, rtol=1e-6, err_msg=v.path)


def test_defaults_are_the_training_configs_and_l2_survives_get_config():
    train = load_config(None, ["train.optimizer=sgd"]).train
    schedule = learning_rate_schedule(train.lr, 2000)
    want = build_optimizer(train, 2000)
    for step in (0, 250, 500, 1500):
        want.iterations.assign(step)
        assert float(schedule(step)) == pytest.approx(float(want.learning_rate), rel=1e-6)
    assert SGDWithL2().l2 == train.weight_decay
    opt = SGDWithL2(l2=0.03, learning_rate=0.1, momentum=0.9)
    assert SGDWithL2.from_config(opt.get_config()).l2 == 0.03

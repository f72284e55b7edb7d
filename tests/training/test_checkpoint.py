"""The training checkpoint holds every variable of the model and the optimizer and restores them
bit for bit; an incomplete or damaged checkpoint is a clear error or skipped (tiny models)."""
import os

import numpy as np
import pytest
import tensorflow as tf

import mgdet
from mgdet.training import checkpoint
from mgdet.config import load_config
from mgdet.training.optim import build_optimizer
from tests.batches import painted_batch

pytestmark = pytest.mark.slow  # fits every detector

DETECTORS = [("fssd", "vgg16"), ("retinanet", "resnet18"), ("rfbnet", "vgg16")]


def _trained(arch, backbone, optimizer="adamw", steps=2):
    """A tiny detector and its optimizer after ``steps`` training steps (so the batch-norm
    statistics and the optimizer's slots differ from their initial values), and its epoch."""
    cfg = load_config("default", [f"model.arch={arch}", f"model.backbone={backbone}",
                                  "model.image_size=64", "model.width=0.125",
                                  f"train.optimizer={optimizer}", "train.warmup_steps=0"])
    model = mgdet.build_model(cfg, num_classes=3)
    opt = build_optimizer(cfg.train, total_steps=10)
    model.compile(optimizer=opt)
    opt.build(model.trainable_variables)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    if steps:
        images, targets = painted_batch(64, 2, 4, 3, seed=1)
        data = tf.data.Dataset.from_tensors((images, targets)).repeat(steps)
        model.fit(data, epochs=1, verbose=0)
        epoch.assign(1)
    return model, opt, epoch


def _state(model, opt, epoch):
    return ([v.numpy() for v in model.variables] + [v.numpy() for v in opt.variables]
            + [epoch.numpy()])


@pytest.mark.parametrize("arch,backbone", DETECTORS)
def test_checkpoint_restores_every_model_and_optimizer_variable_bit_for_bit(tmp_path, arch,
                                                                            backbone):
    model, opt, epoch = _trained(arch, backbone)
    fresh, fresh_opt, fresh_epoch = _trained(arch, backbone, steps=0)
    before, initial = _state(model, opt, epoch), _state(fresh, fresh_opt, fresh_epoch)
    names = [v.path for v in model.variables]
    moving = [i for i, n in enumerate(names) if "moving_" in n]
    assert moving and all(not np.array_equal(before[i], initial[i]) for i in moving)  # BN ran
    slots = range(len(names) + 1, len(names) + len(opt.variables))  # after `iterations`
    assert sum(not np.array_equal(before[i], initial[i]) for i in slots) > len(names) // 2
    path = checkpoint.training_checkpoint(model, opt, epoch).save(str(tmp_path / "ckpt"))
    # the checkpoint holds every variable: one value per model and per optimizer variable
    stored = [n.split("/")[0] for n, _ in tf.train.list_variables(path) if "VARIABLE_VALUE" in n]
    assert stored.count("model") == len(model.variables)
    assert stored.count("optimizer") == len(opt.variables) and stored.count("epoch") == 1
    checkpoint.restore(checkpoint.training_checkpoint(fresh, fresh_opt, fresh_epoch), path)
    after = _state(fresh, fresh_opt, fresh_epoch)
    assert len(after) == len(before)
    for name, a, b in zip(names + [v.path for v in opt.variables] + ["epoch"], before, after):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_old_attribute_tracked_checkpoint_is_refused_with_what_to_do(tmp_path):
    model, opt, epoch = _trained("retinanet", "resnet18", steps=0)
    old = tf.train.Checkpoint(model=model, optimizer=opt, epoch=epoch).save(
        str(tmp_path / "run" / "checkpoints" / "ckpt"))
    with pytest.raises(checkpoint.ResumeError, match="batch-norm statistics.*model.init_from="):
        checkpoint.restore(checkpoint.training_checkpoint(model, opt, epoch), old)


@pytest.mark.parametrize("damage", [".data-00000-of-00001", ".index"])
def test_damaged_newest_checkpoint_falls_back_to_the_older_one(tmp_path, caplog, damage):
    model, opt, epoch = _trained("fssd", "vgg16", optimizer="sgd", steps=0)
    ckpt = checkpoint.training_checkpoint(model, opt, epoch)
    manager = tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=2)
    epoch.assign(1)
    manager.save(checkpoint_number=4)
    epoch.assign(2)
    newest = manager.save(checkpoint_number=8)
    with open(newest + damage, "r+b") as f:  # truncated, as by a full disk or a killed copy
        f.truncate(os.path.getsize(newest + damage) // 2)
    with caplog.at_level("WARNING", logger="mgdet"):
        assert checkpoint.restore_newest(ckpt, str(tmp_path)) == str(tmp_path / "ckpt-4")
    assert int(epoch.numpy()) == 1
    [warning] = [r.getMessage() for r in caplog.records]
    assert "ckpt-8 is damaged" in warning and "\n" not in warning

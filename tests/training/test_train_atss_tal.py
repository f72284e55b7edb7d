"""``--set assign.strategy=atss`` / ``tal`` train every detector: a few steps on one fixed
painted batch give a finite loss that falls, with the loss each strategy selects."""
import keras
import numpy as np
import pytest

from mgdet import build_model
from mgdet.config import ConfigError, load_config
from mgdet.models.detector import METRIC_NAMES
from tests.batches import painted_batch

ARCHS = (("fssd", "resnet18"), ("retinanet", "resnet18"), ("rfbnet", "vgg16"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["atss", "tal"])
@pytest.mark.parametrize("arch,backbone", ARCHS)
def test_strategy_trains_every_detector(strategy, arch, backbone):
    cfg = load_config(None, [f"assign.strategy={strategy}", f"model.arch={arch}",
                             f"model.backbone={backbone}", "model.image_size=64",
                             "model.width=0.125", "model.num_classes=3"])
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    assert model.strategy == strategy
    assert model.cls_loss == {"atss": "focal", "tal": "quality_focal"}[strategy]
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, targets = painted_batch(64, batch=2, max_objects=4, num_classes=3)
    losses = []
    for _ in range(12):
        logs = model.train_on_batch(images, targets, return_dict=True)
        losses.append(logs["loss"])
    assert set(logs) == set(METRIC_NAMES)
    assert np.all(np.isfinite(losses)), losses
    assert logs["num_pos_cls"] >= 1 and logs["num_pos_reg"] >= 1
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), (strategy, arch, losses)


def test_config_keys_of_the_new_strategies():
    cfg = load_config(None, ["assign.strategy=tal", "loss.cls_loss=focal", "assign.tal_topk=5"])
    assert (cfg.assign.tal_topk, cfg.assign.tal_alpha, cfg.assign.tal_beta) == (5, 1.0, 6.0)
    assert cfg.assign.atss_topk == 9 and cfg.loss.cls_loss == "focal"
    model = build_model(load_config(None, ["assign.strategy=tal", "loss.cls_loss=focal",
                                           "model.image_size=64", "model.width=0.125",
                                           "model.num_classes=2"]))
    assert model.cls_loss == "focal" and model.get_config()["tal_topk"] == 13
    for override, named in (("loss.cls_loss=varifocal", "'loss.cls_loss' is 'varifocal'"),
                            ("assign.tal_beta=0", "'assign.tal_beta'"),
                            ("assign.atss_topk=0", "'assign.atss_topk'"),
                            ("assign.tal_topk=1.5", "'assign.tal_topk' must be an integer")):
        with pytest.raises(ConfigError, match=named):
            load_config(None, [override])

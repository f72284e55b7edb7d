"""Fine-tuning (``model.init_from``): every weight of a trained detector is copied except the
classification head when the class count differs; mismatched architectures are one clear error;
``train`` starts from the trained run."""
import json
import os

import keras
import numpy as np
import pytest

from mgdet import build_model
from mgdet.config import ConfigError, replace
from mgdet.models.heads import PRIOR_PROBABILITY
from mgdet.training.transfer import init_from
from tests.training.test_train import tiny_config

pytestmark = pytest.mark.slow  # trains the runs it starts from


def _trained_run(folder, cfg, names, seed):
    """A run folder as ``train`` leaves it: final.weights.h5 + config.json (random weights)."""
    keras.utils.set_random_seed(seed)
    model = build_model(cfg, class_names=names)
    for v in model.weights:  # moving statistics too: every weight differs from a fresh model
        v.assign(np.random.default_rng(seed).normal(0, 0.1, v.shape).astype(v.dtype))
    os.makedirs(folder, exist_ok=True)
    model.save_weights(os.path.join(folder, "final.weights.h5"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({**cfg.to_dict(), "class_names": list(names)}, f)
    return model


def _weights_of(layer):
    return [w.numpy() for w in layer.weights]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_new_classes_copy_everything_but_the_class_head(tmp_path):
    cfg = tiny_config(tmp_path)
    source = _trained_run(tmp_path / "run", cfg, ("a", "b", "c"), seed=1)
    keras.utils.set_random_seed(2)
    model = build_model(cfg, class_names=("x", "y", "z", "w", "v"))
    fresh_cls = [_weights_of(c) for c in model.head.cls_convs]
    kept = init_from(model, str(tmp_path / "run"))
    assert _same(_weights_of(model.backbone), _weights_of(source.backbone))
    assert _same(_weights_of(model.neck), _weights_of(source.neck))
    for dst, src in zip(model.head.box_convs, source.head.box_convs):
        assert _same(_weights_of(dst), _weights_of(src))
    for dst, fresh in zip(model.head.cls_convs, fresh_cls):
        assert _same(_weights_of(dst), fresh)  # left at its initialization
        bias = dst.weights[1].numpy()
        np.testing.assert_allclose(1 / (1 + np.exp(-bias)), PRIOR_PROBABILITY, rtol=1e-5)
    assert len(kept) == 2 * len(model.head.cls_convs)


def test_same_classes_copy_every_weight_from_a_weights_file(tmp_path):
    cfg = tiny_config(tmp_path)
    source = _trained_run(tmp_path / "run", cfg, ("a", "b", "c"), seed=3)
    model = build_model(cfg, class_names=("a", "b", "c"))
    assert init_from(model, str(tmp_path / "run" / "final.weights.h5")) == []
    assert _same(_weights_of(model), _weights_of(source))


def test_a_different_backbone_or_a_missing_run_is_one_clear_error(tmp_path):
    cfg = tiny_config(tmp_path)
    _trained_run(tmp_path / "run", cfg, ("a", "b", "c"), seed=4)
    other = build_model(replace(cfg, model={"arch": "retinanet"}), num_classes=3)
    with pytest.raises(ConfigError, match="the trained detector is a FSSD resnet18"):
        init_from(other, str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="no final.weights.h5"):
        init_from(other, str(tmp_path))
    from mgdet.config import check_files
    with pytest.raises(ConfigError, match="model.init_from .* does not exist"):
        check_files(replace(cfg, model={"init_from": str(tmp_path / "nowhere")}))


def test_a_width_mismatch_names_the_settings_that_fix_it(tmp_path, capsys):
    """The README's fine-tune line on a run of another width: one line naming the trained
    model's settings as --set overrides."""
    import cli
    _trained_run(tmp_path / "run", replace(tiny_config(tmp_path), model={"width": 0.25}),
                 ("a", "b", "c"), seed=6)
    code = cli.main(["train", "--set", "model.image_size=64", "--set", "model.width=0.125",
                     "--set", "data.num_train=8", "--set", "train.batch_size=8",
                     "--set", f"train.out_dir={tmp_path / 'ft'}",
                     "--set", f"model.init_from={tmp_path / 'run'}"])
    lines = capsys.readouterr().err.strip().splitlines()
    err = [line for line in lines if not line.startswith("INFO ")]  # progress notes may precede
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), lines
    assert "width 0.25" in err[0] and "width 0.125" in err[0]
    assert "--set model.width=0.25" in err[0] and "model.backbone" not in err[0]
    with pytest.raises(ConfigError, match="--set model.arch=fssd"):
        init_from(build_model(replace(tiny_config(tmp_path), model={"arch": "retinanet",
                                                                     "width": 0.25}),
                              num_classes=3), str(tmp_path / "run"))


def test_train_starts_from_the_trained_run(tmp_path, capsys):
    """A run on new classes with a vanishing learning rate ends with the
    source's backbone: the weights came from init_from, not from a fresh initialization."""
    from mgdet.training.loop import train
    source = _trained_run(tmp_path / "src", tiny_config(tmp_path), ("a", "b", "c"), seed=5)
    cfg = tiny_config(tmp_path / "ft", "train.epochs=1", "train.lr=1e-12", "train.min_lr=1e-13",
                      "train.warmup_steps=0",
                      f"model.init_from={tmp_path / 'src'}")  # the synthetic data: 7 classes
    train(cfg, verbose=0)
    assert "class head re-initialized for 7 classes" in capsys.readouterr().out
    from mgdet.config import load_config
    from mgdet.data.synthetic.shapes import CLASS_NAMES
    written = load_config(str(tmp_path / "ft" / "config.json"))  # what a run writes loads back
    assert written.class_names == CLASS_NAMES and written.model.init_from == str(tmp_path / "src")
    tuned = build_model(replace(cfg, model={"init_from": None}), num_classes=7)
    tuned.load_weights(str(tmp_path / "ft" / "final.weights.h5"))
    kernels = [(a, b) for a, b in zip(tuned.backbone.weights, source.backbone.weights)
               if "kernel" in a.path]
    assert kernels and all(np.allclose(a.numpy(), b.numpy(), atol=1e-6) for a, b in kernels)

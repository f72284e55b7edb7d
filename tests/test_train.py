"""Training loop, resumption, config validation and the CLI's error messages (tiny runs)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mgdet.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["model.image_size=64", "model.width=0.125", "data.num_train=32", "data.num_eval=8",
        "data.max_objects=10", "train.batch_size=8", "train.warmup_steps=2", "train.lr=0.01",
        "train.eval_every=1", "eval.batch_size=8", "eval.max_detections=50"]


def tiny_config(tmp_path, *extra):
    return load_config(os.path.join(ROOT, "configs", "default.yaml"),
                       TINY + [f"train.out_dir={tmp_path}"] + list(extra))


def test_train_resume_continues_from_the_right_step(tmp_path):
    from mgdet.train import train
    first = train(tiny_config(tmp_path, "train.epochs=1"), verbose=0)
    assert first["steps"] == 4 and os.path.isdir(tmp_path / "checkpoints")
    for name in ("final.weights.h5", "best.weights.h5", "config.json", "eval.json"):
        assert (tmp_path / name).is_file(), name
    assert 0.0 <= first["AP"] <= 1.0 and len(first["history"]) == 1
    resumed = train(tiny_config(tmp_path, "train.epochs=2"), resume=True, verbose=0)
    assert resumed["steps"] == 8  # optimizer iterations restored: 4 + 4 more
    assert [h["epoch"] for h in resumed["history"]] == [2]  # only the new epoch ran
    assert os.path.isdir(tmp_path / "logs")


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    from mgdet.train import train
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_config(tmp_path, "train.epochs=1"), resume=True, verbose=0)


@pytest.mark.parametrize("override,message", [
    ("model.arhc=fssd", "unknown config key 'model.arhc'"),
    ("train.epochs=many", "'train.epochs' must be an integer"),
    ("assign.strategy=both", "'assign.strategy' is 'both'"),
    ("assign.sigma=0.5", "assign.sigma must be > 1"),
    ("model.image_size=300", "multiple of 64"),
    ("model.arch=rfbnet", "VGG16 only"),
])
def test_bad_config_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(os.path.join(ROOT, "configs", "default.yaml"), [override])


def test_every_shipped_config_validates_and_builds_its_model():
    import mgdet
    for name in sorted(os.listdir(os.path.join(ROOT, "configs"))):
        # (the paper configs' ImageNet weights file is not here: tests/test_convert_weights.py)
        cfg = load_config(os.path.join(ROOT, "configs", name), {"model": {"weights": None}})
        assert cfg.name == name[:-5]
        if cfg.model.num_classes:  # the paper's configs: build at a small size to stay fast
            from mgdet.config import replace
            small = replace(cfg, model={"image_size": 64, "width": 0.125})
            model = mgdet.build_model(small)
            assert model.num_classes == cfg.model.num_classes


def _cli(*args, cwd=ROOT):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


def test_cli_bad_key_is_one_clear_error_without_traceback():
    out = _cli("train", "--set", "model.arhc=fssd")
    assert out.returncode == 2
    assert "unknown config key 'model.arhc'" in out.stderr and "Traceback" not in out.stderr


def test_cli_missing_config_and_dataset_are_clear_errors(tmp_path):
    out = _cli("train", "--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "nope.yaml" in out.stderr and "Traceback" not in out.stderr
    out = _cli("train", "--set", "data.source=voc", "--set", f"data.root={tmp_path / 'VOCdevkit'}",
               "--set", "model.num_classes=20")
    assert out.returncode == 2 and "VOCdevkit" in out.stderr and "Traceback" not in out.stderr

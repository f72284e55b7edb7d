"""Config files: `base:` inheritance, shipped configs by name, the paper configs' values."""
import os
import subprocess
import sys

import pytest
import yaml

from mgdet.config import ConfigError, config_names, config_to_yaml, load_config, read_config_file

from tests import ROOT


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_base_is_relative_to_the_file_deep_merged_and_lists_replaced(tmp_path):
    _write(tmp_path / "b" / "_base_" / "root.yaml",
           "name: root\nmodel: {arch: retinanet, width: 0.5}\n"
           "data: {train_sets: [a, b], num_train: 40}\ntrain: {lr: 0.5}\n")
    _write(tmp_path / "b" / "_base_" / "mid.yaml",
           "base: root.yaml\nmodel: {width: 0.25}\ndata: {train_sets: [c]}\n")
    child = _write(tmp_path / "b" / "child.yaml",
                   "base: _base_/mid.yaml\ntrain: {epochs: 3}\n")
    values = read_config_file(child)
    assert values == {"model": {"arch": "retinanet", "width": 0.25},
                      "data": {"train_sets": ["c"], "num_train": 40},
                      "train": {"lr": 0.5, "epochs": 3}}  # a base's name is not inherited
    cfg = load_config(child, ["train.lr=0.1"])
    assert cfg.name == "child" and cfg.model.arch == "retinanet" and cfg.model.width == 0.25
    assert cfg.data.train_sets == ("c",) and cfg.train.lr == 0.1 and cfg.train.epochs == 3
    # a list of bases: later ones win
    _write(tmp_path / "x.yaml", "train: {epochs: 5, lr: 0.2}\n")
    _write(tmp_path / "y.yaml", "train: {epochs: 7}\n")
    both = load_config(_write(tmp_path / "xy.yaml", "base: [x.yaml, y.yaml]\n"))
    assert (both.train.epochs, both.train.lr) == (7, 0.2)


def test_base_cycles_missing_bases_and_bad_keys_are_errors_naming_file_and_key(tmp_path):
    a = _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(a)
    with pytest.raises(ConfigError, match="cycle"):
        load_config(_write(tmp_path / "self.yaml", "base: self.yaml\n"))
    with pytest.raises(ConfigError, match=r"nope\.yaml.*does not exist"):
        load_config(_write(tmp_path / "c.yaml", "base: nope.yaml\n"))
    bad_base = _write(tmp_path / "bad_base.yaml", "model: {arhc: fssd}\n")
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path / "d.yaml", "base: bad_base.yaml\n"))
    assert bad_base in str(err.value) and "model.arhc" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path / "e.yaml", "train: {epochs: many}\n"))
    assert "e.yaml" in str(err.value) and "train.epochs" in str(err.value)
    with pytest.raises(ConfigError, match="'base' must be"):
        load_config(_write(tmp_path / "f.yaml", "base: {x: 1}\n"))


@pytest.mark.slow
def test_shipped_configs_by_name_and_print_config_shows_the_merged_result():
    names = config_names()
    assert "default" in names and "retinanet_resnet18_voc" in names and len(names) == 11
    by_name = load_config("retinanet_resnet18_voc")
    by_path = load_config(os.path.join(ROOT, "configs", "retinanet_resnet18_voc.yaml"))
    assert by_name == by_path and by_name.name == "retinanet_resnet18_voc"
    with pytest.raises(ConfigError, match="retinanet_resnet18_voc"):  # lists the shipped names
        load_config("retinanet_resnet18_vco")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), "train", "--config",
                          "rfbnet_vgg16_coco", "--set", "train.epochs=3", "--print-config"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    expected = yaml.safe_load(config_to_yaml(load_config("rfbnet_vgg16_coco", ["train.epochs=3"])))
    assert printed == expected and printed["train"]["epochs"] == 3
    assert printed["model"]["arch"] == "rfbnet" and printed["data"]["source"] == "coco"


@pytest.mark.parametrize("name", [n for n in config_names() if n != "default"])
def test_paper_configs_hold_the_papers_recipe(name):
    """Each paper config, merged from its bases, holds what its file name and the paper's
    recipe (docs/design.md, "Training recipe") say."""
    arch, backbone, dataset = name.split("_")
    cfg = load_config(name)
    with open(os.path.join(ROOT, "configs", name + ".yaml")) as f:
        assert yaml.safe_load(f)["base"] == f"_base_/{dataset}.yaml"
    assert (cfg.model.arch, cfg.model.backbone) == (arch, backbone)
    assert (cfg.model.image_size, cfg.model.width, cfg.assign.strategy) == (320, 1.0, "mg")
    assert cfg.model.num_classes == {"voc": 20, "coco": 80}[dataset]
    assert cfg.data.source == dataset
    assert cfg.train.epochs == {"voc": 250, "coco": 140}[dataset]
    t, e = cfg.train, cfg.eval
    assert (t.batch_size, t.lr, t.momentum, t.weight_decay) == (32, 0.01, 0.9, 5e-4)
    assert (t.warmup_steps, t.warmup_lr, t.min_lr) == (500, 1e-6, 1e-6)
    assert (e.score_threshold, e.nms_iou, e.max_detections) == (0.005, 0.5, 300)
    assert cfg.loss.focal_gamma == 1.0 and cfg.assign.sigma == 2.0

"""Training on one's own small dataset: a config anywhere starting from a shipped one, the
warm-up of a short run, and the data counts of each pass over a few images, two of them
corrupt."""
import json
import logging
import math
import os
import re

import numpy as np
import pytest

from mgdet.config import ConfigError, configs_dir, load_config
from tests import data_files


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_base_names_a_shipped_config_from_a_yaml_in_any_folder(tmp_path):
    shipped = load_config("default")
    for base in ("default", "default.yaml"):
        mine = load_config(_write(tmp_path / "mine" / "my_data.yaml",
                                  f"base: {base}\ntrain: {{epochs: 3}}\n"))
        assert mine.name == "my_data" and mine.train.epochs == 3
        assert (mine.model, mine.data, mine.train.batch_size) == (
            shipped.model, shipped.data, shipped.train.batch_size)
    voc = load_config(_write(tmp_path / "mine" / "voc.yaml", "base: _base_/voc.yaml\n"))
    assert voc.data.source == "voc" and voc.train.batch_size == 32  # and voc.yaml's own base
    # a file beside the YAML comes first
    _write(tmp_path / "mine" / "default.yaml", "model: {width: 0.5}\n")
    assert load_config(str(tmp_path / "mine" / "my_data.yaml")).model.width == 0.5
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path / "mine" / "typo.yaml", "base: defualt\n"))
    message = str(err.value)  # names both places searched and the shipped names
    assert str(tmp_path / "mine" / "defualt.yaml") in message
    assert os.path.join(configs_dir(), "defualt.yaml") in message
    assert "retinanet_resnet18_voc" in message


def _schedule_reference(step, lr, total, warmup, warmup_lr, min_lr):
    """The documented schedule, from its definition."""
    if step < warmup:
        return warmup_lr + (lr - warmup_lr) * step / warmup
    decay = total - warmup
    s = min(step - warmup, decay)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * s / decay))


@pytest.mark.parametrize("total, asked, used", [(90, 500, 30), (90, 20, 20), (3, 2, 1)])
def test_warmup_takes_at_most_a_third_of_a_short_run(total, asked, used, caplog):
    from mgdet.training.optim import learning_rate_schedule
    lr, warmup_lr, min_lr = 0.01, 1e-6, 1e-5
    with caplog.at_level(logging.INFO, logger="mgdet"):
        schedule = learning_rate_schedule(lr, total, asked, warmup_lr, min_lr)
    for step in (0, used // 2, used, (used + total) // 2, total - 1, total):
        expected = _schedule_reference(step, lr, total, used, warmup_lr, min_lr)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-6 * lr), step
    assert float(schedule(0)) == pytest.approx(warmup_lr)
    assert float(schedule(used)) == pytest.approx(lr)  # the peak, a third of the way at most
    assert float(schedule(total)) == pytest.approx(min_lr)
    shortened = [r.getMessage() for r in caplog.records if "warmup_steps" in r.getMessage()]
    assert shortened == ([f"train.warmup_steps {asked} shortened to {used}: warm-up takes at "
                          f"most a third of the run's {total} steps"] if asked > used else [])


def _coco_with_corrupt_images(folder, good=8, corrupt=2):
    """``good`` JPEGs with 1-3 boxes each and ``corrupt`` PNGs that pass the header check and
    fail to decode (one box each); returns the annotation file and the true counts."""
    images, anns = [], []
    os.makedirs(folder / "images")
    for i in range(1, good + corrupt + 1):
        name = f"im{i}.jpg" if i <= good else f"bad{i}.png"
        if i <= good:
            data_files.jpeg(folder / "images" / name, 48, 40, i)
        else:
            data_files.undecodable_png(folder / "images" / name, 48, 40)
        images.append({"id": i, "file_name": name, "width": 48, "height": 40})
        for j in range(1 + i % 3 if i <= good else 1):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1 + j % 2,
                         "bbox": [2 + 5 * j, 3, 20, 15], "iscrowd": 0, "area": 300.0})
    ann = folder / "train.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    boxes = sum(1 for a in anns if a["image_id"] <= good)
    return str(ann), {"images_listed": good + corrupt, "images_failed_decode": corrupt,
                      "images": good, "boxes_in": boxes}


def _pairs(text):
    return {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", text)}


@pytest.mark.slow
def test_each_epoch_reports_one_pass_over_the_images_not_the_read_ahead(tmp_path):
    from mgdet.data import stats
    from mgdet.data.datasets import build_datasets
    ann, truth = _coco_with_corrupt_images(tmp_path)
    images = str(tmp_path / "images")
    cfg = load_config(None, {"data": {"source": "coco_json", "train_ann": ann,
                                      "train_images": images, "eval_ann": ann,
                                      "eval_images": images},
                             "model": {"image_size": 64}, "train": {"batch_size": 2}})
    train_ds, eval_ds, _, _, steps = build_datasets(cfg)
    assert steps == 5  # the 10 listed images: known before decoding
    lines = []
    callback = stats.StatsCallback(print_fn=lines.append)
    callback.on_train_begin()
    batches = iter(train_ds)  # one iterator over the repeated stream, as model.fit reads it
    for epoch in range(3):
        for _ in range(steps):
            next(batches)
        callback.on_epoch_end(epoch)
    assert lines, "no epoch reported a pass"
    for line in lines:
        train = line.split("train")[1].split("|")[0]
        counts = {k: v for k, v in _pairs(train).items() if v}
        assert counts == truth, line
    # an unfinished iteration (a peek at the first batch) counts toward no pass
    next(iter(eval_ds))
    list(eval_ds)
    passes, counts = stats.last_pass("eval")
    assert passes >= 1 and {k: v for k, v in counts.items() if v} == truth

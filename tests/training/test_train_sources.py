"""Training and evaluation run end to end from every data source (tiny generated folders, with
their corrupt images and degenerate boxes), through the same `mgdet.training.loop.train` as the CLI,
for 3 epochs: every epoch runs all its steps (the optimizer's step count is epochs x steps per
epoch, steps per epoch = usable images // batch) and reports the data counts of one pass."""
import os
import re

import pytest

from mgdet.config import load_config
from mgdet.training.loop import train
from tests.data.test_data_sources import coco_files, voc_root  # noqa: F401  (pytest fixtures)

from tests import ROOT

pytestmark = pytest.mark.slow  # trains from every source

EPOCHS = 3
TINY = ["model.image_size=64", "model.width=0.125", "data.max_objects=8", "train.batch_size=2",
        f"train.epochs={EPOCHS}", "train.warmup_steps=1", "train.eval_every=0",
        "eval.batch_size=2", "eval.max_detections=20"]


def _run(tmp_path, capsys, usable_images, *overrides):
    """Train; check the step count and the data counts of each pass the epochs printed."""
    cfg = load_config(os.path.join(ROOT, "configs", "default.yaml"),
                      TINY + [f"train.out_dir={tmp_path}"] + list(overrides))
    result = train(cfg, verbose=0)
    steps_per_epoch = usable_images // 2
    assert steps_per_epoch >= 1
    assert result["steps"] == EPOCHS * steps_per_epoch
    assert 0.0 <= result["AP"] <= 1.0
    assert (tmp_path / "final.weights.h5").is_file() and (tmp_path / "eval.json").is_file()
    out = capsys.readouterr().out
    # An epoch's line reports the last pass over the images that ended during it (the stream
    # reads ahead, so later epochs may have none); the first pass ends before the first batch
    # (the shuffle buffer holds all of it).
    lines = re.findall(r"^epoch (\d+) data: (.*)$", out, re.M)
    assert lines and lines[0][0] == "1", f"no data counters for epoch 1 in:\n{out}"
    for _, line in lines:
        passed = re.search(r"\btrain \(one pass over the images\): ([^|]*)", line)
        assert passed, line
        counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", passed.group(1))}
        listed = counts.get("images_listed", usable_images)  # synthetic: no files listed
        assert listed == usable_images, line
        assert counts["images"] == listed - counts.get("images_failed_decode", 0), line
    return result, out


def test_train_from_synthetic(tmp_path, capsys):
    _run(tmp_path, capsys, 6, "data.num_train=6", "data.num_eval=2")


def test_train_from_voc(tmp_path, capsys, voc_root):  # noqa: F811
    # trainval lists 6 images: 1 missing and 1 truncated are skipped while listing, so 4 are
    # usable (2 steps); one of them fails to decode, and the repeated stream fills its place.
    _, out = _run(tmp_path, capsys, 4, "data.source=voc", f"data.root={voc_root}",
                  "data.train_sets=[2007/trainval]", "data.eval_sets=[2007/test]")
    assert "data train: images_listed=6 images_missing=1 images_unreadable=1" in out


def test_train_from_coco_json(tmp_path, capsys, coco_files):  # noqa: F811
    _, ann, images = coco_files   # 5 images: 1 missing -> 4 usable, 1 of them undecodable
    _run(tmp_path, capsys, 4, "data.source=coco_json", f"data.train_ann={ann}",
         f"data.train_images={images}", f"data.eval_ann={ann}", f"data.eval_images={images}")


def test_train_from_coco_folder(tmp_path, capsys, coco_files):  # noqa: F811
    root, _, _ = coco_files
    _run(tmp_path, capsys, 4, "data.source=coco", f"data.root={root}",
         "data.train_sets=[train2017]", "data.eval_sets=[train2017]")


def test_train_from_voc_xml(tmp_path, capsys, voc_root):  # noqa: F811
    ann = os.path.join(voc_root, "VOC2007", "Annotations")
    images = os.path.join(voc_root, "VOC2007", "JPEGImages")
    _run(tmp_path, capsys, 4, "data.source=voc_xml", f"data.train_ann={ann}",
         f"data.train_images={images}", f"data.eval_ann={ann}", f"data.eval_images={images}")


def test_train_from_tfds_mock(tmp_path, capsys):
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=4):
        _run(tmp_path, capsys, 4, "data.source=tfds", "data.tfds_name=voc/2007",
             "data.train_sets=[train]", "data.eval_sets=[test]")

"""Training and evaluation run end to end from every data source (tiny generated folders, with
their corrupt images and degenerate boxes), through the same `mgdet.train.train` as the CLI."""
import os

from mgdet.config import load_config
from mgdet.train import train
from tests.test_data_sources import coco_files, voc_root  # noqa: F401  (pytest fixtures)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["model.image_size=64", "model.width=0.125", "data.max_objects=8", "train.batch_size=2",
        "train.epochs=1", "train.warmup_steps=1", "train.eval_every=1", "eval.batch_size=2",
        "eval.max_detections=20"]


def _run(tmp_path, *overrides):
    cfg = load_config(os.path.join(ROOT, "configs", "default.yaml"),
                      TINY + [f"train.out_dir={tmp_path}"] + list(overrides))
    result = train(cfg, verbose=0)
    assert result["steps"] >= 1 and 0.0 <= result["AP"] <= 1.0
    assert (tmp_path / "final.weights.h5").is_file() and (tmp_path / "eval.json").is_file()
    return result


def test_train_from_voc(tmp_path, voc_root):  # noqa: F811
    _run(tmp_path, "data.source=voc", f"data.root={voc_root}", "data.train_sets=[2007/trainval]",
         "data.eval_sets=[2007/test]")


def test_train_from_coco_json(tmp_path, coco_files):  # noqa: F811
    _, ann, images = coco_files
    _run(tmp_path, "data.source=coco_json", f"data.train_ann={ann}", f"data.train_images={images}",
         f"data.eval_ann={ann}", f"data.eval_images={images}")


def test_train_from_coco_folder(tmp_path, coco_files):  # noqa: F811
    root, _, _ = coco_files
    _run(tmp_path, "data.source=coco", f"data.root={root}", "data.train_sets=[train2017]",
         "data.eval_sets=[train2017]")


def test_train_from_voc_xml(tmp_path, voc_root):  # noqa: F811
    ann = os.path.join(voc_root, "VOC2007", "Annotations")
    images = os.path.join(voc_root, "VOC2007", "JPEGImages")
    _run(tmp_path, "data.source=voc_xml", f"data.train_ann={ann}", f"data.train_images={images}",
         f"data.eval_ann={ann}", f"data.eval_images={images}")


def test_train_from_tfds_mock(tmp_path):
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=4):
        _run(tmp_path, "data.source=tfds", "data.tfds_name=voc/2007", "data.train_sets=[train]",
             "data.eval_sets=[test]")

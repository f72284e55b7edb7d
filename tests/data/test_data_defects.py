"""Malformed annotations, hostile and unusual image files, the pixel limit, the source table and
evaluation on undecodable images (tiny files, most written byte by byte)."""
import json
import os
import types

import numpy as np
import pytest

from mgdet import config as config_module
from mgdet.data import SOURCES, DataError, get_source, stats
from mgdet.data.coco import coco_records
from mgdet.data.common import check_image_file, probe_image
from mgdet.data.pipeline import make_dataset
from mgdet.data.source import RecordSource, Source
from mgdet.data.voc import voc_xml_records
from mgdet.evaluation.coco import evaluate
from tests import data_files


def _report_counts(expected):
    return {k: v for k, v in expected.items() if k not in ("records", "decodable")}


@pytest.fixture(scope="module")
def defective(tmp_path_factory):
    return data_files.defective_coco(str(tmp_path_factory.mktemp("defective")), num_good=2)


def test_every_coco_defect_is_counted(defective):
    ann, images, expected = defective
    records, report, _ = coco_records(ann, images)
    assert report.as_dict() == _report_counts(expected)
    assert len(records) == expected["records"]
    # each skipped entry is named (file and entry) in the log line's examples
    assert any("images[" in e and "no 'file_name'" in e for e in report.examples["images_bad_entry"])
    assert any("'abc'" in e for e in report.examples["boxes_bad_entry"])
    stats.reset()
    src = get_source(types.SimpleNamespace(source="coco_json", train_ann=ann, train_images=images))
    assert src.num_examples("train") == expected["records"]   # known before decoding
    decoded = {int(e["image_id"]): e for e in src.dataset("train").as_numpy_iterator()}
    assert len(decoded) == expected["decodable"] and 103 not in decoded
    assert decoded[101]["image"].shape == (30, 40, 3)   # JPEG with trailing bytes
    assert decoded[102]["image"].shape == (30, 40, 3)   # WebP named .jpg
    assert stats.snapshot()["decode"]["images_failed_decode"] == 1


def test_coco_file_level_errors_name_the_file(tmp_path, defective):
    _, images, _ = defective
    cases = {"list.json": ([{"id": 1}], "JSON object"),
             "noimages.json": ({"annotations": [], "categories": [{"id": 1}]}, "no 'images'"),
             "badcat.json": ({"images": [], "categories": [{"name": "x"}]}, r"categories\[0\]"),
             "nocat.json": ({"images": []}, "no 'categories'")}
    for name, (payload, message) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(payload))
        with pytest.raises(DataError, match=message) as err:
            coco_records(str(path), images)
        assert name in str(err.value)


def test_max_pixels_is_read_from_the_config(defective):
    ann, images, expected = defective
    cfg = types.SimpleNamespace(source="coco_json", train_ann=ann, train_images=images,
                                max_pixels=2000)   # the 64x48 images are over, 40x30 are under
    report = get_source(cfg).report("train")
    assert report["images_too_large"] == expected["images_too_large"] + 2
    assert config_module.DataConfig().max_pixels == 40_000_000


def test_image_check_follows_the_decoder(tmp_path):
    import tensorflow as tf

    accepted = [data_files.jpeg_with_trailing_bytes(tmp_path / "trailing.jpg"),
                data_files.webp(tmp_path / "webp.jpg")]
    for path in accepted:
        assert check_image_file(path) is None
        assert tf.io.decode_image(tf.io.read_file(path), channels=3,
                                  expand_animations=False).shape == (30, 40, 3)
    assert "truncated" in check_image_file(data_files.truncated_jpeg(tmp_path / "t.jpg"))
    png_bomb = data_files.png_bomb(tmp_path / "bomb.png")
    jpeg_bomb = data_files.jpeg_bomb(tmp_path / "bomb.jpg")
    for path in (png_bomb, jpeg_bomb):
        assert os.path.getsize(path) < 1000
        assert probe_image(path, 40_000_000)[0] == "too_large"
    assert "12000x12000" in probe_image(jpeg_bomb, 40_000_000)[1]
    assert probe_image(jpeg_bomb, None)[0] is None   # no limit: only the header is read
    assert probe_image(str(tmp_path / "nope.jpg"))[0] == "missing"


def test_voc_xml_bad_sizes_are_counted(tmp_path):
    ann, img = tmp_path / "ann", tmp_path / "img"
    ann.mkdir(), img.mkdir()
    obj = ("<object><name>x</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
           "</bndbox></object>")
    for stem, size in (("good", "<width>16</width><height>12</height>"),
                       ("abc", "<width>abc</width><height>12</height>"),
                       ("inf", "<width>inf</width><height>12</height>"),
                       ("nosize", "")):
        (ann / f"{stem}.xml").write_text(f"<annotation><filename>{stem}.jpg</filename>"
                                         f"<size>{size}</size>{obj}</annotation>")
        data_files.jpeg(img / f"{stem}.jpg", 16, 12)
    (ann / "broken.xml").write_text("<annotation><filename>")
    records, report, names = voc_xml_records(str(ann), str(img))
    assert names == ("x",)
    assert report.images_listed == 5 and report.images_bad_entry == 3
    assert sorted(os.path.basename(r["path"]) for r in records) == ["good.jpg", "nosize.jpg"]
    assert all((r["width"], r["height"]) == (16, 12) for r in records)


class _FullImageDetector:
    """One box covering the whole image, label 0, for every image."""

    def detect(self, images):
        b = int(images.shape[0])
        return {"boxes": np.tile([[[0.0, 0.0, 1.0, 1.0]]], (b, 1, 1)),
                "scores": np.full((b, 1), 0.9), "classes": np.zeros((b, 1), np.int64),
                "num_detections": np.ones(b, np.int64)}


def test_evaluation_leaves_out_undecodable_images(tmp_path):
    data_files.jpeg(tmp_path / "ok.jpg", 64, 48)
    data_files.undecodable_png(tmp_path / "bad.png")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "ok.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "bad.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 64, 48]},
                        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 40, 30]}],
        "categories": [{"id": 1, "name": "thing"}]}))
    src = get_source(types.SimpleNamespace(source="coco_json", eval_ann=str(ann)))
    gt = src.ground_truth("eval")
    assert len(gt["images"]) == 2   # built from the annotations, before decoding
    ds = make_dataset(src.dataset("eval"), 64, 2, 4, training=False)
    m = evaluate(_FullImageDetector(), ds, gt, progress=False)
    # the undecodable image is out of both sides: its box is not a miss
    assert m["images_dropped"] == 1 and m["num_images"] == 1
    assert m["AP50"] == pytest.approx(1.0)


def test_source_table():
    assert config_module.SOURCES == tuple(SOURCES)
    for name in SOURCES:
        src = get_source(types.SimpleNamespace(source=name))
        assert isinstance(src, Source) and src.name == name
    with pytest.raises(DataError, match="kitti"):
        get_source(types.SimpleNamespace(source="kitti"))


def test_a_new_format_is_one_class_and_one_table_line(tmp_path, monkeypatch):
    data_files.jpeg(tmp_path / "a.jpg", 32, 24)
    module = types.ModuleType("mgdet_test_txt_source")

    class TxtSource(RecordSource):
        """One ``<file> <label> <x1> <y1> <x2> <y2>`` line per image (normalized box)."""

        name = "txt"

        def class_names(self):
            return ["thing"]

        def records(self, split):
            from mgdet.data.common import SourceReport
            report = SourceReport("txt")
            out = []
            for i, line in enumerate(open(self.option(f"{split}_ann"))):
                f, label, *box = line.split()
                report.images_listed += 1
                if report.image_ok(str(tmp_path / f)):
                    out.append({"path": str(tmp_path / f), "image_id": i + 1, "width": 32,
                                "height": 24, "boxes": np.array([box], np.float32),
                                "labels": np.array([int(label)], np.int32)})
            return out, report

    module.TxtSource = TxtSource
    monkeypatch.setitem(__import__("sys").modules, module.__name__, module)
    monkeypatch.setitem(SOURCES, "txt", f"{module.__name__}:TxtSource")
    (tmp_path / "train.txt").write_text("a.jpg 0 0.1 0.1 0.5 0.5\nmissing.jpg 0 0 0 1 1\n")
    cfg = types.SimpleNamespace(source="txt", train_ann=str(tmp_path / "train.txt"))
    source = get_source(cfg)
    ds, names = source.dataset("train", shuffle=True), source.class_names()
    assert names == ["thing"] and [e["image"].shape for e in ds.as_numpy_iterator()] == [(24, 32, 3)]
    src = get_source(cfg)
    assert src.num_examples("train") == 1 and src.report("train")["images_missing"] == 1
    assert src.ground_truth("train")["annotations"][0]["bbox"] == pytest.approx([3.2, 2.4, 12.8, 9.6])


def test_a_source_missing_part_of_the_interface_cannot_be_made():
    class NoRecords(RecordSource):
        name = "no_records"

        def class_names(self):
            return ["thing"]

    class NoDataset(Source):
        name = "no_dataset"

        def class_names(self):
            return ["thing"]

        def num_examples(self, split):
            return 0

    cfg = types.SimpleNamespace(seed=0)
    with pytest.raises(TypeError, match="records"):
        NoRecords(cfg)
    with pytest.raises(TypeError, match="dataset"):
        NoDataset(cfg)

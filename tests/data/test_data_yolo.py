"""YOLO-txt datasets (ultralytics layout): boxes from centre form and polygons against values
worked out here from the written numbers, malformed lines, unknown classes and out-of-image boxes
counted (never raised), images without a label file, class names from classes.txt / data.yaml,
and training + evaluation end to end through ``mgdet.training.loop.train``."""
import os

import numpy as np
import pytest

from mgdet.data import DataError, get_source
from mgdet.data.yolo import find_class_names, labels_dir_for, parse_line
from tests.data_files import jpeg, truncated_jpeg, write
from tests.training.test_train_sources import _run

W, H = 64, 48


@pytest.fixture
def yolo_root(tmp_path):
    """ds/images/{train,val}, ds/labels/{train,val}, ds/data.yaml (3 classes)."""
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for k in range(5):
        jpeg(str(root / "images" / "train" / f"im{k}.jpg"), W, H, seed=k)
    truncated_jpeg(str(root / "images" / "train" / "broken.jpg"))
    labels = root / "labels" / "train"
    write(str(labels / "im0.txt"), b"0 0.5 0.5 0.5 0.5\n2 0.25 0.25 0.1 0.2\n")
    write(str(labels / "im1.txt"), b"1 0.9 0.9 0.4 0.4\n# a comment\n\n7 0.5 0.5 0.1 0.1\n")
    write(str(labels / "im2.txt"), b"0 0.5 0.5\nx 0.5 0.5 0.1 0.1\n1 0.1 0.2 0.3 0.2 0.2 0.6\n")
    write(str(labels / "im3.txt"), b"2 0.5 0.5 0 0.3\n")  # zero width: degenerate
    # im4 has no label file: an image without objects
    for k in range(2):
        jpeg(str(root / "images" / "val" / f"v{k}.jpg"), W, H, seed=10 + k)
        write(str(root / "labels" / "val" / f"v{k}.txt"), b"1 0.5 0.5 0.6 0.6\n")
    write(str(root / "data.yaml"), b"path: .\nnames: {0: cat, 1: dog, 2: bird}\n")
    return root


class _Data:
    def __init__(self, root, **extra):
        self.source = "yolo"
        self.train_images = str(root / "images" / "train")
        self.eval_images = str(root / "images" / "val")
        for k, v in extra.items():
            setattr(self, k, v)


def test_records_boxes_labels_and_counters(yolo_root):
    source = get_source(_Data(yolo_root))
    assert source.class_names() == ["cat", "dog", "bird"]
    records, report = source.records("train")
    by_name = {os.path.basename(r["path"]): r for r in records}
    assert sorted(by_name) == ["im0.jpg", "im1.jpg", "im2.jpg", "im3.jpg", "im4.jpg"]
    np.testing.assert_allclose(by_name["im0.jpg"]["boxes"],
                               [[0.25, 0.25, 0.75, 0.75], [0.2, 0.15, 0.3, 0.35]], atol=1e-6)
    assert by_name["im0.jpg"]["labels"].tolist() == [0, 2]
    # centre (0.9, 0.9), size 0.4: reaches 1.1, clipped to 1
    np.testing.assert_allclose(by_name["im1.jpg"]["boxes"], [[0.7, 0.7, 1.0, 1.0]], atol=1e-6)
    # the polygon (0.1, 0.2), (0.3, 0.2), (0.2, 0.6): its bounding box
    np.testing.assert_allclose(by_name["im2.jpg"]["boxes"], [[0.1, 0.2, 0.3, 0.6]], atol=1e-6)
    assert by_name["im2.jpg"]["labels"].tolist() == [1]
    assert by_name["im3.jpg"]["boxes"].shape == (0, 4) == by_name["im4.jpg"]["boxes"].shape
    assert (by_name["im0.jpg"]["width"], by_name["im0.jpg"]["height"]) == (W, H)
    counts = report.as_dict()
    assert counts["images_listed"] == 6 and counts["images_unreadable"] == 1
    assert counts["boxes_bad_entry"] == 2  # "0 0.5 0.5" and "x ..."
    assert counts["boxes_unknown_class"] == 1  # class 7 of 3
    assert counts["boxes_degenerate"] == 1 and counts["boxes_clipped"] == 1
    gt = source.ground_truth("eval")
    assert [c["name"] for c in gt["categories"]] == ["cat", "dog", "bird"]
    np.testing.assert_allclose(gt["annotations"][0]["bbox"], [0.2 * W, 0.2 * H, 0.6 * W, 0.6 * H],
                               atol=1e-3)


@pytest.mark.parametrize("line,expected", [
    ("3 0.5 0.4 0.2 0.1", (3, [0.4, 0.35, 0.6, 0.45])),
    ("1.0 0.5 0.5 1 1", (1, [0.0, 0.0, 1.0, 1.0])),
    ("   ", ()), ("# only a comment", ()),
    ("1.5 0.5 0.5 0.1 0.1", None), ("nan 0.5 0.5 0.1 0.1", None), ("2 0.1 0.2 0.3", None),
    ("2 0.1 0.2 0.3 0.4 0.5", None),  # 5 numbers: neither a box nor a polygon
])
def test_parse_line(line, expected):
    got = parse_line(line)
    if expected in ((), None):
        assert got == expected
    else:
        assert got[0] == expected[0]
        np.testing.assert_allclose(got[1], expected[1], atol=1e-9)


def test_labels_folder_and_class_names_files(tmp_path, yolo_root):
    assert labels_dir_for(str(yolo_root / "images" / "train")) == str(yolo_root / "labels" / "train")
    flat = tmp_path / "flat"
    flat.mkdir()
    assert labels_dir_for(str(flat)) == str(flat)  # no images/labels pair: labels beside images
    write(str(flat / "classes.txt"), b"a\nb\n\n")
    assert find_class_names(str(flat)) == ["a", "b"]
    (flat / "classes.txt").unlink()
    assert find_class_names(str(flat)) is None
    with pytest.raises(DataError, match="no class names: set data.class_names"):
        get_source(_Data(flat, eval_images=str(flat), train_images=str(flat))).class_names()
    names = get_source(_Data(yolo_root, class_names=("x", "y", "z"))).class_names()
    assert names == ["x", "y", "z"]  # data.class_names wins
    with pytest.raises(DataError, match="data.train_images must name"):
        get_source(_Data(yolo_root, train_images=None)).records("train")


@pytest.mark.slow
def test_train_from_yolo(tmp_path, capsys, yolo_root):
    # 6 images listed, the truncated one skipped: 5 usable, 2 steps of 2 per epoch
    _, out = _run(tmp_path / "run", capsys, 5, "data.source=yolo",
                  f"data.train_images={yolo_root / 'images' / 'train'}",
                  f"data.eval_images={yolo_root / 'images' / 'val'}")
    assert "data train: images_listed=6 images_unreadable=1" in out

"""File and TFDS sources end to end: tiny VOC / COCO / VOC-XML folders written in tmp_path
(with a truncated JPEG, a corrupt JPEG, an image without objects, degenerate and out-of-image
boxes), read back through make_dataset; TFDS through tfds.testing.mock_data."""
import json
import os
import types

import numpy as np
import pytest
from PIL import Image

from mgdet.data import DataError, get_source, stats
from mgdet.data.common import to_coco
from mgdet.data.coco import CategoryMap, category_map
from mgdet.data.common import check_image_file
from mgdet.data.pipeline import make_dataset
from mgdet.data.voc import VOC_CLASSES
from tests import data_files


def _split(data_config, split, image_size=None):
    """``(examples, class names)`` of a split, reshuffled when it is "train"."""
    source = get_source(data_config, image_size)
    return source.dataset(split, shuffle=split == "train"), source.class_names()


def _read(split="train", **data_config):
    """``(examples, class names)`` of a split of the source that ``data_config`` describes
    (``source=...`` and its ``data.*`` keys), in file order."""
    source = get_source(types.SimpleNamespace(**data_config))
    return source.dataset(split), source.class_names()


def _jpeg(path, w, h, seed):
    data_files.jpeg(path, w, h, seed)


def _truncated_jpeg(path):
    data_files.truncated_jpeg(path)


def _corrupt_jpeg(path):
    """A valid image header over corrupt pixel data: passes the header check, fails to decode."""
    data_files.undecodable_png(path)


def _voc_xml(path, filename, w, h, objects, size=True):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, d, b in objects)
    sz = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>" if size else ""
    with open(path, "w") as f:
        f.write(f"<annotation><filename>{filename}</filename>{sz}{objs}</annotation>")


# (id, width, height, objects[(name, difficult, (xmin, ymin, xmax, ymax) 1-based)], kind)
VOC_IMAGES = [
    ("000001", 64, 48, [("dog", 0, (1, 1, 32, 24)), ("cat", 1, (10, 10, 60, 40))], "ok"),
    ("000002", 50, 40, [], "ok"),                                            # no objects
    ("000003", 64, 48, [("car", 0, (20, 20, 18, 40)),                        # degenerate
                        ("person", 0, (40, 30, 90, 70))], "ok"),             # out of image
    ("000004", 40, 30, [("dog", 0, (2, 2, 20, 20))], "truncated"),
    ("000005", 40, 30, [("dog", 0, (2, 2, 20, 20))], "corrupt"),
    ("000006", 40, 30, [("dog", 0, (2, 2, 20, 20))], "missing"),
]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc") / "VOCdevkit"
    d = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(d / sub)
    for i, (iid, w, h, objs, kind) in enumerate(VOC_IMAGES):
        _voc_xml(d / "Annotations" / f"{iid}.xml", f"{iid}.jpg", w, h, objs)
        img = d / "JPEGImages" / f"{iid}.jpg"
        if kind == "ok":
            _jpeg(img, w, h, i)
        elif kind == "truncated":
            _truncated_jpeg(img)
        elif kind == "corrupt":
            _corrupt_jpeg(img)
    (d / "ImageSets/Main/trainval.txt").write_text("\n".join(v[0] for v in VOC_IMAGES) + "\n")
    (d / "ImageSets/Main/test.txt").write_text("000001\n000003\n")
    return str(root)


def test_check_image_file(voc_root):
    d = os.path.join(voc_root, "VOC2007", "JPEGImages")
    assert check_image_file(os.path.join(d, "000001.jpg")) is None
    assert "truncated" in check_image_file(os.path.join(d, "000004.jpg"))
    assert check_image_file(os.path.join(d, "000005.jpg")) is None   # only decoding can tell
    assert check_image_file(os.path.join(d, "000006.jpg")) == "missing"


def test_voc_end_to_end(voc_root):
    stats.reset()
    ds, names = _read(source="voc", root=voc_root, train_sets=("2007/trainval",))
    assert names == list(VOC_CLASSES)
    examples = list(ds.as_numpy_iterator())
    # 000004 (truncated) and 000006 (missing) skipped while listing, 000005 skipped at decode
    assert sorted(int(e["image_id"]) for e in examples) == [1, 2, 3]
    snap = stats.snapshot()["decode"]
    assert snap["images_failed_decode"] == 1 and snap["images_decoded"] == 3
    by_id = {int(e["image_id"]): e for e in examples}
    e1 = by_id[1]
    assert e1["image"].shape == (48, 64, 3)
    np.testing.assert_allclose(e1["boxes"][0], [0, 0, 32 / 64, 24 / 48], atol=1e-6)
    assert list(e1["labels"]) == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")]
    assert list(e1["difficult"]) == [False, True]
    assert len(by_id[2]["labels"]) == 0
    # degenerate box dropped at listing, out-of-image box clipped
    np.testing.assert_allclose(by_id[3]["boxes"], [[39 / 64, 29 / 48, 1.0, 1.0]], atol=1e-6)

    batches = list(make_dataset(ds, 64, 2, max_objects=4, training=True, seed=0, name="voc_train"))
    assert len(batches) == 1  # 3 images, drop_remainder
    images, targets = batches[0]
    assert images.shape == (2, 64, 64, 3) and targets["boxes"].shape == (2, 4, 4)
    counted = stats.snapshot()["voc_train"]
    assert counted["images"] == 3 and counted["boxes_difficult"] == 1  # the difficult cat: kept

    ev = list(make_dataset(ds, 64, 2, max_objects=4, training=False, name="voc_eval"))
    assert [b[0].shape[0] for b in ev] == [2, 1]
    ids = np.concatenate([b[1]["image_id"].numpy() for b in ev])
    sizes = np.concatenate([b[1]["orig_size"].numpy() for b in ev])
    assert sorted(ids) == [1, 2, 3]
    assert [tuple(s) for s in sizes[np.argsort(ids)]] == [(48, 64), (40, 50), (48, 64)]
    # difficult boxes stay in the eval targets
    assert int(np.sum(ev[0][1]["valid"].numpy()[list(ids).index(1)])) == 2


def test_voc_ground_truth_and_dispatch(voc_root):
    cfg = types.SimpleNamespace(source="voc", root=voc_root, train_sets=("2007/trainval",),
                                eval_sets=("2007/test",))
    gt = get_source(cfg).ground_truth("eval")
    assert [im["id"] for im in gt["images"]] == [1, 3]
    assert len(gt["categories"]) == 20
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == VOC_CLASSES.index("cat") + 1
    ds, names = _split(cfg, "eval")
    assert len(list(ds)) == 2 and names == list(VOC_CLASSES)
    # same ground truth from the decoded dataset
    assert to_coco(ds, names)["annotations"] == gt["annotations"]


def test_voc_errors(tmp_path, voc_root):
    with pytest.raises(DataError, match="does not exist"):
        _read(source="voc", root=str(tmp_path / "nope"))
    with pytest.raises(DataError, match="VOC2012"):
        _read(source="voc", root=voc_root, train_sets=("2012/trainval",))
    with pytest.raises(DataError, match="image set file"):
        _read(source="voc", root=voc_root, train_sets=("2007/val",))
    d = tmp_path / "dev" / "VOC2007"
    os.makedirs(d / "Annotations"), os.makedirs(d / "ImageSets" / "Main")
    _voc_xml(d / "Annotations" / "x.xml", "x.jpg", 10, 10, [])
    (d / "ImageSets/Main/trainval.txt").write_text("x\n")
    with pytest.raises(DataError, match="none of the 1 images"):
        _read(source="voc", root=str(tmp_path / "dev"), train_sets=("2007/trainval",))


def test_voc_xml_folder(tmp_path):
    ann, img = tmp_path / "ann", tmp_path / "img"
    ann.mkdir(), img.mkdir()
    _voc_xml(ann / "a.xml", "a.png", 30, 20, [("widget", 0, (1, 1, 10, 10)), ("gadget", 0, (5, 5, 30, 20))])
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(img / "a.png")
    _voc_xml(ann / "b.xml", "", 0, 0, [("widget", 0, (3, 3, 8, 9))], size=False)  # size from image
    _jpeg(img / "b.jpg", 16, 12, 0)
    ds, names = _read(source="voc_xml", root=str(ann), train_images=str(img))
    assert names == ["gadget", "widget"]
    ex = {int(e["image_id"]): e for e in ds.as_numpy_iterator()}
    assert len(ex) == 2
    b = [e for e in ex.values() if e["image"].shape == (12, 16, 3)][0]
    np.testing.assert_allclose(b["boxes"], [[2 / 16, 2 / 12, 8 / 16, 9 / 12]], atol=1e-6)
    ds2, names2 = _read(source="voc_xml", root=str(ann), train_images=str(img),
                        class_names=("widget",))
    assert names2 == ["widget"] and sum(len(e["labels"]) for e in ds2.as_numpy_iterator()) == 2
    with pytest.raises(DataError, match="no .xml"):
        _read(source="voc_xml", root=str(img))


@pytest.fixture(scope="module")
def coco_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    images_dir = root / "train2017"
    (root / "annotations").mkdir()
    images_dir.mkdir()
    cats = [{"id": 3, "name": "car"}, {"id": 7, "name": "train"}, {"id": 10, "name": "light"}]
    images, anns = [], []

    def ann(image_id, cat, bbox, crowd=0, area=None):
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": bbox,
                     "iscrowd": crowd, "area": area if area is not None else bbox[2] * bbox[3]})

    for iid, (w, h) in zip((11, 12, 13, 14, 15), ((64, 48), (32, 32), (40, 40), (40, 30), (40, 30))):
        images.append({"id": iid, "file_name": f"{iid:012d}.jpg", "width": w, "height": h})
    _jpeg(images_dir / "000000000011.jpg", 64, 48, 0)
    _jpeg(images_dir / "000000000012.jpg", 32, 32, 1)
    _jpeg(images_dir / "000000000013.jpg", 40, 40, 2)
    _corrupt_jpeg(images_dir / "000000000014.jpg")          # 15 is missing on disk
    ann(11, 7, [0, 0, 32, 24], area=500.0)
    ann(11, 10, [10, 10, 20, 20], crowd=1)
    ann(11, 3, [5, 5, 0, 10])                                # zero width: degenerate
    ann(13, 3, [30, 30, 20, 20])                             # runs out of the image: clipped
    ann(14, 3, [1, 1, 5, 5])
    path = root / "annotations" / "instances_train2017.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(root), str(path), str(images_dir)


def test_coco_end_to_end(coco_files):
    root, ann_file, image_dir = coco_files
    ds, names = _read(source="coco_json", train_ann=ann_file, train_images=image_dir)
    assert names == ["car", "train", "light"]
    examples = {int(e["image_id"]): e for e in ds.as_numpy_iterator()}
    assert sorted(examples) == [11, 12, 13]
    e = examples[11]
    assert list(e["labels"]) == [1, 2] and list(e["is_crowd"]) == [False, True]
    np.testing.assert_allclose(e["area"], [500.0, 400.0])
    assert len(examples[12]["labels"]) == 0
    np.testing.assert_allclose(examples[13]["boxes"], [[0.75, 0.75, 1.0, 1.0]])

    train = list(make_dataset(ds, 64, 3, 5, training=True, name="coco_train"))
    images, targets = train[0]
    assert images.shape == (3, 64, 64, 3)
    assert int(targets["valid"].numpy().sum()) == 3  # the crowd box is trained as an object

    cfg = types.SimpleNamespace(source="coco", root=root, train_sets=(), eval_sets=("train2017",))
    gt = get_source(cfg).ground_truth("eval")
    assert [c["id"] for c in gt["categories"]] == [1, 2, 3]
    a = [x for x in gt["annotations"] if x["image_id"] == 11]
    assert [x["iscrowd"] for x in a] == [0, 1] and a[0]["area"] == 500.0
    np.testing.assert_allclose(a[0]["bbox"], [0, 0, 32, 24], atol=1e-4)


def test_category_map_round_trip(coco_files):
    _, ann_file, _ = coco_files
    cmap = category_map(ann_file)
    assert cmap.category_ids == [3, 7, 10]
    for label in range(3):
        assert cmap.to_label(cmap.to_category_id(label)) == label
    np.testing.assert_array_equal(cmap.labels_to_category_ids([2, 0, 1]), [10, 3, 7])
    with pytest.raises(DataError):
        cmap.to_label(4)
    assert CategoryMap([{"id": 90, "name": "b"}, {"id": 1, "name": "a"}]).class_names == ["a", "b"]


def test_coco_json_dispatch_and_errors(coco_files, tmp_path):
    _, ann_file, image_dir = coco_files
    cfg = types.SimpleNamespace(source="coco_json", train_ann=ann_file, train_images=image_dir)
    ds, names = _split(cfg, "train")
    assert len(names) == 3 and len(list(ds)) == 3
    with pytest.raises(DataError, match="not found"):
        _read(source="coco_json", train_ann=str(tmp_path / "missing.json"),
              train_images=image_dir)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json' is not valid JSON"):
        _read(source="coco_json", train_ann=str(bad), train_images=image_dir)
    with pytest.raises(DataError, match="image folder"):
        _read(source="coco_json", train_ann=ann_file, train_images=str(tmp_path / "noimages"))
    with pytest.raises(DataError, match="data.source"):
        get_source(types.SimpleNamespace(source="kitti"))


@pytest.mark.slow
@pytest.mark.parametrize("name,crowd_key", [("voc/2007", "difficult"), ("coco/2017", "is_crowd")])
def test_tfds_mock(name, crowd_key):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        ds, names = _read(source="tfds", tfds_name=name, train_sets=("train",))
        assert len(names) == (20 if name.startswith("voc") else 80)
        examples = list(ds.as_numpy_iterator())
        assert len(examples) == 6
        # boxes are the raw objects/bbox (ymin, xmin, ymax, xmax) reordered to xyxy
        raw = list(tfds.load(name, split="train").as_numpy_iterator())
        swapped = 0
        for e, r in zip(examples, raw):
            # (the mock's per-object lists differ in length: the shortest read sets the count)
            n = min(len(v) for k, v in r["objects"].items()
                    if k in ("bbox", "label", "is_difficult", "is_crowd", "area"))
            yxyx = r["objects"]["bbox"].astype(np.float32).reshape(-1, 4)[:n]
            np.testing.assert_array_equal(e["boxes"], yxyx[:, [1, 0, 3, 2]])
            swapped += int(np.any(yxyx[:, [1, 0, 3, 2]] != yxyx))
        assert swapped >= 5  # the mock's boxes are asymmetric: a missing swap fails
        for e in examples:
            assert e["image"].dtype == np.uint8 and e["image"].shape[-1] == 3
            assert e["boxes"].shape[1:] == (4,) and e["boxes"].dtype == np.float32
            assert len(e["labels"]) == len(e["boxes"]) == len(e[crowd_key])
        batches = list(make_dataset(ds, 64, 4, 8, training=True, name="tfds"))
        assert len(batches) == 1 and batches[0][0].shape == (4, 64, 64, 3)
        ev = list(make_dataset(ds, 64, 4, 8, training=False, name="tfds_eval"))
        assert sum(b[0].shape[0] for b in ev) == 6
        cfg = types.SimpleNamespace(source="tfds", tfds_name=name)
        gt = get_source(cfg).ground_truth("eval")
        assert len(gt["images"]) == 6


def test_tfds_missing_dataset(tmp_path):
    with pytest.raises(DataError, match="voc/2007"):
        _read("eval", source="tfds", tfds_name="voc/2007", eval_sets=("test",),
              data_dir=str(tmp_path))


def test_synthetic_dispatch_with_config():
    from mgdet import config
    cfg = config.DataConfig(num_train=8, num_eval=4)
    ds, names = _split(cfg, "train", 64)
    assert len(names) >= 6 and len(list(ds)) == 8
    gt = get_source(cfg, 64).ground_truth("eval")
    assert len(gt["images"]) == 4
    ev, _ = _split(cfg, "eval", 64)
    assert to_coco(ev, names) == gt

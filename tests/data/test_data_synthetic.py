"""The embedded synthetic dataset: determinism, coverage, size distribution, COCO export."""
import numpy as np
import pytest
import tensorflow as tf

from mgdet.data.common import to_coco
from mgdet.data.synthetic import generated, painter, shapes, source

SIZE = 128


@pytest.fixture(scope="module")
def data():
    return generated.generate(240, SIZE, 7, "train")


def test_same_seed_same_images_and_prefix_stable():
    a = generated.generate(12, SIZE, 3, "train")
    generated.generate.cache_clear()
    b = generated.generate(12, SIZE, 3, "train")
    assert a is not b
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.labels, b.labels)
    # image i does not depend on how many images were asked for
    c = generated.generate(6, SIZE, 3, "train")
    np.testing.assert_array_equal(c.images, a.images[:6])
    np.testing.assert_array_equal(c.boxes, a.boxes[:c.row_splits[-1]])


def test_parallel_workers_give_the_same_images():
    a = generated.generate(10, 64, 5, "val")
    b = generated.generate(10, 64, 5, "val", workers=2)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.row_splits, b.row_splits)


def test_seed_and_split_change_the_images():
    a = generated.generate(6, SIZE, 3, "train")
    assert not np.array_equal(a.images, generated.generate(6, SIZE, 4, "train").images)
    val = generated.generate(6, SIZE, 3, "val")
    assert not any(np.array_equal(x, y) for x in a.images for y in val.images)


def test_annotations_are_valid(data):
    assert data.images.shape == (240, SIZE, SIZE, 3) and data.images.dtype == np.uint8
    assert data.boxes.dtype == np.float32 and data.labels.dtype == np.int32
    assert np.all(data.boxes >= 0) and np.all(data.boxes <= 1)
    wh = (data.boxes[:, 2:] - data.boxes[:, :2]) * SIZE
    assert np.all(wh >= painter.MIN_BOX_PX)
    assert data.row_splits[-1] == len(data.labels)
    # images are not flat: the background has structure and noise
    assert data.images.reshape(240, -1).std(axis=1).min() > 3


def test_class_coverage_empty_images_and_sizes(data):
    stats = generated.describe(data)
    counts = np.array(list(stats["class_counts"].values()))
    assert len(counts) == len(shapes.CLASS_NAMES) >= 6
    assert counts.min() >= 0.5 * counts.mean()          # every class well represented
    assert stats["empty_images"] >= 3                     # some images with no objects
    n = stats["objects"]
    for key in ("small", "medium", "large"):
        assert stats[key] >= 0.05 * n, stats              # COCO size ranges all covered
    assert stats["aspect_min"] < 0.5 and stats["aspect_max"] > 2.0
    assert stats["objects_per_image_max"] >= 6            # crowded images exist


def test_occlusion_present(data):
    """Some annotated boxes overlap (occluded objects keep their full box)."""
    overlaps = 0
    for i in range(len(data)):
        b = data.boxes[data.row_splits[i]:data.row_splits[i + 1]]
        if len(b) > 1:
            iou = tf.linalg.band_part(_iou(b, b), 0, -1) - tf.eye(len(b))
            overlaps += int(np.sum(iou.numpy() > 0.1))
    assert overlaps > 20


def _iou(a, b):
    from mgdet.ops.boxes import iou
    return iou(a, b)


def test_dataset_examples_and_coco(data):
    ds = source.synthetic_dataset(240, SIZE, 7, "train")
    ex = next(iter(ds))
    assert ex["image"].dtype == tf.uint8 and ex["image"].shape == (SIZE, SIZE, 3)
    assert ex["boxes"].dtype == tf.float32 and ex["labels"].dtype == tf.int32
    assert ex["image_id"].dtype == tf.int64 and int(ex["image_id"]) == 1
    np.testing.assert_array_equal(ex["image"].numpy(), data.images[0])

    coco = to_coco(ds.take(20), shapes.CLASS_NAMES)
    coco_fast = data.to_coco()
    assert coco["images"] == coco_fast["images"][:20]
    assert coco["annotations"] == coco_fast["annotations"][:len(coco["annotations"])]
    assert [c["id"] for c in coco_fast["categories"]] == list(range(1, len(shapes.CLASS_NAMES) + 1))
    assert len(coco_fast["annotations"]) == len(data.labels)
    a = coco_fast["annotations"][0]
    box = data.boxes[0] * SIZE
    np.testing.assert_allclose(a["bbox"], [box[0], box[1], box[2] - box[0], box[3] - box[1]], atol=1e-3)
    assert a["category_id"] == data.labels[0] + 1 and a["iscrowd"] == 0

    from pycocotools.coco import COCO
    import contextlib
    import io
    api = COCO()
    api.dataset = coco_fast
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    assert len(api.getImgIds()) == 240


def test_shuffled_dataset_is_a_permutation():
    ds = source.synthetic_dataset(20, SIZE, 7, "train", shuffle=True)
    ids = [int(e["image_id"]) for e in ds]
    assert sorted(ids) == list(range(1, 21)) and ids != sorted(ids)


def test_bad_split():
    from mgdet.data.common import DataError
    with pytest.raises(DataError, match="unknown split 'nope'"):
        generated.generate(2, SIZE, 0, "nope")

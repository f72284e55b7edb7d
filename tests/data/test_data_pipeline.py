"""make_dataset: batch layout, sanitation counts, truncation warning, determinism."""
import numpy as np
import pytest
import tensorflow as tf

from mgdet.data import DataError, stats
from mgdet.data.pipeline import make_dataset, sanitize
from mgdet.data.synthetic.source import synthetic_dataset

NAN = float("nan")


def _examples(box_lists, size=(40, 60)):
    """A dataset of decoded examples with the given [K, 4] box lists (labels 1..K)."""
    def gen():
        for i, boxes in enumerate(box_lists):
            b = np.asarray(boxes, np.float32).reshape(-1, 4)
            yield {"image": np.full(size + (3,), 100 + i, np.uint8), "boxes": b,
                   "labels": np.arange(1, len(b) + 1, dtype=np.int32), "image_id": np.int64(i + 1)}
    sig = {"image": tf.TensorSpec([None, None, 3], tf.uint8), "boxes": tf.TensorSpec([None, 4], tf.float32),
           "labels": tf.TensorSpec([None], tf.int32), "image_id": tf.TensorSpec([], tf.int64)}
    return tf.data.Dataset.from_generator(gen, output_signature=sig)


def test_sanitize_drops_degenerate_and_clips():
    c = stats.counters("t_sanitize")
    c.reset()
    ex = {"image": tf.zeros([4, 4, 3], tf.uint8), "image_id": tf.constant(1, tf.int64),
          "boxes": tf.constant([[0.1, 0.1, 0.5, 0.5],     # fine
                                [0.3, 0.3, 0.3, 0.6],     # zero width
                                [0.6, 0.2, 0.4, 0.5],     # negative width
                                [NAN, 0.1, 0.2, 0.2],     # NaN
                                [-0.2, 0.5, 0.4, 1.3],    # clipped
                                [1.2, 0.1, 1.5, 0.3]]),   # entirely outside: degenerate after clip
          "labels": tf.constant([1, 2, 3, 4, 5, 6]),
          "difficult": tf.constant([False, False, False, False, True, False])}
    out = sanitize(ex, c)  # the difficult box is kept (training and evaluation alike)
    np.testing.assert_allclose(out["boxes"].numpy(), [[0.1, 0.1, 0.5, 0.5], [0.0, 0.5, 0.4, 1.0]])
    assert list(out["labels"].numpy()) == [1, 5] and list(out["difficult"].numpy()) == [False, True]
    v = c.values()
    assert v["boxes_degenerate"] == 4 and v["boxes_clipped"] == 1 and v["boxes_in"] == 6
    assert v["boxes_difficult"] == 1


def test_batches_layout_padding_and_counts(capfd):
    boxes = [[[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.2, 0.9]],            # one degenerate
             [],                                                        # no objects
             [[0.1 * i, 0.1, 0.1 * i + 0.05, 0.3] for i in range(6)],  # 6 > max_objects
             [[0.5, 0.5, 1.4, 0.9]]]                                   # clipped
    stats.reset()
    ds = make_dataset(_examples(boxes), 64, 2, max_objects=4, training=False, name="t_layout")
    batches = list(ds)
    assert len(batches) == 2
    images, t = batches[0]
    assert images.dtype == tf.float32 and images.shape == (2, 64, 64, 3)
    assert t["boxes"].shape == (2, 4, 4) and t["labels"].dtype == tf.int32 and t["valid"].dtype == tf.bool
    np.testing.assert_array_equal(t["valid"].numpy(), [[1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(t["labels"].numpy(), [[1, 0, 0, 0], [0, 0, 0, 0]])
    assert np.all(t["boxes"].numpy()[~t["valid"].numpy()] == 0)
    np.testing.assert_array_equal(t["image_id"].numpy(), [1, 2])
    np.testing.assert_array_equal(t["orig_size"].numpy(), [[40, 60], [40, 60]])
    t2 = batches[1][1]
    np.testing.assert_array_equal(t2["valid"].numpy().sum(1), [4, 1])
    np.testing.assert_allclose(t2["boxes"].numpy()[1, 0], [0.5, 0.5, 1.0, 0.9])
    v = stats.snapshot()["t_layout"]
    assert v["images"] == 4 and v["images_empty"] == 1 and v["boxes_degenerate"] == 1
    assert v["boxes_clipped"] == 1 and v["boxes_truncated"] == 2 and v["images_truncated"] == 1
    assert v["boxes_kept"] == 6
    list(ds)  # a second epoch: counted again, warned only once
    assert stats.snapshot()["t_layout"]["images_truncated"] == 2
    err = capfd.readouterr().err
    assert err.count("keeping the first 4") == 1
    assert "boxes_truncated=4" in stats.summary()


def test_training_batches_synthetic_deterministic():
    src = synthetic_dataset(24, 96, 1, "train")

    def run(seed):
        ds = make_dataset(src, 64, 8, max_objects=20, training=True, seed=seed, shuffle_buffer=16)
        return [(x.numpy(), {k: v.numpy() for k, v in y.items()}) for x, y in ds]

    a, b, c = run(3), run(3), run(4)
    assert len(a) == 3 and set(a[0][1]) == {"boxes", "labels", "valid"}
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        for k in ya:
            np.testing.assert_array_equal(ya[k], yb[k])
    assert not np.array_equal(a[0][0], c[0][0])
    x = a[0][0]
    assert x.shape == (8, 64, 64, 3) and x.min() >= 0 and x.max() <= 255
    boxes, valid = a[0][1]["boxes"], a[0][1]["valid"]
    vb = boxes[valid]
    assert np.all(vb[:, 2] > vb[:, 0]) and np.all(vb[:, 3] > vb[:, 1])
    assert np.all(vb >= 0) and np.all(vb <= 1)


def test_epochs_differ_but_runs_repeat():
    src = synthetic_dataset(8, 64, 1, "train")
    ds = make_dataset(src, 64, 8, 10, training=True, seed=0)
    e1, e2 = [x.numpy() for x, _ in ds], [x.numpy() for x, _ in ds]
    assert not np.array_equal(e1[0], e2[0])          # new augmentation every epoch
    ds_again = make_dataset(src, 64, 8, 10, training=True, seed=0)
    np.testing.assert_array_equal(e1[0], next(iter(ds_again))[0].numpy())


def test_no_augmentation_and_cache_and_repeat():
    src = synthetic_dataset(4, 64, 2, "train")
    ds = make_dataset(src, 64, 2, 10, training=True, augment=False, shuffle_buffer=0, cache=True,
                      repeat=True)
    x, y = next(iter(ds))
    # a cached training pass is reshuffled (by a seeded buffer that also depends on the global
    # seed): the first element is one of the source's, unchanged (no augmentation)
    examples = list(src)
    match = [e for e in examples
             if np.allclose(x[0].numpy(), e["image"].numpy().astype(np.float32), atol=1e-3)]
    assert len(match) == 1, "the first training image is none of the source's images"
    ex = match[0]
    k = len(ex["labels"])
    np.testing.assert_allclose(y["boxes"][0, :k].numpy(), ex["boxes"].numpy(), atol=1e-6)
    assert len(list(ds.take(7))) == 7
    # cached + training: the whole cache is reshuffled each epoch
    cached = make_dataset(synthetic_dataset(16, 64, 2, "train"), 64, 16, 10, training=True,
                          augment=False, shuffle_buffer=2, cache=True)
    orders = [tuple(x[:, 0, 0, 0].numpy()) for x, _ in list(cached) + list(cached)]
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])


def test_errors():
    with pytest.raises(DataError, match="tf.data.Dataset"):
        make_dataset([1, 2], 64, 2)
    with pytest.raises(DataError, match="lack"):
        make_dataset(tf.data.Dataset.range(3), 64, 2)
    with pytest.raises(DataError, match="positive"):
        make_dataset(_examples([[]]), 64, 0)
    with pytest.raises(DataError, match="augment"):
        make_dataset(_examples([[]]), 64, 1, augment={"zoom": 2})


def test_stats_callback_prints_the_last_complete_pass():
    boxes = [[[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.2, 0.9]], [], [[0.5, 0.5, 1.4, 0.9]]]
    ds = make_dataset(_examples(boxes), 64, 2, training=False, name="t_cb")
    lines = []
    cb = stats.StatsCallback(print_fn=lines.append, groups=["t_cb"])
    cb.on_train_begin()
    next(iter(ds))  # an unfinished pass: nothing to print
    cb.on_epoch_end(0)
    list(ds)
    list(ds)
    cb.on_epoch_end(1)
    assert lines == ["epoch 2 data: t_cb (one pass over the images): images=3 images_empty=1 "
                     "boxes_in=3 boxes_degenerate=1 boxes_clipped=1"]
    assert stats.last_pass("t_cb")[0] >= 2

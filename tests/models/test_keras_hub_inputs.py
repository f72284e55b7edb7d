"""keras-hub-style inputs: ``bounding_box_format``, ``{"boxes", "labels" | "classes"}`` targets
with -1 padding, predictions in the model's box format, class names saved in a ``.keras`` file.

Box conversions are checked against numpy written from each format's definition; the model-level
tests compare the same batch given in mgdet's own form and in keras-hub's.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mgdet.models import FSSD
from mgdet.ops.targets import BOX_FORMATS, check_box_format, standardize_targets
from tests.batches import painted_batch

S = 64


def from_rel_xyxy(b, fmt, size):
    """numpy, from the definitions: relative xyxy -> ``fmt`` (absolute = pixels of size)."""
    x1, y1, x2, y2 = np.moveaxis(b, -1, 0)
    rel = fmt.startswith("rel_")
    k = 1.0 if rel else float(size)
    x1, y1, x2, y2 = x1 * k, y1 * k, x2 * k, y2 * k
    base = fmt[4:] if rel else fmt
    cols = {"xyxy": (x1, y1, x2, y2), "yxyx": (y1, x1, y2, x2),
            "xywh": (x1, y1, x2 - x1, y2 - y1),
            "center_xywh": ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1),
            "center_yxhw": ((y1 + y2) / 2, (x1 + x2) / 2, y2 - y1, x2 - x1)}[base]
    return np.stack(cols, -1).astype(np.float32)


def random_rel_boxes(rng, shape):
    a, b = rng.uniform(0, 1, shape + (2,)), rng.uniform(0, 1, shape + (2,))
    return np.concatenate([np.minimum(a, b), np.maximum(a, b)], -1).astype(np.float32)


@pytest.mark.parametrize("fmt", BOX_FORMATS)
def test_every_box_format_converts_to_relative_xyxy(fmt):
    rng = np.random.default_rng(1)
    rel = random_rel_boxes(rng, (3, 5))
    labels = rng.integers(-1, 4, (3, 5))
    out = standardize_targets({"boxes": from_rel_xyxy(rel, fmt, S), "labels": labels}, fmt, S)
    np.testing.assert_allclose(out["boxes"].numpy(), rel, atol=1e-5)
    np.testing.assert_array_equal(out["valid"].numpy(), labels >= 0)
    np.testing.assert_array_equal(out["labels"].numpy(), np.maximum(labels, 0))
    assert out["labels"].dtype == tf.int32


def test_classes_key_float_labels_and_an_explicit_valid_mask():
    boxes = np.array([[[0.1, 0.1, 0.5, 0.5], [0, 0, 0, 0]]], np.float32)
    out = standardize_targets({"boxes": boxes, "classes": np.array([[2.0, -1.0]])})
    assert out["labels"].numpy().tolist() == [[2, 0]]
    assert out["valid"].numpy().tolist() == [[True, False]]
    # a given valid mask wins over the labels' sign (mgdet's own targets: labels >= 0 always)
    out = standardize_targets({"boxes": boxes, "labels": np.array([[2, 0]]),
                               "valid": np.array([[True, False]])})
    assert out["valid"].numpy().tolist() == [[True, False]]
    # no objects at all
    out = standardize_targets({"boxes": np.zeros((2, 0, 4), np.float32),
                               "labels": np.zeros((2, 0), np.int32)})
    assert out["valid"].shape == (2, 0)
    # an "ignore" mask passes through as it is; none given, none made
    ignore = np.array([[False, True]])
    out = standardize_targets({"boxes": boxes, "labels": np.array([[2, -1]]), "ignore": ignore})
    assert out["ignore"] is ignore
    assert "ignore" not in standardize_targets({"boxes": boxes, "labels": np.array([[2, -1]])})


NOT_A_DICT = ("targets must be a dict with 'boxes' [B, M, 4] and 'labels' (or 'classes') [B, M] "
              "(-1 for padding), optionally 'valid' [B, M]; got {}")
NOT_DENSE = ("targets must be dense: pad boxes and labels to M objects per image (labels -1 for "
             "padding), e.g. with keras.utils.bounding_boxes.pad or "
             "RaggedTensor.to_tensor(default_value=-1)")
RAGGED_BOXES = tf.ragged.constant([[[0.1, 0.1, 0.2, 0.2]], []], ragged_rank=1)
RAGGED_LABELS = tf.ragged.constant([[1], []])


@pytest.mark.parametrize("targets,message", [
    ({"bbox": np.zeros((1, 1, 4)), "labels": np.zeros((1, 1))},
     NOT_A_DICT.format("['bbox', 'labels']")),
    ({"boxes": np.zeros((1, 1, 4))}, NOT_A_DICT.format("['boxes']")),
    (np.zeros((1, 1, 4)), NOT_A_DICT.format("ndarray")),
    ({"boxes": RAGGED_BOXES, "labels": RAGGED_LABELS}, NOT_DENSE),
    # either one ragged is refused, the other padded or not
    ({"boxes": RAGGED_BOXES, "labels": np.array([[1], [-1]])}, NOT_DENSE),
    ({"boxes": np.zeros((2, 1, 4), np.float32), "classes": RAGGED_LABELS}, NOT_DENSE),
])
def test_bad_targets_name_the_expected_keys(targets, message):
    """One line: what is expected (keys and shapes), what was given (the keys, or the type), the
    fix for ragged targets."""
    with pytest.raises(ValueError) as error:
        standardize_targets(targets)
    assert str(error.value) == message


def test_unknown_box_format_is_refused():
    with pytest.raises(ValueError, match="bounding_box_format must be one of"):
        FSSD(num_classes=3, backbone="resnet18", image_size=S, width=0.125,
             bounding_box_format="cxcywh")
    # the message lists every accepted format, comma-separated, and the one given
    with pytest.raises(ValueError) as error:
        check_box_format("cxcywh")
    message = str(error.value)
    assert message.endswith(", got 'cxcywh'")
    listed = message.split("must be one of ", 1)[1].rsplit(", got ", 1)[0]
    assert listed.split(", ") == list(BOX_FORMATS)
    assert all(check_box_format(f) == f for f in BOX_FORMATS)


def _tiny(**kwargs):
    keras.utils.set_random_seed(0)
    return FSSD(num_classes=3, backbone="resnet18", image_size=S, width=0.125, **kwargs)


@pytest.mark.slow
def test_keras_hub_targets_train_exactly_like_mgdets_own():
    """One batch in mgdet's form and in keras-hub's (pixel xywh, labels -1-padded under
    'classes'): the same losses, and one training step gives the same weights."""
    images, targets = painted_batch(S, 2, 4, 3, seed=3)
    valid = targets["valid"]
    hub = {"boxes": from_rel_xyxy(targets["boxes"], "xywh", S),
           "classes": np.where(valid, targets["labels"], -1)}
    own_model, hub_model = _tiny(), _tiny(bounding_box_format="xywh")
    results = []
    for model, tgt in ((own_model, targets), (hub_model, hub)):
        model.compile(optimizer=keras.optimizers.SGD(0.01))
        before = model.evaluate(images, tgt, batch_size=2, verbose=0, return_dict=True)
        model.fit(images, tgt, batch_size=2, epochs=1, verbose=0, shuffle=False)
        results.append((before, model.get_weights()))
    (own_losses, own_w), (hub_losses, hub_w) = results
    assert own_losses["num_pos_cls"] > 0
    for key in ("loss", "cls_loss", "reg_loss", "num_pos_cls", "num_pos_reg"):
        assert hub_losses[key] == pytest.approx(own_losses[key], rel=1e-5, abs=1e-7), key
    assert max(np.abs(a - b).max() for a, b in zip(own_w, hub_w)) < 1e-5


@pytest.mark.slow
def test_predict_returns_boxes_in_the_models_format():
    model = _tiny(bounding_box_format="center_xywh", score_threshold=0.0, max_detections=20)
    images = painted_batch(S, 2, 3, 3, seed=5)[0]
    own = model.detect(images)
    out = model.predict(images, verbose=0)
    np.testing.assert_allclose(out["boxes"], from_rel_xyxy(own["boxes"].numpy(), "center_xywh",
                                                           S), atol=1e-4)
    np.testing.assert_array_equal(out["classes"], own["classes"].numpy())


@pytest.mark.slow
def test_class_names_travel_in_the_keras_file(tmp_path):
    import mgdet
    names = ("cat", "dog", "bird")
    model = _tiny(class_names=names, score_threshold=0.0, max_detections=5)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert tuple(loaded.class_names) == names
    # any image size: resized inside, boxes back in the input's pixels, named by the model
    image = np.random.default_rng(0).integers(0, 255, (90, 150, 3), np.uint8)
    (result,) = mgdet.predict(path, image, score_threshold=0.0)
    assert len(result["names"]) == len(result["classes"]) > 0
    assert all(n == names[c] for n, c in zip(result["names"], result["classes"]))
    # boxes: the model's detections on the resized image, times the input's width and height
    resized = tf.image.resize(tf.cast(image, tf.float32), [S, S], method="bilinear",
                              antialias=False)
    own = loaded.detect(resized[None])
    n = int(own["num_detections"][0])
    np.testing.assert_allclose(result["boxes"], np.clip(own["boxes"][0, :n].numpy(), 0, 1)
                               * [150, 90, 150, 90], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(result["classes"], own["classes"][0, :n].numpy())
    with pytest.raises(ValueError, match="class_names has 2 names for num_classes 3"):
        _tiny(class_names=("a", "b"))

"""mgdet's label assignment inside keras-hub's RetinaNet (``mgdet.keras_hub``).

- parity: with ``strategy="iou"`` and ``force_match=False`` the targets and weights handed to
  keras-hub's losses equal those of keras-hub's own encoder on the same batch; with the force
  they differ exactly at the forced anchors;
- the labels on keras-hub's anchors equal the numpy reference assignment (tests/reference.py) on
  the same anchors and predictions decoded in numpy from keras-hub's box coding;
- training: loss goes down with and without XLA, MirroredStrategy on 2 logical CPUs, ``.keras``
  round trip, from_preset / from_detector, and ``import mgdet`` without keras-hub.
"""
import json
import os
import subprocess
import sys
import textwrap

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from mgdet.assign import PAPER_STRATEGIES
from mgdet.keras_hub import (BalancedL1, MGRetinaNetObjectDetector, set_head_priors,
                             small_retinanet)
from tests import ROOT as REPO
from tests import reference as ref
from tests.batches import painted_batch

# builds keras-hub RetinaNets (module fixtures), fits, saves and starts processes
pytestmark = pytest.mark.slow

S, C = 64, 3
EPS = 1e-5


def to_format(xyxy, fmt):
    """numpy, from the definitions: absolute xyxy -> ``fmt`` (xyxy, yxyx, center_xywh)."""
    x1, y1, x2, y2 = np.moveaxis(xyxy, -1, 0)
    cols = {"xyxy": (x1, y1, x2, y2), "yxyx": (y1, x1, y2, x2),
            "center_xywh": ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)}[fmt]
    return np.stack(cols, -1).astype(np.float32)


def random_targets(rng, fmt, batch=2, m=6, thresholds=True):
    """keras-hub targets in ``fmt`` (pixels, ``-1`` padding), the same objects xyxy and their
    validity: random boxes of 4..60 px (many below the smallest anchor's IoU 0.5), one image all
    padding when ``batch`` > 2, an exact duplicate (IoU ties between objects), and if
    ``thresholds`` boxes of IoU exactly 0.5 and 0.4 with a P3 anchor (``[-8, -8, 24, 24]``)."""
    c = rng.uniform(0, S, (batch, m, 2))
    wh = rng.uniform(4, 60, (batch, m, 2))
    xyxy = np.concatenate([c - wh / 2, c + wh / 2], -1).astype(np.float32)
    labels = rng.integers(0, C, (batch, m)).astype(np.float32)
    xyxy[0, 1], labels[0, 1] = xyxy[0, 0], (labels[0, 0] + 1) % C  # same box, other class
    if thresholds:
        xyxy[0, 2] = [-8, -8, 24, 8]  # IoU 512 / 1024 = 0.5 with the anchor [-8, -8, 24, 24]
        xyxy[1, 0] = [-8, -8, 24, 4.8]  # IoU 0.4 (to float rounding)
    pad = rng.uniform(size=(batch, m)) < 0.25
    pad[:, 0] = False
    if batch > 2:
        pad[2] = True
    labels[pad] = -1
    boxes = to_format(xyxy, fmt)
    boxes[pad] = -1.0
    return {"boxes": boxes, "labels": labels}, xyxy, ~pad


def images(rng, batch=2):
    return rng.uniform(0, 255, (batch, S, S, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def stock_yxyx():
    keras.utils.set_random_seed(0)
    return small_retinanet(C, S, "yxyx", mg=False)


@pytest.fixture(scope="module")
def stock_xyxy():
    keras.utils.set_random_seed(1)
    return small_retinanet(C, S, "xyxy", mg=False)


def handed_to_loss(model, x, y, y_pred, monkeypatch):
    """The ``(y_true, sample_weight)`` that ``model.compute_loss`` passes to Keras' compiled
    losses (``keras.Model.compute_loss``), as numpy."""
    seen = []
    original = keras.Model.compute_loss

    def capture(self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs):
        seen.append((y, sample_weight))
        return original(self, x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "compute_loss", capture)
        model.compute_loss(x, y, y_pred, None)
    (y_true, weights), = seen
    return ({k: np.asarray(v) for k, v in y_true.items()},
            {k: np.asarray(v) for k, v in weights.items()})


# --- parity with keras-hub's encoder ---------------------------------------------------------

@pytest.mark.parametrize("fmt", ["yxyx", "xyxy"])
def test_iou_without_force_hands_keras_hub_its_own_targets(fmt, stock_yxyx, stock_xyxy,
                                                           monkeypatch):
    stock = stock_yxyx if fmt == "yxyx" else stock_xyxy
    mg = MGRetinaNetObjectDetector.from_detector(stock, strategy="iou", force_match=False)
    rng = np.random.default_rng(3)
    for case in range(3):
        x = images(rng, 3)
        y, _, _ = random_targets(rng, fmt, batch=3)
        y_pred = stock(x)
        want_y, want_w = handed_to_loss(stock, x, y, y_pred, monkeypatch)
        got_y, got_w = handed_to_loss(mg, x, y, y_pred, monkeypatch)
        assert want_w["cls_logits"].sum() > 0, "the case has positives"
        for key in ("cls_logits", "bbox_regression"):
            np.testing.assert_array_equal(got_w[key], want_w[key], err_msg=f"{key} case {case}")
        np.testing.assert_array_equal(got_y["cls_logits"], want_y["cls_logits"])
        positive = want_w["bbox_regression"] > 0  # elsewhere keras-hub's targets are unused
        np.testing.assert_allclose(got_y["bbox_regression"][positive],
                                   want_y["bbox_regression"][positive], rtol=1e-6, atol=1e-6)
        assert np.all(got_y["bbox_regression"][~positive] == 0)


def test_force_match_differs_from_keras_hub_only_at_the_forced_anchors(stock_xyxy, monkeypatch):
    """mgdet's default gives each object whose best IoU is below 0.5 its best anchor; every
    other label and weight ratio is keras-hub's."""
    mg = MGRetinaNetObjectDetector.from_detector(stock_xyxy, strategy="iou")
    rng = np.random.default_rng(5)
    x = images(rng)
    y, xyxy, valid = random_targets(rng, "xyxy")
    y_pred = stock_xyxy(x)
    want_y, want_w = handed_to_loss(stock_xyxy, x, y, y_pred, monkeypatch)
    got_y, got_w = handed_to_loss(mg, x, y, y_pred, monkeypatch)
    anchors = np.concatenate([np.asarray(a) for a in stock_xyxy.anchor_generator(x).values()])
    forced = np.zeros(want_w["cls_logits"].shape, bool)
    for b in range(len(x)):
        iou = np.stack([ref.iou_one(xyxy[b, j], anchors) for j in range(len(xyxy[b]))])
        iou[~valid[b]] = 0
        for j in np.flatnonzero(valid[b] & (iou.max(1) < 0.5)):
            forced[b, np.argmax(iou[j])] = True
    assert forced.any(), "the case has an object below the positive threshold"
    want_cls = np.where(want_w["cls_logits"] == 0, -2, want_y["cls_logits"].argmax(-1))
    want_cls[(want_w["cls_logits"] > 0) & (want_y["cls_logits"].max(-1) == 0)] = -1
    got_cls = np.where(got_w["cls_logits"] == 0, -2, got_y["cls_logits"].argmax(-1))
    got_cls[(got_w["cls_logits"] > 0) & (got_y["cls_logits"].max(-1) == 0)] = -1
    np.testing.assert_array_equal(got_cls[~forced], want_cls[~forced])
    assert np.all(got_cls[forced] >= 0) and np.all(got_w["bbox_regression"][forced] > 0)
    # one normalizer each: the positives, forced ones included
    assert np.isclose(1 / got_w["bbox_regression"].max(), (got_cls >= 0).sum())
    assert np.isclose(1 / want_w["bbox_regression"].max(), (want_cls >= 0).sum())


# --- against the numpy reference on keras-hub's anchors --------------------------------------

def decode_ref(deltas, anchors, variance):
    """numpy, from keras-hub's coding (center_xywh offsets scaled by ``variance``) -> xyxy."""
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    cxa, cya = anchors[:, 0] + wa / 2, anchors[:, 1] + ha / 2
    d = deltas * np.asarray(variance, np.float64)
    cx, cy = d[..., 0] * wa + cxa, d[..., 1] * ha + cya
    w, h = np.exp(d[..., 2]) * wa, np.exp(d[..., 3]) * ha
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def encode_ref(box, anchor, variance):
    wa, ha = anchor[2] - anchor[0], anchor[3] - anchor[1]
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([((box[0] + box[2]) - (anchor[0] + anchor[2])) / 2 / wa,
                     ((box[1] + box[3]) - (anchor[1] + anchor[3])) / 2 / ha,
                     np.log(w / wa), np.log(h / ha)]) / np.asarray(variance)


@pytest.fixture(scope="module")
def mg_with_variance():
    """An MG model (center_xywh boxes) whose box coding scales offsets by (.25, .25, .5, .5)
    (not mgdet's own (.1, .1, .2, .2)), with keras-hub's default anchors."""
    from keras_hub.src.models.retinanet.retinanet_label_encoder import RetinaNetLabelEncoder
    keras.utils.set_random_seed(2)
    generator = keras_hub.layers.AnchorGenerator("xyxy", min_level=3, max_level=7, num_scales=3,
                                                 aspect_ratios=[0.5, 1.0, 2.0], anchor_size=4)
    encoder = RetinaNetLabelEncoder(generator, bounding_box_format="center_xywh",
                                    encoding_format="center_xywh",
                                    box_variance=[0.25, 0.25, 0.5, 0.5])
    return small_retinanet(C, S, "center_xywh", anchor_generator=generator,
                           label_encoder=encoder)


@pytest.mark.parametrize("strategy", PAPER_STRATEGIES)
def test_labels_on_keras_hub_anchors_match_the_reference(strategy, mg_with_variance):
    model = mg_with_variance
    model.strategy, model.force_match = strategy, True
    variance = model.label_encoder.box_variance
    rng = np.random.default_rng(7 + PAPER_STRATEGIES.index(strategy))
    compared = excluded = 0
    for case in range(3):
        x = images(rng)
        y, xyxy, valid = random_targets(rng, "center_xywh", thresholds=False)
        n = model.anchors(x).shape[0]
        deltas = rng.normal(0, 0.5, (2, n, 4)).astype(np.float32)
        logits = rng.normal(-2, 2, (2, n, C)).astype(np.float32)
        if case == 2:  # two anchors of one cell predict the very same box: a tie in L2C
            deltas[:, 1] = deltas[:, 0]
            logits[:, 1] = logits[:, 0]
        y_pred = {"bbox_regression": tf.constant(deltas), "cls_logits": tf.constant(logits)}
        assignment, anchors, boxes = model.assign_labels(x, y, y_pred)
        y_true, weights = model.training_targets(x, y, y_pred)
        anchors = anchors.numpy().astype(np.float64)
        np.testing.assert_allclose(boxes.numpy()[valid], xyxy[valid], atol=1e-4)
        got = {k: v.numpy() for k, v in assignment._asdict().items() if v is not None}
        for b in range(2):
            pred = decode_ref(deltas[b].astype(np.float64), anchors, variance)
            kw = dict(logits=logits[b], pred=pred)
            want = ref.assign_ref(strategy, anchors, xyxy[b].astype(np.float64),
                                  np.maximum(y["labels"][b], 0).astype(int), valid[b], **kw)
            amb = ref.ambiguous_anchors(want, anchors, xyxy[b], np.maximum(y["labels"][b], 0)
                                        .astype(int), valid[b], eps=EPS, **kw)
            compared, excluded = compared + (~amb).sum(), excluded + amb.sum()
            for key in ("cls_labels", "cls_gt_index", "reg_positive", "reg_gt_index"):
                np.testing.assert_array_equal(got[key][b][~amb], want[key][~amb],
                                              err_msg=f"{strategy} {key} case {case} image {b}")
            for i in np.flatnonzero(want["reg_positive"] & ~amb):  # box targets
                np.testing.assert_allclose(
                    y_true["bbox_regression"][b, i],
                    encode_ref(xyxy[b, want["reg_gt_index"][i]], anchors[i], variance),
                    rtol=1e-4, atol=1e-4)
            cls_pos = want["cls_labels"] >= 0
            np.testing.assert_array_equal(y_true["cls_logits"].numpy()[b].argmax(-1)[cls_pos],
                                          want["cls_labels"][cls_pos])
        assert np.isclose(weights["bbox_regression"].numpy().sum(), 1.0)
        assert np.isclose(weights["cls_logits"].numpy().max(),
                          1 / (got["cls_labels"] >= 0).sum())
    assert excluded <= 0.05 * (compared + excluded), (excluded, compared)


def test_the_models_own_anchor_generator_and_the_anchor_tie_rule():
    """A model built with 2 anchors per location assigns on those anchors (the generator's
    output, in the outputs' order); an exact L2C tie between anchors goes to the lower index."""
    keras.utils.set_random_seed(3)
    generator = keras_hub.layers.AnchorGenerator("xyxy", min_level=3, max_level=7, num_scales=2,
                                                 aspect_ratios=[1.0], anchor_size=3)
    model = small_retinanet(C, S, "xyxy", anchor_generator=generator, strategy="l2c")
    x = np.zeros((1, S, S, 3), np.float32)
    want = np.concatenate([np.asarray(a) for a in generator(x).values()])
    n = model(x)["cls_logits"].shape[1]
    assert want.shape == (n, 4) and n == 2 * (64 + 16 + 4 + 1 + 1)
    # P3 anchors (stride 8, 24 px at scale 0) of row 1: index (8 * row + col) * 2. Anchors 16
    # (centre x 0) and 22 (x 24) predict the same box [0, -4, 24, 20] (offsets +-0.5: exact in
    # float); anchors 18 (x 8) and 20 (x 16) predict themselves. All four have IoU 256 / 576
    # with the object, bit for bit the same: it ranks them 16, 18, 20, 22.
    np.testing.assert_array_equal(want[[16, 18, 20, 22]], [[-12, -4, 12, 20], [-4, -4, 20, 20],
                                                          [4, -4, 28, 20], [12, -4, 36, 20]])
    box = np.array([[[4.0, 0.0, 20.0, 16.0]]], np.float32)
    deltas = np.zeros((1, n, 4), np.float32)
    deltas[0, 16, 0], deltas[0, 22, 0] = 0.5, -0.5
    y_pred = {"bbox_regression": tf.constant(deltas), "cls_logits": tf.zeros((1, n, C))}
    assignment, anchors, _ = model.assign_labels(x, {"boxes": box, "labels": [[2]]}, y_pred)
    np.testing.assert_array_equal(anchors.numpy(), want)
    # Np = 1 (the forced anchor 18; no anchor reaches IoU 0.5), Ni = 1 (anchor 20, IoU 0.44):
    # rank 0 positive, rank 1 ignored
    cls = assignment.cls_labels.numpy()[0]
    assert cls[[16, 18, 20, 22]].tolist() == [2, -2, -1, -1]
    assert (cls >= 0).sum() == 1 and (cls == -2).sum() == 1
    pred = decode_ref(deltas[0].astype(np.float64), want.astype(np.float64), [1, 1, 1, 1])
    reference = ref.assign_ref("l2c", want.astype(np.float64), box[0].astype(np.float64),
                               np.array([2]), np.array([True]), pred=pred)
    np.testing.assert_array_equal(cls, reference["cls_labels"])


# --- training, distribution, saving, presets -------------------------------------------------

def keras_hub_batch(batch=2, seed=0):
    """painted_batch in keras-hub's form: xyxy pixels, -1 label padding."""
    x, t = painted_batch(S, batch, 4, C, seed=seed)
    boxes = np.where(t["valid"][..., None], t["boxes"] * S, -1.0).astype(np.float32)
    return x, {"boxes": boxes, "labels": np.where(t["valid"], t["labels"], -1).astype(np.float32)}


@pytest.mark.parametrize("jit", [False, True])
def test_a_few_steps_lower_the_loss(jit):
    keras.utils.set_random_seed(4)
    model = small_retinanet(C, S, "xyxy", strategy="mg")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
    x, y = keras_hub_batch()
    losses = model.fit(x, y, batch_size=2, epochs=6, verbose=0).history["loss"]  # a step each
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses


def test_set_head_priors_starts_every_class_at_p_and_every_box_at_its_anchor():
    keras.utils.set_random_seed(5)
    model = small_retinanet(C, S, "xyxy", mg=False)
    box = model.get_layer("box_head").prediction_layer
    cls = model.get_layer("classification_head").prediction_layer
    # keras-hub 0.32's own initialization, the reason for the function: prior on the box head
    np.testing.assert_allclose(box.bias.numpy(), -np.log(99.0), rtol=1e-6)
    np.testing.assert_array_equal(cls.bias.numpy(), 0.0)
    before = {v.path: v.numpy() for v in model.weights}
    assert set_head_priors(model, prior_probability=0.05) is model
    np.testing.assert_array_equal(box.bias.numpy(), 0.0)
    np.testing.assert_allclose(cls.bias.numpy(), np.log(0.05 / 0.95), rtol=1e-6)
    changed = [v.path for v in model.weights if not np.array_equal(v.numpy(), before[v.path])]
    assert sorted(changed) == sorted([box.bias.path, cls.bias.path])
    # with the output kernels at 0 the heads give exactly the priors: p per class, the anchors
    box.kernel.assign(np.zeros(box.kernel.shape, np.float32))
    cls.kernel.assign(np.zeros(cls.kernel.shape, np.float32))
    out = model(images(np.random.default_rng(0)), training=False)
    np.testing.assert_allclose(keras.ops.sigmoid(out["cls_logits"]), 0.05, rtol=1e-5)
    np.testing.assert_array_equal(out["bbox_regression"], 0.0)
    with pytest.raises(ValueError, match="prior_probability"):
        set_head_priors(model, prior_probability=1.0)


def test_balanced_l1_box_loss():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.normal(0, 0.3, (2, 5, 4)), rng.normal(0, 0.3, (2, 5, 4))
    weight = rng.uniform(0, 1, (2, 5))
    got = BalancedL1()(y_true.astype(np.float32), y_pred.astype(np.float32), weight)
    want = sum(weight[b, i] * np.mean([ref.balanced_l1_ref(y_pred[b, i, k] - y_true[b, i, k])
                                       for k in range(4)]) for b in range(2) for i in range(5))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    keras.utils.set_random_seed(5)
    model = small_retinanet(C, S, "xyxy", strategy="mg")
    model.compile(box_loss="balanced_l1", loss_weights={"cls_logits": 0.0, "bbox_regression": 1})
    assert isinstance(model.loss["bbox_regression"], BalancedL1)
    x, y = keras_hub_batch()
    y_pred = model(x)
    y_true, weights = model.training_targets(x, y, y_pred)
    total = float(model.compute_loss(x, y, y_pred, None))
    d, t, w = (np.asarray(a, np.float64) for a in (y_pred["bbox_regression"],
                                                    y_true["bbox_regression"],
                                                    weights["bbox_regression"]))
    want = sum(w[b, i] * np.mean([ref.balanced_l1_ref(d[b, i, k] - t[b, i, k]) for k in range(4)])
               for b, i in zip(*np.nonzero(w)))
    np.testing.assert_allclose(total, want, rtol=1e-4)


def test_keras_file_round_trip_and_config(tmp_path):
    keras.utils.set_random_seed(6)
    model = small_retinanet(C, S, "yxyx", strategy="c2l", sigma=3.0, pos_iou=0.6, neg_iou=0.3,
                            force_match=False)
    x, y = keras_hub_batch()
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.fit(x, y, epochs=1, verbose=0)  # BN statistics and weights away from initialization
    path = str(tmp_path / "mg.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is MGRetinaNetObjectDetector
    options = {k: loaded.get_config()[k] for k in
               ("strategy", "sigma", "pos_iou", "neg_iou", "force_match")}
    assert options == {"strategy": "c2l", "sigma": 3.0, "pos_iou": 0.6, "neg_iou": 0.3,
                       "force_match": False}
    want, got = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-4, err_msg=key)
    raw = model(x)
    np.testing.assert_allclose(loaded(x)["cls_logits"], raw["cls_logits"], atol=1e-5)
    again = MGRetinaNetObjectDetector.from_config(loaded.get_config())
    assert again.get_config()["strategy"] == "c2l" and again.force_match is False


def test_from_preset_and_from_detector(tmp_path, stock_yxyx):
    x = images(np.random.default_rng(8))
    preset = str(tmp_path / "preset")
    stock_yxyx.save_to_preset(preset)
    model = MGRetinaNetObjectDetector.from_preset(preset, strategy="l2c", sigma=1.5)
    assert type(model) is MGRetinaNetObjectDetector
    assert (model.strategy, model.sigma, model.pos_iou) == ("l2c", 1.5, 0.5)
    want = stock_yxyx(x)
    for key in want:
        np.testing.assert_allclose(model(x)[key], want[key], atol=1e-5, err_msg=key)
    # keras-hub's own lookup of a RetinaNet preset still gives its own class
    assert type(keras_hub.models.ObjectDetector.from_preset(preset)) is \
        keras_hub.models.RetinaNetObjectDetector
    assert "retinanet_resnet50_fpn_coco" in MGRetinaNetObjectDetector.presets
    # a saved MG model keeps its options through a preset; given ones override
    model.save_to_preset(str(tmp_path / "mg_preset"))
    back = MGRetinaNetObjectDetector.from_preset(str(tmp_path / "mg_preset"), sigma=3.0)
    assert (back.strategy, back.sigma) == ("l2c", 3.0)


def test_bad_options_are_one_clear_error(stock_yxyx):
    with pytest.raises(ValueError, match="strategy 'atss' is not available.*use one of"):
        MGRetinaNetObjectDetector.from_detector(stock_yxyx, strategy="atss")
    with pytest.raises(ValueError, match=r"sigma must be a finite number in \(1, 100\], got 0.5"):
        MGRetinaNetObjectDetector.from_detector(stock_yxyx, sigma=0.5)
    with pytest.raises(ValueError, match="unknown option.*'sigmaa'"):
        MGRetinaNetObjectDetector.from_detector(stock_yxyx, sigmaa=2.0)
    with pytest.raises(ValueError, match="takes a keras_hub.models.RetinaNetObjectDetector"):
        MGRetinaNetObjectDetector.from_detector(keras.Sequential())
    model = MGRetinaNetObjectDetector.from_detector(stock_yxyx)
    x = images(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(images, \{'boxes', 'labels'\}\) pairs.*'classes'"):
        model.compute_loss(x, {"boxes": np.zeros((2, 1, 4)), "classes": np.zeros((2, 1))},
                           model(x), None)


_MIRRORED = textwrap.dedent(r'''
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    from mgdet.keras_hub import small_retinanet
    from tests.keras_hub_mg.test_keras_hub_mg import keras_hub_batch

    x, y = keras_hub_batch(batch=2, seed=3)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = small_retinanet(3, 64, "xyxy", strategy="mg")
        model.compile(optimizer=keras.optimizers.SGD(1e-4))
    per_image = []  # one image per replica: each replica's loss, on one device
    for b in range(2):
        xb, yb = x[b:b + 1], {k: v[b:b + 1] for k, v in y.items()}
        per_image.append(float(model.compute_loss(xb, yb, model(xb, training=True), None)))
    before = model.get_weights()
    loss = model.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0).history["loss"]
    moved = max(float(np.abs(a - b).max()) for a, b in zip(before, model.get_weights()))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "per_image": per_image,
                      "fit": loss[-1], "moved": moved}))
''')


def test_mirrored_strategy_on_two_cpus():
    """One step on 2 replicas (one image each): each replica's loss is the one its image gets
    on one device, and Keras sums them (keras-hub's losses are sum-reduced, which Keras does not
    scale by the replica count; the stock model reports the same sum)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _MIRRORED], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    np.testing.assert_allclose(out["fit"], np.sum(out["per_image"]), rtol=1e-4)
    assert np.isfinite(out["fit"]) and out["moved"] > 0, out


_BLOCKED = textwrap.dedent(r'''
    import sys

    class NoKerasHub:
        def find_spec(self, name, path=None, target=None):
            if name == "keras_hub" or name.startswith("keras_hub."):
                raise ImportError(f"No module named {name!r}")

    sys.meta_path.insert(0, NoKerasHub())
    import mgdet, mgdet.cli, mgdet.api
    try:
        mgdet.cli.main(["--help"])
    except SystemExit as stop:
        assert stop.code == 0, stop.code
    try:
        import mgdet.keras_hub
    except ImportError as err:
        print("ERROR", err)
    assert not any(m.split(".")[0] == "keras_hub" for m in sys.modules)
''')


def test_import_mgdet_without_keras_hub():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _BLOCKED], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'ERROR mgdet.keras_hub needs keras-hub: pip install "mgdet[keras-hub]"' in proc.stdout

"""Detectors: shapes and anchor order, parameter counts of the paper's models, initial class
probability, training (overfitting one batch under each assignment strategy, ``fit`` on a
``tf.data`` pipeline), ``.keras`` round trip, detections, post-processing, bad arguments and
backbone weight files.

Models are tiny (64-128 px, width 0.25) except in the parameter-count test, which only builds.
"""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mgdet.ops import anchors as anchor_ops
from mgdet.models import FSSD, MODELS, Detector, RetinaNet, RFBNet
from mgdet.models import backbones as backbone_ops
from mgdet.models.detector import METRIC_NAMES
from mgdet.models.heads import DetectionHead
from tests.batches import painted_batch
from mgdet.ops.postprocess import postprocess

PAIRS = [("fssd", "vgg16"), ("fssd", "resnet18"), ("retinanet", "vgg16"),
         ("retinanet", "resnet18"), ("rfbnet", "vgg16")]
NUM_CLASSES = 3


def tiny(arch="fssd", backbone="resnet18", image_size=64, **kwargs):
    keras.utils.set_random_seed(kwargs.pop("seed", 0))
    return MODELS[arch](num_classes=NUM_CLASSES, backbone=backbone, image_size=image_size,
                        width=0.25, **kwargs)


def make_batch(image_size=64, batch=2, max_objects=4, seed=0):
    """See :func:`tests.batches.painted_batch` (NUM_CLASSES classes)."""
    return painted_batch(image_size, batch, max_objects, NUM_CLASSES, seed)


# --- shapes, anchors, parameters ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("arch,backbone", PAIRS)
def test_outputs_match_anchors(arch, backbone):
    model = tiny(arch, backbone, image_size=64)
    n = anchor_ops.num_anchors(64)
    assert model.anchors.shape == (n, 4)
    images, _ = make_batch(64, batch=2)
    deltas, logits = model(images)
    assert deltas.shape == (2, n, 4) and logits.shape == (2, n, NUM_CLASSES)
    assert deltas.dtype == tf.float32 and logits.dtype == tf.float32
    assert np.all(np.isfinite(deltas)) and np.all(np.isfinite(logits))
    # A 5-level input whose last level is ceil-sized (576 / 128 = 4.5 -> 5), symbolically.
    big = MODELS[arch](num_classes=2, backbone=backbone, image_size=576, width=0.125)
    d, lg = big(keras.KerasTensor((1, 576, 576, 3)))
    assert big.num_levels == 5 and big.feature_sizes == [72, 36, 18, 9, 5]
    assert d.shape == (1, anchor_ops.num_anchors(576), 4)
    assert lg.shape == (1, anchor_ops.num_anchors(576), 2)


def test_head_output_order_is_the_anchor_order():
    """Level k's map holds its cell coordinates; reshaped head outputs must land on the anchor
    of that cell (level, row, column, 6 shapes)."""
    size = 128
    fs = anchor_ops.feature_sizes(size)
    head = DetectionHead(len(fs), num_classes=1)
    levels = []
    for k, f in enumerate(fs):
        rows, cols = np.meshgrid(np.arange(f), np.arange(f), indexing="ij")
        levels.append(np.stack([(cols + 0.5) / f, (rows + 0.5) / f, np.full_like(
            rows, k, np.float64)], -1)[None].astype(np.float32))  # [1, f, f, 3]: cx, cy, level
    head(levels)
    for k in range(len(fs)):
        kernel = np.zeros([3, 3, 3, 24], np.float32)
        kernel[1, 1, 0, 0::4] = 1.0  # delta 0 <- cx
        kernel[1, 1, 1, 1::4] = 1.0  # delta 1 <- cy
        kernel[1, 1, 2, 2::4] = 1.0  # delta 2 <- level
        for a in range(6):
            kernel[1, 1, 2, 4 * a + 3] = 0.0
        bias = np.zeros([6, 4], np.float32)
        bias[:, 3] = np.arange(6)  # delta 3 <- shape index within the cell
        head.box_convs[k].set_weights([kernel, bias.reshape(24)])
    deltas = head(levels)[0][0].numpy()  # [N, 4]: cx, cy, level, shape index
    anchors = anchor_ops.generate_anchors(size).numpy()
    n_per_level = [6 * f * f for f in fs]
    level_of_anchor = np.repeat(np.arange(len(fs)), n_per_level)
    np.testing.assert_array_equal(deltas[:, 2], level_of_anchor)
    np.testing.assert_array_equal(deltas[:, 3], np.tile(np.arange(6), len(deltas) // 6))
    # The unclipped anchors are centred on their cells (clipping moves only border anchors).
    inside = np.all((anchors > 0) & (anchors < 1), axis=1)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    np.testing.assert_allclose(deltas[inside, :2], centers[inside], atol=1e-5)


def _conv(kernel, cin, cout, bias=True, bn=True):
    """Trainable parameters of a conv (+ bias) (+ batch-norm gamma and beta)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return kh * kw * cin * cout + (cout if bias else 0) + (2 * cout if bn else 0)


def _vgg16():
    """13 3x3 conv-BN blocks (with bias) up to conv5_3 -> (params, source channels)."""
    chans = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    return sum(_conv(3, cin, c) for cin, c in zip((3,) + chans, chans)), [512, 512]


def _resnet18():
    """7x7 stem, 4 stages of 2 basic blocks (no conv bias), 1x1 projection where the shape
    changes -> (params, C3-C5 channels)."""
    n, cin = _conv(7, 3, 64, bias=False), 64
    for c in (64, 128, 256, 512):
        n += _conv(3, cin, c, False) + 3 * _conv(3, c, c, False)
        n += _conv(1, cin, c, False) if c != 64 else 0  # stride-2 stages
        cin = c
    return n, [128, 256, 512]


def _fssd_neck(sources, levels=4, ch=256):
    """1x1 transforms to 256, 3x3 fuse of the concat, (levels - 1) 3x3 stride-2 convs."""
    return (sum(_conv(1, c, ch) for c in sources) + _conv(3, ch * len(sources), ch)
            + (levels - 1) * _conv(3, ch, ch))


def _rfb(cin, cout, branches):
    """One RFB: branch convs (t = cin // 8, 1.5t -> t // 2 * 3, 0.75t -> t // 4 * 3, 0.5t ->
    t // 2), 1x1 mix of the concat and 1x1 shortcut, all with bias and BN."""
    t = cin // 8
    n, concat = 0, 0
    for branch in branches:
        c = cin
        for multiple, kernel in branch:
            f = {1.5: t // 2 * 3, 0.75: t // 4 * 3, 0.5: t // 2}.get(multiple, int(multiple) * t)
            n, c = n + _conv(kernel, c, f), f
        concat += c
    return n + _conv(1, concat, cout) + _conv(1, cin, cout)


_RFB = [[(2, 1), (2, 3)], [(1, 1), (2, 3), (2, 3)], [(1, 1), (1.5, 3), (2, 3), (2, 3)],
        [(1, 1), (1.5, (1, 7)), (2, (7, 1)), (2, 3)]]
_RFB_S = ([[(1, 1), (1, 3)]] + [[(1, 1), (1, k), (1, 3)] for k in ((3, 1), (1, 3)) * 2]
          + [[(0.5, 1), (0.75, (1, 3)), (1, (3, 1)), (1, 3)],
             [(0.5, 1), (0.75, (3, 1)), (1, (1, 3)), (1, 3)]])


def _head(level_channels, classes=20):
    """Per level a 3x3 conv to 6 x 4 offsets and one to 6 x classes logits (bias, no BN)."""
    return sum(_conv(3, c, 24, bn=False) + _conv(3, c, 6 * classes, bn=False)
               for c in level_channels)


def expected_params(arch, backbone):
    """Trainable parameters of the paper's models (20 classes, width 1.0, 4 levels), counted
    from the architecture: conv kernels and biases, batch-norm gamma and beta."""
    n, sources = _vgg16() if backbone == "vgg16" else _resnet18()
    if arch == "rfbnet":
        neck = (2 * _conv(1, 512, 256) + _rfb(512, 512, _RFB_S) + 2 * _rfb(512, 512, _RFB)
                + _rfb(512, 256, _RFB))
        return n + neck + _head([512, 512, 512, 256])
    fpn = 4 * (_conv(1, 256, 256) + _conv(3, 256, 256)) if arch == "retinanet" else 0
    return n + _fssd_neck(sources) + fpn + _head([256] * 4)


# The authors' models' counts (conv + BN gamma/beta), as a check of the formula above.
PAPER_PARAMS = {("fssd", "vgg16"): 19_266_688, ("fssd", "resnet18"): 16_277_888,
                ("retinanet", "vgg16"): 21_894_272, ("retinanet", "resnet18"): 18_905_472,
                ("rfbnet", "vgg16"): 23_037_792}


@pytest.mark.slow
def test_parameter_counts_of_the_paper_models():
    """20 classes, 320 px, width 1.0: exactly the count of the architecture (the models are
    built symbolically, nothing is computed)."""
    for (arch, backbone), paper in PAPER_PARAMS.items():
        expected = expected_params(arch, backbone)
        assert expected == paper, (arch, backbone, expected, paper)
        model = MODELS[arch](num_classes=20, backbone=backbone, image_size=320)
        count = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        assert count == expected, (arch, backbone, count, expected)
        assert model.num_anchors == 12_750 and model.num_levels == 4
        del model
        keras.backend.clear_session()


@pytest.mark.slow
def test_initial_class_probability_is_001():
    """As in a first training step (batch-norm on batch statistics)."""
    model = tiny("retinanet", "resnet18", image_size=64)
    images, _ = make_batch(64, batch=2)
    _, logits = model(images, training=True)
    p = tf.sigmoid(logits).numpy()
    assert abs(p.mean() - 0.01) < 0.002, p.mean()
    assert abs(np.median(p) - 0.01) < 0.002
    bias = model.head.cls_convs[0].bias.numpy()
    np.testing.assert_allclose(bias, -math.log(99.0), rtol=1e-6)
    np.testing.assert_array_equal(model.head.box_convs[0].bias.numpy(), 0.0)


# --- training ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("strategy,arch,backbone", [
    ("iou", "fssd", "vgg16"), ("l2c", "fssd", "resnet18"), ("c2l", "fssd", "vgg16"),
    ("mg", "fssd", "resnet18")])
def test_overfits_one_batch(strategy, arch, backbone):
    """Every assignment strategy trains: the loss of one fixed batch falls at least 5x within
    30 steps. (RetinaNet trains in the fit test, RFBNet in the save/load test.)"""
    model = tiny(arch, backbone, image_size=64, strategy=strategy)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, targets = make_batch(64, batch=2)
    losses = []
    for _ in range(30):
        logs = model.train_on_batch(images, targets, return_dict=True)
        losses.append(logs["loss"])
    assert set(logs) == set(METRIC_NAMES)
    assert logs["num_pos_cls"] >= 3 and logs["num_pos_reg"] >= 3  # >= 1 per object
    assert logs["loss"] == pytest.approx(logs["cls_loss"] + logs["reg_loss"], rel=1e-5)
    assert losses[0] / losses[-1] >= 5.0, (strategy, losses)


@pytest.mark.slow
def test_fit_evaluate_predict_on_a_dataset():
    model = tiny("retinanet", "resnet18", image_size=64, max_detections=20)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    images, targets = make_batch(64, batch=4)
    ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(2)
    history = model.fit(ds, epochs=2, verbose=0).history
    assert set(history) == set(METRIC_NAMES)
    assert all(np.isfinite(v).all() for v in history.values())
    logs = model.evaluate(ds, verbose=0, return_dict=True)
    assert set(logs) == set(METRIC_NAMES) and np.isfinite(logs["loss"])
    out = model.predict(ds.map(lambda x, y: x), verbose=0)
    assert out["boxes"].shape == (4, 20, 4) and out["num_detections"].shape == (4,)


# --- inference and serialization ------------------------------------------------------------


@pytest.mark.slow
def test_keras_save_load_round_trip(tmp_path):
    model = tiny("rfbnet", "vgg16", image_size=64, strategy="c2l", sigma=3.0, max_detections=7)
    # One eager training step (tracing RFBNet's training graph costs ~20 s of CPU) moves the
    # weights and batch-norm statistics off their initial values.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    images, targets = make_batch(64, batch=2)
    before = model.head.cls_convs[0].kernel.numpy()
    logs = model.train_on_batch(images, targets, return_dict=True)
    assert np.isfinite(logs["loss"]) and not np.allclose(before, model.head.cls_convs[0].kernel)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is RFBNet
    assert loaded.get_config() == model.get_config()
    for a, b in zip(model(images), loaded(images)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_detect_and_predict_outputs():
    k = 25
    model = tiny("fssd", "vgg16", image_size=64, max_detections=k, score_threshold=0.005)
    images, _ = make_batch(64, batch=3)
    out = {key: v.numpy() for key, v in model.detect(images).items()}
    assert out["boxes"].shape == (3, k, 4) and out["boxes"].dtype == np.float32
    assert out["scores"].shape == (3, k) and out["scores"].dtype == np.float32
    assert out["classes"].shape == (3, k) and out["classes"].dtype == np.int32
    assert out["num_detections"].shape == (3,) and out["num_detections"].dtype == np.int32
    assert np.all((out["boxes"] >= 0) & (out["boxes"] <= 1))
    for b in range(3):
        n = out["num_detections"][b]
        assert 0 < n <= k  # untrained: every score ~0.01 > 0.005
        assert np.all(out["scores"][b, :n] >= 0.005)
        assert np.all(np.diff(out["scores"][b, :n]) <= 0)
        assert np.all(out["boxes"][b, :n, 2:] >= out["boxes"][b, :n, :2])
        assert np.all((out["classes"][b, :n] >= 0) & (out["classes"][b, :n] < NUM_CLASSES))
        assert np.all(out["scores"][b, n:] == 0) and np.all(out["boxes"][b, n:] == 0)
    predicted = model.predict(images, batch_size=3, verbose=0)
    for key in out:
        np.testing.assert_allclose(predicted[key], out[key], rtol=1e-5, atol=1e-6)
    deltas, logits = model(images)
    direct = postprocess(deltas, logits, model.anchors, 0.005, 0.5, k)
    np.testing.assert_allclose(direct["scores"], out["scores"], rtol=1e-5, atol=1e-6)


# --- arguments and weights ------------------------------------------------------------------


@pytest.mark.parametrize("cls,kwargs,named", [
    (FSSD, dict(backbone="resnet50"), "'resnet50'"),
    (RFBNet, dict(backbone="resnet18"), "'resnet18'"),
    (RetinaNet, dict(image_size=100), "100"),
    (FSSD, dict(strategy="fcos"), "'fcos'"),
    (FSSD, dict(num_classes=0), "0"),
    (FSSD, dict(width=0.0), "0.0"),
    (FSSD, dict(sigma=1.0), "1.0"),
    (FSSD, dict(max_detections=0), "0"),
    (FSSD, dict(nms_iou=1.5), "1.5"),
])
def test_bad_arguments_raise_value_error_naming_them(cls, kwargs, named):
    args = {**dict(num_classes=2, backbone="vgg16", image_size=64, width=0.125), **kwargs}
    with pytest.raises(ValueError, match=named):
        cls(**args)


def test_detector_base_class_is_abstract():
    with pytest.raises(TypeError):
        Detector(num_classes=2)


@pytest.mark.slow
def test_backbone_weights_file(tmp_path):
    source = tiny("fssd", "resnet18", image_size=64, seed=1)
    path = str(tmp_path / "r18.npz")
    backbone_ops.save_backbone_weights(source.backbone, path)
    target = tiny("retinanet", "resnet18", image_size=64, seed=2, weights=path)
    for a, b in zip(source.backbone.variables, target.backbone.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert target.get_config().get("weights") is None  # a saved model carries its weights
    with pytest.raises(ValueError, match="do not fit"):  # another width
        MODELS["fssd"](num_classes=2, backbone="resnet18", image_size=64, width=0.5,
                       weights=path)
    with pytest.raises(FileNotFoundError):
        tiny(weights=str(tmp_path / "missing.npz"))

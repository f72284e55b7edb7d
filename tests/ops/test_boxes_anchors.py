"""Anchors and box coding against the numpy references."""
import numpy as np
import pytest
import tensorflow as tf

from mgdet.ops import anchors as anchor_ops
from mgdet.ops import boxes as box_ops
from tests import reference as ref


@pytest.mark.parametrize("size,count", [(320, 12750), (512, 6 * (64**2 + 32**2 + 16**2 + 8**2 + 4**2)),
                                        (128, 6 * (16**2 + 8**2 + 4**2 + 2**2)),
                                        (192, 6 * (24**2 + 12**2 + 6**2 + 3**2))])
def test_anchor_counts_and_values(size, count):
    assert anchor_ops.num_anchors(size) == count  # first: a wrong layout may be huge to build
    a = anchor_ops.generate_anchors(size).numpy()
    assert a.shape == (count, 4)
    np.testing.assert_allclose(a, ref.anchors_ref(size), atol=1e-6)
    clipped = anchor_ops.generate_anchors(size, clip=True).numpy()
    np.testing.assert_allclose(clipped, ref.anchors_ref(size, clip=True), atol=1e-6)
    assert clipped.min() >= 0 and clipped.max() <= 1


@pytest.mark.parametrize("size", [320, 512])
def test_anchors_reach_past_the_border_but_never_exceed_the_image(size):
    a = anchor_ops.generate_anchors(size).numpy()
    # Border anchors reach past the image (the authors do not clip corners) ...
    assert a.min() < -0.3 and a.max() > 1.3
    # ... and no anchor is wider or taller than the image.
    wh = a[:, 2:] - a[:, :2]
    assert wh.max() <= 1.0 + 1e-7
    # The top level's (s'sqrt2) x (s'/sqrt2) shape is wider than S and capped at exactly 1.
    top = a[-6:]
    np.testing.assert_allclose(top[4, 2] - top[4, 0], 1.0, atol=1e-7)
    np.testing.assert_allclose(top[5, 3] - top[5, 1], 1.0, atol=1e-7)


def test_anchor_first_cell_hand_worked():
    a = anchor_ops.generate_anchors(320).numpy()
    # level 0, cell (0, 0): centre (4, 4) px, s = 24: a 24x24 box reaching 8 px past the border.
    np.testing.assert_allclose(a[0] * 320, [-8, -8, 16, 16], atol=1e-4)
    # level 0, cell (row 0, col 1) starts at index 6: centre (12, 4).
    np.testing.assert_allclose(a[6] * 320, [0, -8, 24, 16], atol=1e-4)
    # 4th shape is s' = 24 sqrt2 square.
    s2 = 24 * np.sqrt(2) / 2
    np.testing.assert_allclose(a[6 * 41 + 3] * 320, [12 - s2, 12 - s2, 12 + s2, 12 + s2], atol=1e-4)
    # level 3 (stride 64, f = 5), cell (0, 0), shape 5: (192 sqrt2 / sqrt2) x (192 sqrt2 * sqrt2)
    # = 192 x 384 px, the height capped at 320: centre (32, 32) -> [-64, -128, 128, 192] px.
    first3 = 6 * (40**2 + 20**2 + 10**2)
    np.testing.assert_allclose(a[first3 + 5] * 320, [32 - 96, 32 - 160, 32 + 96, 32 + 160], atol=1e-4)
    # clipped variant (ablation): the same first anchor cut at the border.
    np.testing.assert_allclose(anchor_ops.generate_anchors(320, clip=True).numpy()[0] * 320,
                               [0, 0, 16, 16], atol=1e-4)


def test_anchor_coordinates_exact_in_float32():
    # Centres and half sizes on the 2^-22 grid: every anchor of one shape has bit-identical
    # width and height, also where the corners lie outside the image.
    a = anchor_ops.generate_anchors(320).numpy()
    wh = (a[:, 2:] - a[:, :2]).reshape(-1, 6, 2)
    first = 0
    for f in anchor_ops.feature_sizes(320):
        level = wh[first:first + f * f]
        assert np.all(level == level[:1])
        first += f * f


def test_anchor_size_validation():
    for size in (300, 0, -64):
        with pytest.raises(ValueError, match=f"positive multiple of 64, got {size}"):
            anchor_ops.generate_anchors(size)


def test_anchor_defaults_and_dtype():
    """320 px, base size 24 (the paper's FSSD setting), float32."""
    a = anchor_ops.generate_anchors()
    assert a.dtype == tf.float32
    np.testing.assert_allclose(a.numpy(), ref.anchors_ref(320, 24.0), atol=1e-6)


def _random_boxes(rng, shape):
    c = rng.uniform(0, 1, shape + (2,))
    wh = rng.uniform(0.01, 0.6, shape + (2,))
    return np.concatenate([c - wh / 2, c + wh / 2], -1).astype(np.float32)


def test_iou_matches_reference_random_and_batched():
    rng = np.random.default_rng(0)
    for _ in range(10):
        b, m, n = rng.integers(1, 4), rng.integers(1, 9), rng.integers(1, 50)
        x, y = _random_boxes(rng, (b, m)), _random_boxes(rng, (b, n))
        got = box_ops.iou(x, y).numpy()
        want = np.stack([np.stack([ref.iou_one(x[i, j], y[i]) for j in range(m)]) for i in range(b)])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_iou_edge_cases():
    a = np.array([[0, 0, 0.5, 0.5], [0.2, 0.2, 0.2, 0.2]], np.float32)  # second is degenerate
    b = np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0.25, 0, 0.75, 0.5], [0.2, 0.2, 0.2, 0.2]],
                 np.float32)
    got = box_ops.iou(a, b).numpy()
    np.testing.assert_allclose(got[0], [1.0, 0.0, 1 / 3, 0.0], atol=1e-6)
    np.testing.assert_allclose(got[1], [0, 0, 0, 0])  # empty union -> 0, no NaN
    assert box_ops.iou(np.zeros((0, 4), np.float32), b).shape == (0, 4)


def test_encode_decode_reference_and_roundtrip():
    rng = np.random.default_rng(1)
    anchors = anchor_ops.generate_anchors(128).numpy()
    idx = rng.integers(0, len(anchors), 64)
    anc = anchors[idx]
    anc = anc[(anc[:, 2] - anc[:, 0] > 0.01) & (anc[:, 3] - anc[:, 1] > 0.01)]
    boxes = _random_boxes(rng, (len(anc),)).clip(0, 1)
    enc = box_ops.encode(boxes, anc).numpy()
    want = np.stack([ref.encode_ref(b.astype(np.float64), a.astype(np.float64)) for b, a in zip(boxes, anc)])
    np.testing.assert_allclose(enc, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(box_ops.decode(enc, anc).numpy(), boxes, atol=1e-5)
    deltas = rng.normal(0, 2, (len(anc), 4)).astype(np.float32)
    assert anc.min() < 0  # unclipped border anchors are among them
    np.testing.assert_allclose(box_ops.decode(deltas, anc).numpy(), ref.decode_ref(deltas, anc), rtol=1e-4, atol=1e-5)


def test_decode_clamps_huge_sizes_to_exactly_1000_over_16():
    """log-size offsets past log(1000 / 16) give exactly 62.5 x the anchor's size; below the
    clamp the size is exp(v1 d) x the anchor's, however small."""
    anchor = tf.constant([[0.4, 0.3, 0.6, 0.7]])  # w 0.2, h 0.4, centre (0.5, 0.5)
    deltas = tf.constant([[0.0, 0.0, 1e4, 25.0],     # both past the clamp (25 * 0.2 = 5 > 4.14)
                          [0.0, 0.0, 20.0, -1e4]], tf.float32)  # 20 * 0.2 = 4 < 4.14; tiny h
    out = box_ops.decode(deltas, tf.tile(anchor, [2, 1])).numpy()
    w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    np.testing.assert_allclose(w, [0.2 * 62.5, 0.2 * np.exp(4.0)], rtol=1e-6)
    np.testing.assert_allclose(h, [0.4 * 62.5, 0.0], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(out[0], [0.5 - 6.25, 0.5 - 12.5, 0.5 + 6.25, 0.5 + 12.5], rtol=1e-6)


def test_box_ops_on_batched_boxes():
    """``[B, N, 4]`` boxes with ``[N, 4]`` anchors: every op works on the last axis only."""
    rng = np.random.default_rng(3)
    anchors = _random_boxes(rng, (5,))
    boxes = _random_boxes(rng, (2, 5))
    enc = box_ops.encode(boxes, anchors).numpy()
    assert enc.shape == (2, 5, 4)
    for b in range(2):
        want = np.stack([ref.encode_ref(x.astype(np.float64), a.astype(np.float64))
                         for x, a in zip(boxes[b], anchors)])
        np.testing.assert_allclose(enc[b], want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(box_ops.decode(enc, anchors).numpy()[b],
                                   ref.decode_ref(enc[b], anchors), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(box_ops.xyxy_to_yxyx(boxes).numpy(), boxes[..., [1, 0, 3, 2]])
    c = box_ops.xyxy_to_cxcywh(boxes).numpy()
    np.testing.assert_allclose(c, np.concatenate([(boxes[..., :2] + boxes[..., 2:]) / 2,
                                                  boxes[..., 2:] - boxes[..., :2]], -1), atol=1e-7)
    np.testing.assert_allclose(box_ops.cxcywh_to_xyxy(c).numpy(), boxes, atol=1e-6)


def test_area_of_boxes_and_of_degenerate_boxes():
    boxes = tf.constant([[[0.1, 0.2, 0.5, 0.9], [0.5, 0.5, 0.4, 0.9]],
                         [[0.0, 0.0, 1.0, 0.5], [0.3, 0.6, 0.7, 0.6]]])
    np.testing.assert_allclose(box_ops.area(boxes).numpy(), [[0.4 * 0.7, 0.0], [0.5, 0.0]],
                               atol=1e-7)


def test_box_format_helpers():
    b = tf.constant([[0.1, 0.2, 0.5, 0.9]])
    np.testing.assert_allclose(box_ops.xyxy_to_yxyx(b).numpy(), [[0.2, 0.1, 0.9, 0.5]])
    np.testing.assert_allclose(box_ops.cxcywh_to_xyxy(box_ops.xyxy_to_cxcywh(b)).numpy(), b.numpy(), atol=1e-7)


def test_model_clip_anchors_option_builds_and_round_trips():
    import mgdet
    from mgdet.config import load_config
    from mgdet.models import FSSD
    cfg = load_config(None, {"model": {"image_size": 64, "width": 0.25, "clip_anchors": True,
                                       "num_classes": 2}})
    model = mgdet.build_model(cfg)
    np.testing.assert_array_equal(np.asarray(model.anchors),
                                  anchor_ops.generate_anchors(64, clip=True).numpy())
    assert model.get_config()["clip_anchors"] is True  # kept by .keras files
    assert load_config(None, {}).model.clip_anchors is False
    with pytest.raises(ValueError, match="clip_anchors"):
        FSSD(num_classes=2, image_size=64, width=0.25, clip_anchors="yes")

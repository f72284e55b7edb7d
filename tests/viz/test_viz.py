"""mgdet.viz.show_assign: detection pictures, Figure 4 assignment pictures and the show-assign command."""
import numpy as np
import pytest
from PIL import Image

from mgdet.viz import drawing
from mgdet.viz import show_assign as viz


def _has_color(img, color, tol=30):
    arr = np.asarray(img, np.int32)
    return bool(np.any(np.all(np.abs(arr - np.array(color)) <= tol, axis=-1)))


def test_draw_detections_boxes_tags_and_threshold():
    image = np.full((120, 160, 3), 90, np.uint8)
    boxes = np.array([[0.1, 0.2, 0.5, 0.7], [0.6, 0.1, 0.9, 0.4], [0.0, 0.0, 0.2, 0.2]])
    scores = np.array([0.9, 0.6, 0.1])
    classes = np.array([0, 2, 1])
    out = drawing.draw_detections(image, boxes, scores, classes, ["a", "b", "c"],
                              score_threshold=0.3)
    assert isinstance(out, Image.Image) and out.size == (160, 120) and out.mode == "RGB"
    arr = np.asarray(out)
    c0, c2, c1 = drawing.class_color(0), drawing.class_color(2), drawing.class_color(1)
    assert c0 in {tuple(p) for p in arr[60, 14:18]}  # left edge of box 0 (x = 0.1 * 159)
    assert c2 in {tuple(p) for p in arr[30, 141:145]}  # right edge of box 1 (x = 0.9 * 159)
    assert not _has_color(out, c1, tol=0)  # below the threshold: not drawn
    assert np.array_equal(image, np.full((120, 160, 3), 90, np.uint8))  # input untouched
    empty = drawing.draw_detections(image, np.zeros((0, 4)), [], [], None)
    assert np.array_equal(np.asarray(empty), image)
    # Float images and class ids beyond the names work too.
    drawing.draw_detections(image.astype(np.float32), boxes, scores, [7, 7, 7], ["a"])


def _mask_centroid(img, color, tol=40):
    arr = np.asarray(img, np.int64)
    ys, xs = np.nonzero(np.abs(arr - np.array(color)).max(-1) <= tol)
    return (xs.mean(), ys.mean()) if len(xs) else None


def test_draw_assignment_dots_per_strategy_at_anchor_centres():
    from mgdet.ops.anchors import generate_anchors
    image = np.full((64, 64, 3), 60, np.uint8)
    anchors = generate_anchors(64).numpy()  # level 0: 8 x 8 cells of 8 px, 6 shapes each
    cell = lambda row, col, shape=0: 6 * (row * 8 + col) + shape  # noqa: E731
    owners = {k: np.full(len(anchors), -1) for k in ("iou_gt", "l2c_gt", "c2l_gt")}
    owners["iou_gt"][[cell(2, 2), cell(4, 4)]] = 0     # (2, 2): IoU-anchor only
    owners["l2c_gt"][[cell(4, 4), cell(2, 5)]] = 0     # (4, 4): all three; (2, 5): L2C only
    owners["c2l_gt"][[cell(4, 4), cell(6, 1)]] = 0     # (6, 1): C2L only
    owners["l2c_gt"][cell(7, 7)] = 1                   # another object's anchor: not drawn
    gt = np.array([[0.2, 0.2, 0.7, 0.7], [0.8, 0.8, 1.0, 1.0]])
    pic = viz.draw_assignment(image, gt, owners, anchors, objects=[0])
    side = 64 * 8  # upscaled to >= 512 px
    strip = pic.height - side
    assert strip > 0 and pic.width == 2 * side + 6
    left = pic.crop((0, strip, side, pic.height))
    right = pic.crop((side + 6, strip, pic.width, pic.height))
    # Shape 0 sits 18 px above its cell centre ((col + 0.5) / 8 of the 511 px span).
    at = lambda row, col: ((col + 0.5) / 8 * 511, (row + 0.5) / 8 * 511 - 18)  # noqa: E731
    np.testing.assert_allclose(_mask_centroid(left, viz.RED), at(2, 2), atol=1.5)
    np.testing.assert_allclose(_mask_centroid(left, viz.GREEN), at(2, 5), atol=1.5)
    np.testing.assert_allclose(_mask_centroid(right, viz.RED), at(2, 2), atol=1.5)
    np.testing.assert_allclose(_mask_centroid(right, viz.BLUE), at(6, 1), atol=1.5)
    assert _mask_centroid(left, viz.BLUE, tol=10) is None
    assert _mask_centroid(right, viz.GREEN, tol=10) is None
    # The shared anchor is a white dot in both panels.
    for panel in (left, right):
        x, y = at(4, 4)
        assert tuple(np.asarray(panel)[round(y), round(x)]) == viz.WHITE
    # Counts in the title strip use the same colours; an empty object list still draws.
    assert _has_color(pic.crop((0, 0, pic.width, strip)), viz.RED)
    assert viz.draw_assignment(image, np.zeros((0, 4)), owners, anchors).height == side


def test_pick_objects_prefers_objects_whose_anchors_change():
    owners = {"iou_gt": np.array([0, 0, 1, 1, 2, -1]), "l2c_gt": np.array([0, 0, 1, 2, 1, -1]),
              "c2l_gt": np.array([0, 0, 1, -1, 2, 2])}
    gt = np.array([[0, 0, 0.9, 0.9], [0, 0, 0.2, 0.2], [0, 0, 0.1, 0.1]])
    # changes: object 0: 0, object 1: 2 (l2c) + 1 (c2l), object 2: 2 + 1
    assert viz.pick_objects(gt, owners, max_objects=2) == [1, 2]
    assert viz.pick_objects(gt, owners, max_objects=3) == [0, 1, 2]


@pytest.fixture(scope="module")
def show_assign(tmp_path_factory):
    from mgdet.config import load_config
    out_dir = tmp_path_factory.mktemp("show_assign")
    cfg = load_config(None, {"model": {"image_size": 128, "width": 0.25},
                             "data": {"source": "synthetic", "num_eval": 6, "max_objects": 20}})
    lines = []
    results = viz.run_show_assign(cfg, None, num_images=5, out_dir=str(out_dir),
                                  print_fn=lines.append)
    return results, lines


def test_show_assign_keeps_the_number_of_positives_per_object(show_assign):
    """Paper §3: L2C and C2L keep IoU-anchor's Np positives per object (random weights with the
    prior-probability init), checked on the data the pictures are drawn from."""
    results, lines = show_assign
    assert len(results) == 5 and len(lines) == 5
    assert sum(c["objects"] for _, c in results) > 0
    for _, counts in results:
        assert counts["l2c"] == counts["iou"] and counts["c2l"] == counts["iou"], counts
        per = counts["per_object"]
        if counts["objects"]:
            assert len(per["iou"]) == counts["objects"]
            assert min(per["iou"]) >= 1  # every object has a positive
            assert per["l2c"] == per["iou"] and per["c2l"] == per["iou"], per
        # Same totals: what one strategy drops, the other adds.
        assert counts["cls_iou_only"] == counts["cls_l2c_only"]
        assert counts["reg_iou_only"] == counts["reg_c2l_only"]


def test_show_assign_writes_pngs(show_assign):
    results, lines = show_assign
    for (path, counts), line in zip(results, lines):
        img = Image.open(path)
        img.load()
        assert img.width >= 640 and img.height >= 320
        assert np.asarray(img).std() > 5  # not blank
        assert f"image {counts['image_id']}:" in line and path in line

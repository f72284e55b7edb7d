"""mgdet.viz: detection pictures, Figure 4 assignment pictures and the show-assign command."""
import numpy as np
import pytest
from PIL import Image

from mgdet import viz


def _has_color(img, color, tol=30):
    arr = np.asarray(img, np.int32)
    return bool(np.any(np.all(np.abs(arr - np.array(color)) <= tol, axis=-1)))


def test_draw_detections_boxes_tags_and_threshold():
    image = np.full((120, 160, 3), 90, np.uint8)
    boxes = np.array([[0.1, 0.2, 0.5, 0.7], [0.6, 0.1, 0.9, 0.4], [0.0, 0.0, 0.2, 0.2]])
    scores = np.array([0.9, 0.6, 0.1])
    classes = np.array([0, 2, 1])
    out = viz.draw_detections(image, boxes, scores, classes, ["a", "b", "c"],
                              score_threshold=0.3)
    assert isinstance(out, Image.Image) and out.size == (160, 120) and out.mode == "RGB"
    arr = np.asarray(out)
    c0, c2, c1 = viz.class_color(0), viz.class_color(2), viz.class_color(1)
    assert c0 in {tuple(p) for p in arr[60, 14:18]}  # left edge of box 0 (x = 0.1 * 159)
    assert c2 in {tuple(p) for p in arr[30, 141:145]}  # right edge of box 1 (x = 0.9 * 159)
    assert not _has_color(out, c1, tol=0)  # below the threshold: not drawn
    assert np.array_equal(image, np.full((120, 160, 3), 90, np.uint8))  # input untouched
    empty = viz.draw_detections(image, np.zeros((0, 4)), [], [], None)
    assert np.array_equal(np.asarray(empty), image)
    # Float images and class ids beyond the names work too.
    viz.draw_detections(image.astype(np.float32), boxes, scores, [7, 7, 7], ["a"])


def test_draw_assignment_colours_per_panel():
    image = np.full((64, 64, 3), 60, np.uint8)
    anchors = np.array([[0.1, 0.1, 0.4, 0.4],    # IoU-anchor only (both tasks)
                        [0.5, 0.5, 0.9, 0.9],    # L2C only
                        [0.2, 0.6, 0.45, 0.95],  # C2L only
                        [0.0, 0.0, 1.0, 1.0]])   # positive nowhere
    masks = {"iou_cls": np.array([1, 0, 0, 0], bool), "l2c_cls": np.array([0, 1, 0, 0], bool),
             "iou_reg": np.array([1, 0, 0, 0], bool), "c2l_reg": np.array([0, 0, 1, 0], bool)}
    pic = viz.draw_assignment(image, np.array([[0.2, 0.2, 0.7, 0.7]]), masks, anchors)
    assert pic.width > 2 * 320 and pic.height > 320  # two upscaled panels
    half = pic.width // 2
    left, right = pic.crop((0, 0, half, pic.height)), pic.crop((half, 0, pic.width, pic.height))
    assert _has_color(left, viz.RED) and _has_color(left, viz.GREEN)
    assert not _has_color(left, viz.YELLOW, tol=10)
    assert _has_color(right, viz.RED) and _has_color(right, viz.YELLOW)
    assert not _has_color(right, viz.GREEN, tol=10)
    assert _has_color(left, viz.WHITE, tol=0) and _has_color(right, viz.WHITE, tol=0)


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

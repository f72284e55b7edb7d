"""COCO (``annotations/instances_*.json`` + an image folder) and custom COCO-JSON datasets.

The JSON is read with ``pycocotools.coco.COCO``. Category ids (COCO's are 1..90 with gaps) map
to contiguous labels 0..C-1 in ascending id order; :class:`CategoryMap` converts both ways so
detections can be written back with the dataset's own ids. ``iscrowd`` annotations are kept
and flagged ``is_crowd`` (the pipeline drops them for training; evaluation ignores detections
matched to them). Each example also carries the annotation's ``area`` (COCO's segment area), so
:func:`mgdet.data.common.to_coco` reproduces the official small / medium / large split.

Images are checked cheaply while listing (missing / truncated files skipped and counted) and
decoded in tf.data, where anything else unreadable is skipped by ``ignore_errors``.
"""
import contextlib
import functools
import io
import os

import numpy as np

from mgdet.data.common import (DataError, SourceReport, records_to_dataset,
                               sanitize_pixel_boxes)


class CategoryMap:
    """Dataset category ids <-> contiguous labels (0..C-1, ascending id order)."""

    def __init__(self, categories):
        cats = sorted(categories, key=lambda c: int(c["id"]))
        self.category_ids = [int(c["id"]) for c in cats]
        self.class_names = [str(c.get("name", c["id"])) for c in cats]
        self._label_of = {cid: i for i, cid in enumerate(self.category_ids)}

    def __len__(self):
        return len(self.category_ids)

    def to_label(self, category_id):
        try:
            return self._label_of[int(category_id)]
        except KeyError:
            raise DataError(f"COCO: category id {category_id} is not in the categories list "
                            f"{self.category_ids}") from None

    def to_category_id(self, label):
        return self.category_ids[int(label)]

    def labels_to_category_ids(self, labels):
        return np.asarray(self.category_ids, np.int64)[np.asarray(labels, np.int64)]


def _load_coco_api(ann_file):
    if not os.path.isfile(ann_file):
        raise DataError(f"COCO: annotation file {ann_file!r} not found (expected a COCO "
                        "instances JSON, e.g. annotations/instances_train2017.json)")
    from pycocotools.coco import COCO
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(ann_file)
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"COCO: {ann_file!r} is not a valid COCO-format JSON ({e})") from None


@functools.lru_cache(maxsize=8)
def coco_records(ann_file, image_dir, skip_empty=False):
    """Parsed records of a COCO-format JSON (cached).

    Returns ``(records, report, category_map)``; each record has path, boxes, labels, is_crowd,
    area, image_id (the JSON's id), width, height.
    """
    api = _load_coco_api(ann_file)
    if not os.path.isdir(image_dir):
        raise DataError(f"COCO: image folder {image_dir!r} not found (expected the images named "
                        f"by 'file_name' in {ann_file})")
    if "categories" not in api.dataset or not api.dataset["categories"]:
        raise DataError(f"COCO: {ann_file!r} has no 'categories'")
    cmap = CategoryMap(api.dataset["categories"])
    report = SourceReport(f"coco {os.path.basename(ann_file)}")
    records = []
    for image_id in sorted(api.getImgIds()):
        info = api.imgs[image_id]
        report.images_listed += 1
        path = os.path.join(image_dir, info["file_name"])
        if not report.image_ok(path):
            continue
        w, h = int(info.get("width", 0)), int(info.get("height", 0))
        if w <= 0 or h <= 0:
            from PIL import Image
            with Image.open(path) as im:
                w, h = im.size
        anns = api.imgToAnns.get(image_id, [])
        known = [a for a in anns if int(a["category_id"]) in cmap._label_of]
        report.boxes_unknown_class += len(anns) - len(known)
        xywh = np.array([a.get("bbox", [np.nan] * 4) for a in known], np.float64).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes, keep = sanitize_pixel_boxes(xyxy, w, h, report)
        labels = np.array([cmap.to_label(a["category_id"]) for a in known], np.int32)[keep]
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in known], bool)[keep]
        area = np.array([float(a.get("area", 0.0)) for a in known], np.float32)[keep]
        if skip_empty and not (~crowd).any():
            continue
        records.append({"path": path, "boxes": boxes, "labels": labels, "is_crowd": crowd,
                        "area": area, "image_id": int(image_id), "width": w, "height": h})
    report.check_not_empty(image_dir)
    report.log()
    return records, report, cmap


def load_coco(ann_file, image_dir, shuffle=False, seed=0, skip_empty=False):
    """COCO or any COCO-format JSON dataset.

    Args:
      ann_file: ``instances_*.json`` (or a custom COCO-format JSON).
      image_dir: folder the JSON's ``file_name`` entries are relative to.
      shuffle, seed: shuffle the file list each epoch (before decoding).
      skip_empty: drop images without a non-crowd object (detection-training habit; images
        with no objects are valid in mgdet, so the default keeps them).
    Returns:
      ``(dataset of decoded examples with "is_crowd" and "area", class_names)``. Use
      :func:`category_map` for the label <-> category id mapping.
    Raises:
      DataError: missing / malformed JSON, missing image folder.
    """
    records, _, cmap = coco_records(os.fspath(ann_file), os.fspath(image_dir), bool(skip_empty))
    return records_to_dataset(records, shuffle, seed), list(cmap.class_names)


def category_map(ann_file):
    """The :class:`CategoryMap` of a COCO-format JSON (labels <-> the JSON's category ids)."""
    return CategoryMap(_load_coco_api(os.fspath(ann_file)).dataset.get("categories", []))


def default_paths(root, split):
    """``(ann_file, image_dir)`` of the standard COCO layout: ``root/annotations/
    instances_<split>.json`` and ``root/<split>/`` (e.g. split ``train2017``, ``val2017``)."""
    return (os.path.join(root, "annotations", f"instances_{split}.json"), os.path.join(root, split))

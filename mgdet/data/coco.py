"""COCO (``annotations/instances_*.json`` + an image folder) and custom COCO-JSON datasets.

The JSON is read and checked entry by entry here (pycocotools asserts or raises KeyError on the
first malformed entry). Category ids (COCO's are 1..90 with gaps) map
to contiguous labels 0..C-1 in ascending id order; :class:`CategoryMap` converts both ways so
detections can be written back with the dataset's own ids. ``iscrowd`` annotations are kept
and flagged ``is_crowd`` (the pipeline drops them for training; evaluation ignores detections
matched to them). Each example also carries the annotation's ``area`` (COCO's segment area), so
:func:`mgdet.data.common.to_coco` reproduces the official small / medium / large split.

Images are checked from their headers while listing (missing, truncated, undecodable and
oversized files skipped and counted) and decoded in tf.data, where anything else unreadable is
skipped by ``ignore_errors`` (counted in :mod:`mgdet.data.stats`).
"""
import functools
import json
import os

import numpy as np

from mgdet.config import DEFAULT_MAX_PIXELS
from mgdet.data.common import DataError, SourceReport, sanitize_pixel_boxes
from mgdet.data.source import RecordSource


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


def _read_json(ann_file):
    """The top-level dict of a COCO-format JSON; :class:`DataError` for a missing file, bad JSON
    or a wrong layout (not an object, no ``images`` list, no ``categories``)."""
    if not os.path.isfile(ann_file):
        raise DataError(f"COCO: annotation file {ann_file!r} not found (expected a COCO "
                        "instances JSON, e.g. annotations/instances_train2017.json)")
    try:
        with open(ann_file, "rb") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"COCO: {ann_file!r} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"COCO: {ann_file!r} must hold a JSON object with 'images', "
                        f"'annotations' and 'categories', not a {type(data).__name__}")
    if not isinstance(data.get("images"), list):
        raise DataError(f"COCO: {ann_file!r} has no 'images' list (each entry: id, file_name, "
                        "width, height)")
    if not isinstance(data.get("annotations", []), list):
        raise DataError(f"COCO: {ann_file!r}: 'annotations' must be a list")
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise DataError(f"COCO: {ann_file!r} has no 'categories'")
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or _as_int(c.get("id")) is None:
            raise DataError(f"COCO: {ann_file!r} categories[{i}] = {c!r} needs an integer 'id'")
    return data


def _as_int(value):
    """``value`` as an int when it is an integral JSON number, else None (bools, strings, null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if float(value).is_integer() else None


def _as_size(value):
    """Image width / height: a positive int, 0 when absent (read from the image header), or
    None when present but not a positive finite number."""
    if value is None or value == 0:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if np.isfinite(value) and value > 0 else None


def _as_bbox(value):
    """``[x, y, w, h]`` as 4 floats, or None when not a list of 4 numbers."""
    if not isinstance(value, (list, tuple)) or len(value) != 4 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        return None
    return [float(v) for v in value]


def _image_entries(data, ann_file, report):
    """``{image_id: entry}`` of the well-formed, uniquely-identified image entries (in file
    order); the others are counted in ``report``."""
    entries, by_id = [], {}
    for i, info in enumerate(data["images"]):
        report.images_listed += 1
        where = f"{ann_file} images[{i}]"
        if not isinstance(info, dict):
            report.note("images_bad_entry", f"{where}: not an object")
            continue
        image_id, name = _as_int(info.get("id")), info.get("file_name")
        width, height = _as_size(info.get("width")), _as_size(info.get("height"))
        if image_id is None:
            report.note("images_bad_entry", f"{where}: id {info.get('id')!r} is not an integer")
        elif not isinstance(name, str) or not name:
            report.note("images_bad_entry", f"{where} (id {image_id}): no 'file_name'")
        elif width is None or height is None:
            report.note("images_bad_entry", f"{where} (id {image_id}): width/height "
                        f"{info.get('width')!r}/{info.get('height')!r} are not positive numbers")
        else:
            entries.append((image_id, name, width, height))
            by_id[image_id] = by_id.get(image_id, 0) + 1
    for image_id, count in by_id.items():
        if count > 1:
            report.note("images_duplicate_id", f"{ann_file}: image id {image_id} used by {count} "
                        "image entries", count)
    return {e[0]: e[1:] for e in entries if by_id[e[0]] == 1}


def _group_annotations(data, ann_file, images, cmap, report):
    """``{image_id: [(label, [x, y, w, h], iscrowd, area)]}`` of the usable annotations."""
    groups = {}
    for i, a in enumerate(data.get("annotations", [])):
        where = f"{ann_file} annotations[{i}]"
        if not isinstance(a, dict):
            report.note("boxes_bad_entry", f"{where}: not an object")
            continue
        image_id, cat = _as_int(a.get("image_id")), _as_int(a.get("category_id"))
        bbox = _as_bbox(a.get("bbox"))
        if image_id is None or cat is None or bbox is None:
            bad = [f"{k}={a.get(k)!r}" for k, v in (("image_id", image_id), ("category_id", cat),
                                                     ("bbox", bbox)) if v is None]
            report.note("boxes_bad_entry", f"{where}: bad {', '.join(bad)}")
            continue
        if image_id not in images:
            report.note("boxes_unknown_image", f"{where}: image_id {image_id}")
            continue
        if cat not in cmap._label_of:
            report.note("boxes_unknown_class", f"{where}: category_id {cat}")
            continue
        area = a.get("area", 0.0)
        area = float(area) if isinstance(area, (int, float)) and not isinstance(area, bool) else 0.0
        groups.setdefault(image_id, []).append(
            (cmap.to_label(cat), bbox, bool(a.get("iscrowd", 0)), area))
    return groups


@functools.lru_cache(maxsize=8)
def coco_records(ann_file, image_dir, skip_empty=False, max_pixels=DEFAULT_MAX_PIXELS):
    """Parsed records of a COCO-format JSON (cached).

    Malformed entries never stop loading: each is skipped and counted in the report (see
    :class:`~mgdet.data.common.SourceReport`); only a file-level problem (missing file, bad
    JSON, no ``images`` list or ``categories``) is a :class:`DataError`. Images are checked from
    their headers (:func:`~mgdet.data.common.probe_image`), which also gives the size of entries
    without width / height.

    Returns ``(records, report, category_map)``; each record has path, boxes, labels, is_crowd,
    area, image_id (the JSON's id), width, height; records are in ascending id order.
    """
    data = _read_json(ann_file)
    if not os.path.isdir(image_dir):
        raise DataError(f"COCO: image folder {image_dir!r} not found (expected the images named "
                        f"by 'file_name' in {ann_file})")
    cmap = _CATEGORY_MAPS[ann_file] = CategoryMap(data["categories"])
    report = SourceReport(f"coco {os.path.basename(ann_file)}", max_pixels)
    images = _image_entries(data, ann_file, report)
    groups = _group_annotations(data, ann_file, images, cmap, report)
    records = []
    for image_id in sorted(images):
        name, w, h = images[image_id]
        path = os.path.join(image_dir, name)
        header_size = report.probe(path)
        if header_size is None:
            continue
        if w <= 0 or h <= 0:
            w, h = header_size
        anns = groups.get(image_id, [])
        xywh = np.array([a[1] for a in anns], np.float64).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes, keep = sanitize_pixel_boxes(xyxy, w, h, report)
        labels = np.array([a[0] for a in anns], np.int32)[keep]
        crowd = np.array([a[2] for a in anns], bool)[keep]
        area = np.array([a[3] for a in anns], np.float32)[keep]
        if skip_empty and not (~crowd).any():
            continue
        records.append({"path": path, "boxes": boxes, "labels": labels, "is_crowd": crowd,
                        "area": area, "image_id": int(image_id), "width": w, "height": h})
    report.check_not_empty(image_dir)
    report.log()
    return records, report, cmap


_CATEGORY_MAPS = {}  # ann_file -> CategoryMap, filled by coco_records (a COCO JSON is big)


def category_map(ann_file):
    """The :class:`CategoryMap` of a COCO-format JSON (labels <-> the JSON's category ids)."""
    ann_file = os.fspath(ann_file)
    if ann_file not in _CATEGORY_MAPS:
        _CATEGORY_MAPS[ann_file] = CategoryMap(_read_json(ann_file)["categories"])
    return _CATEGORY_MAPS[ann_file]


def default_paths(root, split):
    """``(ann_file, image_dir)`` of the standard COCO layout: ``root/annotations/
    instances_<split>.json`` and ``root/<split>/`` (e.g. split ``train2017``, ``val2017``)."""
    return (os.path.join(root, "annotations", f"instances_{split}.json"), os.path.join(root, split))


class CocoJsonSource(RecordSource):
    """``coco_json``: one COCO-format JSON per split (``data.<split>_ann``) and its image folder
    (``data.<split>_images``, default: the JSON's folder)."""

    name = "coco_json"

    def pairs(self, split):
        ann = self.require(f"{split}_ann", "a COCO-format JSON")
        images = self.option(f"{split}_images") or os.path.dirname(os.path.abspath(ann))
        return [(os.fspath(ann), os.fspath(images))]

    def _train_or_eval(self):
        return "train" if self.option("train_ann") or self.option("root") else "eval"

    def class_names(self):
        ann, _ = self.pairs(self._train_or_eval())[0]
        return list(category_map(ann).class_names)

    def records(self, split):
        records, report, names = [], None, None
        pairs = self.pairs(split)
        for ann, images in pairs:
            recs, rep, cmap = coco_records(ann, images, False, self.max_pixels)
            if names is not None and cmap.class_names != names:
                raise DataError(f"data: COCO sets {pairs} have different categories")
            records, names = records + recs, cmap.class_names
            report = rep if report is None else _merged(report, rep)
        if names != self.class_names():
            raise DataError(f"data: the {split} categories {names} differ from the training "
                            f"categories {self.class_names()}; the labels would not match")
        return records, report


class CocoSource(CocoJsonSource):
    """``coco``: the standard COCO folder ``data.root`` (annotations/instances_<set>.json and
    <set>/), sets from ``data.train_sets`` / ``data.eval_sets`` (default train2017 / val2017)."""

    name = "coco"

    def pairs(self, split):
        root = self.require("root", "the COCO folder (holding annotations/ and train2017/, "
                                    "val2017/)")
        default = ("train2017",) if split == "train" else ("val2017",)
        return [default_paths(os.fspath(root), s) for s in self.sets(split, default)]

    def _train_or_eval(self):
        return "train"


def _merged(a, b):
    out = SourceReport(f"{a.name} + {b.name}", a.max_pixels)
    for f in SourceReport.FIELDS:
        setattr(out, f, getattr(a, f) + getattr(b, f))
    out.examples = {k: a.examples.get(k, []) + b.examples.get(k, [])
                    for k in set(a.examples) | set(b.examples)}
    return out

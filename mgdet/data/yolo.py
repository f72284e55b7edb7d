"""YOLO-txt datasets (the ultralytics layout): one ``<stem>.txt`` per image, a line per object::

    <class> <x_center> <y_center> <width> <height>          # normalized to [0, 1]
    <class> <x1> <y1> <x2> <y2> <x3> <y3> ...               # a polygon: its bounding box is used

An image without a label file has no objects. The labels folder of an image folder is the same
path with its last ``images`` component replaced by ``labels`` (``ds/images/train`` ->
``ds/labels/train``), else the image folder itself. Class names: ``data.class_names``, else a
``classes.txt`` (one name a line) or a ``data.yaml`` / ``dataset.yaml`` with ``names:`` (a list
or ``{id: name}``) in the labels folder, the image folder, or up to two folders above them.

Like the other file formats, a line that is not a class and 4 numbers (or a polygon), a class out
of range, a degenerate box and an unreadable image are counted in the
:class:`~mgdet.data.common.SourceReport` and skipped, never raised; boxes past the image are
clipped (and counted).
"""
import functools
import os

import numpy as np
import yaml

from mgdet.config import DEFAULT_MAX_PIXELS
from mgdet.data.common import IMAGE_EXTENSIONS, DataError, SourceReport, sanitize_pixel_boxes
from mgdet.data.source import RecordSource

NAME_FILES = ("classes.txt", "data.yaml", "dataset.yaml")


def labels_dir_for(image_dir):
    """ultralytics' rule: the last ``images`` path component becomes ``labels``; the image
    folder itself when there is none or that folder does not exist."""
    parts = os.path.normpath(os.path.abspath(image_dir)).split(os.sep)
    for k in range(len(parts) - 1, -1, -1):
        if parts[k] == "images":
            candidate = os.sep.join(parts[:k] + ["labels"] + parts[k + 1:])
            if os.path.isdir(candidate):
                return candidate
            break
    return image_dir


def _names_from_file(path):
    if path.endswith(".txt"):
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    try:
        with open(path, encoding="utf-8") as f:
            names = (yaml.safe_load(f) or {}).get("names")
    except (yaml.YAMLError, AttributeError) as e:
        raise DataError(f"{path}: not a YAML mapping with 'names' ({e})") from None
    if isinstance(names, dict):
        try:
            return [str(names[k]) for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            raise DataError(f"{path}: 'names' keys must be class ids 0..C-1") from None
    if isinstance(names, list):
        return [str(n) for n in names]
    raise DataError(f"{path}: 'names' must be a list or a {{id: name}} mapping")


def find_class_names(*folders):
    """Class names from the first name file (:data:`NAME_FILES`) found in ``folders`` or up to
    two levels above them; None when there is none."""
    seen = []
    for folder in folders:
        here = os.path.abspath(folder)
        for _ in range(3):
            if here not in seen:
                seen.append(here)
            here = os.path.dirname(here)
    for folder in seen:
        for name in NAME_FILES:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return _names_from_file(path)
    return None


def parse_line(line):
    """``(class_id, [x1, y1, x2, y2] normalized)`` of one label line, or ``None`` when it is not
    a class followed by a centre box or a polygon. Empty lines and ``#`` comments give ``()``."""
    fields = line.split("#", 1)[0].split()
    if not fields:
        return ()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        return None
    cls, coords = values[0], values[1:]
    if not np.isfinite(cls) or cls != int(cls):
        return None
    if len(coords) == 4:
        cx, cy, w, h = coords
        return int(cls), [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    if len(coords) >= 6 and len(coords) % 2 == 0:  # a segmentation polygon
        xs, ys = coords[0::2], coords[1::2]
        return int(cls), [min(xs), min(ys), max(xs), max(ys)]
    return None


@functools.lru_cache(maxsize=8)
def yolo_records(image_dir, labels_dir, num_classes, max_pixels=DEFAULT_MAX_PIXELS):
    """Records of a YOLO image folder (cached). Returns ``(records, report)``."""
    if not os.path.isdir(image_dir):
        raise DataError(f"YOLO: image folder {image_dir!r} does not exist")
    images = sorted(os.path.join(root, n) for root, _, names in os.walk(image_dir)
                    for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise DataError(f"YOLO: no images ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir!r}")
    report = SourceReport(f"yolo {image_dir}", max_pixels)
    records = []
    for path in images:
        report.images_listed += 1
        size = report.probe(path)
        if size is None:
            continue
        rel = os.path.splitext(os.path.relpath(path, image_dir))[0]
        label_file = os.path.join(labels_dir, rel + ".txt")
        boxes, labels = [], []
        if os.path.isfile(label_file):
            with open(label_file, encoding="utf-8", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    parsed = parse_line(line)
                    if parsed == ():
                        continue
                    if parsed is None:
                        report.note("boxes_bad_entry", f"{label_file}:{n}: {line.strip()[:40]!r}")
                    elif not 0 <= parsed[0] < num_classes:
                        report.note("boxes_unknown_class",
                                    f"{label_file}:{n}: class {parsed[0]} of {num_classes}")
                    else:
                        labels.append(parsed[0])
                        boxes.append(parsed[1])
        kept, keep = sanitize_pixel_boxes(np.array(boxes, np.float64).reshape(-1, 4), 1.0, 1.0,
                                          report)  # normalized already: clip to [0, 1]
        records.append({"path": path, "boxes": kept,
                        "labels": np.array(labels, np.int32).reshape(-1)[keep],
                        "width": size[0], "height": size[1],
                        "image_id": len(records) + 1})
    report.check_not_empty(image_dir)
    report.log()
    return records, report


class YoloSource(RecordSource):
    """``yolo``: image folders ``data.train_images`` / ``data.eval_images``, their labels in
    ``data.train_ann`` / ``data.eval_ann`` (default: :func:`labels_dir_for`), classes from
    ``data.class_names`` or a name file (see the module docstring)."""

    name = "yolo"

    def folders(self, split):
        images = self.option(f"{split}_images")
        if not images:
            raise DataError(f"data.{split}_images must name the image folder of split {split!r} "
                            f"for source 'yolo' (its labels: data.{split}_ann, default the "
                            "'labels' folder beside 'images')")
        images = os.fspath(images)
        labels = self.option(f"{split}_ann")
        return images, os.fspath(labels) if labels else labels_dir_for(images)

    def class_names(self):
        names = tuple(self.option("class_names", ()) or ())
        if names:
            return list(names)
        folders = []
        for split in ("train", "eval"):
            if self.option(f"{split}_images"):
                folders += list(self.folders(split))
        if self.option("root"):
            folders.insert(0, os.fspath(self.option("root")))
        names = find_class_names(*folders)
        if not names:
            raise DataError("YOLO: no class names: set data.class_names, or put a classes.txt "
                            f"(one name a line) or a data.yaml with 'names:' in {folders[0]!r} "
                            "or a folder above it" if folders else
                            "YOLO: set data.train_images / data.eval_images")
        return names

    def records(self, split):
        images, labels = self.folders(split)
        return yolo_records(images, labels, len(self.class_names()), self.max_pixels)

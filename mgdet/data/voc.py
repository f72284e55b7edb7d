"""PASCAL VOC (VOCdevkit folders) and custom VOC-XML folders.

Annotations are parsed in Python when the source is loaded (fast: XML only, no image is opened);
images are read and decoded inside tf.data. Every image file is checked from its header while
listing (:func:`mgdet.data.common.probe_image`): missing, truncated, undecodable and oversized
files, and XML files that do not parse or give a malformed ``<size>``, are skipped and counted in
the returned :class:`~mgdet.data.common.SourceReport`; anything else that fails to decode is
skipped by ``ignore_errors`` in the graph — a bad image never stops training.

Boxes: VOC's 1-based inclusive pixel corners become edge coordinates ``(xmin - 1, ymin - 1,
xmax, ymax)``, normalized by the ``<size>`` of the XML (or the image header when absent).
``difficult`` objects are kept and flagged; the pipeline drops them for training and
:func:`mgdet.data.common.to_coco` marks them ``iscrowd`` (ignored) for evaluation.
"""
import functools
import os
import re
import xml.etree.ElementTree as ET

import numpy as np

from mgdet.config import DEFAULT_MAX_PIXELS
from mgdet.data.common import IMAGE_EXTENSIONS, DataError, SourceReport, sanitize_pixel_boxes
from mgdet.data.source import RecordSource

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep",
               "sofa", "train", "tvmonitor")


def parse_voc_xml(path):
    """One VOC XML file -> dict(filename, width, height, objects=[(name, difficult, x1, y1, x2, y2)]).

    Pixel corners are returned as edge coordinates (``xmin - 1``, ``ymin - 1``, ``xmax``, ``ymax``);
    a corner that is not a number is NaN (the box is then dropped as degenerate). Width / height
    are 0 when the file has no ``<size>`` (or says 0), -1 when it is not a positive finite number.
    Raises :class:`DataError` naming the file when it is not readable XML.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataError(f"VOC annotation {path} is not a readable XML file: {e}") from None

    def num(node, tag, default=0.0):
        t = node.find(tag) if node is not None else None
        try:
            return float(t.text) if t is not None and t.text is not None else default
        except ValueError:
            return float("nan")

    size = root.find("size")
    objects = []
    for obj in root.iter("object"):
        name_node = obj.find("name")
        name = name_node.text.strip() if name_node is not None and name_node.text else ""
        bb = obj.find("bndbox")
        diff = obj.find("difficult")
        difficult = diff is not None and (diff.text or "0").strip() not in ("0", "")
        if bb is None:
            objects.append((name, difficult, np.nan, np.nan, np.nan, np.nan))
            continue
        objects.append((name, difficult, num(bb, "xmin", np.nan) - 1.0, num(bb, "ymin", np.nan) - 1.0,
                        num(bb, "xmax", np.nan), num(bb, "ymax", np.nan)))
    fn = root.find("filename")
    return {"filename": fn.text.strip() if fn is not None and fn.text else "",
            "width": _size(num(size, "width")), "height": _size(num(size, "height")),
            "objects": objects}


def _size(value):
    return int(value) if value == 0 or (np.isfinite(value) and value >= 1) else -1


def _image_id(stem):
    """VOC-style numeric id of a file stem (``000005`` -> 5, ``2008_000008`` -> 2008000008)."""
    digits = stem.replace("_", "")
    return int(digits) if re.fullmatch(r"[0-9_]+", stem) and digits else None


def _records_from_xml(xml_paths, image_paths, class_names, report, unknown="skip"):
    """Parse XMLs into records; ``unknown`` class names are skipped (and counted) or raise."""
    index = {n: i for i, n in enumerate(class_names)}
    records = []
    for xml_path, image_path in zip(xml_paths, image_paths):
        report.images_listed += 1
        try:
            ann = parse_voc_xml(xml_path)
        except DataError as e:
            report.note("images_bad_entry", e)
            continue
        w, h = ann["width"], ann["height"]
        if w < 0 or h < 0:
            report.note("images_bad_entry", f"{xml_path}: <size> is not two positive numbers")
            continue
        header_size = report.probe(image_path)
        if header_size is None:
            continue
        if w == 0 or h == 0:
            w, h = header_size
        names = [o[0] for o in ann["objects"]]
        known = np.array([n in index for n in names], bool)
        bad = [n for n in names if n not in index]
        if bad and unknown == "raise":
            raise DataError(f"{xml_path}: class {bad[0]!r} is not in the class list {list(class_names)}")
        if bad:
            report.note("boxes_unknown_class", f"{xml_path}: {bad[0]!r}", len(bad))
        objs = [o for o, k in zip(ann["objects"], known) if k]
        pix = np.array([o[2:] for o in objs], np.float64).reshape(-1, 4)
        boxes, keep = sanitize_pixel_boxes(pix, w, h, report)
        records.append({
            "path": image_path,
            "boxes": boxes,
            "labels": np.array([index[o[0]] for o in objs], np.int32)[keep],
            "difficult": np.array([o[1] for o in objs], bool)[keep],
            "width": w, "height": h,
            "stem": os.path.splitext(os.path.basename(xml_path))[0],
        })
    ids = [_image_id(r["stem"]) for r in records]
    if None in ids or len(set(ids)) != len(ids):
        ids = list(range(1, len(records) + 1))
    for r, i in zip(records, ids):
        r["image_id"] = i
    return records


def _find_year_dir(root, year):
    for cand in (os.path.join(root, f"VOC{year}"), os.path.join(root, "VOCdevkit", f"VOC{year}")):
        if os.path.isdir(cand):
            return cand
    if os.path.basename(os.path.normpath(root)) == f"VOC{year}":
        return root
    raise DataError(f"VOC: no VOC{year} folder under {root!r} (expected {root}/VOC{year}/"
                    "{Annotations,JPEGImages,ImageSets/Main}, i.e. root = the VOCdevkit folder)")


@functools.lru_cache(maxsize=8)
def voc_records(root, years=("2007", "2012"), image_set="trainval", class_names=VOC_CLASSES,
                max_pixels=DEFAULT_MAX_PIXELS):
    """Parsed annotation records of VOCdevkit ``root`` for ``years`` x ``image_set`` (cached).

    Returns ``(records, report)``; each record has path, boxes, labels, difficult, image_id,
    width, height.
    """
    if not os.path.isdir(root):
        raise DataError(f"VOC: dataset root {root!r} does not exist (expected a VOCdevkit folder "
                        "holding VOC2007/ and/or VOC2012/)")
    years = (years,) if isinstance(years, (str, int)) else tuple(years)
    sets = (image_set,) * len(years) if isinstance(image_set, str) else tuple(image_set)
    if len(sets) != len(years):
        raise DataError(f"VOC: {len(years)} years but {len(sets)} image sets: {years} / {sets}")
    report = SourceReport(f"voc {'+'.join(f'{y}/{s}' for y, s in zip(years, sets))}", max_pixels)
    xmls, images = [], []
    for year, iset in zip(years, sets):
        ydir = _find_year_dir(root, str(year))
        list_file = os.path.join(ydir, "ImageSets", "Main", f"{iset}.txt")
        if not os.path.isfile(list_file):
            raise DataError(f"VOC: image set file {list_file!r} not found (expected one image id "
                            f"per line for image set {iset!r} of VOC{year})")
        with open(list_file) as f:
            ids = [line.split()[0] for line in f if line.strip()]
        ann_dir = os.path.join(ydir, "Annotations")
        if not os.path.isdir(ann_dir):
            raise DataError(f"VOC: annotation folder {ann_dir!r} not found")
        for i in ids:
            xml = os.path.join(ann_dir, f"{i}.xml")
            if not os.path.isfile(xml):
                raise DataError(f"VOC: annotation {xml!r} listed in {list_file} does not exist")
            xmls.append(xml)
            images.append(os.path.join(ydir, "JPEGImages", f"{i}.jpg"))
    records = _records_from_xml(xmls, images, tuple(class_names), report)
    report.check_not_empty(root)
    # VOC2007 ids (000005) and VOC2012 ids (2008_000008) never collide as integers.
    report.log()
    return records, report


def _parse_or_none(path):
    """:func:`parse_voc_xml`, or None for an unreadable file (counted later, when listing)."""
    try:
        return parse_voc_xml(path)
    except DataError:
        return None


def _list_xml_folder(ann_dir, image_dir):
    if not os.path.isdir(ann_dir):
        raise DataError(f"VOC-XML: annotation folder {ann_dir!r} does not exist (expected *.xml files)")
    image_dir = image_dir or ann_dir
    if not os.path.isdir(image_dir):
        raise DataError(f"VOC-XML: image folder {image_dir!r} does not exist")
    xmls = sorted(os.path.join(ann_dir, f) for f in os.listdir(ann_dir) if f.lower().endswith(".xml"))
    if not xmls:
        raise DataError(f"VOC-XML: no .xml files in {ann_dir!r}")
    images = []
    for x in xmls:
        fn = (_parse_or_none(x) or {}).get("filename")
        stem = os.path.splitext(os.path.basename(x))[0]
        cands = ([os.path.join(image_dir, fn)] if fn else []) + [
            os.path.join(image_dir, stem + e)
            for e in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS)]
        images.append(next((c for c in cands if os.path.isfile(c)), cands[0]))
    return xmls, images


@functools.lru_cache(maxsize=8)
def voc_xml_records(ann_dir, image_dir=None, class_names=None, max_pixels=DEFAULT_MAX_PIXELS):
    """Records of a folder of VOC-style XML files (cached). Returns ``(records, report, names)``."""
    xmls, images = _list_xml_folder(ann_dir, image_dir)
    if class_names is None:
        names = set()
        for x in xmls:
            names.update(o[0] for o in (_parse_or_none(x) or {}).get("objects", ()) if o[0])
        class_names = tuple(sorted(names))
    report = SourceReport(f"voc-xml {ann_dir}", max_pixels)
    records = _records_from_xml(xmls, images, tuple(class_names), report)
    report.check_not_empty(image_dir or ann_dir)
    report.log()
    return records, report, tuple(class_names)


def _voc_pairs(sets):
    """``("2007/trainval", ...)`` -> ``(years, image_sets)``."""
    years, image_sets = [], []
    for s in sets:
        year, sep, iset = str(s).partition("/")
        if not sep or not year or not iset:
            raise DataError(f"data: VOC set {s!r} must look like '2007/trainval' (year/image_set)")
        years.append(year.replace("VOC", ""))
        image_sets.append(iset)
    return tuple(years), tuple(image_sets)


class VocSource(RecordSource):
    """``voc``: a VOCdevkit folder ``data.root``; sets ``year/image_set`` from
    ``data.train_sets`` / ``data.eval_sets`` (default 07+12 trainval / 07 test)."""

    name = "voc"

    def class_names(self):
        return list(self.option("class_names", ()) or VOC_CLASSES)

    def records(self, split):
        root = self.require("root", "the VOCdevkit folder")
        default = ("2007/trainval", "2012/trainval") if split == "train" else ("2007/test",)
        years, image_sets = _voc_pairs(self.sets(split, default))
        return voc_records(os.fspath(root), years, image_sets, tuple(self.class_names()),
                           self.max_pixels)


class VocXmlSource(RecordSource):
    """``voc_xml``: a folder of VOC-style XML files per split (``data.<split>_ann``; training
    may use ``data.root``) and its image folder (``data.<split>_images``, default the XML folder).
    Classes: ``data.class_names``, else every name in the training folder, sorted."""

    name = "voc_xml"

    def folders(self, split):
        ann = self.option(f"{split}_ann") or (self.option("root") if split == "train" else None)
        if not ann:
            raise DataError(f"data.{split}_ann (or data.root for training) must name the folder "
                            "of VOC XML files for source 'voc_xml'")
        images = self.option(f"{split}_images")
        return os.fspath(ann), images and os.fspath(images)

    def class_names(self):
        names = tuple(self.option("class_names", ()) or ())
        if names:
            return list(names)
        has_train = self.option("train_ann") or self.option("root")
        ann, images = self.folders("train" if has_train else "eval")
        return list(voc_xml_records(ann, images, None, self.max_pixels)[2])

    def records(self, split):
        ann, images = self.folders(split)
        records, report, _ = voc_xml_records(ann, images, tuple(self.class_names()),
                                             self.max_pixels)
        return records, report

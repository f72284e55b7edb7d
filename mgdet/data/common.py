"""Pieces shared by every data source: the error type, decoded-example helpers, COCO ground truth.

A *decoded example* (the contract between sources and :mod:`mgdet.data.pipeline`) is a dict::

    {"image": uint8 [H, W, 3], "boxes": float32 [K, 4] normalized xyxy, "labels": int32 [K],
     "image_id": int64 []}                    # required
    {"difficult": bool [K], "is_crowd": bool [K], "area": float32 [K]}   # optional

``area`` (pixels) is only set by sources that know the annotation's own area (COCO's segment
area); :func:`to_coco` falls back to the box area.
"""
import logging
import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError


# TensorFlow is imported inside the functions that need it, so that the synthetic generator's
# worker processes (numpy only) start fast.

log = logging.getLogger("mgdet.data")

# Image file extensions (lower case) of folders listed for images (yolo, predict) and tried for
# an image named only by its annotation's stem (voc_xml: lower and upper case). The content
# decides the format (see probe_image).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class DataError(ValueError):
    """A dataset folder, annotation file or option is missing or malformed.

    The message always names the offending path (or option) and what was expected there.
    """


# --------------------------------------------------------------------------------------------
# Annotation records (Python side, before decoding)
# --------------------------------------------------------------------------------------------

class SourceReport:
    """Counts of what a file-based source skipped while listing its annotations (exact, Python-side,
    before any image is decoded).

    Images (each one skipped): ``images_missing`` (no file), ``images_unreadable`` (not an image
    TF can decode, truncated, corrupt header), ``images_too_large`` (header says more than
    ``max_pixels``: decompression-bomb guard), ``images_bad_entry`` (malformed annotation entry:
    no ``file_name`` or id, non-numeric / non-finite size, unparsable XML),
    ``images_duplicate_id`` (every COCO image entry sharing an id: their boxes cannot be told
    apart). Boxes (each one dropped): ``boxes_degenerate`` (zero / negative area, NaN),
    ``boxes_unknown_class``, ``boxes_bad_entry`` (bbox not 4 numbers, non-integer category or
    image id), ``boxes_unknown_image`` (``image_id`` names no usable image entry);
    ``boxes_clipped`` boxes are kept, clipped to the image. :meth:`log` writes one warning line
    naming the first few offending entries.
    """

    FIELDS = ("images_listed", "images_missing", "images_unreadable", "images_too_large",
              "images_bad_entry", "images_duplicate_id", "boxes_degenerate", "boxes_clipped",
              "boxes_unknown_class", "boxes_bad_entry", "boxes_unknown_image")
    MAX_EXAMPLES = 3

    def __init__(self, name, max_pixels=None):
        self.name = name
        self.max_pixels = max_pixels
        self.examples = {}
        for f in self.FIELDS:
            setattr(self, f, 0)

    def as_dict(self):
        return {f: getattr(self, f) for f in self.FIELDS}

    def note(self, field, where, count=1):
        """Add ``count`` to ``field`` and remember ``where`` (file and entry) for the log line."""
        setattr(self, field, getattr(self, field) + count)
        examples = self.examples.setdefault(field, [])
        if len(examples) < self.MAX_EXAMPLES:
            examples.append(str(where))

    def probe(self, path):
        """``(width, height)`` of the image at ``path`` from its header, or ``None`` after counting
        it missing / unreadable / too large (see :func:`probe_image`)."""
        kind, info = probe_image(path, self.max_pixels)
        if kind is None:
            return info
        self.note({"missing": "images_missing", "too_large": "images_too_large"}.get(
            kind, "images_unreadable"), f"{path}: {info}")
        return None

    def image_ok(self, path):
        """True if ``path`` is an image the decoder accepts; otherwise count why not."""
        return self.probe(path) is not None

    def check_not_empty(self, where):
        """Raise :class:`DataError` when no listed image is usable."""
        skipped = sum(getattr(self, f) for f in ("images_missing", "images_unreadable",
                                                  "images_too_large", "images_bad_entry",
                                                  "images_duplicate_id"))
        if self.images_listed and self.images_listed <= skipped:
            raise DataError(f"{self.name}: none of the {self.images_listed} images listed in "
                            f"{where} could be used ({self._dropped_text()})")

    def _dropped_text(self):
        return ", ".join(f"{k}={v}" for k, v in self.as_dict().items()
                         if k != "images_listed" and v)

    def log(self):
        dropped = self._dropped_text()
        if dropped:
            first = "; ".join(f"{k}: {', '.join(v)}" for k, v in self.examples.items())
            log.warning("%s: listed %d images; %s%s", self.name, self.images_listed, dropped,
                        f" (first: {first})" if first else "")
        else:
            log.info("%s: listed %d images", self.name, self.images_listed)

    def __repr__(self):
        return f"SourceReport({self.name!r}, {self.as_dict()})"


def sanitize_pixel_boxes(boxes_xyxy, width, height, report=None):
    """Clip pixel xyxy boxes to the image and flag degenerate ones (numpy, Python side).

    Args:
      boxes_xyxy: ``[K, 4]`` float pixel boxes.
      width, height: image size in pixels.
      report: optional :class:`SourceReport` whose ``boxes_degenerate`` / ``boxes_clipped`` grow.
    Returns:
      ``(boxes_normalized [K', 4] float32, keep [K] bool)`` — the kept boxes, normalized to [0, 1].
    """
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    finite = np.all(np.isfinite(b), axis=1)
    b = np.where(finite[:, None], b, 0.0)
    clipped = np.stack([np.clip(b[:, 0], 0, width), np.clip(b[:, 1], 0, height),
                        np.clip(b[:, 2], 0, width), np.clip(b[:, 3], 0, height)], axis=1)
    keep = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    if report is not None:
        report.boxes_degenerate += int((~keep).sum())
        report.boxes_clipped += int((keep & np.any(np.abs(clipped - b) > 1e-6, axis=1)).sum())
    scale = np.array([width, height, width, height], np.float64)
    return (clipped[keep] / scale).astype(np.float32), keep


# What tf.io.decode_image decodes (PIL's format names; MPO is a camera JPEG with extra frames);
# anything else is skipped while listing.
DECODABLE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP")
EXIF_ORIENTATION = 0x0112  # the tag mgdet.data.exif applies when decoding


def _has_end_marker(path, size, marker):
    """``marker`` in the last 64 bytes (the usual case), else anywhere after the header (a valid
    image followed by trailing bytes, which decoders ignore)."""
    with open(path, "rb") as f:
        f.seek(max(0, size - 64))
        if marker in f.read():
            return True
        f.seek(2)
        return marker in f.read()


def probe_image(path, max_pixels=None):
    """Checks an image file from its header, without decoding it.

    PIL reads only the header (format, width, height). Accepted: the formats
    ``tf.io.decode_image`` decodes (:data:`DECODABLE_FORMATS`, whatever the file's extension);
    JPEG must hold an end-of-image marker and PNG an IEND chunk (a truncated file fails to
    decode), trailing bytes after them are fine (decoders ignore them). Images whose header gives
    more than ``max_pixels`` pixels are refused before anything allocates them.

    Returns:
      ``(None, (width, height))`` for a usable image (as displayed: swapped when its EXIF
      orientation turns it by 90 degrees), else ``(kind, reason)`` with kind
      ``"missing"``, ``"unreadable"`` or ``"too_large"`` and a short reason.
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        return "missing", "no such file"
    if size == 0:
        return "unreadable", "empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt, (width, height) = im.format, im.size
                if fmt in ("JPEG", "MPO") and im.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                    width, height = height, width  # displayed turned by 90 degrees
    except Image.DecompressionBombError as e:
        return "too_large", str(e).split(", could be")[0]
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        return "unreadable", f"not a readable image ({type(e).__name__})"
    if fmt not in DECODABLE_FORMATS:
        return "unreadable", f"{fmt} images are not decoded (use one of {DECODABLE_FORMATS})"
    if width <= 0 or height <= 0:
        return "unreadable", f"header size {width}x{height}"
    if max_pixels and width * height > max_pixels:
        return "too_large", f"{width}x{height} = {width * height} pixels > max_pixels {max_pixels}"
    try:
        if fmt in ("JPEG", "MPO") and not _has_end_marker(path, size, b"\xff\xd9"):
            return "unreadable", "truncated JPEG (no end-of-image marker)"
        if fmt == "PNG" and not _has_end_marker(path, size, b"IEND"):
            return "unreadable", "truncated PNG (no IEND chunk)"
    except OSError as e:
        return "unreadable", f"unreadable ({e.strerror})"
    return None, (width, height)


def check_image_file(path, max_pixels=None):
    """``None`` when :func:`probe_image` accepts ``path``, else the reason (``"missing"`` for a
    missing file). Anything that passes and still fails to decode is skipped (and counted) by
    ``ignore_errors`` in the tf.data graph."""
    kind, info = probe_image(path, max_pixels)
    if kind is None:
        return None
    return "missing" if kind == "missing" else info


def records_dataset(records):
    """A list of annotation records -> an *undecoded* ``tf.data.Dataset`` (``path`` instead of
    ``image``).

    Each record is a dict with ``path`` (str), ``boxes`` ([K, 4] normalized xyxy), ``labels``
    ([K]), ``image_id`` (int) and optionally ``difficult`` / ``is_crowd`` ([K] bool) and
    ``area`` ([K]).
    """
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(records_tensors(records))


def records_tensors(records):
    """The columns of :func:`records_dataset` (dict of tensors, ragged per-box ones), one row
    per record."""
    import tensorflow as tf

    optional = [k for k in ("difficult", "is_crowd", "area") if records and k in records[0]]
    row_lengths = np.asarray([len(r["labels"]) for r in records], np.int64)

    def ragged(key, dtype, inner=()):
        vals = [np.asarray(r[key], dtype).reshape((-1,) + inner) for r in records]
        flat = np.concatenate(vals, 0) if vals else np.zeros((0,) + inner, dtype)
        return tf.RaggedTensor.from_row_lengths(flat, row_lengths)

    tensors = {
        "path": tf.constant([str(r["path"]) for r in records], tf.string, shape=[len(records)]),
        "image_id": tf.constant([int(r["image_id"]) for r in records], tf.int64, shape=[len(records)]),
        "boxes": ragged("boxes", np.float32, (4,)),
        "labels": ragged("labels", np.int32),
    }
    for k in optional:
        tensors[k] = ragged(k, np.float32 if k == "area" else bool)
    return tensors


def records_at(records, positions):
    """Decoded examples of ``records`` at ``positions`` (a ``tf.data.Dataset`` of int64
    indices into ``records``), in that order: only those images are read and decoded
    (:func:`decode_records`)."""
    import tensorflow as tf

    with tf.init_scope():  # eager even inside a tf.data function: captured, not copied in it
        tensors = records_tensors(records)
    return decode_records(positions.map(lambda i: {k: v[i] for k, v in tensors.items()}))


def decode_records(ds):
    """Reads and decodes ``path`` into ``image`` (uint8 [H, W, 3]) inside the graph.

    ``tf.io.decode_image(channels=3, expand_animations=False)``: grey and RGBA images become RGB,
    the first frame of a GIF is used; the EXIF orientation is applied
    (:mod:`mgdet.data.exif`). An image that fails to decode is skipped by
    ``Dataset.ignore_errors`` (TF logs the error) and counted: ``images_failed_decode`` of the
    ``decode`` group in :mod:`mgdet.data.stats` (all pipelines), and per pass of the pipeline
    that reads them, which each example's ``num_listed`` (records per pass) lets it derive.
    """
    import tensorflow as tf  # on use: see the note at the top
    from mgdet.data import stats  # both import TensorFlow
    from mgdet.data.exif import decode_oriented

    counters = stats.counters("decode")
    counters.add("images_listed", 0)  # create the variables eagerly, outside any tf.function
    counters.add("images_decoded", 0)

    def _count_listed(ex):
        with tf.control_dependencies([counters.increment("images_listed")]):
            return {k: tf.identity(v) for k, v in ex.items()}

    listed = ds.cardinality()  # the records of one pass, known before decoding
    # (a tensor when built inside a tf.data function, a stream's pass, whose size is known)
    known = not tf.executing_eagerly() or int(listed) >= 0

    def _decode(ex):
        out = {k: v for k, v in ex.items() if k != "path"}
        out["image"] = decode_oriented(tf.io.read_file(ex["path"]))  # EXIF orientation applied
        if known:  # lets a pipeline count its own failures per pass (mgdet.data.stats)
            out[stats.LISTED_KEY] = tf.cast(listed, tf.int64)
        return out

    def _count_decoded(ex):
        with tf.control_dependencies([counters.increment("images_decoded")]):
            return {k: tf.identity(v) for k, v in ex.items()}

    ds = ds.map(_count_listed)
    ds = ds.map(_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors(log_warning=True)
    return ds.map(_count_decoded)


def records_to_dataset(records, shuffle=False, seed=0):
    """Records -> dataset of decoded examples; ``shuffle`` reshuffles the file list every epoch
    (cheap: before decoding)."""
    ds = records_dataset(records)
    if shuffle and records:
        ds = ds.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    return decode_records(ds)


# --------------------------------------------------------------------------------------------
# COCO-format ground truth
# --------------------------------------------------------------------------------------------

def _as_numpy_examples(examples_or_dataset):
    import tensorflow as tf

    if isinstance(examples_or_dataset, tf.data.Dataset):
        spec = examples_or_dataset.element_spec
        if not isinstance(spec, dict) or "image" not in spec:
            raise DataError("to_coco: expected a dataset of decoded examples (dicts with 'image', "
                            f"'boxes', 'labels', 'image_id'), got element_spec {spec}")
        return examples_or_dataset.as_numpy_iterator()
    if hasattr(examples_or_dataset, "coco_examples"):
        return examples_or_dataset.coco_examples()
    return iter(examples_or_dataset)


def to_coco(examples_or_dataset, class_names=None):
    """COCO-format ground truth (a dict ready for ``pycocotools.coco.COCO``) from decoded examples.

    Args:
      examples_or_dataset: a ``tf.data.Dataset`` of decoded examples, an iterable of decoded
        examples (numpy or tensors; ``image`` may be replaced by ``height`` and ``width`` keys),
        or an object with a ``coco_examples()`` method (e.g. ``SyntheticData``).
      class_names: category names; defaults to ``class_<i>`` for every label seen.
    Returns:
      ``{"images": [{id, width, height}], "annotations": [{id, image_id, category_id, bbox [x, y, w,
      h] in pixels, area, iscrowd}], "categories": [{id, name}]}`` with ``category_id = label + 1``.
      ``difficult`` and ``is_crowd`` objects become ``iscrowd = 1`` (pycocotools ignores detections
      matched to them, as VOC's evaluation does for difficult objects). ``area`` is the example's
      ``area`` when present (COCO's segment area, so APs/APm/APl match the official split), else
      the box area in pixels.
    """
    images, annotations = [], []
    max_label = -1
    seen_ids = set()
    for ex in _as_numpy_examples(examples_or_dataset):
        ex = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in ex.items()}
        if "image" in ex:
            h, w = int(ex["image"].shape[0]), int(ex["image"].shape[1])
        else:
            h, w = int(ex["height"]), int(ex["width"])
        image_id = int(ex["image_id"])
        if image_id in seen_ids:
            raise DataError(f"to_coco: duplicate image_id {image_id}")
        seen_ids.add(image_id)
        images.append({"id": image_id, "width": w, "height": h})
        boxes = np.asarray(ex["boxes"], np.float64).reshape(-1, 4)
        labels = np.asarray(ex["labels"]).reshape(-1)
        crowd = np.zeros(len(labels), bool)
        for key in ("difficult", "is_crowd"):
            if key in ex:
                crowd |= np.asarray(ex[key], bool).reshape(-1)
        areas = np.asarray(ex["area"], np.float64).reshape(-1) if "area" in ex else None
        for j in range(len(labels)):
            x1, y1, x2, y2 = boxes[j] * [w, h, w, h]
            bw, bh = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
            label = int(labels[j])
            max_label = max(max_label, label)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                "bbox": [float(x1), float(y1), float(bw), float(bh)],
                "area": float(areas[j]) if areas is not None and areas[j] > 0 else float(bw * bh),
                "iscrowd": int(crowd[j]),
            })
    if class_names is None:
        class_names = [f"class_{i}" for i in range(max_label + 1)]
    elif max_label >= len(class_names):
        raise DataError(f"to_coco: label {max_label} out of range for {len(class_names)} class names")
    categories = [{"id": i + 1, "name": str(n)} for i, n in enumerate(class_names)]
    return {"info": {"description": "mgdet ground truth"}, "images": images,
            "annotations": annotations, "categories": categories}

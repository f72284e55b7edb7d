"""Tiny image files for the data tests, written byte by byte where a header must lie.

Nothing here allocates a large array: the "bombs" are a few hundred bytes whose headers claim
a huge size.
"""
import io
import struct
import zlib

import numpy as np
from PIL import Image


def jpeg_bytes(w, h, seed=0):
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def jpeg(path, w, h, seed=0):
    return write(path, jpeg_bytes(w, h, seed))


def truncated_jpeg(path):
    data = jpeg_bytes(40, 30, 1)
    return write(path, data[: len(data) // 2])


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(w, h, idat):
    """A PNG whose IHDR says ``w`` x ``h`` (RGB), one IDAT chunk ``idat`` and IEND."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def undecodable_png(path, w=40, h=30):
    """A valid PNG header over corrupt pixel data: passes the header check, fails to decode."""
    return write(path, png_header_only(w, h, b"\x00not zlib" * 20))


def png_bomb(path, side=20000):
    """A few hundred bytes whose header says ``side`` x ``side`` pixels."""
    return write(path, png_header_only(side, side, zlib.compress(b"\x00" * 64)))


def jpeg_bomb(path, side=12000):
    """A tiny valid JPEG whose frame header (SOF0) is patched to say ``side`` x ``side``."""
    data = bytearray(jpeg_bytes(16, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    return write(path, bytes(data))


def jpeg_with_trailing_bytes(path, w=40, h=30):
    """A valid JPEG followed by 300 bytes of junk (decoders stop at the end-of-image marker)."""
    return write(path, jpeg_bytes(w, h, 3) + b"\x00junk" * 60)


def webp(path, w=40, h=30):
    """A WebP image (name it .jpg to check that the content, not the extension, decides)."""
    arr = np.random.default_rng(4).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="WEBP")
    return write(path, buf.getvalue())


def defective_coco(folder, num_good=4, size=(64, 48)):
    """A COCO-format dataset in ``folder`` (``ann.json`` + ``images/``) with one of each defect.

    ``num_good`` plain JPEGs with one box each, plus a JPEG with trailing bytes and a WebP named
    .jpg (both usable), an image that passes the header check and fails to decode, and the
    defects below. Returns ``(ann_path, image_dir, expected)`` with ``expected`` the
    :class:`mgdet.data.common.SourceReport` counts and ``records`` (usable after listing) and
    ``decodable`` (of those, how many decode).
    """
    import json
    import os

    w, h = size
    image_dir = os.path.join(folder, "images")
    os.makedirs(image_dir, exist_ok=True)
    images, anns = [], []

    def image(entry, writer=None, *args):
        images.append(entry)
        if writer is not None:
            writer(os.path.join(image_dir, entry["file_name"]), *args)

    def ann(image_id, bbox, cat=1):
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": bbox,
                     "iscrowd": 0, "area": 100.0})

    for i in range(1, num_good + 1):
        image({"id": i, "file_name": f"good{i}.jpg", "width": w, "height": h}, jpeg, w, h, i)
        ann(i, [4, 4, w / 2, h / 2], cat=1 + i % 2)
    image({"id": 101, "file_name": "trailing.jpg", "width": 40, "height": 30},
          jpeg_with_trailing_bytes)
    ann(101, [2, 2, 20, 20])
    image({"id": 102, "file_name": "webp.jpg", "width": 40, "height": 30}, webp)
    ann(102, [2, 2, 20, 20])
    image({"id": 103, "file_name": "undecodable.png", "width": 40, "height": 30}, undecodable_png)
    ann(103, [2, 2, 20, 20])
    ann(1, [5, 5, 0, 10])                     # zero width: boxes_degenerate
    ann(2, [w - 10, h - 10, 30, 30])          # runs out of the image: boxes_clipped
    ann(1, [1, 2, 3])                         # 3-number bbox: boxes_bad_entry
    ann(1, None)                              # null bbox: boxes_bad_entry
    ann(1, [1, 2, 3, 4], cat="abc")           # category_id "abc": boxes_bad_entry
    ann(1, [1, 2, 3, 4], cat=99)              # unknown category: boxes_unknown_class
    ann(9999, [1, 2, 3, 4])                   # unknown image id: boxes_unknown_image
    image({"id": 201, "width": w, "height": h})                                # no file_name
    image({"id": 202, "file_name": "abc.jpg", "width": "abc", "height": h}, jpeg, w, h, 0)
    image({"id": 203, "file_name": "bomb.png"}, png_bomb)                      # no size: header
    image({"id": 204, "file_name": "corrupt.jpg"}, write, b"\xff\xd8\xff garbage" * 10)
    image({"id": 205, "file_name": "bomb.jpg", "width": 12000, "height": 12000}, jpeg_bomb)
    image({"id": 206, "file_name": "dup_a.jpg", "width": w, "height": h}, jpeg, w, h, 1)
    image({"id": 206, "file_name": "dup_b.jpg", "width": w, "height": h}, jpeg, w, h, 2)
    ann(206, [1, 2, 30, 30])                  # on a duplicated id: boxes_unknown_image
    image({"id": 207, "file_name": "missing.jpg", "width": w, "height": h})
    image({"id": 208, "file_name": "truncated.jpg", "width": 40, "height": 30}, truncated_jpeg)
    ann_path = os.path.join(folder, "ann.json")
    with open(ann_path, "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}, f)
    expected = {"images_listed": num_good + 12, "images_missing": 1, "images_unreadable": 2,
                "images_too_large": 2, "images_bad_entry": 2, "images_duplicate_id": 2,
                "boxes_degenerate": 1, "boxes_clipped": 1, "boxes_unknown_class": 1,
                "boxes_bad_entry": 3, "boxes_unknown_image": 2,
                "records": num_good + 3, "decodable": num_good + 2}
    return ann_path, image_dir, expected

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

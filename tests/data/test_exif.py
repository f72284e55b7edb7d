"""EXIF orientation: read from the bytes and applied in the graph, against PIL's
``ImageOps.exif_transpose`` for all 8 orientations, little- and big-endian EXIF (the latter
assembled byte by byte), files without EXIF, garbage and truncated segments; the header size a
source records is the displayed one; predict and the SavedModel's serving_bytes see the image
as displayed."""
import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from mgdet.data.common import probe_image
from mgdet.data.exif import apply_orientation, decode_oriented, exif_orientation

W, H = 40, 24  # not square: a wrong turn changes the shape


def pattern():
    """An asymmetric picture: a gradient and a block in one corner (no flip leaves it equal)."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([x * 255 // W, y * 255 // H, np.full_like(x, 60)], -1).astype(np.uint8)
    img[2:8, 3:12] = (250, 250, 250)
    return img


def jpeg_with_orientation(orientation, quality=95):
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pattern()).save(buf, format="JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def big_endian_exif_jpeg(orientation):
    """A JPEG whose APP1 holds a big-endian ("MM") TIFF with two IFD0 entries, orientation second,
    placed after an APP0 (JFIF) segment."""
    buf = io.BytesIO()
    Image.fromarray(pattern()).save(buf, format="JPEG", quality=95)
    plain = buf.getvalue()
    entries = (struct.pack(">HHII", 0x010F, 2, 4, 0)  # Make (ASCII), an unrelated entry
               + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0))
    tiff = b"MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", 2) + entries + b"\0\0\0\0"
    app1 = b"\xff\xe1" + struct.pack(">H", len(tiff) + 8) + b"Exif\0\0" + tiff
    assert plain[2:4] == b"\xff\xe0"  # PIL writes SOI then APP0: insert APP1 after APP0
    app0_end = 4 + struct.unpack(">H", plain[4:6])[0]
    return plain[:app0_end] + app1 + plain[app0_end:]


def xmp_first_exif_jpeg(orientation, xmp_bytes=9000):
    """A JPEG with an ICC-like APP2 and a large XMP APP1 (whose text holds the Exif identifier
    too) before the EXIF APP1: the tag is found by walking the segments, not by a byte search."""
    exif_jpeg = jpeg_with_orientation(orientation)
    xmp = b"http://ns.adobe.com/xap/1.0/\0" + b"<x:xmpmeta> Exif\0\0II*\0 " + b" " * xmp_bytes
    app1_xmp = b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp
    app2 = b"\xff\xe2" + struct.pack(">H", 2 + 600) + b"ICC_PROFILE\0" + b"\0" * 588
    return exif_jpeg[:2] + app2 + app1_xmp + exif_jpeg[2:]


def pil_displayed(data):
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("maker", [jpeg_with_orientation, big_endian_exif_jpeg,
                                   xmp_first_exif_jpeg])
def test_every_orientation_matches_pil(orientation, maker):
    data = maker(orientation)
    assert int(exif_orientation(tf.constant(data))) == orientation
    ours = decode_oriented(tf.constant(data)).numpy()
    theirs = pil_displayed(data)
    assert ours.shape == theirs.shape == ((W, H, 3) if orientation >= 5 else (H, W, 3))
    assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 3  # JPEG decoders differ a bit
    if orientation > 1:  # and a wrong turn would be far off
        plain = tf.io.decode_jpeg(data).numpy()
        assert plain.shape != ours.shape or np.abs(plain.astype(int) - ours.astype(int)).mean() > 20


def test_apply_orientation_is_exif_transpose_on_exact_pixels():
    img = pattern()
    for k in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = k
        pil = Image.fromarray(img)
        pil.getexif()[0x0112] = k
        pil.info["exif"] = exif.tobytes()
        expected = np.asarray(ImageOps.exif_transpose(pil))
        np.testing.assert_array_equal(apply_orientation(tf.constant(img), k).numpy(), expected)


@pytest.mark.parametrize("data", [
    b"", b"\xff\xd8", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
    b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00XX\x00",             # unknown byte order
    b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00II*\x00\xff\xff\x00\x00",  # IFD offset past the end
    b"Exif\x00\x00II*\x00\x08\x00\x00\x00" + b"\0" * 20,        # not a JPEG, no APP1 marker
])
def test_anything_without_a_readable_tag_is_orientation_1(data):
    assert int(exif_orientation(tf.constant(data))) == 1


def test_png_and_plain_jpeg_are_orientation_1():
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(pattern()).save(buf, format=fmt)
        assert int(exif_orientation(tf.constant(buf.getvalue()))) == 1
    exif6 = jpeg_with_orientation(6)
    assert int(exif_orientation(tf.constant(exif6[: len(exif6) // 2]))) == 6  # head suffices


def test_the_recorded_size_is_the_displayed_one(tmp_path):
    for k, size in ((1, (W, H)), (6, (H, W)), (8, (H, W)), (3, (W, H))):
        path = tmp_path / f"o{k}.jpg"
        path.write_bytes(jpeg_with_orientation(k))
        assert probe_image(str(path)) == (None, size)


def test_predict_reads_images_as_displayed(tmp_path):
    from mgdet.inference import read_image
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_with_orientation(6))
    np.testing.assert_array_equal(read_image(str(path)),
                                  decode_oriented(tf.constant(path.read_bytes())).numpy())
    assert read_image(str(path)).shape == (W, H, 3)

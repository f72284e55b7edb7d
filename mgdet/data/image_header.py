"""Image size from an encoded image's header, in the graph and without decoding it: what
serving reads to refuse a decompression bomb (``data.max_pixels``) before decoding."""
import tensorflow as tf


def _header_uint(data, offset, nbytes, little_endian=False):
    """Unsigned integer of ``nbytes`` (2 or 4) at ``offset`` of the string ``data`` -> int64."""
    raw = tf.io.decode_raw(tf.strings.substr(data, offset, nbytes), tf.uint8)
    raw = tf.cast(tf.ensure_shape(raw, [nbytes]), tf.int64)
    order = range(nbytes) if little_endian else range(nbytes - 1, -1, -1)
    return tf.add_n([raw[i] * (256 ** k) for k, i in enumerate(order)])


def header_size(data):
    """Height and width (int64 scalars) read from the header of an encoded image, without
    decoding it: JPEG (``tf.io.extract_jpeg_shape``), PNG (IHDR, big-endian), GIF (logical
    screen), BMP (``|height|``: negative for top-down rows) and WebP (VP8 / VP8L / VP8X). Any
    other bytes: (0, 0), left to ``tf.io.decode_image`` to refuse."""
    jpeg_data = data
    data = tf.strings.substr(data, 0, 32) + b"\0" * 32  # short inputs read as zeros
    magic = tf.strings.substr(data, 0, 4)
    webp = tf.logical_and(tf.equal(magic, b"RIFF"),
                          tf.equal(tf.strings.substr(data, 8, 4), b"WEBP"))
    chunk = tf.strings.substr(data, 12, 4)
    kind = tf.case([  # the format: an index into ``branches``
        (tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff"), lambda: 1),
        (tf.equal(magic, b"\x89PNG"), lambda: 2),
        (tf.equal(magic, b"GIF8"), lambda: 3),
        (tf.equal(tf.strings.substr(data, 0, 2), b"BM"), lambda: 4),
        (tf.logical_and(webp, tf.equal(chunk, b"VP8 ")), lambda: 5),
        (tf.logical_and(webp, tf.equal(chunk, b"VP8L")), lambda: 6),
        (tf.logical_and(webp, tf.equal(chunk, b"VP8X")), lambda: 7),
    ], default=lambda: 0)
    kind = tf.convert_to_tensor(kind, tf.int32)  # eager: tf.case gives a Python int

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(jpeg_data), tf.int64)
        return shape[0], shape[1]

    def bmp():  # int32 little-endian width at 18, height at 22 (negative: top-down rows)
        signed = tf.bitcast(tf.cast(_header_uint(data, 22, 4, True), tf.uint32), tf.int32)
        return tf.abs(tf.cast(signed, tf.int64)), _header_uint(data, 18, 4, True)

    def vp8l():  # 14 bits width - 1, then 14 bits height - 1, little-endian from byte 21
        bits = _header_uint(data, 21, 4, little_endian=True)
        return bits // 16384 % 16384 + 1, bits % 16384 + 1

    def vp8x():  # 24-bit width - 1 and height - 1 at bytes 24 and 27
        lo = _header_uint(data, 24, 4, little_endian=True) % 16777216
        hi = _header_uint(data, 27, 4, little_endian=True) % 16777216
        return hi + 1, lo + 1

    branches = [
        lambda: (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
        jpeg,
        lambda: (_header_uint(data, 20, 4), _header_uint(data, 16, 4)),
        lambda: (_header_uint(data, 8, 2, True), _header_uint(data, 6, 2, True)),
        bmp,
        lambda: (_header_uint(data, 28, 2, True) % 16384, _header_uint(data, 26, 2, True) % 16384),
        vp8l,
        vp8x,
    ]
    return tf.switch_case(kind, branches)

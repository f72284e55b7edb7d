"""EXIF orientation, read and applied inside the TensorFlow graph (``tf.io.decode_image`` ignores
it, so a phone photo taken upright would otherwise be decoded lying on its side).

    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image = apply_orientation(image, exif_orientation(data))

Annotations are taken to refer to the image as displayed (after the orientation is applied), as
labelling tools show it; training, evaluation, ``predict`` and the SavedModel's ``serving_bytes``
decode through these two functions. Pure graph ops (no ``py_function``): they run in tf.data and
inside an exported SavedModel.

The tag is read from the first :data:`SCAN_BYTES` bytes of a JPEG by walking its marker
segments from SOI to the first APP1 ``Exif\\0\\0`` segment (an XMP APP1 or an ICC APP2 before
it is stepped over), then its TIFF header (``II`` little- or ``MM`` big-endian), IFD0's entries,
tag 0x0112 (SHORT). Anything else (no EXIF, not a JPEG, a malformed or truncated segment, a value
outside 1..8) reads as 1, the identity.
"""
import tensorflow as tf

SCAN_BYTES = 128 * 1024  # the APP1 segment (at most 64 KiB) follows SOI and a few small APPn
MAX_SEGMENTS = 64  # JPEG marker segments walked before giving up
MAX_ENTRIES = 256  # IFD0 entries searched for the tag
ORIENTATION_TAG = 0x0112


def _reader(data):
    """``read(index, nbytes, little_endian)``: unsigned integers at byte offsets of ``data``
    (int64, any shape of ``index``), reading zeros past the end; and the number of real bytes."""
    head = tf.strings.substr(data, 0, SCAN_BYTES)
    size = tf.cast(tf.strings.length(head), tf.int64)
    raw = tf.cast(tf.io.decode_raw(head + b"\0" * 16, tf.uint8), tf.int64)  # never empty
    last = tf.cast(tf.shape(raw)[0], tf.int64) - 1

    def read(index, nbytes=1, little_endian=False):
        index = tf.convert_to_tensor(index, tf.int64)
        parts = [tf.gather(raw, tf.clip_by_value(index + k, 0, last)) for k in range(nbytes)]
        big = parts[0]
        for p in parts[1:]:
            big = big * 256 + p
        little = parts[-1]
        for p in parts[-2::-1]:
            little = little * 256 + p
        return tf.where(tf.convert_to_tensor(little_endian), little, big)

    return read, size


def exif_orientation(data):
    """The EXIF Orientation (1..8) of an encoded image, from its bytes, without decoding it.

    Args:
      data: string scalar, the encoded file.
    Returns:
      int32 scalar: the tag's value when ``data`` is a JPEG whose first APP1 ``Exif`` segment
      (within the first :data:`SCAN_BYTES`) has a well-formed TIFF header (``II`` or ``MM``) and
      IFD0 holds tag 0x0112 with a value in 1..8; otherwise 1 (no tag, not a JPEG, truncated or
      garbage EXIF).
    """
    data = tf.convert_to_tensor(data, tf.string)
    read, size = _reader(data)
    exif_magic = tf.constant([0x45, 0x78, 0x69, 0x66, 0, 0], tf.int64)  # "Exif\0\0"

    # Walk the marker segments after SOI: 0 = searching, 1 = found APP1 Exif, 2 = stop.
    def cond(i, pos, state):
        return tf.logical_and(tf.equal(state, 0), i < MAX_SEGMENTS)

    def body(i, pos, state):
        marker, kind = read(pos), read(pos + 1)
        is_marker = tf.equal(marker, 0xFF)
        magic = read(pos + 4 + tf.range(6, dtype=tf.int64))
        found = is_marker & tf.equal(kind, 0xE1) & tf.reduce_all(tf.equal(magic, exif_magic))
        fill = is_marker & tf.equal(kind, 0xFF)       # fill byte before a marker
        stop = ~is_marker | tf.equal(kind, 0xDA) | tf.equal(kind, 0xD9) | (pos + 4 > size)
        state = tf.where(found, 1, tf.where(stop, 2, 0))
        step = tf.where(fill, tf.constant(1, tf.int64), 2 + read(pos + 2, 2))
        return i + 1, tf.where(tf.equal(state, 0), pos + step, pos), state

    is_jpeg = tf.reduce_all(tf.equal(read(tf.range(3, dtype=tf.int64)), [0xFF, 0xD8, 0xFF]))
    _, pos, state = tf.while_loop(
        cond, body, (tf.constant(0), tf.constant(2, tf.int64),
                     tf.where(is_jpeg, 0, 2)), maximum_iterations=MAX_SEGMENTS)

    tiff = pos + 10                                   # after FF E1, length, "Exif\0\0"
    order = read(tiff, 2)
    little = tf.equal(order, 0x4949)                  # "II"
    valid = (tf.equal(state, 1) & (little | tf.equal(order, 0x4D4D))
             & tf.equal(read(tiff + 2, 2, little), 42))
    ifd = tiff + read(tiff + 4, 4, little)
    count = read(ifd, 2, little)
    entry = ifd + 2 + 12 * tf.range(MAX_ENTRIES, dtype=tf.int64)
    match = ((tf.range(MAX_ENTRIES, dtype=tf.int64) < count) & (entry + 12 <= size)
             & tf.equal(read(entry, 2, little), ORIENTATION_TAG))
    first = tf.argmax(tf.cast(match, tf.int32), output_type=tf.int64)
    value = read(tf.gather(entry, first) + 8, 2, little)   # SHORT, left-justified in the entry
    ok = valid & tf.reduce_any(match) & (value >= 1) & (value <= 8)
    return tf.cast(tf.where(ok, value, 1), tf.int32)


def apply_orientation(image, orientation):
    """``image`` [H, W, C] turned as EXIF ``orientation`` (1..8) says it is displayed (PIL's
    ``ImageOps.exif_transpose``); [W, H, C] for 5..8."""
    def transpose(x):
        return tf.transpose(x, [1, 0, 2])

    branches = [
        lambda: image,                                   # 1: as stored
        lambda: tf.reverse(image, [1]),                  # 2: mirrored left-right
        lambda: tf.image.rot90(image, 2),                # 3: rotated 180
        lambda: tf.reverse(image, [0]),                  # 4: mirrored top-bottom
        lambda: transpose(image),                        # 5: transposed
        lambda: tf.image.rot90(image, 3),                # 6: rotate 90 clockwise to display
        lambda: tf.image.rot90(transpose(image), 2),     # 7: transverse
        lambda: tf.image.rot90(image, 1),                # 8: rotate 90 counter-clockwise
    ]
    index = tf.clip_by_value(tf.cast(orientation, tf.int32) - 1, 0, 7)
    out = tf.switch_case(index, branches)
    return tf.ensure_shape(out, [None, None, image.shape[-1]])


def decode_oriented(data, channels=3):
    """``tf.io.decode_image`` (uint8, first frame of an animation) with the EXIF orientation
    applied: uint8 [H, W, channels] as displayed."""
    image = tf.io.decode_image(data, channels=channels, dtype=tf.uint8, expand_animations=False)
    return apply_orientation(tf.ensure_shape(image, [None, None, channels]),
                             exif_orientation(data))

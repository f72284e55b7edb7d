"""EXIF orientation, read and applied inside the TensorFlow graph (``tf.io.decode_image`` ignores
it, so a phone photo taken upright would otherwise be decoded lying on its side).

    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image = apply_orientation(image, exif_orientation(data))

Annotations are taken to refer to the image as displayed (after the orientation is applied), as
labelling tools show it; training, evaluation, ``predict`` and the SavedModel's ``serving_bytes``
decode through these two functions. Pure graph ops (no ``py_function``): they run in tf.data and
inside an exported SavedModel.

The tag is read from the first :data:`SCAN_BYTES` bytes of a JPEG: the APP1 segment (``FF E1``,
then ``Exif\\0\\0`` starting within the first :data:`SEARCH_BYTES`), its TIFF header (``II``
little- or ``MM`` big-endian), IFD0's entries, tag 0x0112 (SHORT). Anything else (no EXIF, not a JPEG, a malformed or truncated segment, a value
outside 1..8) reads as 1, the identity.
"""
import tensorflow as tf

SCAN_BYTES = 65536  # the APP1 segment is at most 64 KiB and comes first after SOI
SEARCH_BYTES = 4096  # where its "Exif" identifier may start (after SOI and an APP0, say)
MAX_ENTRIES = 64  # IFD0 entries scanned for the tag
ORIENTATION_TAG = 0x0112
_EXIF_ID = b"Exif\x00\x00"


def _read(raw, pos, nbytes, little):
    """Unsigned ``nbytes``-byte integers at positions ``pos`` (int32, any shape) of the uint8
    vector ``raw``; positions past the end read as 0."""
    n = tf.shape(raw)[0]
    padded = tf.concat([raw, [0]], 0)  # a gather index for an empty input too
    value = tf.zeros_like(pos)
    for k in range(nbytes):
        at = pos + k
        byte = tf.where((at >= 0) & (at < n), tf.gather(padded, tf.clip_by_value(at, 0, n)), 0)
        shift = 8 * k if little else 8 * (nbytes - 1 - k)
        value += tf.bitwise.left_shift(byte, shift)
    return value


def exif_orientation(data):
    """The EXIF orientation (int32 scalar, 1..8) of encoded image bytes ``data`` (string scalar);
    1 when there is none."""
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 0, SCAN_BYTES), tf.uint8), tf.int32)
    raw = tf.reshape(raw, [-1])
    n = tf.shape(raw)[0]
    pattern = tf.constant(list(_EXIF_ID), tf.int32)
    starts = tf.range(tf.clip_by_value(n - 5, 0, SEARCH_BYTES))
    found = tf.ones_like(starts, tf.bool)
    for k in range(len(_EXIF_ID)):
        found &= _read(raw, starts + k, 1, True) == pattern[k]
    # the identifier must open an APP1 segment: FF E1 and a 2-byte length just before it
    found &= (_read(raw, starts - 4, 1, True) == 0xFF) & (_read(raw, starts - 3, 1, True) == 0xE1)
    is_jpeg = (n >= 4) & (_read(raw, tf.constant(0), 2, False) == 0xFFD8)
    has_exif = tf.reduce_any(found) & is_jpeg
    first = tf.argmax(tf.cast(tf.concat([found, [False]], 0), tf.int32))  # 0 when none
    tiff = tf.cast(first, tf.int32) + len(_EXIF_ID)
    order = _read(raw, tiff, 2, False)
    little = order == 0x4949  # "II"
    has_exif &= little | (order == 0x4D4D)  # "MM"

    def read(pos, nbytes):
        return tf.where(little, _read(raw, pos, nbytes, True), _read(raw, pos, nbytes, False))

    ifd = tiff + read(tiff + 4, 4)
    count = read(ifd, 2)
    entries = ifd + 2 + 12 * tf.range(MAX_ENTRIES)
    match = ((tf.range(MAX_ENTRIES) < count) & (read(entries, 2) == ORIENTATION_TAG)
             & (entries + 10 <= n))
    value = tf.gather(read(entries + 8, 2), tf.cast(tf.argmax(tf.cast(match, tf.int32)), tf.int32))
    ok = has_exif & tf.reduce_any(match) & (value >= 1) & (value <= 8)
    return tf.where(ok, value, 1)


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

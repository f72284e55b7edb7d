"""Natural log of positive float32 tensors as plain arithmetic that XLA's CPU backend vectorizes.

C2L's quality takes one ``log`` per (object, anchor) pair: 8.2 M of them at batch 32 x 20 objects
x 12,750 anchors. On a 2-core Xeon (AVX-512), the log of such a stored matrix took 2.3 ms here
against 3.2 ms for XLA's CPU ``log`` (3.9 ms for TensorFlow's kernel), and 7.4 against 8.5 ms fused
after the IoU (median of 31 interleaved calls). It is also the more accurate: 0.82 ulp at most
against float64 on 3 M random inputs, XLA's 1.15 (``tests/assign/test_assign.py`` checks <= 1 ulp).
"""
import tensorflow as tf

_SQRT2 = 1.41421356
_LN2_HIGH, _LN2_LOW = 0.693359375, -2.12194440e-4  # ln 2 split in two: exact e * high
# the minimax polynomial of (log(1 + f) - f + f^2 / 2) / f^3 on [sqrt(1/2) - 1, sqrt(2) - 1]
# (Cephes' single-precision logf, S. L. Moshier)
_POLY = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
         1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
         3.3333331174e-1)


def log_positive(x):
    """``log(x)`` of a float32 tensor with every element finite and > 0 (any shape).

    ``x = m * 2^e`` with ``m`` in [sqrt(1/2), sqrt(2)) from the float's bits (subnormals
    included); ``log x = e ln 2 + log(1 + f)``, ``f = m - 1`` exact, ``log(1 + f)`` from
    a degree-9 polynomial. ``log(1) == 0`` exactly, ``x < 1`` gives a negative value. Elements
    <= 0, infinite or NaN give finite garbage: mask them (``tf.where``) as the caller of
    ``tf.math.log`` would.
    """
    bits = tf.bitcast(tf.convert_to_tensor(x, tf.float32), tf.int32)
    # a subnormal is its bits times 2^-149; the int -> float conversion of its bits is exact
    # (arithmetic on the subnormal itself would see 0: TensorFlow flushes denormals on CPU)
    tiny = bits < 0x00800000
    bits = tf.where(tiny, tf.bitcast(tf.cast(bits, tf.float32), tf.int32), bits)
    e = tf.bitwise.right_shift(bits, 23) - tf.where(tiny, 127 + 149, 127)
    m = tf.bitcast(tf.bitwise.bitwise_or(tf.bitwise.bitwise_and(bits, 0x7FFFFF), 0x3F800000),
                   tf.float32)  # [1, 2)
    big = m > _SQRT2
    f = tf.where(big, m * 0.5, m) - 1.0
    e = tf.cast(tf.where(big, e + 1, e), tf.float32)
    z = f * f
    y = tf.constant(_POLY[0], tf.float32)
    for c in _POLY[1:]:
        y = y * f + c
    y = y * f * z + e * _LN2_LOW - 0.5 * z
    return f + y + e * _LN2_HIGH

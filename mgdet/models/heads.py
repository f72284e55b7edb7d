"""Detection head: per pyramid level, one 3x3 conv to 6 x 4 box offsets and one to 6 x C class
logits (not shared between levels, as in the authors' code).

Weights start N(0, 0.01); box biases 0 and class biases -log((1 - 0.01) / 0.01), so that every
class starts at probability 0.01 (Lin et al. 2017).

Outputs follow the anchor order of :func:`mgdet.ops.anchors.generate_anchors` (level, row, column,
6 shapes): a ``[B, f, f, 6 * K]`` map reshaped to ``[B, f * f * 6, K]``, concatenated over levels.
"""
import math

import keras

from mgdet.ops.anchors import ANCHORS_PER_CELL

PRIOR_PROBABILITY = 0.01


class DetectionHead(keras.layers.Layer):
    """``levels -> (deltas [B, N, 4], logits [B, N, C])`` in float32."""

    def __init__(self, num_levels, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        init = keras.initializers.RandomNormal(stddev=0.01)
        prior_bias = -math.log((1.0 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        self.box_convs = [
            keras.layers.Conv2D(ANCHORS_PER_CELL * 4, 3, padding="same", kernel_initializer=init,
                                bias_initializer="zeros", name=f"box{k}")
            for k in range(num_levels)]
        self.cls_convs = [
            keras.layers.Conv2D(ANCHORS_PER_CELL * num_classes, 3, padding="same",
                                kernel_initializer=init,
                                bias_initializer=keras.initializers.Constant(prior_bias),
                                name=f"cls{k}")
            for k in range(num_levels)]

    def call(self, levels):
        deltas, logits = [], []
        for x, box_conv, cls_conv in zip(levels, self.box_convs, self.cls_convs):
            b = keras.ops.shape(x)[0]
            deltas.append(keras.ops.reshape(box_conv(x), (b, -1, 4)))  # [B, ffx6, 4]
            logits.append(keras.ops.reshape(cls_conv(x), (b, -1, self.num_classes)))  # [B, ffx6, C]
        deltas = keras.ops.cast(keras.ops.concatenate(deltas, axis=1), "float32")
        logits = keras.ops.cast(keras.ops.concatenate(logits, axis=1), "float32")
        return deltas, logits

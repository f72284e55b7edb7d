"""Necks: backbone sources -> one feature map per pyramid level (strides 8, 16, 32, ...).

- :class:`FSSDFusion` (Li & Zhou 2017, as in the authors' code): every source -> 1x1 conv to
  256 -> nearest upsample to stride 8 -> concat -> 3x3 conv 256 -> (levels - 1) 3x3 stride-2
  convs. Output: ``levels`` maps of 256 channels.
- :class:`TopDownFPN` (Lin et al. 2017) on top of it for RetinaNet: 1x1 lateral per level,
  nearest upsample of the coarser level and add, 3x3 smoothing conv.
- The RFBNet neck lives in :mod:`mgdet.models.rfb`.

All convolutions are conv + BN + ReLU blocks (``ConvBlock``).
"""
import keras

from mgdet.models.layers import ConvBlock, scaled

NECK_CHANNELS = 256


class FSSDFusion(keras.layers.Layer):
    """FSSD's feature fusion + pyramid.

    Args:
      source_strides: strides of the backbone sources (the first one must be 8).
      num_levels: pyramid levels to produce.
      width: channel multiplier (256 * width channels).
    """

    def __init__(self, source_strides, num_levels, width=1.0, **kwargs):
        super().__init__(**kwargs)
        channels = scaled(NECK_CHANNELS, width)
        self.reduce = [ConvBlock(channels, 1, name=f"transform{i}")
                       for i in range(len(source_strides))]
        self.upsample = [keras.layers.UpSampling2D(s // source_strides[0], name=f"upsample{i}")
                         if s != source_strides[0] else None
                         for i, s in enumerate(source_strides)]
        self.fuse = ConvBlock(channels, 3, name="fuse")
        self.down = [ConvBlock(channels, 3, 2, name=f"pyramid{k + 1}")
                     for k in range(num_levels - 1)]
        self.out_channels = [channels] * num_levels

    def call(self, sources, training=None):
        reduced = []
        for x, reduce, upsample in zip(sources, self.reduce, self.upsample):
            x = reduce(x, training=training)
            reduced.append(upsample(x) if upsample is not None else x)
        x = self.fuse(keras.ops.concatenate(reduced, axis=-1), training=training)
        levels = [x]
        for down in self.down:
            x = down(x, training=training)
            levels.append(x)
        return levels


class TopDownFPN(keras.layers.Layer):
    """Top-down FPN over a pyramid whose level k has stride 8 * 2^k (equal channels)."""

    def __init__(self, num_levels, width=1.0, **kwargs):
        super().__init__(**kwargs)
        channels = scaled(NECK_CHANNELS, width)
        self.lateral = [ConvBlock(channels, 1, name=f"lateral{k}") for k in range(num_levels)]
        self.smooth = [ConvBlock(channels, 3, name=f"smooth{k}") for k in range(num_levels)]
        self.upsample = keras.layers.UpSampling2D(2, name="upsample")
        self.out_channels = [channels] * num_levels

    def call(self, levels, training=None):
        laterals = [lat(x, training=training) for lat, x in zip(self.lateral, levels)]
        for k in range(len(laterals) - 1, 0, -1):  # coarse to fine
            up = self.upsample(laterals[k])
            # ceil-sized levels: the upsampled coarse map can be one row/column larger.
            h, w = laterals[k - 1].shape[1], laterals[k - 1].shape[2]
            laterals[k - 1] = laterals[k - 1] + up[:, :h, :w, :]
        return [smooth(x, training=training) for smooth, x in zip(self.smooth, laterals)]

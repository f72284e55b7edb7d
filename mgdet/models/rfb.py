"""Receptive Field Blocks (Liu et al., "Receptive Field Block Net", ECCV 2018) and the RFBNet
neck on VGG16, following the authors' MutualGuide code (commit e3b0999).

An RFB runs parallel branches -- a 1x1 bottleneck, a k x k (or 1 x k / k x 1) conv, then a 3x3
conv dilated by r -- concatenates them, mixes them with a 1x1 conv and adds a 1x1 shortcut:
``relu(scale * mix(concat(branches)) + shortcut(x))``. Branch convs are conv + BN + ReLU except
the last of each branch, the mix and the shortcut (conv + BN). With t = in_channels // 8:

- ``rfb``: 4 branches (dilation 1, 3, 5, 7), each ending with 2t channels;
- ``rfb_light``: the same without the dilation-5 branch (for 256-channel inputs);
- ``rfb_s`` (RFB-s): 7 narrower branches (t channels) with 3x1 / 1x3 convs and dilations
  1, 3, 3, 5, 5, 7, 7; used on the stride-8 source.

RFBNet neck: conv4_3 -> 1x1 conv 256; conv5_3 -> 1x1 conv 256 -> nearest x2; concat -> RFB-s
= level 0 (stride 8, 512 channels). conv5_3 -> RFB (stride 16) = level 1; then stride-2 RFBs:
level 2 (512), level 3 (256) and, for 5 levels, level 4 (light RFB, 256).
"""
import keras

from mgdet.models.layers import ConvBlock, scaled

# A branch: [(channels as a multiple of t, kernel, dilation)]; the stride goes to the conv marked
# "s" (True) -- the authors put it on the last conv before the dilated one.
_RFB_BRANCHES = (
    ((2, 1, 1, True), (2, 3, 1, False)),
    ((1, 1, 1, False), (2, 3, 1, True), (2, 3, 3, False)),
    ((1, 1, 1, False), (1.5, 3, 1, False), (2, 3, 1, True), (2, 3, 5, False)),
    ((1, 1, 1, False), (1.5, (1, 7), 1, False), (2, (7, 1), 1, True), (2, 3, 7, False)),
)
_RFB_LIGHT_BRANCHES = (_RFB_BRANCHES[0], _RFB_BRANCHES[1], _RFB_BRANCHES[3])
_RFB_S_BRANCHES = (
    ((1, 1, 1, False), (1, 3, 1, False)),
    ((1, 1, 1, False), (1, (3, 1), 1, False), (1, 3, 3, False)),
    ((1, 1, 1, False), (1, (1, 3), 1, True), (1, 3, 3, False)),
    ((1, 1, 1, False), (1, (3, 1), 1, False), (1, 3, 5, False)),
    ((1, 1, 1, False), (1, (1, 3), 1, True), (1, 3, 5, False)),
    ((0.5, 1, 1, False), (0.75, (1, 3), 1, False), (1, (3, 1), 1, True), (1, 3, 7, False)),
    ((0.5, 1, 1, False), (0.75, (3, 1), 1, False), (1, (1, 3), 1, True), (1, 3, 7, False)),
)


def _branch_channels(multiple, t):
    """Channel counts as the authors round them: 1.5t -> (t // 2) * 3, 0.75t -> (t // 4) * 3,
    0.5t -> t // 2."""
    if multiple == 1.5:
        return (t // 2) * 3
    if multiple == 0.75:
        return (t // 4) * 3
    if multiple == 0.5:
        return t // 2
    return int(multiple) * t


class ReceptiveFieldBlock(keras.layers.Layer):
    """One RFB. ``branches`` is one of the branch tables above (see the module docstring)."""

    def __init__(self, in_channels, out_channels, branches, strides=1, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        t = in_channels // 8
        self.branches = []
        concat_channels = 0
        for b, branch in enumerate(branches):
            convs = []
            for i, (multiple, kernel, dilation, strided) in enumerate(branch):
                filters = _branch_channels(multiple, t)
                last = i == len(branch) - 1
                convs.append(ConvBlock(filters, kernel, strides if strided else 1, dilation,
                                       relu=not last, name=f"branch{b}_{i}"))
            concat_channels += convs[-1].conv.filters
            self.branches.append(convs)
        self.mix = ConvBlock(out_channels, 1, relu=False, name="mix")
        self.shortcut = ConvBlock(out_channels, 1, strides, relu=False, name="shortcut")
        self.scale = float(scale)
        self.out_channels = out_channels

    def call(self, x, training=None):
        outputs = []
        for convs in self.branches:
            y = x
            for conv in convs:
                y = conv(y, training=training)
            outputs.append(y)
        y = self.mix(keras.ops.concatenate(outputs, axis=-1), training=training)
        return keras.ops.relu(self.scale * y + self.shortcut(x, training=training))


def rfb(in_channels, out_channels, strides=1, **kwargs):
    return ReceptiveFieldBlock(in_channels, out_channels, _RFB_BRANCHES, strides, **kwargs)


def rfb_light(in_channels, out_channels, strides=1, **kwargs):
    return ReceptiveFieldBlock(in_channels, out_channels, _RFB_LIGHT_BRANCHES, strides, **kwargs)


def rfb_s(in_channels, out_channels, **kwargs):
    return ReceptiveFieldBlock(in_channels, out_channels, _RFB_S_BRANCHES, 1, **kwargs)


class RFBNeck(keras.layers.Layer):
    """RFBNet's neck on VGG16 sources ``[conv4_3, conv5_3]`` -> ``num_levels`` maps."""

    def __init__(self, source_channels, num_levels, width=1.0, **kwargs):
        super().__init__(**kwargs)
        if num_levels not in (4, 5):
            raise ValueError(f"RFBNet builds 4 or 5 pyramid levels, got {num_levels}")
        c5 = source_channels[1]
        c256, c512 = scaled(256, width), scaled(512, width)
        self.reduce4 = ConvBlock(c256, 1, name="reduce4")
        self.reduce5 = ConvBlock(c256, 1, name="reduce5")
        self.upsample = keras.layers.UpSampling2D(2, name="upsample")
        self.rfb_s = rfb_s(2 * c256, c512, name="rfb_s")
        # (in, out, stride) of the extra RFBs that give levels 1, 2, 3 (and 4).
        extras = [rfb(c5, c512, 1, name="extra1"), rfb(c512, c512, 2, name="extra2"),
                  rfb(c512, c256, 2, name="extra3")]
        if num_levels == 5:
            extras.append(rfb_light(c256, c256, 2, name="extra4"))
        self.extras = extras
        self.out_channels = [c512, c512, c512, c256, c256][:num_levels]

    def call(self, sources, training=None):
        conv4_3, conv5_3 = sources
        x = keras.ops.concatenate([self.reduce4(conv4_3, training=training),
                                   self.upsample(self.reduce5(conv5_3, training=training))],
                                  axis=-1)
        levels = [self.rfb_s(x, training=training)]
        x = conv5_3
        for extra in self.extras:
            x = extra(x, training=training)
            levels.append(x)
        return levels

"""Building blocks shared by the backbones, necks and heads.

Convolutions pad like PyTorch's ``Conv2d(padding=d * (k - 1) // 2)``: symmetric, so that a
stride-2 convolution on an even input is centred as in the authors' (and torchvision's) networks
and ImageNet weights converted from PyTorch see the geometry they were trained with. At stride 1
Keras' ``"same"`` padding is already symmetric for odd kernels.
"""
import keras

# torchvision's BatchNorm2d(momentum=0.1) -> Keras momentum 0.9; the authors' neck blocks use
# BatchNorm2d(momentum=0.01) -> 0.99. Both use eps 1e-5.
BACKBONE_BN_MOMENTUM = 0.9
NECK_BN_MOMENTUM = 0.99
BN_EPSILON = 1e-5


def scaled(channels, width):
    """``channels * width`` rounded to a multiple of 8 (at least 8): the width multiplier."""
    return max(8, int(round(channels * width / 8.0)) * 8)


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


class ConvBlock(keras.layers.Layer):
    """Conv + batch norm (+ ReLU): the authors' ``BasicConv``.

    Args:
      filters, kernel_size, strides, dilation: of the convolution (kernel may be ``(kh, kw)``).
      use_bias: conv bias (the authors' neck blocks keep it in front of BN; ResNet drops it).
      relu: apply ReLU after BN.
      bn_momentum: Keras batch-norm momentum (0.99 = PyTorch momentum 0.01).
    """

    def __init__(self, filters, kernel_size, strides=1, dilation=1, use_bias=True, relu=True,
                 bn_momentum=NECK_BN_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        kh, kw = _pair(kernel_size)
        ph, pw = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
        self.pad = None
        padding = "same"
        if strides != 1:
            padding = "valid"
            if ph or pw:
                self.pad = keras.layers.ZeroPadding2D(((ph, ph), (pw, pw)), name="pad")
        self.conv = keras.layers.Conv2D(filters, (kh, kw), strides=strides, padding=padding,
                                        dilation_rate=dilation, use_bias=use_bias,
                                        kernel_initializer="he_normal", name="conv")
        self.bn = keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=BN_EPSILON,
                                                  name="bn")
        self.relu = relu

    def call(self, x, training=None):
        if self.pad is not None:
            x = self.pad(x)
        x = self.bn(self.conv(x), training=training)
        return keras.ops.relu(x) if self.relu else x

"""Backbones: VGG16 with batch norm and ResNet-18, each returning its source feature maps.

| backbone | sources (stride: channels at width 1.0)  |
|----------|------------------------------------------|
| vgg16    | conv4_3 (8: 512), conv5_3 (16: 512)       |
| resnet18 | C3 (8: 128), C4 (16: 256), C5 (32: 512)   |

VGG16 stops at conv5_3 (no pool5, no fc6/fc7): its stride-16 source is pool4 followed by the
three conv5 layers, as in the authors' code. ``width`` scales every channel count (tiny models for
tests and CPU runs). Weights start random; :func:`load_backbone_weights` fills them from an
``.npz`` file (variable path -> array), e.g. torchvision's ImageNet ``vgg16_bn`` / ``resnet18``
converted by ``python cli.py convert-weights`` (:mod:`mgdet.convert.torchvision`). Nothing is
downloaded.
"""
import logging
import os

import keras
import numpy as np

from mgdet.config.files import missing_weights_message
from mgdet.config.schema import BACKBONES
from mgdet.models.layers import BACKBONE_BN_MOMENTUM, ConvBlock, scaled

log = logging.getLogger("mgdet.models")


# (block, [channels per conv]): conv{block}_{i}; a 2x2 max pool precedes every block but the first.
_VGG16_BLOCKS = ((1, (64, 64)), (2, (128, 128)), (3, (256, 256, 256)), (4, (512, 512, 512)),
                 (5, (512, 512, 512)))


class VGG16(keras.layers.Layer):
    """VGG16-BN up to conv5_3 -> ``[conv4_3 (stride 8), conv5_3 (stride 16)]``."""

    def __init__(self, width=1.0, **kwargs):
        super().__init__(**kwargs)
        self.blocks = []
        for block, channels in _VGG16_BLOCKS:
            self.blocks.append([ConvBlock(scaled(c, width), 3, bn_momentum=BACKBONE_BN_MOMENTUM,
                                          name=f"conv{block}_{i + 1}")
                                for i, c in enumerate(channels)])
        self.pool = keras.layers.MaxPooling2D(2, 2, name="pool")
        self.out_channels = [scaled(512, width)] * 2
        self.strides = [8, 16]

    def call(self, x, training=None):
        sources = []
        for index, convs in enumerate(self.blocks):
            if index:
                x = self.pool(x)
            for conv in convs:
                x = conv(x, training=training)
            if index >= 3:  # conv4_3, conv5_3
                sources.append(x)
        return sources


class BasicBlock(keras.layers.Layer):
    """ResNet basic block: two 3x3 conv-BN (ReLU between), identity or 1x1 projection shortcut."""

    def __init__(self, filters, strides=1, project=False, **kwargs):
        super().__init__(**kwargs)
        kw = dict(use_bias=False, bn_momentum=BACKBONE_BN_MOMENTUM)
        self.conv1 = ConvBlock(filters, 3, strides, name="conv1", **kw)
        self.conv2 = ConvBlock(filters, 3, relu=False, name="conv2", **kw)
        self.downsample = (ConvBlock(filters, 1, strides, relu=False, name="downsample", **kw)
                           if project else None)

    def call(self, x, training=None):
        shortcut = x if self.downsample is None else self.downsample(x, training=training)
        y = self.conv2(self.conv1(x, training=training), training=training)
        return keras.ops.relu(y + shortcut)


class ResNet18(keras.layers.Layer):
    """ResNet-18 (He et al. 2016) -> ``[C3 (stride 8), C4 (stride 16), C5 (stride 32)]``."""

    def __init__(self, width=1.0, **kwargs):
        super().__init__(**kwargs)
        self.stem = ConvBlock(scaled(64, width), 7, 2, use_bias=False,
                              bn_momentum=BACKBONE_BN_MOMENTUM, name="conv1")
        self.stem_pad = keras.layers.ZeroPadding2D(1, name="pool_pad")  # after ReLU: x >= 0
        self.stem_pool = keras.layers.MaxPooling2D(3, 2, name="pool")
        self.stages = []
        in_channels = scaled(64, width)
        for stage, (channels, strides) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2))):
            channels = scaled(channels, width)
            project = strides != 1 or in_channels != channels
            self.stages.append([
                BasicBlock(channels, strides, project, name=f"layer{stage + 1}_0"),
                BasicBlock(channels, name=f"layer{stage + 1}_1")])
            in_channels = channels
        self.out_channels = [scaled(c, width) for c in (128, 256, 512)]
        self.strides = [8, 16, 32]

    def call(self, x, training=None):
        x = self.stem_pool(self.stem_pad(self.stem(x, training=training)))
        sources = []
        for index, blocks in enumerate(self.stages):
            for block in blocks:
                x = block(x, training=training)
            if index >= 1:
                sources.append(x)
        return sources


def build_backbone(name, width=1.0):
    """A backbone layer by name (``"vgg16"`` or ``"resnet18"``), named ``"backbone"``."""
    if name == "vgg16":
        return VGG16(width, name="backbone")
    if name == "resnet18":
        return ResNet18(width, name="backbone")
    raise ValueError(f"unknown backbone {name!r}: use one of {BACKBONES}")


def relative_path(variable, layer):
    """``variable``'s path below ``layer`` (e.g. ``"conv1_1/conv/kernel"``)."""
    parts = variable.path.split("/")
    if layer.name in parts:
        parts = parts[parts.index(layer.name) + 1:]
    return "/".join(parts)


def backbone_weights(backbone):
    """``{relative variable path: numpy array}`` of a built backbone (what ``.npz`` files hold)."""
    return {relative_path(v, backbone): np.asarray(v.numpy()) for v in backbone.variables}


def save_backbone_weights(backbone, path):
    """Write a built backbone's variables to an ``.npz`` file readable by
    :func:`load_backbone_weights`."""
    np.savez(path, **backbone_weights(backbone))


def load_backbone_weights(backbone, path):
    """Fill a built backbone's variables from an ``.npz`` file, matching by name and shape.

    Every backbone variable must be in the file with its shape (a file made for another width or
    backbone is refused, naming the first mismatches); extra arrays in the file are ignored.

    Returns:
      the number of variables loaded.
    """
    arch = "vgg16" if isinstance(backbone, VGG16) else "resnet18"
    if not os.path.isfile(path):
        raise FileNotFoundError(missing_weights_message(path, arch))
    if not path.endswith(".npz"):
        raise ValueError(f"backbone weights must be mgdet's .npz file, got {path!r}; a torchvision "
                         f"state dict (.pth / .safetensors) converts with `python cli.py "
                         f"convert-weights {path} {os.path.splitext(path)[0]}.npz`")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    missing, mismatched = [], []
    for v in backbone.variables:
        key = relative_path(v, backbone)
        if key not in arrays:
            missing.append(key)
        elif tuple(arrays[key].shape) != tuple(v.shape):
            mismatched.append(f"{key}: file {tuple(arrays[key].shape)} vs model {tuple(v.shape)}")
    if missing or mismatched:
        raise ValueError(
            f"backbone weights {path!r} do not fit the {backbone.name!r} layer "
            f"({type(backbone).__name__}): {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(mismatched)} of another shape (e.g. {mismatched[:3]})")
    for v in backbone.variables:
        v.assign(arrays[relative_path(v, backbone)].astype(v.dtype))
    log.info("loaded %d backbone variables from %s", len(backbone.variables), path)
    return len(backbone.variables)

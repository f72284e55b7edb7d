"""RetinaNet as in the Mutual Guidance paper: FSSD's fused pyramid followed by a top-down FPN
(1x1 laterals, nearest upsample and add, 3x3 smoothing), with FSSD's single-conv heads."""
import keras

from mgdet.models.detector import Detector
from mgdet.models.necks import FSSDFusion, TopDownFPN


class _FusionFPN(keras.layers.Layer):
    def __init__(self, source_strides, num_levels, width, **kwargs):
        super().__init__(**kwargs)
        self.fusion = FSSDFusion(source_strides, num_levels, width, name="fusion")
        self.fpn = TopDownFPN(num_levels, width, name="fpn")
        self.out_channels = self.fpn.out_channels

    def call(self, sources, training=None):
        return self.fpn(self.fusion(sources, training=training), training=training)


@keras.saving.register_keras_serializable(package="mgdet")
class RetinaNet(Detector):
    """RetinaNet on VGG16-BN or ResNet-18; see :class:`Detector` for the arguments."""

    arch = "retinanet"

    def _make_neck(self, source_strides, source_channels, num_levels, width):
        return _FusionFPN(source_strides, num_levels, width, name="neck")

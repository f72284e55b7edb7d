"""RFBNet (Liu et al., ECCV 2018) on VGG16-BN: RFB-s on the stride-8 fusion of conv4_3 and
conv5_3, RFBs on conv5_3 and below (:class:`mgdet.models.rfb.RFBNeck`). VGG16 only."""
import keras

from mgdet.config.schema import ARCH_BACKBONES
from mgdet.models.detector import Detector
from mgdet.models.rfb import RFBNeck


@keras.saving.register_keras_serializable(package="mgdet")
class RFBNet(Detector):
    """RFBNet on VGG16-BN; see :class:`Detector` for the arguments (``backbone`` must be
    ``"vgg16"``)."""

    arch = "rfbnet"
    backbones = ARCH_BACKBONES["rfbnet"]

    def _make_neck(self, source_strides, source_channels, num_levels, width):
        return RFBNeck(source_channels, num_levels, width, name="neck")

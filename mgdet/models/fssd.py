"""FSSD (Li & Zhou 2017) as in the Mutual Guidance paper: backbone sources fused at stride 8,
then a pyramid of stride-2 convs (:class:`mgdet.models.necks.FSSDFusion`)."""
import keras

from mgdet.models.detector import Detector
from mgdet.models.necks import FSSDFusion


@keras.saving.register_keras_serializable(package="mgdet")
class FSSD(Detector):
    """FSSD on VGG16-BN or ResNet-18; see :class:`Detector` for the arguments."""

    arch = "fssd"

    def _make_neck(self, source_strides, source_channels, num_levels, width):
        return FSSDFusion(source_strides, num_levels, width, name="neck")

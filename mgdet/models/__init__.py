"""Detectors: FSSD, RetinaNet and RFBNet on VGG16-BN / ResNet-18 (``MODELS`` maps the config's
``model.arch`` to the class; :func:`mgdet.models.build.build_model` builds one from a config)."""
from mgdet.models.build import MODELS, build_model
from mgdet.models.detector import Detector
from mgdet.models.fssd import FSSD
from mgdet.models.retinanet import RetinaNet
from mgdet.models.rfbnet import RFBNet

__all__ = ["Detector", "FSSD", "RetinaNet", "RFBNet", "MODELS", "build_model"]

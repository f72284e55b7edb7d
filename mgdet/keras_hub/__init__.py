"""Mutual Guidance for keras-hub's RetinaNet (docs/keras_hub.md).

An optional part of mgdet: ``pip install "mgdet[keras-hub]"`` (tested with keras-hub 0.32).
``import mgdet`` never imports this package; importing it without keras-hub raises one
``ImportError`` that says what to install.

    from mgdet.keras_hub import MGRetinaNetObjectDetector
    model = MGRetinaNetObjectDetector.from_preset("retinanet_resnet50_fpn_coco", strategy="mg")
"""
try:
    import keras_hub  # noqa: F401
except ImportError as err:  # pragma: no cover - the message is the test
    raise ImportError("mgdet.keras_hub needs keras-hub: pip install \"mgdet[keras-hub]\" "
                      "(tested with keras-hub 0.32)") from err

from mgdet.keras_hub.retinanet import (BalancedL1, MGRetinaNetObjectDetector,
                                       TESTED_KERAS_HUB, set_head_priors, small_retinanet)

__all__ = ["MGRetinaNetObjectDetector", "BalancedL1", "set_head_priors", "small_retinanet",
           "TESTED_KERAS_HUB"]

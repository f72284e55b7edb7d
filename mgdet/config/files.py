"""The files a config names: the backbone's ImageNet weights (``model.weights``, converted
from torchvision's, :mod:`mgdet.convert.torchvision`) and a trained detector to start from
(``model.init_from``), checked before training (:func:`check_files`)."""
import os

from mgdet.config.validate import ConfigError

# torchvision's download addresses (ImageNet1K_V1, the weights of the paper's runs).
TORCHVISION_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
}


def missing_weights_message(path, arch):
    """What to say when the backbone weights file ``path`` is missing: how to make it."""
    url = TORCHVISION_URLS.get(arch, TORCHVISION_URLS["resnet18"])
    return (f"backbone weights file {path!r} does not exist: download torchvision's ImageNet "
            f"weights ({url}) and convert them with `python cli.py convert-weights "
            f"{url.rsplit('/', 1)[1]} {path}`, or remove model.weights to start from random "
            "weights")


def check_files(cfg):
    """The files ``cfg`` will read before training exist (``model.weights``,
    ``model.init_from``); raises ConfigError saying how to make a missing one. Not part of
    :func:`mgdet.config.loader.load_config`, so that a config can be printed, evaluated or
    exported from a trained run without its ImageNet file."""
    m = cfg.model
    if m.weights is not None and not os.path.isfile(m.weights):
        raise ConfigError("model.weights: " + missing_weights_message(m.weights, m.backbone))
    if m.init_from is not None and not os.path.exists(m.init_from):
        raise ConfigError(f"model.init_from {m.init_from!r} does not exist: give a training run "
                          "folder, its .weights.h5 (with config.json beside it) or a .keras file")
    return cfg

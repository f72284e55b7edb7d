"""torchvision ImageNet weights -> mgdet backbone weights (``python cli.py convert-weights``).

The paper's runs start from torchvision's ImageNet-trained ``vgg16_bn`` and ``resnet18``. Their
state dicts (``.pth``, read with torch; or ``.safetensors`` holding the same names, read without
torch) become an ``.npz`` file of ``{mgdet variable path: array}`` that
:func:`mgdet.models.backbones.load_backbone_weights` reads (``model.weights`` in a config). Conv
kernels go from torch's ``[out, in, kh, kw]`` to Keras' ``[kh, kw, in, out]``; batch norm's
``weight, bias, running_mean, running_var`` become ``gamma, beta, moving_mean,
moving_variance``. The weights expect torchvision's input convention, which mgdet's detectors
apply inside the model: RGB scaled to [0, 1], minus mean (0.485, 0.456, 0.406), over std
(0.229, 0.224, 0.225). Only NumPy is needed here (torch for ``.pth`` input only).
"""
import os

import numpy as np

from mgdet.config.files import TORCHVISION_URLS

ARCHS = tuple(TORCHVISION_URLS)

# (block, convs) of VGG16 and the index of each conv in torchvision's vgg16_bn.features
# (conv, bn, relu per layer; a max pool after each block).
_VGG16_CONVS = ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
_VGG16_BN_CONV_INDEX = (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)


class WeightsError(ValueError):
    """An unreadable or unsuitable weights file; the message says what to do."""


def torchvision_names(arch):
    """``[(mgdet layer path, torch conv prefix, torch bn prefix)]`` for ``"vgg16"`` (vgg16_bn) or
    ``"resnet18"``, in network order."""
    if arch == "vgg16":
        ours = [f"conv{b}_{i + 1}" for b, n in _VGG16_CONVS for i in range(n)]
        return [(name, f"features.{i}", f"features.{i + 1}")
                for name, i in zip(ours, _VGG16_BN_CONV_INDEX)]
    if arch == "resnet18":
        pairs = [("conv1", "conv1", "bn1")]
        for stage in range(1, 5):
            for block in range(2):
                ours, theirs = f"layer{stage}_{block}", f"layer{stage}.{block}"
                pairs += [(f"{ours}/conv1", f"{theirs}.conv1", f"{theirs}.bn1"),
                          (f"{ours}/conv2", f"{theirs}.conv2", f"{theirs}.bn2")]
                if block == 0 and stage > 1:
                    pairs.append((f"{ours}/downsample", f"{theirs}.downsample.0",
                                  f"{theirs}.downsample.1"))
        return pairs
    raise WeightsError(f"unknown backbone {arch!r}: use one of {', '.join(ARCHS)}")


def detect_arch(state_dict):
    """``"resnet18"`` or ``"vgg16"`` from a torchvision state dict's names, else WeightsError."""
    if "layer1.0.conv1.weight" in state_dict:
        if "layer1.0.conv3.weight" in state_dict or "layer1.2.conv1.weight" in state_dict:
            raise WeightsError("these are the weights of a deeper ResNet (ResNet-34/50/...); "
                               "mgdet's backbone is ResNet-18: use torchvision's resnet18")
        return "resnet18"
    if "features.0.weight" in state_dict:
        return "vgg16"
    raise WeightsError("not a torchvision resnet18 or vgg16_bn state dict (no 'conv1.weight' / "
                       "'layer1.0.conv1.weight' or 'features.0.weight' entry)")


def from_torchvision(state_dict, arch=None):
    """Convert a torchvision ``vgg16_bn`` / ``resnet18`` state dict.

    Args:
      state_dict: ``{name: array}`` (NumPy arrays or anything ``np.asarray`` takes), torchvision's
        names; extra entries (``fc.*``, ``classifier.*``, ``num_batches_tracked``) are ignored.
      arch: ``"vgg16"`` or ``"resnet18"``; None detects it from the names.
    Returns:
      ``(arch, {mgdet variable path: float32 array})`` (paths as in
      :func:`mgdet.models.backbones.backbone_weights`).
    """
    arch = arch or detect_arch(state_dict)
    names = torchvision_names(arch)
    needed = [f"{conv}.weight" for _, conv, _ in names]
    needed += [f"{bn}.{k}" for _, _, bn in names
               for k in ("weight", "bias", "running_mean", "running_var")]
    missing = [k for k in needed if k not in state_dict]
    if missing:
        hint = (" (vgg16 without batch norm? mgdet needs torchvision's vgg16_bn)"
                if arch == "vgg16" and "features.1.weight" in missing else "")
        raise WeightsError(f"the state dict lacks {len(missing)} of torchvision's {arch} entries, "
                           f"e.g. {missing[:3]}{hint}")
    out = {}
    for ours, conv, bn in names:
        kernel = np.asarray(state_dict[f"{conv}.weight"], np.float32)
        if kernel.ndim != 4:
            raise WeightsError(f"{conv}.weight has shape {kernel.shape}, expected a conv kernel "
                               "[out, in, kh, kw]")
        out[f"{ours}/conv/kernel"] = np.ascontiguousarray(np.transpose(kernel, (2, 3, 1, 0)))
        if f"{conv}.bias" in state_dict:
            out[f"{ours}/conv/bias"] = np.asarray(state_dict[f"{conv}.bias"], np.float32)
        for theirs, keras_name in (("weight", "gamma"), ("bias", "beta"),
                                   ("running_mean", "moving_mean"),
                                   ("running_var", "moving_variance")):
            out[f"{ours}/bn/{keras_name}"] = np.asarray(state_dict[f"{bn}.{theirs}"], np.float32)
    return arch, out


def read_state_dict(path):
    """``{name: numpy array}`` from a ``.safetensors`` file (safetensors' NumPy API, no torch) or
    a ``.pth`` / ``.pt`` file (``torch.load(weights_only=True)``, needs torch)."""
    if not os.path.isfile(path):
        raise WeightsError(f"weights file {path!r} does not exist: download torchvision's "
                           f"ImageNet weights first, e.g. {TORCHVISION_URLS['resnet18']}")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file  # the reader of this format only, on use
        return load_file(path)
    if path.endswith((".pth", ".pt")):
        try:
            import torch  # optional: .pth input only
        except ImportError:
            raise WeightsError(f"reading {path!r} needs PyTorch: `pip install torch` (or "
                               "`pip install mgdet[torch]`), or give a .safetensors file with "
                               "the same names") from None
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}
    raise WeightsError(f"{path!r}: give torchvision weights as a .pth or .safetensors file")


def convert(src, dst, arch=None):
    """Read torchvision weights from ``src`` and write mgdet's backbone ``.npz`` to ``dst``.

    Returns:
      ``(arch, number of arrays written)``.
    """
    if not dst.endswith(".npz"):
        raise WeightsError(f"output {dst!r} must end in .npz (mgdet's backbone weights format)")
    arch, arrays = from_torchvision(read_state_dict(src), arch)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    np.savez(dst, **arrays)
    return arch, len(arrays)

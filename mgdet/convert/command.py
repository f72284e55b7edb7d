"""``mgdet convert-weights``: torchvision's ImageNet backbone weights -> an ``.npz`` for
``model.weights``, or one of the paper authors' detector checkpoints -> a run folder
(:mod:`mgdet.convert.authors`). TensorFlow-free until a detector is built."""
import os
import pickle

from mgdet.convert import authors
from mgdet.convert.torchvision import WeightsError, convert, read_state_dict


def run_convert_weights(src, dst, arch=None, config=None, overrides=(), on_detector=None):
    """Convert ``src`` (``.pth`` / ``.safetensors``) into ``dst``; returns the line to print.

    ``on_detector()`` runs before a detector is built (the CLI imports TensorFlow there).
    Raises :class:`WeightsError` (one line) for a missing, unsafe or unknown file.
    """
    if not os.path.isfile(src):
        raise WeightsError(f"weights file {src!r} does not exist: download it first "
                           "(torchvision's ImageNet weights, docs/paper.md; the authors' "
                           "detectors, docs/zoo.md)")
    try:
        state = read_state_dict(src)
    except pickle.UnpicklingError:  # torch.load(weights_only=True) refused Python objects
        raise WeightsError(f"{src!r} holds Python objects besides tensors, which mgdet does not "
                           "load (they can run code): use the published weights file, or its "
                           ".safetensors form") from None
    if authors.is_detector(state):  # an authors' detector -> a run folder
        if dst.endswith(".npz"):
            raise WeightsError(f"{src!r} is a detector checkpoint of the paper's authors: "
                               "convert it into a run folder (e.g. pretrained/<name>), not an "
                               ".npz")
        if on_detector:
            on_detector()
        model, cfg = authors.convert_checkpoint(state, dst, config, overrides)
        return (f"wrote {dst}: the authors' {cfg.model.arch} (VGG16, {model.num_classes} "
                f"classes: {', '.join(cfg.class_names[:3])}, ...); use it with `mgdet eval "
                f"--weights {dst}`, predict --model, model.init_from")
    if config or overrides:
        raise WeightsError("--config / --set apply to the authors' detector checkpoints, "
                           "converted into a run folder")
    arch, count = convert(src, dst, arch)
    return (f"wrote {dst}: {count} arrays of torchvision's {arch} (model.backbone: {arch}); "
            "use it as model.weights")

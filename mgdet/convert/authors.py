"""The paper authors' released detectors -> mgdet run folders (``mgdet convert-weights``).

Zhang et al. published PyTorch checkpoints of FSSD, RetinaNet and RFBNet on VGG16, 320 px, with
and without Mutual Guidance, trained on VOC07+12 and COCO2017 (github.com/zhanghengdev/MutualGuide,
commit e3b0999, MIT licence; docs/zoo.md lists them). A checkpoint is the state dict of their
``models/{fssd,retinanet,rfbnet}.py``; mgdet's detectors have the same layers, so every tensor
of it maps to exactly one mgdet variable:

- names: ``backbone.layer1.{i}`` / ``backbone.layer2.{i - 33}`` (torchvision's ``vgg16_bn``
  indices up to conv5_3; :func:`mgdet.convert.torchvision.torchvision_names`) ->
  ``backbone/conv{b}_{k}``; their ``BasicConv`` ``{module}.conv`` / ``{module}.bn`` -> mgdet's
  ``ConvBlock`` ``conv`` / ``bn`` (:data:`NECK_MODULES` gives the modules); ``loc.{k}`` /
  ``conf.{k}`` -> ``head/box{k}`` / ``head/cls{k}``.
- layout: conv kernels ``[out, in, kh, kw]`` -> ``[kh, kw, in, out]``; batch norm ``weight,
  bias, running_mean, running_var`` -> ``gamma, beta, moving_mean, moving_variance`` (values
  unchanged, eps 1e-5 in both); ``num_batches_tracked`` (a training counter) is dropped.
- head channels: both heads are anchor-major -- channel ``a * K + k`` is class (or box
  coordinate) ``k`` of anchor shape ``a`` (their ``permute(0, 2, 3, 1).view(B, -1, K)``, mgdet's
  reshape ``[B, f, f, 6K] -> [B, f * f * 6, K]``) -- so the channels are copied in order. The
  authors' heads have no background column (``num_classes - 1`` sigmoid outputs): K = 20 for
  VOC, 80 for COCO, in their class order (:data:`VOC_CLASSES`, :data:`COCO_CLASSES`), which
  becomes the model's class names.

Their evaluation feeds OpenCV's BGR image resized to 320 x 320 minus (104, 117, 123): the
converted config sets ``model.input_norm: bgr_mean``. Anchors (base 24 px, 6 per cell, sizes
capped at 1) and decoding (variances 0.1 / 0.2, sigmoid scores, score > 0.005, class-wise NMS at
0.5, 300 detections) are mgdet's defaults already. Reading needs NumPy only for
``.safetensors`` and torch for ``.pth`` (``torch.load(weights_only=True)``).
"""
import os
import re

import numpy as np

from mgdet.config import load_config, parse_overrides, replace
from mgdet.convert.torchvision import WeightsError, read_state_dict, torchvision_names
from mgdet.data.voc import VOC_CLASSES
from mgdet.ops.anchors import ANCHORS_PER_CELL
from mgdet.training.rundir import FINAL_WEIGHTS, RUN_CONFIG, write_json

# COCO 2017's category names in category-id order: the authors' training order (their
# COCODetection reads the names from the annotation file; their COCO_CLASSES tuple spells six of
# them VOC-style, e.g. 'motorbike').
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
# classes of the authors' head (no background) -> (dataset, class names)
DATASETS = {len(VOC_CLASSES): ("voc", VOC_CLASSES), len(COCO_CLASSES): ("coco", COCO_CLASSES)}

# The released checkpoints (the authors' README at e3b0999, "Trained model"): name ->
# (arch, dataset, Mutual Guidance, the paper's (mAP, AP50, AP75), download page).
_DRIVE = "https://drive.google.com/file/d/{}/view?usp=sharing"
ZOO = {
    "fssd_voc": ("fssd", "voc", False, (54.1, 80.1, 58.3), "1IOTIyS9hZY7-g3RP2p3OkcVmtGdmWJIc"),
    "fssd_mg_voc": ("fssd", "voc", True, (56.2, 80.4, 61.4), "1bFVrBPPQDymstgjwlss3AUK6WrN-iszr"),
    "retinanet_voc": ("retinanet", "voc", False, (55.2, 80.2, 59.6),
                      "1c3bGwtFRD9GvxdyqDq1jknlZvRPpxjUi"),
    "retinanet_mg_voc": ("retinanet", "voc", True, (57.7, 81.1, 62.9),
                         "1vviR8H6xHfvY5Q4DDmZQ-lWLjEpPqrLr"),
    "rfbnet_voc": ("rfbnet", "voc", False, (55.6, 80.9, 59.6), "1MOM4pTh4TQ1l3ADFqT-BLL9RoSJK33v3"),
    "rfbnet_mg_voc": ("rfbnet", "voc", True, (57.9, 81.5, 62.6),
                      "1Nb6NPa4aNfz49NhGeTTfgW2vR-UVUzIz"),
    "fssd_coco": ("fssd", "coco", False, (31.1, 48.9, 32.7), "1i6frTMPX1Bi-OpTZEyRYsPQTnAPyEplb"),
    "fssd_mg_coco": ("fssd", "coco", True, (32.0, 49.3, 33.9), "1bSOTSRMPkc6WDiL8AdKtvaZKbxtbEGFp"),
    "retinanet_coco": ("retinanet", "coco", False, (32.3, 50.3, 34.0),
                       "1Gx0I1sTqgFmUtQln0NPrT4_k9x2VCIUM"),
    "retinanet_mg_coco": ("retinanet", "coco", True, (33.6, 50.8, 35.7),
                          "12Af5Pz-Zsl8oww7NjDmjWjvT0br6zFTn"),
    "rfbnet_coco": ("rfbnet", "coco", False, (33.4, 51.6, 35.1),
                    "1KnNcYBCKA53MJ70rpRoMk-Q247FVTH4K"),
    "rfbnet_mg_coco": ("rfbnet", "coco", True, (34.6, 52.0, 36.8),
                       "1rZ_hKWLGASDlRKNEEdAA5V0vb6st5Sqk"),
}
PRETRAINED_DIR = "pretrained"  # where docs/zoo.md converts them: pretrained/<name>


def resolve_pretrained(path_or_name):
    """``path_or_name`` when it exists, else the converted run folder ``pretrained/<name>`` of a
    :data:`ZOO` name; FileNotFoundError saying how to download and convert it."""
    if os.path.exists(path_or_name):
        return path_or_name
    if path_or_name not in ZOO:
        raise FileNotFoundError(f"{path_or_name!r} is neither a file or folder nor a name of the "
                                f"authors' checkpoints ({', '.join(ZOO)}; docs/zoo.md)")
    folder = os.path.join(PRETRAINED_DIR, path_or_name)
    if not os.path.isdir(folder):
        url = _DRIVE.format(ZOO[path_or_name][4])
        raise FileNotFoundError(f"{folder} does not exist: download {path_or_name}'s checkpoint "
                                f"({url}) and convert it with `mgdet convert-weights "
                                f"<downloaded .pth> {folder}`")
    return folder


# mgdet layer path below the model (regex) -> the authors' module, for the neck and head.
NECK_MODULES = (
    (r"neck/(?:fusion/)?transform(\d+)", r"ft_module.\1"),  # FSSD fusion (RetinaNet: + FPN)
    (r"neck/(?:fusion/)?fuse", "pyramid_ext.0"),
    (r"neck/(?:fusion/)?pyramid(\d+)", r"pyramid_ext.\1"),
    (r"neck/fpn/lateral(\d+)", r"lateral_convs.\1"),
    (r"neck/fpn/smooth(\d+)", r"fpn_convs.\1"),
    (r"neck/reduce4", "reduce"),  # RFBNet
    (r"neck/reduce5", "up_reduce"),
    (r"neck/rfb_s/branch(\d+)_(\d+)", r"Norm.branch\1.\2"),
    (r"neck/rfb_s/mix", "Norm.ConvLinear"),
    (r"neck/rfb_s/shortcut", "Norm.shortcut"),
    (r"neck/extra(\d+)/branch(\d+)_(\d+)", lambda m: f"extras.{int(m[1]) - 1}.branch{m[2]}.{m[3]}"),
    (r"neck/extra(\d+)/mix", lambda m: f"extras.{int(m[1]) - 1}.ConvLinear"),
    (r"neck/extra(\d+)/shortcut", lambda m: f"extras.{int(m[1]) - 1}.shortcut"),
    (r"head/box(\d+)", r"loc.\1"),
    (r"head/cls(\d+)", r"conf.\1"),
)
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
       "moving_variance": "running_var"}
_VGG = {}  # backbone/conv{b}_{k} -> (the authors' conv module, bn module)
for _ours, _conv, _bn in torchvision_names("vgg16"):
    _i = int(_conv.split(".")[1])
    _part, _j = ("layer1", _i) if _i < 33 else ("layer2", _i - 33)  # layer2.0 is pool4
    _VGG[f"backbone/{_ours}"] = (f"backbone.{_part}.{_j}", f"backbone.{_part}.{_j + 1}")


def authors_name(path):
    """The authors' tensor name of an mgdet variable path below the model (e.g.
    ``"neck/fpn/lateral0/bn/moving_mean"`` -> ``"lateral_convs.0.bn.running_mean"``), and its
    layout: ``"kernel"`` (transposed from ``[out, in, kh, kw]``) or ``"vector"`` (copied)."""
    layer, _, var = path.rpartition("/")
    layout = "kernel" if var == "kernel" else "vector"
    torch_var = _BN.get(var, "weight" if var == "kernel" else var)
    block, _, part = layer.rpartition("/")  # ConvBlock path, "conv" | "bn"
    if block in _VGG:
        return f"{_VGG[block][part == 'bn']}.{torch_var}", layout
    for pattern, module in NECK_MODULES:
        for prefix, suffix in ((block, f".{part}"), (layer, "")):  # ConvBlock, or a bare Conv2D
            m = re.fullmatch(pattern, prefix)
            if m:
                name = module(m) if callable(module) else m.expand(module)
                return f"{name}{suffix}.{torch_var}", layout
    raise WeightsError(f"mgdet variable {path!r} has no counterpart in the authors' detectors")


def variable_map(model):
    """``[(variable, authors' tensor name, layout)]`` of a built mgdet detector (VGG16, width 1),
    one entry per variable (each authors' name once)."""
    rows = [(v, *authors_name(v.path.split("/", 1)[1])) for v in model.weights]
    names = [name for _, name, _ in rows]
    if len(set(names)) != len(names):
        raise AssertionError("two mgdet variables map to one authors' tensor")
    return rows


def torch_shape(shape, layout):
    """The authors' (PyTorch) shape of an mgdet variable of ``shape``."""
    return tuple(shape[i] for i in (3, 2, 0, 1)) if layout == "kernel" else tuple(shape)


def to_mgdet(array, layout):
    """One authors' tensor in mgdet's layout (float32): kernels ``[out, in, kh, kw]`` ->
    ``[kh, kw, in, out]``, anything else as it is."""
    array = np.asarray(array, np.float32)
    return np.ascontiguousarray(array.transpose(2, 3, 1, 0)) if layout == "kernel" else array


def _listed(names, limit=5):
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def is_detector(state_dict):
    """Whether ``state_dict`` looks like one of the authors' detector checkpoints (a backbone,
    a class head and a box head), convertible or not (:func:`detect` says why not)."""
    return any(n.startswith("backbone.") for n in state_dict) and "conf.0.weight" in state_dict


def detect(state_dict):
    """``(arch, num_classes)`` of an authors' checkpoint from its tensor names and the class
    head's shape; WeightsError for anything else (a PAFPN or ResNet-18 checkpoint, a torchvision
    backbone, another 21/81-way head)."""
    names = set(state_dict)
    if any(n.startswith(("downsample_convs.", "pafpn_convs.")) for n in names):
        raise WeightsError("this is the authors' RetinaNet + PAFPN checkpoint: mgdet has no PAFPN "
                           "neck; convert their FSSD, RetinaNet or RFBNet checkpoints")
    if "backbone.layer1.0.weight" not in names:
        backbone = ("a ResNet-18 backbone (the authors released VGG16 detectors only)"
                    if "backbone.conv1.weight" in names else "no VGG16 'backbone.layer1.0.weight'")
        raise WeightsError(f"not one of the authors' VGG16 detector checkpoints: {backbone}")
    arch = ("rfbnet" if "Norm.shortcut.conv.weight" in names else
            "retinanet" if "lateral_convs.0.conv.weight" in names else
            "fssd" if "ft_module.0.conv.weight" in names else None)
    if arch is None:
        raise WeightsError("an authors' VGG16 checkpoint of an unknown detector (none of "
                           "'ft_module.*', 'lateral_convs.*', 'Norm.*'): mgdet converts their "
                           "FSSD, RetinaNet and RFBNet")
    channels = np.shape(state_dict.get("conf.0.weight", ()))[:1]
    if not channels or channels[0] % ANCHORS_PER_CELL:
        raise WeightsError(f"the class head 'conf.0.weight' has shape "
                           f"{np.shape(state_dict.get('conf.0.weight'))}: expected "
                           f"[{ANCHORS_PER_CELL} x classes, 256 or 512, 3, 3]")
    num_classes = channels[0] // ANCHORS_PER_CELL
    if num_classes not in DATASETS:
        raise WeightsError(f"the class head has {num_classes} classes per anchor: the authors' "
                           f"released heads have {' or '.join(map(str, DATASETS))} (VOC, COCO), "
                           "without a background column")
    return arch, num_classes


def convert_state_dict(state_dict, model):
    """The authors' tensors in mgdet's variables' order and layout.

    Args:
      state_dict: ``{authors' name: array}`` (``num_batches_tracked`` entries are ignored).
      model: a built mgdet detector of the same architecture (VGG16, width 1, 4 levels).
    Returns:
      ``{mgdet variable path: float32 array}`` for every variable of ``model``.
    Raises:
      WeightsError naming the missing, left-over and wrongly shaped tensors.
    """
    rows = variable_map(model)
    used = {name for _, name, _ in rows}
    missing = [name for name in used if name not in state_dict]
    extra = [n for n in state_dict if n not in used and not n.endswith(".num_batches_tracked")]
    wrong = [f"{name} {tuple(np.shape(state_dict[name]))} (expected "
             f"{torch_shape(v.shape, layout)})" for v, name, layout in rows
             if name in state_dict and tuple(np.shape(state_dict[name])) !=
             torch_shape(v.shape, layout)]
    problems = [f"{len(missing)} missing: {_listed(missing)}" if missing else "",
                f"{len(extra)} left over: {_listed(extra)}" if extra else "",
                f"{len(wrong)} of another shape: {_listed(wrong, 3)}" if wrong else ""]
    if missing or extra or wrong:
        raise WeightsError(f"the checkpoint does not fit mgdet's {model.arch} (VGG16, "
                           f"{model.num_classes} classes, {model.num_levels} levels): "
                           f"{'; '.join(p for p in problems if p)}")
    return {v.path: to_mgdet(state_dict[name], layout) for v, name, layout in rows}


def converted_config(arch, num_classes, config=None, overrides=(), name=None):
    """The config of a converted checkpoint: ``config`` (default: the shipped
    ``<arch>_vgg16_<voc|coco>``, whose data and eval sections are the paper's) with ``overrides``
    applied, then what the checkpoint fixes: ``model.arch``, ``backbone: vgg16``, ``width: 1``,
    ``num_classes``, ``input_norm: bgr_mean``, no ImageNet ``weights`` nor ``init_from``, and
    the class names."""
    dataset, class_names = DATASETS[num_classes]
    extra = parse_overrides(overrides)
    if name:
        extra.setdefault("name", name)
    cfg = load_config(config or f"{arch}_vgg16_{dataset}", extra)
    fixed = {"arch": arch, "backbone": "vgg16", "width": 1.0, "num_classes": num_classes,
             "input_norm": "bgr_mean", "weights": None, "init_from": None}
    return replace(cfg, model=fixed, class_names=list(class_names))


def load_checkpoint(source, config=None, overrides=(), name=None):
    """An mgdet detector holding the authors' checkpoint ``source`` (a ``.pth`` /
    ``.safetensors`` path, or its state dict), and its config (:func:`converted_config`;
    ``name`` default: the file's name)."""
    # TensorFlow: imported on use (`mgdet convert-weights` reads a checkpoint's names first)
    from mgdet.models.build import build_model
    if isinstance(source, dict):
        state, path = source, name or "authors"
    else:
        path = os.fspath(source)
        state = read_state_dict(path)
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    arch, num_classes = detect(state)
    name = name or re.sub(r"[^A-Za-z0-9_.+-]", "_", os.path.basename(path))
    cfg = converted_config(arch, num_classes, config, overrides, name.split(".")[0])
    model = build_model(cfg, class_names=cfg.class_names)
    arrays = convert_state_dict(state, model)
    for v in model.weights:
        v.assign(arrays[v.path])
    return model, cfg


def convert_checkpoint(src, out_dir, config=None, overrides=()):
    """Convert the authors' checkpoint ``src`` (path or state dict) into the run folder ``out_dir``:
    ``final.weights.h5`` and ``config.json`` (with the class names), which ``mgdet eval``,
    ``export``, ``predict``, ``model.init_from`` and :func:`mgdet.load_pretrained` take.

    Returns:
      ``(model, config)``.
    """
    outputs = [os.path.join(out_dir, n) for n in (FINAL_WEIGHTS, RUN_CONFIG)]
    taken = [p for p in outputs if os.path.exists(p)]
    if taken:
        raise FileExistsError(f"{taken[0]} exists: convert into a new folder")
    model, cfg = load_checkpoint(src, config, overrides,
                                 os.path.basename(os.path.normpath(out_dir)))
    os.makedirs(out_dir, exist_ok=True)
    model.save_weights(outputs[0])
    write_json(outputs[1], cfg.to_dict())
    return model, cfg

"""torchvision ImageNet weights -> mgdet backbones, without torch.

The state dicts below are written out from torchvision's architectures (names and shapes of
``torchvision.models.resnet18()`` and ``vgg16_bn()``), filled with random numbers, saved as
.safetensors, converted by ``cli.py convert-weights`` and loaded into mgdet's backbones; the first
blocks must then compute what an independent NumPy forward pass (PyTorch's conv / batch norm /
max pool semantics) computes with the same arrays.
"""
import numpy as np
import pytest
from safetensors.numpy import save_file

import cli
from mgdet.config import ConfigError, check_files, load_config
from mgdet.models import backbones as backbone_ops
from mgdet.convert import torchvision as cw
from mgdet.models.detector import IMAGENET_MEAN, IMAGENET_STD

TOL = 1e-4


def _conv_bn(state, rng, conv, bn, cout, cin, k, bias=False):
    state[f"{conv}.weight"] = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k))
    if bias:
        state[f"{conv}.bias"] = rng.normal(0, 0.1, cout)
    state[f"{bn}.weight"] = rng.uniform(0.5, 1.5, cout)
    state[f"{bn}.bias"] = rng.normal(0, 0.1, cout)
    state[f"{bn}.running_mean"] = rng.normal(0, 0.2, cout)
    state[f"{bn}.running_var"] = rng.uniform(0.5, 2.0, cout)
    state[f"{bn}.num_batches_tracked"] = np.array(1000, np.int64)


def torchvision_resnet18_state(seed=0):
    """Random arrays under the names and shapes of torchvision's ``resnet18().state_dict()``."""
    rng = np.random.default_rng(seed)
    state = {}
    _conv_bn(state, rng, "conv1", "bn1", 64, 3, 7)
    cin = 64
    for layer, c in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            _conv_bn(state, rng, f"{p}.conv1", f"{p}.bn1", c, cin if block == 0 else c, 3)
            _conv_bn(state, rng, f"{p}.conv2", f"{p}.bn2", c, c, 3)
            if block == 0 and layer > 1:
                _conv_bn(state, rng, f"{p}.downsample.0", f"{p}.downsample.1", c, cin, 1)
        cin = c
    state["fc.weight"] = rng.normal(0, 0.01, (1000, 512))
    state["fc.bias"] = np.zeros(1000)
    return {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in state.items()}


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def torchvision_vgg16_bn_state(seed=0):
    """Random arrays under the names and shapes of torchvision's ``vgg16_bn().state_dict()``:
    ``features`` is [Conv2d, BatchNorm2d, ReLU] per number of VGG16_CFG and MaxPool2d per "M"
    (the 100M-parameter ``classifier.0`` / ``classifier.3`` are left out to stay small)."""
    rng = np.random.default_rng(seed)
    state, index, cin = {}, 0, 3
    for v in VGG16_CFG:
        if v == "M":
            index += 1
            continue
        _conv_bn(state, rng, f"features.{index}", f"features.{index + 1}", v, cin, 3, bias=True)
        index, cin = index + 3, v
    state["classifier.6.weight"] = rng.normal(0, 0.01, (1000, 4096))
    state["classifier.6.bias"] = np.zeros(1000)
    return {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in state.items()}


# --- NumPy reference (PyTorch semantics, NHWC, float64) ---------------------------------------

def np_conv(x, weight, bias=None, stride=1, pad=0):
    """``x`` [H, W, Cin], torch ``weight`` [Cout, Cin, kh, kw], zero padding ``pad``."""
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    cout, _, kh, kw = weight.shape
    ho, wo = (x.shape[0] - kh) // stride + 1, (x.shape[1] - kw) // stride + 1
    out = np.zeros((ho, wo, cout))
    for i in range(kh):
        for j in range(kw):
            patch = x[i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out += patch @ weight[:, :, i, j].T.astype(np.float64)
    return out if bias is None else out + bias


def np_bn(x, state, prefix, eps=1e-5):
    g, b, m, v = (state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
    return (x - m) / np.sqrt(v.astype(np.float64) + eps) * g + b


def np_maxpool(x, k, stride, pad=0):
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
    ho, wo = (x.shape[0] - k) // stride + 1, (x.shape[1] - k) // stride + 1
    return np.max([x[i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
                   for i in range(k) for j in range(k)], axis=0)


def np_basic_block(x, state, p, stride):
    y = np.maximum(np_bn(np_conv(x, state[f"{p}.conv1.weight"], stride=stride, pad=1), state,
                         f"{p}.bn1"), 0)
    y = np_bn(np_conv(y, state[f"{p}.conv2.weight"], pad=1), state, f"{p}.bn2")
    if f"{p}.downsample.0.weight" in state:
        x = np_bn(np_conv(x, state[f"{p}.downsample.0.weight"], stride=stride), state,
                  f"{p}.downsample.1")
    return np.maximum(y + x, 0)


def _normalized_image(seed, size):
    """A random RGB 0..255 image under torchvision's input convention (what the detectors apply
    inside the model)."""
    img = np.random.default_rng(seed).uniform(0, 255, (size, size, 3))
    return (img - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)


def _convert(tmp_path, state, name):
    src, dst = str(tmp_path / f"{name}.safetensors"), str(tmp_path / f"{name}.npz")
    save_file(state, src)
    assert cli.main(["convert-weights", src, dst]) == 0
    return dst


def _converted_backbone(tmp_path, state, torch_arch, arch, size):
    """``state`` converted through the CLI and loaded into a fresh full-width ``arch``."""
    path = _convert(tmp_path, state, torch_arch)
    backbone = backbone_ops.build_backbone(arch, 1.0)
    backbone(np.zeros((1, size, size, 3), np.float32))
    assert backbone_ops.load_backbone_weights(backbone, path) == len(backbone.variables)
    return backbone


def _close(ours, reference):
    diff = np.abs(np.asarray(ours)[0] - reference).max()
    assert diff < TOL, diff


def test_input_normalization_is_torchvisions():
    np.testing.assert_allclose(np.array(IMAGENET_MEAN) / 255, [0.485, 0.456, 0.406])
    np.testing.assert_allclose(np.array(IMAGENET_STD) / 255, [0.229, 0.224, 0.225])


def test_resnet18_converted_weights_compute_torchvisions_first_blocks(tmp_path):
    state = torchvision_resnet18_state(1)
    backbone = _converted_backbone(tmp_path, state, "resnet18", "resnet18", 64)

    x = _normalized_image(0, 64)
    stem = np.maximum(np_bn(np_conv(x, state["conv1.weight"], stride=2, pad=3), state, "bn1"), 0)
    ours = backbone.stem(x[None].astype(np.float32), training=False)
    _close(ours, stem)
    pooled = np_maxpool(stem, 3, 2, pad=1)
    ours = backbone.stem_pool(backbone.stem_pad(ours))
    _close(ours, pooled)
    y = pooled
    for (stage, block), ref_prefix, stride in (((0, 0), "layer1.0", 1), ((0, 1), "layer1.1", 1),
                                               ((1, 0), "layer2.0", 2)):  # + the projection
        y = np_basic_block(y, state, ref_prefix, stride)
        ours = backbone.stages[stage][block](ours, training=False)
        _close(ours, y)


def test_vgg16_bn_converted_weights_compute_torchvisions_first_blocks(tmp_path):
    state = torchvision_vgg16_bn_state(2)
    backbone = _converted_backbone(tmp_path, state, "vgg16_bn", "vgg16", 32)

    y = _normalized_image(3, 32)
    ours = y[None].astype(np.float32)
    for ref_index, (block, conv) in zip((0, 3, 7, 10), ((0, 0), (0, 1), (1, 0), (1, 1))):
        if ref_index == 7:   # features.6: MaxPool2d(2, 2)
            y, ours = np_maxpool(y, 2, 2), backbone.pool(ours)
        y = np.maximum(np_bn(np_conv(y, state[f"features.{ref_index}.weight"],
                                     state[f"features.{ref_index}.bias"], pad=1), state,
                             f"features.{ref_index + 1}"), 0)
        ours = backbone.blocks[block][conv](ours, training=False)
        _close(ours, y)


def test_conversion_detects_the_network_and_refuses_others(tmp_path):
    # (that a conversion fills every backbone variable is checked by the loads above)
    assert cw.from_torchvision(torchvision_resnet18_state())[0] == "resnet18"
    assert cw.from_torchvision(torchvision_vgg16_bn_state())[0] == "vgg16"
    plain_vgg = {k: v for k, v in torchvision_vgg16_bn_state().items()
                 if not k.startswith("features.1.")}
    with pytest.raises(cw.WeightsError, match="vgg16_bn"):
        cw.from_torchvision(plain_vgg)
    deeper = dict(torchvision_resnet18_state(), **{"layer1.2.conv1.weight": np.zeros(1)})
    with pytest.raises(cw.WeightsError, match="ResNet-18"):
        cw.from_torchvision(deeper)
    with pytest.raises(cw.WeightsError, match="not a torchvision"):
        cw.from_torchvision({"weight": np.zeros(3)})
    with pytest.raises(cw.WeightsError, match=r"\.npz"):
        cw.convert(str(tmp_path / "x.safetensors"), str(tmp_path / "out.weights.h5"))


def test_missing_or_unconverted_weights_say_how_to_make_them(tmp_path, capsys):
    missing = str(tmp_path / "weights" / "resnet18_imagenet.npz")
    with pytest.raises(ConfigError, match="convert-weights resnet18-f37072fd.pth"):
        check_files(load_config(None, [f"model.weights={missing}"]))
    backbone = backbone_ops.build_backbone("vgg16", 0.125)
    backbone(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="convert-weights vgg16_bn-6c64b313.pth"):
        backbone_ops.load_backbone_weights(backbone, missing)
    raw = str(tmp_path / "vgg16_bn.safetensors")
    save_file({"features.0.weight": np.zeros((8, 3, 3, 3), np.float32)}, raw)
    with pytest.raises(ValueError, match="convert-weights"):
        backbone_ops.load_backbone_weights(backbone, raw)
    with pytest.raises(SystemExit) as exit_info:   # one line, no traceback
        cli.main(["convert-weights", raw, str(tmp_path / "out.npz")])
    assert exit_info.value.code == 2
    assert "lacks" in capsys.readouterr().err


def test_paper_configs_name_the_converted_file_and_the_authors_augmentation(tmp_path,
                                                                            monkeypatch):
    import glob
    import os
    paths = sorted(glob.glob(os.path.join(os.path.dirname(cli.__file__), "configs", "*_voc.yaml"))
                   + glob.glob(os.path.join(os.path.dirname(cli.__file__), "configs", "*_coco.yaml")))
    assert len(paths) == 10
    weights = tmp_path / "w.npz"
    weights.write_bytes(b"")
    for path in paths:
        text = open(path).read()
        cfg = load_config(path, [f"model.weights={weights}"])
        assert cfg.data.augment == "paper", path
        named = f"weights/{cfg.model.backbone}_imagenet.npz"
        assert f"weights: {named}" in text, path
        url = cw.TORCHVISION_URLS[cfg.model.backbone]
        assert f"convert-weights {url.rsplit('/', 1)[1]} {named}" in text and url in text, path
        monkeypatch.chdir(tmp_path)   # no weights/ folder here
        with pytest.raises(ConfigError, match=f"convert-weights .* {named}"):
            check_files(load_config(path))
        monkeypatch.undo()


def test_a_trained_run_does_not_need_its_imagenet_starting_file(tmp_path):
    import json

    from mgdet.training.rundir import config_beside
    values = {**load_config(None).to_dict(), "class_names": ["a", "b"]}
    values["model"]["weights"] = str(tmp_path / "deleted_since" / "resnet18_imagenet.npz")
    (tmp_path / "config.json").write_text(json.dumps(values))
    loaded, names = config_beside(str(tmp_path / "final.weights.h5"))
    assert loaded.model.weights is None and names == ["a", "b"]

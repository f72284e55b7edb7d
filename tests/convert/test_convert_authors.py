"""The paper authors' released detectors -> mgdet (mgdet.convert.authors, `mgdet convert-weights`).

The authors' tensor names and shapes (tests/convert/fixtures/authors_checkpoints.json, listed from their
models at commit e3b0999, VOC heads; the COCO heads differ only in the class head's 6 x 80
channels) are filled with random values: no torch needed. The equality of the converted models'
outputs with the authors' PyTorch models is checked outside the test suite (docs/zoo.md,
"How the conversion was verified").
"""
import functools
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

import cli
import mgdet
from mgdet.config import ARCHS
from mgdet.convert import authors
from mgdet.models import MODELS
from mgdet.training import transfer
from mgdet.convert.torchvision import WeightsError
from mgdet.models.heads import DetectionHead
from mgdet.models.layers import ConvBlock
from tests.convert.test_convert_weights import np_bn, np_conv

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "authors_checkpoints.json")


def authors_state(arch, dataset="voc", seed=0):
    """A random state dict with the names and shapes of the authors' ``arch`` checkpoint."""
    with open(FIXTURE) as f:
        facts = json.load(f)
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in facts["voc"][arch]:
        if dataset == "coco" and name.startswith("conf."):
            shape = [facts["coco_class_head_channels"]] + shape[1:]
        if name.endswith("num_batches_tracked"):
            state[name] = np.array(7, np.int64)
        elif name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            state[name] = rng.normal(0, 0.1, shape).astype(np.float32)
    return state


SMALL = ["--set", "model.image_size=64"]  # converted weights fit any size below 512 (4 levels)


@functools.lru_cache(maxsize=None)
def small_model(arch, num_classes=20):
    """The full-width detector at 64 px (shared: only read): the variables' shapes do not depend
    on the image size below 512 (4 levels)."""
    return MODELS[arch](num_classes=num_classes, backbone="vgg16", image_size=64)


# Names written out by hand from the authors' module structure (models/*.py at e3b0999).
HAND_MAPPED = {
    "fssd": {"backbone.layer1.0.weight": "backbone/conv1_1/conv/kernel",
             "backbone.layer1.31.running_var": "backbone/conv4_3/bn/moving_variance",
             "backbone.layer2.1.bias": "backbone/conv5_1/conv/bias",
             "backbone.layer2.8.weight": "backbone/conv5_3/bn/gamma",
             "ft_module.1.conv.weight": "neck/transform1/conv/kernel",
             "pyramid_ext.0.bn.running_mean": "neck/fuse/bn/moving_mean",
             "pyramid_ext.3.conv.bias": "neck/pyramid3/conv/bias",
             "loc.2.weight": "head/box2/kernel", "conf.3.bias": "head/cls3/bias"},
    "retinanet": {"ft_module.0.bn.bias": "neck/fusion/transform0/bn/beta",
                  "pyramid_ext.2.conv.weight": "neck/fusion/pyramid2/conv/kernel",
                  "lateral_convs.1.bn.weight": "neck/fpn/lateral1/bn/gamma",
                  "fpn_convs.3.conv.weight": "neck/fpn/smooth3/conv/kernel",
                  "conf.0.weight": "head/cls0/kernel"},
    "rfbnet": {"reduce.conv.weight": "neck/reduce4/conv/kernel",
               "up_reduce.bn.running_var": "neck/reduce5/bn/moving_variance",
               "Norm.branch5.2.conv.weight": "neck/rfb_s/branch5_2/conv/kernel",
               "Norm.ConvLinear.bn.bias": "neck/rfb_s/mix/bn/beta",
               "Norm.shortcut.conv.bias": "neck/rfb_s/shortcut/conv/bias",
               "extras.0.branch3.3.conv.weight": "neck/extra1/branch3_3/conv/kernel",
               "extras.2.ConvLinear.conv.weight": "neck/extra3/mix/conv/kernel",
               "extras.1.shortcut.bn.running_mean": "neck/extra2/shortcut/bn/moving_mean",
               "loc.0.weight": "head/box0/kernel"},
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_authors_tensor_fills_one_variable_after_its_transposition(arch):
    state = authors_state(arch)
    model = small_model(arch)
    assert authors.detect(state) == (arch, 20)
    arrays = authors.convert_state_dict(state, model)
    prefix = model.name + "/"
    used = {}
    for v, name, layout in authors.variable_map(model):
        used[name] = v.path[len(prefix):]
        source = state[name]
        expected = source.transpose(2, 3, 1, 0) if source.ndim == 4 else source
        assert layout == ("kernel" if source.ndim == 4 else "vector")
        np.testing.assert_array_equal(arrays[v.path], expected, err_msg=name)
    # a bijection: every tensor but the batch-norm step counters, each for one variable
    assert sorted(used) == sorted(n for n in state if not n.endswith("num_batches_tracked"))
    assert len(set(used.values())) == len(used) == len(model.weights)
    for theirs, ours in HAND_MAPPED[arch].items():
        assert used[theirs] == ours


def test_a_kernel_and_batch_norm_in_the_authors_layout_compute_their_conv_block():
    """torch's NCHW cross-correlation with [out, in, kh, kw] weights + eval-mode BN + ReLU
    (numpy reference) equals mgdet's ConvBlock holding the converted tensors; stride 2 pads
    symmetrically as torch's padding=1."""
    rng = np.random.default_rng(1)
    state = {"b.conv.weight": rng.normal(0, 0.2, (5, 3, 3, 3)), "b.conv.bias": rng.normal(0, 1, 5),
             "b.bn.weight": rng.normal(1, 0.1, 5), "b.bn.bias": rng.normal(0, 0.1, 5),
             "b.bn.running_mean": rng.normal(0, 0.1, 5),
             "b.bn.running_var": rng.uniform(0.5, 1.5, 5)}
    x = rng.normal(0, 1, (8, 8, 3))
    block = ConvBlock(5, 3, strides=2)
    block(np.zeros((1, 8, 8, 3), np.float32))
    for layer, var in ((block.conv, "kernel"), (block.conv, "bias"), (block.bn, "gamma"),
                       (block.bn, "beta"), (block.bn, "moving_mean"),
                       (block.bn, "moving_variance")):
        name, layout = authors.authors_name(f"neck/fuse/{'conv' if layer is block.conv else 'bn'}"
                                            f"/{var}")
        [v] = [v for v in layer.weights if v.path.endswith("/" + var)]
        v.assign(authors.to_mgdet(state[name.replace("pyramid_ext.0", "b")], layout))
    ref = np.maximum(np_bn(np_conv(x, state["b.conv.weight"], state["b.conv.bias"], stride=2,
                                   pad=1), state, "b.bn"), 0)
    ours = np.asarray(block(x[None].astype(np.float32), training=False))[0]
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_the_class_head_channels_are_anchor_major_as_the_authors_view():
    """The authors' head: conv -> [B, 6K, H, W] -> permute(0, 2, 3, 1) -> view(B, -1, K); mgdet's
    head with the converted kernel gives the same [B, H * W * 6, K] rows, channels unpermuted."""
    rng = np.random.default_rng(2)
    k, cin, f = 3, 4, 5
    weight, bias = rng.normal(0, 0.3, (6 * k, cin, 3, 3)), rng.normal(0, 1, 6 * k)
    x = rng.normal(0, 1, (f, f, cin))
    head = DetectionHead(1, k)
    head([np.zeros((1, f, f, cin), np.float32)])
    head.cls_convs[0].kernel.assign(authors.to_mgdet(weight, "kernel"))
    head.cls_convs[0].bias.assign(bias.astype(np.float32))
    _, logits = head([x[None].astype(np.float32)])
    theirs = np_conv(x, weight, bias, pad=1).reshape(-1, k)  # [H, W, 6K] (permuted) -> view
    np.testing.assert_allclose(np.asarray(logits)[0], theirs, atol=1e-4)


def test_the_authors_input_normalization_is_bgr_minus_their_means():
    image = np.random.default_rng(3).uniform(0, 255, (1, 2, 2, 3)).astype(np.float32)
    ours = np.asarray(mgdet.models.detector.normalize_images(image, "bgr_mean"))
    np.testing.assert_allclose(ours, image[..., ::-1] - np.array([104.0, 117.0, 123.0]),
                               atol=1e-5)


def test_missing_left_over_and_misshapen_tensors_are_named():
    model = small_model("fssd")
    state = authors_state("fssd")
    del state["pyramid_ext.1.bn.running_mean"]
    with pytest.raises(WeightsError, match=r"1 missing: pyramid_ext\.1\.bn\.running_mean"):
        authors.convert_state_dict(state, model)
    state = authors_state("fssd")
    state["extra_head.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match=r"1 left over: extra_head\.weight"):
        authors.convert_state_dict(state, model)
    state = authors_state("fssd")
    state["loc.1.weight"] = state["loc.1.weight"].transpose(1, 0, 2, 3)
    with pytest.raises(WeightsError, match=r"loc\.1\.weight \(256, 24, 3, 3\) \(expected "
                                           r"\(24, 256, 3, 3\)\)"):
        authors.convert_state_dict(state, model)
    with pytest.raises(WeightsError, match="20 classes"):  # a COCO checkpoint into a VOC model
        authors.convert_state_dict(authors_state("fssd", "coco"), model)


def test_other_checkpoints_are_refused_with_the_reason():
    state = authors_state("retinanet")
    assert authors.detect(authors_state("rfbnet", "coco")) == ("rfbnet", 80)
    with pytest.raises(WeightsError, match="PAFPN"):
        authors.detect({**state, "pafpn_convs.0.conv.weight": np.zeros(1)})
    with pytest.raises(WeightsError, match="ResNet-18"):
        authors.detect({"backbone.conv1.weight": np.zeros(1), "conf.0.weight": np.zeros(1)})
    with pytest.raises(WeightsError, match="21 classes per anchor.*without a background"):
        authors.detect({**state, "conf.0.weight": np.zeros((126, 256, 3, 3), np.float32)})


@pytest.mark.slow
def test_convert_command_writes_a_run_folder_that_loads_with_class_names(tmp_path, capsys):
    """`mgdet convert-weights` on a random-weight stand-in of the authors' RetinaNet COCO
    checkpoint: a run folder that load_pretrained, predict and init_from take."""
    state = authors_state("retinanet", "coco", seed=4)
    src, out = str(tmp_path / "COCO_retinanet.safetensors"), str(tmp_path / "retinanet_coco")
    save_file(state, src)
    assert cli.main(["convert-weights", src, out] + SMALL) == 0
    assert "the authors' retinanet (VGG16, 80 classes: person, bicycle, car" in \
        capsys.readouterr().out
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["model"]["input_norm"] == "bgr_mean" and config["data"]["source"] == "coco"
    model = mgdet.load_pretrained(out)
    assert model.class_names == authors.COCO_CLASSES and model.input_norm == "bgr_mean"
    np.testing.assert_array_equal(model.get_layer("head").cls_convs[2].kernel.numpy(),
                                  state["conf.2.weight"].transpose(2, 3, 1, 0))
    [found] = mgdet.predict(model, np.full((40, 60, 3), 90, np.uint8), score_threshold=0.0)
    assert set(found["names"]) <= set(authors.COCO_CLASSES)
    # the same checkpoint file loads directly, converted in memory
    direct = authors.load_checkpoint(src, overrides=SMALL[1::2])[0]
    np.testing.assert_array_equal(direct.weights[0].numpy(), model.weights[0].numpy())
    # fine-tuning on 3 classes: everything but the class head comes from the checkpoint
    target = mgdet.build_model(mgdet.load_config(
        os.path.join(out, "config.json"), ["model.num_classes=3", "class_names=[]"]))
    kept = transfer.init_from(target, out)
    assert kept and all("/head/cls" in p for p in kept)
    np.testing.assert_array_equal(target.get_layer("neck").weights[5].numpy(),
                                  model.get_layer("neck").weights[5].numpy())
    assert cli.main(["convert-weights", src, out] + SMALL) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err


def test_fine_tuning_a_converted_model_needs_its_input_normalization(tmp_path):
    out = str(tmp_path / "fssd_voc")
    authors.convert_checkpoint(authors_state("fssd"), out, overrides=SMALL[1::2])
    cfg = mgdet.load_config("fssd_vgg16_voc", ["model.weights=null", "model.num_classes=3",
                                               "model.image_size=64"])
    with pytest.raises(mgdet.config.ConfigError, match="--set model.input_norm=bgr_mean"):
        transfer.init_from(mgdet.build_model(cfg), out)


def test_bad_checkpoints_are_one_line_in_the_cli(tmp_path, capsys):
    state = authors_state("fssd")
    del state["pyramid_ext.2.bn.weight"]
    src = str(tmp_path / "fssd.safetensors")
    save_file(state, src)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["convert-weights", src, str(tmp_path / "out")] + SMALL)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 missing: pyramid_ext.2.bn.weight" in err
    with pytest.raises(SystemExit):
        cli.main(["convert-weights", src, str(tmp_path / "out.npz")])
    assert "convert it into a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["convert-weights", str(tmp_path / "VOC_rfbnet.pth"), str(tmp_path / "out")])
    assert "VOC_rfbnet.pth' does not exist: download it first" in capsys.readouterr().err


def test_zoo_names_say_how_to_get_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"download rfbnet_mg_voc's checkpoint \(https://"
                                                r"drive.google.com/file/d/1Nb6NPa4aNfz49NhGeTTf"):
        mgdet.load_pretrained("rfbnet_mg_voc")
    with pytest.raises(FileNotFoundError, match="fssd_voc, fssd_mg_voc"):
        mgdet.load_pretrained("nonexistent")

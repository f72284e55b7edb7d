"""Quantized TFLite export (``mgdet export --format tflite --quantize int8|float16``): the int8
file has an int8 network and float decoding, loads and detects in a fresh process without mgdet,
its outputs stay close to the float model's on a painted image; the CLI refuses format /
quantization pairs that do not exist with one line and exit status 2.

The int8 export runs once per module through the CLI (calibration on the config's training
images is the slow part)."""
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from mgdet.ops import boxes as box_ops
from mgdet import cli
from mgdet.export import files
from tests.export.test_export import WITHOUT_MGDET

SIZE = 64
TINY = ["--set", f"model.image_size={SIZE}", "--set", "data.num_train=40",
        "--set", "data.num_eval=4"]
# int8 vs float (Keras) on a painted image, random weights: sigmoid scores within 0.15 at worst,
# 0.05 for 99% of them and 0.03 on average (measured over initializations: 0.06-0.10, p99
# 0.03-0.04; the int8 logits are 256 levels over their calibrated range); boxes within 0.05 of
# the image side where the float score is > 0.2 (measured 0.03; deltas go through exp()).
SCORE_ATOL, SCORE_P99_ATOL, SCORE_MEAN_ATOL, BOX_ATOL = 0.15, 0.05, 0.03, 0.05


def _config():
    from mgdet.config import load_config
    return load_config("default", TINY[1::2])


def _painted_image(cfg, index=0):
    """An eval-split image of the embedded dataset (painted shapes), as the model gets it."""
    from mgdet.data.datasets import build_eval_dataset
    images, _ = next(iter(build_eval_dataset(cfg)[0]))
    return images[index:index + 1].numpy()


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    from mgdet.training.trained import load_detector
    tmp = tmp_path_factory.mktemp("quantize")
    cfg = _config()
    keras.utils.set_random_seed(0)
    model, class_names = load_detector(cfg, None)
    # Random weights with scores spread over (0, 1) (the initial prior puts them all at 0.01).
    rng = np.random.default_rng(0)
    for v in model.variables:
        if "/head/cls" in v.path and v.path.endswith("bias"):
            v.assign(rng.normal(-1.0, 1.0, v.shape).astype(np.float32))
    weights = str(tmp / "tiny.weights.h5")
    model.save_weights(weights)
    path = str(tmp / "tiny-int8.tflite")
    assert cli.main(["export", *TINY, "--weights", weights, "--format", "tflite",
                     "--quantize", "int8", "--out", path]) == 0
    return {"model": model, "cfg": cfg, "path": path, "weights": weights, "tmp": tmp,
            "class_names": list(class_names)}


def _keras_outputs(model, x):
    deltas, logits = model(x, training=False)
    boxes = tf.clip_by_value(box_ops.decode(deltas, model.anchors), 0.0, 1.0)
    return box_ops.xyxy_to_yxyx(boxes).numpy(), tf.sigmoid(logits).numpy()


_FRESH = WITHOUT_MGDET + textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    model_path, inputs, outputs = sys.argv[1:4]
    interpreter = tf.lite.Interpreter(model_path=model_path)
    runner = interpreter.get_signature_runner()
    out = runner(images=np.load(inputs))
    np.savez(outputs, **out)
    ops = interpreter._get_ops_details()
    tensors = interpreter.get_tensor_details()
    def input_types(name):
        return sorted({tensors[o["inputs"][0]]["dtype"].__name__
                       for o in ops if o["op_name"] == name})
    print(json.dumps({"inputs": {k: [v["shape"], v["dtype"]]
                                 for k, v in runner.get_input_details().items()},
                      "conv": input_types("CONV_2D"), "sigmoid": input_types("LOGISTIC"),
                      "exp": input_types("EXP"),
                      "mgdet_imported": any(m.startswith("mgdet") for m in sys.modules)},
                     default=str))
""")


@pytest.mark.slow
def test_int8_tflite_detects_in_a_fresh_process_close_to_the_float_model(int8, tmp_path):
    model = int8["model"]
    x = _painted_image(int8["cfg"])
    np.save(tmp_path / "x.npy", x)
    res = subprocess.run([sys.executable, "-c", _FRESH, int8["path"], str(tmp_path / "x.npy"),
                          str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert not info["mgdet_imported"]
    # every convolution runs in int8, the decoding (exp) and the sigmoid in float32
    assert (info["conv"], info["exp"], info["sigmoid"]) == (["int8"], ["float32"], ["float32"])
    assert info["inputs"]["images"][1] == "<class 'numpy.float32'>"
    out = np.load(tmp_path / "out.npz")
    ref_boxes, ref_scores = _keras_outputs(model, x)
    n = len(model.anchors)
    assert out["boxes"].shape == (1, n, 4) and out["boxes"].dtype == np.float32
    assert out["scores"].shape == (1, n, len(int8["class_names"])) and out["scores"].dtype == np.float32
    np.testing.assert_allclose(out["scores"], ref_scores, atol=SCORE_ATOL)
    error = np.abs(out["scores"] - ref_scores)
    assert np.percentile(error, 99) < SCORE_P99_ATOL and error.mean() < SCORE_MEAN_ATOL
    confident = ref_scores[0].max(-1) > 0.2
    assert confident.sum() >= 5  # a non-trivial comparison
    np.testing.assert_allclose(out["boxes"][0, confident], ref_boxes[0, confident], atol=BOX_ATOL)
    # the labels of the export are written beside it
    with open(os.path.join(os.path.dirname(int8["path"]), "labels.txt")) as f:
        assert f.read().split() == int8["class_names"]


@pytest.mark.slow
def test_float16_through_the_cli_default_path_and_refuses_an_existing_file(int8, tmp_path,
                                                                           monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["export", *TINY, "--weights", int8["weights"], "--format", "tflite",
            "--quantize", "float16"]
    assert cli.main(argv) == 0
    path = os.path.join("exports", "default", "default-float16.tflite")
    assert f"exported {path}" in capsys.readouterr().out
    x = _painted_image(int8["cfg"])
    out = tf.lite.Interpreter(model_path=path).get_signature_runner()(images=x)
    ref_boxes, ref_scores = _keras_outputs(int8["model"], x)
    np.testing.assert_allclose(out["scores"], ref_scores, atol=5e-3)
    np.testing.assert_allclose(out["boxes"], ref_boxes, atol=5e-3)
    assert cli.main(argv) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--format", "saved_model", "--quantize", "int8"], "applies to --format tflite only"),
    (["--quantize", "float16"], "applies to --format tflite only"),  # the default: saved_model
    (["--format", "onnx", "--quantize", "int8"], "applies to --format tflite only"),
    (["--format", "tflite", "--version", "3"], "--version does not apply"),
    (["--out", "x.tflite"], "--out does not apply to --format saved_model"),
])
def test_bad_format_and_quantize_pairs_are_one_line_exit_2(extra, message, tmp_path,
                                                           monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", *TINY, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: export: ") and message in err[0], err
    assert not os.listdir(tmp_path)  # nothing written


def test_unknown_choices_are_refused_and_saved_model_stays_the_default(capsys):
    assert cli.build_parser().parse_args(["export"]).format == "saved_model"
    for bad in (["--format", "coreml"], ["--format", "tflite", "--quantize", "int4"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["export", *bad])
        assert exit_info.value.code == 2
        assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow
def test_int8_needs_representative_images_and_the_calibration_set_is_training_data():
    cfg = _config()
    images = files.representative_images(cfg, 3)
    assert len(images) == 3 and images[0].shape == (SIZE, SIZE, 3)
    assert images[0].dtype == np.float32 and 0 <= images[0].min() and images[0].max() <= 255
    # the first training images, resized only (no augmentation)
    from mgdet.data import augment, get_source
    first = next(iter(get_source(cfg.data, image_size=SIZE).dataset("train")))
    np.testing.assert_allclose(images[0], augment.resize(first["image"], SIZE).numpy(), atol=1e-3)
    with pytest.raises(ValueError, match="representative_images"):
        files.export_tflite(None, "x.tflite", quantize="int8", representative_images=[])
    with pytest.raises(ValueError, match="quantize must be one of"):
        files.export_tflite(None, "x.tflite", quantize="int4")

"""The commands on a trained run: eval / export / predict use the run's own config.json (a
--config or --set on the command line wins, and the command says which config it used);
export needs weights; predict accepts run folders, numbers its output folders, keeps its hands
off the input images and refuses images over data.max_pixels; careless or hostile input (bad
weight files, options out of range, long names, non-UTF-8 configs, YAML alias bombs) is one
line and a non-zero exit status, never a traceback.

One tiny run folder (random weights, the files ``train`` writes) is shared by the module."""
import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import cli
from mgdet import build_model
from mgdet.config import load_config
from mgdet.data.synthetic.shapes import CLASS_NAMES
from mgdet.training.rundir import write_json
from tests.training.test_train import tiny_config

from tests import ROOT

# The run's model on top of any config: these tests are about what comes after the config.
RUN_MODEL = ["--set", "model.image_size=64", "--set", "model.width=0.125"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``runs/my_data`` as ``train`` leaves it: final.weights.h5 and config.json (with the class
    names), for a model (64 px, width 0.125) that the default config (128 px, width 0.25)
    cannot load."""
    folder = tmp_path_factory.mktemp("commands") / "runs" / "my_data"
    folder.mkdir(parents=True)
    cfg = tiny_config(folder, "name=my_data")
    keras.utils.set_random_seed(0)
    model = build_model(cfg, class_names=CLASS_NAMES)
    model(tf.zeros([1, 64, 64, 3]), training=False)
    model.save_weights(str(folder / "final.weights.h5"))
    write_json(str(folder / "config.json"), {**cfg.to_dict(), "class_names": list(CLASS_NAMES)})
    return folder


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err.strip().splitlines()


def _one_line_error(capsys, *argv):
    """The CLI's answer to bad input: exit status != 0, one line on stderr, no traceback."""
    code, _, err = _main(capsys, *argv)
    assert code != 0 and len(err) == 1 and "Traceback" not in err[0], (code, err)
    return err[0]


def _png(path, height=40, width=56, seed=0):
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    tf.io.write_file(str(path), tf.io.encode_png(image))
    return str(path)


# --------------------------------------------------------------------------------------------
# The run's config
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_eval_uses_the_runs_config_and_set_overrides_it(run, tmp_path, capsys):
    code, out, _ = _main(capsys, "eval", "--weights", run, "--out", tmp_path / "e.json")
    assert code == 0
    assert f"config: {run / 'config.json'} (the run that wrote the weights)" in out
    metrics = json.loads((tmp_path / "e.json").read_text())
    assert metrics["num_images"] == 8  # the run's data.num_eval, not the default's 300
    # --set applies over the run's config; a weights file inside the run counts as the run
    code, out, _ = _main(capsys, "eval", "--weights", run / "final.weights.h5",
                         "--set", "data.num_eval=5", "--out", tmp_path / "f.json")
    assert code == 0 and "with --set data.num_eval=5" in out
    assert json.loads((tmp_path / "f.json").read_text())["num_images"] == 5
    import mgdet
    assert mgdet.evaluate(str(run))["num_images"] == 8  # the Python API reads it too


@pytest.mark.slow
def test_export_uses_the_runs_config_and_name(run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _main(capsys, "export", "--weights", run / "final.weights.h5")
    assert code == 0 and "(the run that wrote the weights)" in out
    meta = json.loads((tmp_path / "saved_models" / "my_data" / "1" / "assets.extra"
                       / "mgdet_export.json").read_text())
    assert meta["image_size"] == 64 and meta["class_names"] == list(CLASS_NAMES)
    assert meta["trained"] is True and meta["max_detections"] == 50  # the run's eval section
    assert not (tmp_path / "saved_models" / "default").exists()


@pytest.mark.slow
def test_export_without_weights_is_refused_unless_untrained(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "--untrained" in _one_line_error(capsys, "export")
    assert not (tmp_path / "saved_models").exists()
    code, out, _ = _main(capsys, "export", "--untrained", *RUN_MODEL, "--name", "probe")
    assert code == 0 and "untrained" in out
    loaded = tf.saved_model.load(str(tmp_path / "saved_models" / "probe" / "1"))
    assert bool(loaded.metadata()["trained"]) is False


def test_a_runs_config_json_loads_back_with_its_class_names(run):
    cfg = load_config(str(run / "config.json"))
    assert cfg.name == "my_data" and cfg.model.width == 0.125 and cfg.data.num_eval == 8
    assert cfg.class_names == CLASS_NAMES
    assert load_config(str(run / "config.json"), ["model.width=0.25"]).model.width == 0.25


# --------------------------------------------------------------------------------------------
# export: the ONNX extra, versions claimed atomically
# --------------------------------------------------------------------------------------------

def test_onnx_without_the_extra_is_one_line_naming_it(run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # `import tf2onnx` raises ImportError
    line = _one_line_error(capsys, "export", "--weights", run, "--format", "onnx", *RUN_MODEL)
    assert 'pip install "mgdet[onnx]"' in line
    page = open(os.path.join(ROOT, "docs", "export.md"), encoding="utf-8").read()
    onnx_section = page[page.index("## ONNX and TFLite"):]
    end = onnx_section.find("\n## ")
    onnx_section = onnx_section if end < 0 else onnx_section[:end]
    assert 'pip install "mgdet[onnx]"' in onnx_section


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_predict_takes_a_run_folder_and_numbers_its_output_folders(run, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    _png(images / "a.png")
    for k, expected in enumerate(("predict", "predict-2")):
        code, out, _ = _main(capsys, "predict", "--model", run, images)
        assert code == 0, out
        folder = tmp_path / "runs" / expected
        assert f"to {os.path.join('runs', expected)}" in out
        # the claim of the folder (mgdet/training/rundir.py's manifest), as for a training run
        assert sorted(os.listdir(folder)) == ["a.png", "detections.json", "mgdet_run.json"]
    assert os.listdir(images) == ["a.png"]


@pytest.mark.parametrize("where", ["same", "inside"])
def test_predict_refuses_an_out_dir_that_holds_or_is_inside_the_inputs(run, tmp_path, capsys,
                                                                       where):
    images = tmp_path / "images"
    images.mkdir()
    original = open(_png(images / "a.png"), "rb").read()
    out_dir = images if where == "same" else images / "out"
    line = _one_line_error(capsys, "predict", "--model", run / "final.weights.h5", images,
                           "--out-dir", out_dir)
    assert "--out-dir" in line and str(images) in line
    assert (images / "a.png").read_bytes() == original and os.listdir(images) == ["a.png"]
    # an image file given directly, in the --out-dir: its picture would overwrite it
    line = _one_line_error(capsys, "predict", "--model", run / "final.weights.h5",
                           images / "a.png", "--out-dir", images)
    assert "--out-dir" in line and (images / "a.png").read_bytes() == original


@pytest.mark.slow
def test_predict_skips_images_over_max_pixels_without_decoding_them(run, tmp_path, monkeypatch,
                                                                    caplog):
    """A small PNG whose header claims 20000 x 20000 pixels is refused from its header (the
    limit of training and serving, data.max_pixels), never decoded."""
    import mgdet.data.exif as exif
    from mgdet.config import DEFAULT_MAX_PIXELS, DataConfig
    from mgdet.inference import run_predict
    from tests.export.test_export import _bombs
    assert DataConfig().max_pixels == DEFAULT_MAX_PIXELS == 40_000_000
    images = tmp_path / "images"
    images.mkdir()
    _png(images / "a.png")
    bomb = _bombs()["png"]
    (images / "bomb.png").write_bytes(bomb)
    decode, decoded = exif.decode_oriented, []

    def recording_decode(data, *args, **kwargs):
        decoded.append(len(data.numpy()))
        if len(data.numpy()) == len(bomb):
            raise ValueError("the bomb was handed to the decoder")
        return decode(data, *args, **kwargs)
    monkeypatch.setattr(exif, "decode_oriented", recording_decode)
    results = run_predict(str(run / "final.weights.h5"), [str(images)], str(tmp_path / "out"),
                          print_json=False, progress=False)
    assert [os.path.basename(r["image"]) for r in results] == ["a.png"]
    assert len(decoded) == 1 and len(bomb) not in decoded
    assert any("bomb.png" in r.message and "max_pixels" in r.message for r in caplog.records)


# --------------------------------------------------------------------------------------------
# One line, never a traceback
# --------------------------------------------------------------------------------------------

def _weights_copy(run, folder, data):
    """A folder with the run's config.json and ``data`` as final.weights.h5."""
    folder.mkdir()
    (folder / "config.json").write_bytes((run / "config.json").read_bytes())
    (folder / "final.weights.h5").write_bytes(data)
    return folder


@pytest.mark.slow
def test_bad_weight_files_are_one_line(run, tmp_path, capsys):
    weights = (run / "final.weights.h5").read_bytes()
    junk = _weights_copy(run, tmp_path / "junk", os.urandom(4096))
    assert "is not a readable .weights.h5" in _one_line_error(capsys, "eval", "--weights", junk)
    cut = _weights_copy(run, tmp_path / "cut", weights[:len(weights) // 2])
    assert "is not a readable .weights.h5" in _one_line_error(capsys, "eval", "--weights", cut)
    # the default config (128 px, width 0.25) given explicitly: another architecture
    line = _one_line_error(capsys, "eval", "--weights", run, "--config", "default")
    assert "does not fit the model" in line and "model.width=0.25" in line
    pickle = tmp_path / "model.pth"
    pickle.write_bytes(b"\x80\x04\x95 not weights")
    line = _one_line_error(capsys, "eval", "--weights", pickle, "--config", "default")
    assert "model.pth" in line and "convert-weights" in line


def test_an_unsafe_torch_file_is_one_line(tmp_path, capsys, monkeypatch):
    """torch.load(weights_only=True) refuses a .pth holding Python objects (torch is not
    installed here: a stand-in raises its error, message and all)."""
    import pickle
    import types
    message = ("Weights only load failed. ... Re-running `torch.load` with `weights_only` set to "
               "`False` will likely succeed, but it can result in arbitrary code execution.")

    def load(*args, **kwargs):
        raise pickle.UnpicklingError(message)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(load=load))
    src = tmp_path / "resnet18.pth"
    src.write_bytes(b"\x80\x02 pickled code")
    with pytest.raises(SystemExit) as exit_info:  # convert-weights' own exit
        cli.main(["convert-weights", str(src), str(tmp_path / "out.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert "resnet18.pth" in err[0] and "weights_only" not in err[0] and ".safetensors" in err[0]


def test_a_keras_file_refused_by_safe_mode_is_one_line(tmp_path, capsys):
    unsafe = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x + 1)])
    unsafe.save(str(tmp_path / "unsafe.keras"))
    line = _one_line_error(capsys, "predict", "--model", tmp_path / "unsafe.keras",
                           _png(tmp_path / "a.png"), "--out-dir", tmp_path / "out")
    assert "unsafe.keras" in line and "safe mode" in line and "safe_mode=False" not in line


@pytest.mark.parametrize("option,value", [("--score-threshold", "1.5"), ("--nms-iou", "0"),
                                          ("--max-detections", "0")])
def test_export_options_out_of_range_are_one_line(run, tmp_path, capsys, monkeypatch, option,
                                                  value):
    monkeypatch.chdir(tmp_path)
    assert option in _one_line_error(capsys, "export", "--weights", run, option, value,
                                     *RUN_MODEL)


def test_names_too_long_for_the_file_system_are_one_line(run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _one_line_error(capsys, "export", "--weights", run, "--name", "a" * 300, *RUN_MODEL)
    assert "model name" in line and "300 characters" in line
    line = _one_line_error(capsys, "train", "--set", f"name={'b' * 300}", "--set",
                           "train.epochs=1", "--set", "data.num_train=8", "--set",
                           "train.batch_size=8")
    assert "'name'" in line and "300 characters" in line


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    line = _one_line_error(capsys, "train", "--config", path, "--print-config")
    assert "latin1.yaml" in line and "UTF-8" in line


def _alias_bomb(levels):
    """A YAML list of ``levels`` nested anchors, each alias list 10 times the previous one:
    10^levels values once expanded, from a few hundred bytes."""
    items = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    items += [f"&a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, levels)]
    return f"[{', '.join(items)}]"


def test_yaml_alias_bombs_are_refused_in_bounded_time_and_size(tmp_path, capsys):
    """A value built of aliases is neither expanded past a bound (10^10 values here) nor
    printed whole in an error (10^4 values: a wrong type for model.width)."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"model:\n  width: {_alias_bomb(10)}\n")
    assert len(bomb.read_bytes()) < 1000
    line = _one_line_error(capsys, "train", "--config", bomb, "--print-config")
    assert "bomb.yaml" in line and "aliases" in line and len(line) < 300
    line = _one_line_error(capsys, "train", "--set", f"model.width={_alias_bomb(4)}",
                           "--print-config")
    assert "'model.width' must be a number" in line and len(line) < 300

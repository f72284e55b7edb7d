"""The package as a user meets it: the installed `mgdet` command outside the checkout, the public
API, the README's Python blocks, the command line's help, logging and outputs."""
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
import yaml
from PIL import Image

from tests import ROOT

SMOKE = ["--set", "train.epochs=1", "--set", "data.num_train=16", "--set", "data.num_eval=8",
         "--set", "train.batch_size=8", "--set", "eval.batch_size=8", "--set",
         "model.image_size=64", "--set", "train.eval_every=0"]


def _env_without_checkout():
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}


def _installed_mgdet(tmp_path):
    """``(command, env)`` running an installed, non-editable ``mgdet``: the one in this
    environment (CI installs the wheel with ``pip install .``), else a wheel built here from
    the checkout and installed with ``--target`` (dependencies from this environment)."""
    env = _env_without_checkout()
    script = os.path.join(sysconfig.get_path("scripts"), "mgdet")
    if os.path.isfile(script):
        probe = subprocess.run([sys.executable, "-c", "import mgdet; print(mgdet.__file__)"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        package = os.path.dirname(probe.stdout.strip())
        if probe.returncode == 0 and os.path.isdir(os.path.join(package, "configs")):
            return [script], env  # a wheel (configs inside), not an editable install
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    ROOT], check=True, timeout=600, env=env)
    wheel = next(wheels.glob("mgdet-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, timeout=600, env=env)
    env["PYTHONPATH"] = str(site)
    return [str(site / "bin" / "mgdet")], env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(command, env)`` of the installed ``mgdet`` (one wheel for the module's tests)."""
    return _installed_mgdet(tmp_path_factory.mktemp("install"))


@pytest.mark.slow
def test_installed_mgdet_trains_the_default_config_outside_the_checkout(tmp_path, installed):
    command, env = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([sys.executable, "-c", "import mgdet, mgdet.config as c; "
                            "print(mgdet.__file__); print(c.configs_dir())"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
    package_file, configs = where.stdout.split()
    # CI's virtualenv may sit inside the checkout (.venv/): what matters is that the package is
    # not the checkout's own source folder
    assert os.path.dirname(package_file) != os.path.join(ROOT, "mgdet"), \
        "imported the checkout, not the install"
    assert configs.startswith(os.path.dirname(package_file))  # configs shipped in the package
    shown = subprocess.run(command + ["train", "--config", "retinanet_resnet18_voc",
                                      "--print-config"], cwd=work, env=env, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "arch: retinanet" in shown.stdout and "source: voc" in shown.stdout  # bases shipped
    run = subprocess.run(command + ["train"] + SMOKE, cwd=work, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = work / "runs" / "default"
    assert (out / "final.weights.h5").is_file() and (out / "eval.json").is_file()
    assert f"outputs in {out}" in run.stdout  # says where its outputs are
    for noise in ("cuInit", "cudart_stub", "absl::InitializeLog", "cpu_feature_guard"):
        assert noise not in run.stderr, noise  # TF's C++ start-up log is quiet by default
    assert "per_class" in json.loads((out / "eval.json").read_text())
    # eval: JSON with AP per class, PR curves and the confusion matrix, and their pictures
    evaluated = subprocess.run(command + ["eval", "--weights", str(out)] + SMOKE, cwd=work,
                               env=env, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((out / "final.eval.json").read_text())
    assert len(report["per_class"]) == 7 and len(report["pr_curves"]) == 7
    assert np.array(report["confusion"]["matrix"]).shape == (8, 8)
    for picture in ("final.eval.pr_curves.png", "final.eval.confusion.png"):
        with Image.open(out / picture) as im:
            assert im.size[0] > 300, picture


@pytest.mark.slow
def test_public_api_is_small_lazy_and_callable():
    code = ("import sys, mgdet; print(sorted(mgdet.__all__)); "
            "print('tensorflow' in sys.modules); import mgdet.inference as p; "
            "print(all(callable(getattr(mgdet, n)) and not isinstance(getattr(mgdet, n), "
            "type(sys)) for n in mgdet.__all__), p.list_images.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    names, tf_loaded, last = out.stdout.splitlines()
    assert eval(names) == ["build_datasets", "build_model", "evaluate", "export_saved_model",
                           "load_config", "load_pretrained", "predict", "train"]
    assert tf_loaded == "False"  # `import mgdet` is instant
    assert last == "True list_images"  # plain functions; the modules keep their own names


@pytest.mark.slow
def test_drawing_depends_on_nothing_that_loads_models():
    code = ("import sys, mgdet.viz.drawing; print(sorted(m for m in sys.modules if m.startswith("
            "('mgdet.models', 'mgdet.inference', 'mgdet.training')) or m in ('tensorflow', "
            "'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.stdout.split() == ["[]"], out.stdout + out.stderr


def test_every_flag_has_help_and_global_options_come_before_the_command():
    from mgdet.cli import build_parser
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, sub in [("mgdet", parser)] + list(subparsers.choices.items()):
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"
    from mgdet.cli import setup_logging
    logger = logging.getLogger("mgdet")
    saved = logger.level, list(logger.handlers)
    try:
        for verbosity, level in ((-1, logging.WARNING), (0, logging.INFO), (1, logging.DEBUG)):
            setup_logging(verbosity)
            assert logger.getEffectiveLevel() == level
        assert len(logger.handlers) == max(1, len(saved[1]))  # one handler, however often called
    finally:
        logger.setLevel(saved[0])
        logger.handlers[:] = saved[1]


def test_eval_json_goes_beside_the_weights_it_evaluated(tmp_path):
    from mgdet.cli import eval_output_path
    assert eval_output_path(str(tmp_path / "run" / "best.weights.h5")) == \
        str(tmp_path / "run" / "best.eval.json")
    assert eval_output_path("other/final.weights.h5") == \
        os.path.join(os.path.abspath("other"), "final.eval.json")


def _readme_api_blocks():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.slow
def test_readme_python_api_blocks_run_end_to_end(tmp_path, monkeypatch):
    blocks = _readme_api_blocks()
    assert len(blocks) >= 2 and any("mgdet.predict" in b for b in blocks)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md (Python API)", "exec"), namespace)
    assert 0.0 <= namespace["metrics"]["AP"] <= 1.0 and namespace["metrics"]["steps"] == 4
    det = namespace["det"]
    assert det["boxes"].shape[1:] == (4,) and len(det["names"]) == len(det["scores"])
    assert (tmp_path / "exports" / "notebook" / "1" / "saved_model.pb").is_file()
    # predict() on the Keras model in memory gives the SavedModel's detections
    import mgdet
    import numpy as np
    image = namespace["images"][0].numpy()
    from_model = mgdet.predict(namespace["model"], image, score_threshold=0.05)[0]
    from_export = mgdet.predict("exports/notebook/1", image, score_threshold=0.05)[0]
    assert len(from_model["scores"]) == len(from_export["scores"]) > 0
    np.testing.assert_allclose(np.sort(from_model["scores"]), np.sort(from_export["scores"]),
                               atol=1e-4)
    assert (tmp_path / "runs" / "notebook" / "final.weights.h5").is_file()
    shutil.rmtree(tmp_path / "runs")


def _readme_section(title):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return re.split(r"\n##+ ", re.split(rf"\n##+ {re.escape(title)}\n", text, maxsplit=1)[1],
                    maxsplit=1)[0]


# Appended to every `mgdet train` of the README's own-data section: a run of seconds.
TINY_RUN = ["--set", "train.epochs=1", "--set", "train.batch_size=4", "--set",
            "model.image_size=64", "--set", "model.width=0.125", "--set", "train.eval_every=0",
            "--set", "data.num_train=16", "--set", "data.num_eval=8", "--set", "eval.batch_size=8"]


def _coco_files(work, data):
    """A tiny COCO-format dataset where the config's ``data`` keys point: 10 JPEGs with 1-2
    boxes each, 8 of them for training, 2 classes."""
    os.makedirs(work / data["train_images"], exist_ok=True)
    os.makedirs(work / data["eval_images"], exist_ok=True)
    rng = np.random.default_rng(0)
    splits = {data["train_ann"]: (data["train_images"], range(1, 9)),
              data["eval_ann"]: (data["eval_images"], range(9, 11))}
    for ann, (folder, ids) in splits.items():
        images, anns = [], []
        for i in ids:
            pixels = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
            for j in range(1 + i % 2):
                x, y = 4 + 28 * j, 8
                pixels[y:y + 24, x:x + 24, j] = 255
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1 + j,
                             "bbox": [x, y, 24, 24], "iscrowd": 0, "area": 576.0})
            Image.fromarray(pixels).save(work / folder / f"{i}.jpg")
            images.append({"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48})
        os.makedirs(os.path.dirname(work / ann), exist_ok=True)
        (work / ann).write_text(json.dumps({"images": images, "annotations": anns, "categories": [
            {"id": 1, "name": "square"}, {"id": 2, "name": "other"}]}))


@pytest.mark.slow
def test_readme_own_data_and_fine_tuning_commands_run_from_the_installed_package(
        tmp_path, installed):
    """The README's own-data section as written: its YAML saved where its first line says, a
    dataset where it points, and each shell command run in that order by the installed
    ``mgdet`` in an empty folder (``TINY_RUN`` appended to each command)."""
    command, env = installed
    section = _readme_section("Train on your own data")
    (config_text,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    config_path = re.match(r"# (\S+\.yaml)", config_text).group(1)
    work = tmp_path / "mine"
    (work / config_path).parent.mkdir(parents=True)
    (work / config_path).write_text(config_text)
    _coco_files(work, yaml.safe_load(config_text)["data"])
    lines = [line.split(" #")[0].strip()
             for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)
             for line in block.splitlines() if line.strip()]
    assert lines and all(line.startswith(("mgdet train", "mgdet eval")) for line in lines), lines
    outputs = []
    for line in lines:
        run = subprocess.run(command + shlex.split(line)[1:] + TINY_RUN, cwd=work, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{line}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        outputs.append(run.stdout + run.stderr)
    name = os.path.splitext(os.path.basename(config_path))[0]
    assert (work / "runs" / name / "final.weights.h5").is_file()
    assert (work / "runs" / name / "final.eval.json").is_file()  # `mgdet eval` of the run
    assert f"runs/{name}/config.json (the run that wrote the weights" in outputs[1]
    assert (work / "runs" / "default" / "final.weights.h5").is_file()
    finetuned = json.loads((work / "runs" / f"{name}-2" / "eval.json").read_text())
    assert sorted(finetuned["per_class"]) == ["other", "square"]
    assert "initialized from runs/default (class head re-initialized for 2 classes)" in \
        outputs[-1]
    assert "train.warmup_steps 200 shortened to 0" in outputs[-1]  # 2 steps: said in the log

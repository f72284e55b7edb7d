"""Training loop, resumption, config validation and the CLI's error messages (tiny runs)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mgdet.config import ConfigError, load_config
from mgdet.training.rundir import ResumeError

from tests import ROOT

TINY = ["model.image_size=64", "model.width=0.125", "data.num_train=32", "data.num_eval=8",
        "data.max_objects=10", "train.batch_size=8", "train.warmup_steps=2", "train.lr=0.01",
        "train.eval_every=1", "eval.batch_size=8", "eval.max_detections=50"]


def tiny_config(tmp_path, *extra):
    return load_config(os.path.join(ROOT, "configs", "default.yaml"),
                       TINY + [f"train.out_dir={tmp_path}"] + list(extra))


@pytest.mark.slow
def test_train_resume_continues_from_the_right_step(tmp_path):
    from mgdet.training.loop import train
    # 8 of the 32 training images are held out to pick the best weights: 24 train, 3 steps
    first = train(tiny_config(tmp_path, "train.epochs=1", "data.val_fraction=0.25"), verbose=0)
    assert first["steps"] == 3 and os.path.isdir(tmp_path / "checkpoints")
    for name in ("final.weights.h5", "best.weights.h5", "config.json", "eval.json"):
        assert (tmp_path / name).is_file(), name
    assert 0.0 <= first["AP"] <= 1.0 and len(first["history"]) == 1
    assert set(first["per_class"]) == set(first["history"][0]["per_class"]) and len(
        first["per_class"]) == 7  # AP per class in eval.json, and in the history
    tags = _tensorboard_tags(tmp_path / "logs" / "eval")
    assert {"eval/AP", "val/AP", "eval_AP_per_class/circle", "eval/detections"} <= tags, tags
    best = (tmp_path / "best.weights.h5").read_bytes()
    state = json.loads((tmp_path / "train_state.json").read_text())
    assert state["best_epoch"] == 1 and first["best_on"] == "val"
    assert state["best_ap"] == pytest.approx(first["history"][0]["val_AP"])
    state["best_ap"] = 0.99  # as if epoch 1 had been excellent: epoch 2 must not replace it
    (tmp_path / "train_state.json").write_text(json.dumps(state))
    resumed = train(tiny_config(tmp_path, "train.epochs=2", "data.val_fraction=0.25"),
                    resume=True, verbose=0)
    assert resumed["steps"] == 6  # optimizer iterations restored: 3 + 3 more
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]  # the history is kept
    assert resumed["best_AP"] == 0.99 and resumed["best_epoch"] == 1
    assert (tmp_path / "best.weights.h5").read_bytes() == best
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert [h["epoch"] for h in saved["history"]] == [1, 2] and saved["best_AP"] == 0.99
    assert os.path.isdir(tmp_path / "logs")
    # the last checkpoint holds every variable the final weights hold (batch-norm statistics too)
    final = _final_and_checkpoint_weights(tiny_config(tmp_path), tmp_path, step=6)
    assert all(np.array_equal(a, b) for a, b in final), "checkpoint != final.weights.h5"
    # resuming the finished run, or with another detector or batch size, changes nothing
    kept = {name: (tmp_path / name).read_bytes() for name in
            ("final.weights.h5", "eval.json", "config.json", "mgdet_run.json")}
    for extra, match in [((), "is finished"),
                         (("model.arch=retinanet", "model.backbone=resnet18"),
                          "model.arch 'fssd' -> 'retinanet'"),
                         (("train.batch_size=4",), "train.batch_size 8 -> 4.*steps per epoch 3 -> 6"),
                         (("model.width=0.25",), "model.width 0.125 -> 0.25")]:
        with pytest.raises(ResumeError, match=match):
            train(tiny_config(tmp_path, "train.epochs=2", "data.val_fraction=0.25", *extra),
                  resume=True, verbose=0)
        assert {name: (tmp_path / name).read_bytes() for name in kept} == kept, extra


def _final_and_checkpoint_weights(cfg, run, step):
    """Pairs (final.weights.h5 value, ckpt-<step> value) of every variable of the run's model."""
    import mgdet
    import tensorflow as tf
    from mgdet.training.checkpoint import model_keys
    names = json.loads((run / "config.json").read_text())["class_names"]
    models = [mgdet.build_model(cfg, class_names=names) for _ in range(2)]
    for model in models:
        model(tf.zeros([1, cfg.model.image_size, cfg.model.image_size, 3]), training=False)
    models[0].load_weights(str(run / "final.weights.h5"))
    tf.train.Checkpoint(model=tf.train.Checkpoint(**model_keys(models[1]))).restore(
        str(run / "checkpoints" / f"ckpt-{step}")).expect_partial().assert_existing_objects_matched()
    return [(a.numpy(), b.numpy()) for a, b in zip(models[0].variables, models[1].variables)]


def _tensorboard_tags(folder):
    """Every summary tag written under ``folder`` (TensorBoard event files)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    return set(tags.get("tensors", [])) | set(tags.get("scalars", [])) | set(tags.get("images", []))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    from mgdet.training.loop import train
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_config(tmp_path, "train.epochs=1"), resume=True, verbose=0)


@pytest.mark.parametrize("override,message", [
    ("model.arhc=fssd", "unknown config key 'model.arhc'"),
    ("train.epochs=many", "'train.epochs' must be an integer"),
    ("assign.strategy=both", "'assign.strategy' is 'both'"),
    ("assign.sigma=0.5", "'assign.sigma' must be a finite number in (1, 100]"),
    ("model.image_size=300", "multiple of 64"),
    ("model.arch=rfbnet", "VGG16 only"),
])
def test_bad_config_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(os.path.join(ROOT, "configs", "default.yaml"), [override])


@pytest.mark.slow
def test_every_shipped_config_validates_and_builds_its_model():
    import mgdet
    for name in sorted(n for n in os.listdir(os.path.join(ROOT, "configs")) if n.endswith(".yaml")):
        # (the paper configs' weights file is not here: tests/convert/test_convert_weights.py)
        cfg = load_config(os.path.join(ROOT, "configs", name), {"model": {"weights": None}})
        assert cfg.name == name[:-5]
        if cfg.model.num_classes:  # the paper's configs: build at a small size to stay fast
            from mgdet.config import replace
            small = replace(cfg, model={"image_size": 64, "width": 0.125})
            model = mgdet.build_model(small)
            assert model.num_classes == cfg.model.num_classes


def _cli(*args, cwd=ROOT):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_cli_bad_key_is_one_clear_error_without_traceback():
    out = _cli("train", "--set", "model.arhc=fssd")
    assert out.returncode == 2
    assert "unknown config key 'model.arhc'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_cli_missing_config_and_dataset_are_clear_errors(tmp_path):
    out = _cli("train", "--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "nope.yaml" in out.stderr and "Traceback" not in out.stderr
    out = _cli("train", "--set", "data.source=voc", "--set", f"data.root={tmp_path / 'VOCdevkit'}",
               "--set", "model.num_classes=20")
    assert out.returncode == 2 and "VOCdevkit" in out.stderr and "Traceback" not in out.stderr


# --- faults: NaN, SIGTERM, run folders, resumed best AP (issue: nothing is lost) ---------------

FAST = ["model.image_size=64", "model.width=0.25", "data.num_train=16", "data.num_eval=4",
        "data.max_objects=10", "train.batch_size=4", "train.warmup_steps=0",
        "eval.batch_size=4", "eval.max_detections=20"]


def _checkpoint_weights(run, step, cfg):
    """The model weights stored in ``<run>/checkpoints/ckpt-<step>``."""
    import mgdet
    import tensorflow as tf
    from mgdet.training.checkpoint import model_keys
    with open(os.path.join(run, "config.json")) as f:
        model = mgdet.build_model(cfg, class_names=json.load(f)["class_names"])
    model(tf.zeros([1, 64, 64, 3]), training=False)
    tf.train.Checkpoint(model=tf.train.Checkpoint(**model_keys(model))).restore(
        os.path.join(run, "checkpoints", f"ckpt-{step}")).expect_partial()
    return [w.numpy() for w in model.weights]


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
    import keras
    from mgdet.training.faults import TrainingDiverged
    from mgdet.training.loop import train

    class PoisonAt(keras.callbacks.Callback):  # a NaN weight before step 2 of epoch 2
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:
                kernel = self.model.trainable_weights[0]
                kernel.assign(kernel.numpy() * np.float32("nan"))

    cfg = load_config(os.path.join(ROOT, "configs", "default.yaml"),
                      FAST + ["train.epochs=3", "train.eval_every=0"])
    with pytest.raises(TrainingDiverged) as err:
        train(cfg, verbose=0, out_dir=str(tmp_path), callbacks=[PoisonAt()])
    message = str(err.value)
    assert "loss nan" in message and "epoch 2, step 2 of this epoch (global step 6)" in message
    assert "ckpt-4 is kept" in message
    ckpts = sorted(f for f in os.listdir(tmp_path / "checkpoints") if f.endswith(".index"))
    assert ckpts == ["ckpt-4.index"]  # nothing saved at or after the NaN
    assert all(np.isfinite(w).all() for w in _checkpoint_weights(str(tmp_path), 4, cfg))
    for name in ("final.weights.h5", "best.weights.h5", "eval.json"):
        assert not (tmp_path / name).exists(), name


def test_clip_norm_clips_the_global_gradient_norm():
    import tensorflow as tf
    from mgdet.training.optim import build_optimizer
    cfg = load_config(None, ["train.optimizer=sgd", "train.lr=0.1", "train.min_lr=0.1",
                             "train.warmup_steps=0", "train.momentum=0", "train.weight_decay=0",
                             "train.clip_norm=0.5"])
    opt = build_optimizer(cfg.train, total_steps=10)
    a, b = tf.Variable(np.zeros(3, np.float32)), tf.Variable(np.zeros(2, np.float32))
    grads = [tf.constant([3.0, 4.0, 0.0]), tf.constant([0.0, 12.0])]  # global norm 13
    opt.apply_gradients(zip(grads, [a, b]))
    step = np.concatenate([a.numpy(), b.numpy()])
    np.testing.assert_allclose(np.linalg.norm(step), 0.1 * 0.5, rtol=1e-5)
    np.testing.assert_allclose(step, -0.1 * 0.5 / 13 * np.array([3, 4, 0, 0, 12]), rtol=1e-5)


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_step_exits_cleanly_and_resume_finishes(tmp_path):
    import re
    import signal
    import time
    run = tmp_path / "run"
    sets = [a for s in FAST + ["train.epochs=200", "train.eval_every=0"] for a in ("--set", s)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "train", *sets,
                             "--out-dir", str(run)], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "checkpoint").exists() and proc.poll() is None:
        assert time.time() < deadline, "no checkpoint after 300 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    found = re.search(r"stopped by SIGTERM at epoch (\d+), step (\d+) of this epoch \(global step "
                      r"(\d+)\): checkpoint (\S+) written", err)
    assert found, err[-2000:]
    epoch, step, global_step = (int(found.group(i)) for i in (1, 2, 3))
    assert epoch >= 2 and 1 <= step <= 4 and global_step == 4 * (epoch - 1) + step
    assert found.group(4).endswith(f"ckpt-{global_step}")
    assert (run / "checkpoints" / f"ckpt-{global_step}.index").is_file()
    assert not (run / "final.weights.h5").exists()
    # --resume finishes the interrupted epoch (the steps it had left) and stops there.
    from mgdet.training.loop import train
    cfg = load_config(os.path.join(ROOT, "configs", "default.yaml"),
                      FAST + [f"train.epochs={epoch}", "train.eval_every=0"])
    result = train(cfg, resume=True, verbose=0, out_dir=str(run))
    assert result["steps"] == 4 * epoch and (run / "final.weights.h5").is_file()


def test_cli_refuses_a_used_out_dir_and_an_existing_export_version(tmp_path, capsys,
                                                                   monkeypatch):
    import cli
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "eval.json").write_text("{}")
    assert cli.main(["train", "--out-dir", str(tmp_path / "used")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty" in err[0] and "--overwrite" in err[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "saved_models" / "default" / "1").mkdir(parents=True)
    (tmp_path / "saved_models" / "default" / "1" / "saved_model.pb").write_text("")
    assert cli.main(["export", "--version", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--version" in err[0]


def test_empty_eval_split_is_refused_at_start_and_leaves_no_run_folder(tmp_path):
    from mgdet.training.loop import train
    from tests.data_files import jpeg
    images, anns = [], []
    for i in range(8):
        jpeg(str(tmp_path / f"{i}.jpg"), 64, 64, seed=i)
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 64, "height": 64})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                     "bbox": [4, 4, 30, 30], "area": 900.0})
    categories = [{"id": 1, "name": "thing"}]
    (tmp_path / "train.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": categories}))
    (tmp_path / "eval.json").write_text(json.dumps(
        {"images": [], "annotations": [], "categories": categories}))
    cfg = load_config(os.path.join(ROOT, "configs", "default.yaml"), [
        "model.image_size=64", "model.width=0.125", "train.batch_size=4", "data.source=coco_json",
        f"data.train_ann={tmp_path / 'train.json'}", f"data.train_images={tmp_path}",
        f"data.eval_ann={tmp_path / 'eval.json'}", f"data.eval_images={tmp_path}"])
    with pytest.raises(ConfigError, match="the eval split has no usable images"):
        train(cfg, out_dir=str(tmp_path / "run"), verbose=0)
    assert not (tmp_path / "run").exists()  # the run wrote nothing: its folder is removed


@pytest.mark.slow
def test_ctrl_c_in_the_first_epoch_says_no_checkpoint_exists(tmp_path):
    import keras
    from mgdet.training.loop import train

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    cfg = load_config(os.path.join(ROOT, "configs", "default.yaml"),
                      FAST + ["train.epochs=2", "train.eval_every=0"])
    with pytest.raises(KeyboardInterrupt, match="no checkpoint was written yet") as err:
        train(cfg, verbose=0, out_dir=str(tmp_path / "run"), callbacks=[CtrlC()])
    assert "--resume" not in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()

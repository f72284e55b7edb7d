"""Run folders (never overwrite a run), the resumed state file, and the fit plan of a resumed
run (pure file-system and arithmetic checks, no training)."""
import os

import pytest

from mgdet.training import rundir
from mgdet.config import ConfigError


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()


def _checkpointed(run):
    _touch(os.path.join(run, "checkpoints", "checkpoint"))


def test_default_folder_goes_to_the_next_free_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    said = []
    assert rundir.resolve_run_dir("exp", log=said.append) == os.path.join("runs", "exp")
    _touch("runs/exp/eval.json")
    assert rundir.resolve_run_dir("exp", log=said.append) == "runs/exp-2"
    assert "runs/exp-2" in said[-1] and "earlier run" in said[-1]
    _touch("runs/exp-2/eval.json")
    os.makedirs("runs/exp-3")  # empty: free
    assert rundir.resolve_run_dir("exp", log=said.append) == "runs/exp-3"
    _touch("runs/exp-3/x")
    _touch("runs/expx-9/x")  # another name's run does not count
    assert rundir.resolve_run_dir("exp", log=said.append) == "runs/exp-4"


def test_resume_takes_the_newest_checkpointed_run_of_the_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert rundir.resolve_run_dir("exp", resume=True) == "runs/exp"  # train() then says none
    for run in ("runs/exp", "runs/exp-2", "runs/exp-10"):
        _checkpointed(run)
    _touch("runs/exp-11/config.json")  # started, never checkpointed
    said = []
    assert rundir.resolve_run_dir("exp", resume=True, log=said.append) == "runs/exp-10"
    assert said == ["resuming the newest run of 'exp': runs/exp-10"]
    assert rundir.resolve_run_dir("exp", out_dir="runs/exp-2", resume=True) == "runs/exp-2"


def test_explicit_folder_not_empty_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    assert rundir.resolve_run_dir("exp", out_dir=str(out)) == str(out)  # absent: fine
    rundir.release(str(out))  # (nothing written: the claim is undone)
    out.mkdir()
    assert rundir.resolve_run_dir("exp", out_dir=str(out)) == str(out)  # empty: fine
    for name in rundir.OUTPUTS:  # what the run writes, recorded in its manifest
        path = rundir.output(str(out), name)
        _touch(path + "/f") if name in ("checkpoints", "logs") else _touch(path)
    _touch(str(out / "eval.json.tmp"))  # an interrupted write of a recorded output
    _touch(str(out / "notes.txt"))
    with pytest.raises(ConfigError, match="not empty.*--resume.*--overwrite"):
        rundir.resolve_run_dir("exp", out_dir=str(out))
    with pytest.raises(ConfigError, match="contradict"):
        rundir.resolve_run_dir("exp", out_dir=str(out), resume=True, overwrite=True)
    assert rundir.resolve_run_dir("exp", out_dir=str(out), overwrite=True, log=print) == str(out)
    assert sorted(os.listdir(out)) == [rundir.MANIFEST, "notes.txt"]  # only mgdet's outputs


def test_overwrite_removes_only_what_the_run_recorded(tmp_path):
    out = str(tmp_path / "run")
    assert rundir.resolve_run_dir("exp", out_dir=out) == out
    _touch(rundir.output(out, "eval.json"))
    for name in ("config.json", "final.weights.h5", "logs/mine.txt"):  # the user's files
        _touch(os.path.join(out, name))
    rundir.resolve_run_dir("exp", out_dir=out, overwrite=True)
    assert sorted(os.listdir(out)) == ["config.json", "final.weights.h5", "logs", rundir.MANIFEST]
    # a folder without a manifest: nothing is known to be mgdet's, nothing is removed
    other = tmp_path / "other"
    for name in ("config.json", "eval.json", "checkpoints/checkpoint"):
        _touch(str(other / name))
    with pytest.raises(ConfigError, match="no mgdet_run.json.*nothing was removed"):
        rundir.resolve_run_dir("exp", out_dir=str(other), overwrite=True)
    assert sorted(os.listdir(other)) == ["checkpoints", "config.json", "eval.json"]


def test_runs_started_together_never_share_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # two runs of one name, the second started before the first wrote anything
    assert rundir.resolve_run_dir("exp", log=print) == os.path.join("runs", "exp")
    assert rundir.resolve_run_dir("exp", log=print) == "runs/exp-2"
    out = str(tmp_path / "mine")
    assert rundir.resolve_run_dir("exp", out_dir=out) == out
    with pytest.raises(ConfigError, match="not empty"):  # claimed, although nothing written
        rundir.resolve_run_dir("exp", out_dir=out)
    # the claim itself is one exclusive create: of many racing claims exactly one wins
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        won = list(pool.map(rundir.claim, [str(tmp_path / "race")] * 16))
    assert won.count(True) == 1


def test_release_removes_only_the_claim_of_a_run_that_wrote_nothing(tmp_path):
    created, existing, written = (str(tmp_path / n) for n in ("created", "existing", "written"))
    os.makedirs(existing)
    for path in (created, existing, written):
        assert rundir.resolve_run_dir("exp", out_dir=path) == path
    _touch(rundir.output(written, "config.json"))
    for path in (created, existing, written):
        rundir.release(path)
    assert not os.path.exists(created)  # the run made it: removed
    assert os.listdir(existing) == []  # the user's empty folder stays
    assert sorted(os.listdir(written)) == ["config.json", rundir.MANIFEST]


def test_resume_refuses_a_folder_that_is_not_an_mgdet_run(tmp_path):
    user = tmp_path / "user"
    _touch(str(user / "config.json"))
    with pytest.raises(rundir.ResumeError, match="not an mgdet run folder"):
        rundir.check_resumable(str(user))
    old = tmp_path / "old"  # an mgdet run of a version without manifests
    _checkpointed(str(old))
    with pytest.raises(rundir.ResumeError, match="batch-norm statistics.*model.init_from="):
        rundir.check_resumable(str(old))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        rundir.check_resumable(str(tmp_path / "absent"))


def test_resume_checks_the_config_against_the_run(tmp_path):
    run = str(tmp_path)
    config = {"model": {"arch": "fssd", "backbone": "vgg16", "width": 0.125, "image_size": 64},
              "train": {"batch_size": 8, "optimizer": "adamw", "precision": "float32"}}
    rundir.write_json(os.path.join(run, "config.json"), {**config, "class_names": ["a", "b"]})
    rundir.update_manifest(run, steps_per_epoch=4)
    rundir.check_compatible(run, config, ["a", "b"], 4)  # the same: fine
    changed = {"model": {**config["model"], "arch": "retinanet"},
               "train": {**config["train"], "batch_size": 16}}
    with pytest.raises(rundir.ResumeError) as err:
        rundir.check_compatible(run, changed, ["a", "c"], 2)
    message = str(err.value)
    for part in ("model.arch 'fssd' -> 'retinanet'", "train.batch_size 8 -> 16",
                 "class names ['a', 'b'] -> ['a', 'c']", "steps per epoch 4 -> 2",
                 "model.init_from="):
        assert part in message, part
    assert "\n" not in message


def test_a_run_asked_in_auto_resumes_in_auto_wherever_it_resolves(tmp_path):
    """config.json keeps what the user asked: auto resumes with auto (on a machine where it
    resolves otherwise too); auto and an explicit precision are different requests."""
    run = str(tmp_path)
    config = {"model": {"arch": "fssd", "backbone": "vgg16", "width": 0.125, "image_size": 64},
              "train": {"batch_size": 8, "optimizer": "adamw", "precision": "auto"}}
    rundir.write_json(os.path.join(run, "config.json"), {**config, "class_names": ["a"]})
    rundir.update_manifest(run, steps_per_epoch=4, precision=[
        {"policy": "mixed_bfloat16", "reason": "AMX", "from_step": 0}])
    rundir.check_compatible(run, config, ["a"], 4)
    explicit = {**config, "train": {**config["train"], "precision": "mixed_bfloat16"}}
    with pytest.raises(rundir.ResumeError, match="train.precision 'auto' -> 'mixed_bfloat16'"):
        rundir.check_compatible(run, explicit, ["a"], 4)


def test_precision_history_records_each_change_from_its_step():
    amx = {"policy": "mixed_bfloat16", "reason": "AMX", "from_step": 0}
    history = rundir.precision_history(None, "mixed_bfloat16", "AMX", 0)
    assert history == [amx]
    # resumed at step 30 on the same kind of machine: nothing new
    assert rundir.precision_history(history, "mixed_bfloat16", "AMX", 30) == [amx]
    # resumed at step 30 on an Intel CPU without AMX
    moved = rundir.precision_history(history, "float32", "Intel CPU without AMX", 30)
    assert moved == [amx, {"policy": "float32", "reason": "Intel CPU without AMX",
                           "from_step": 30}]
    # resumed again at step 20 (an older checkpoint) on an AMD CPU: steps 20.. are retrained
    again = rundir.precision_history(moved, "mixed_bfloat16", "AMD CPU with avx512_bf16", 20)
    assert again == [amx, {"policy": "mixed_bfloat16", "reason": "AMD CPU with avx512_bf16",
                           "from_step": 20}]
    # a new run in the folder (--overwrite: step 0) forgets the earlier run's entries
    assert rundir.precision_history(again, "float32", "set in the config", 0) == [
        {"policy": "float32", "reason": "set in the config", "from_step": 0}]
    assert moved[0] is not history[0]  # the input list is not changed


def test_unreadable_state_file_is_a_warning_and_defaults(tmp_path, caplog):
    (tmp_path / rundir.STATE_FILE).write_text('{"best_ap": 0.5, "hist')  # cut by a full disk
    with caplog.at_level("WARNING", logger="mgdet"):
        state = rundir.load_state(str(tmp_path), up_to_epoch=3)
    assert state == {"best_ap": -1.0, "best_epoch": None, "history": []}
    [warning] = [r.getMessage() for r in caplog.records]
    assert "train_state.json is unreadable" in warning


def test_state_round_trip_drops_evaluations_the_checkpoint_does_not_cover(tmp_path):
    assert rundir.load_state(str(tmp_path)) == {"best_ap": -1.0, "best_epoch": None,
                                                 "history": []}
    history = [{"epoch": 1, "AP": 0.1}, {"epoch": 2, "AP": float("nan")}, {"epoch": 3, "AP": 0.3}]
    rundir.save_state(str(tmp_path), 0.3, 3, history)
    state = rundir.load_state(str(tmp_path), up_to_epoch=2)
    assert state["best_ap"] == 0.3 and state["best_epoch"] == 3
    assert state["history"] == [{"epoch": 1, "AP": 0.1}, {"epoch": 2, "AP": None}]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.parametrize("epochs,completed,step,expected", [
    (3, 0, 0, [(3, 0, 4)]),                      # a new run
    (3, 1, 4, [(3, 1, 4)]),                      # resumed at an epoch boundary
    (3, 1, 6, [(2, 1, 2), (3, 2, 4)]),           # SIGTERM after step 2 of epoch 2
    (2, 1, 7, [(2, 1, 1)]),                      # ... of the last epoch
    (3, 1, 8, [(3, 2, 4)]),                      # SIGTERM on the last step of epoch 2
    (3, 3, 12, []),                              # finished
])
def test_fit_plan(epochs, completed, step, expected):
    from mgdet.training.loop import fit_plan
    assert fit_plan(epochs, completed, step, 4) == expected

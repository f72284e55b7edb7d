"""Run folders (never overwrite a run), the resumed state file, and the fit plan of a resumed
run (pure file-system and arithmetic checks, no training)."""
import os

import pytest

from mgdet import rundir
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
    out.mkdir()
    assert rundir.resolve_run_dir("exp", out_dir=str(out)) == str(out)  # empty: fine
    for name in rundir.OUTPUTS:
        _touch(str(out / name / "f")) if name in ("checkpoints", "logs") else _touch(str(out / name))
    _touch(str(out / "notes.txt"))
    with pytest.raises(ConfigError, match="not empty.*--resume.*--overwrite"):
        rundir.resolve_run_dir("exp", out_dir=str(out))
    with pytest.raises(ConfigError, match="contradict"):
        rundir.resolve_run_dir("exp", out_dir=str(out), resume=True, overwrite=True)
    assert rundir.resolve_run_dir("exp", out_dir=str(out), overwrite=True, log=print) == str(out)
    assert sorted(os.listdir(out)) == ["notes.txt"]  # only mgdet's outputs were removed


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
    from mgdet.train import fit_plan
    assert fit_plan(epochs, completed, step, 4) == expected

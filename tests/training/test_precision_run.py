"""``train.precision: auto`` in a run: resolved at the start on the machine that trains (one
printed line), recorded in the run's manifest, while config.json keeps ``auto`` so that a
resume on another machine is not refused (tiny runs; the machine is a fixture cpuinfo)."""
import json
import os

import keras
import pytest

from mgdet.config import load_config
from mgdet.training import cpu, rundir
from tests import ROOT
from tests.training.test_cpu import AMX_XEON, BF16_XEON, write_cpuinfo
from tests.training.test_train import TINY


@pytest.mark.slow
def test_auto_run_records_what_it_trained_in_and_resumes_on_another_cpu(tmp_path, monkeypatch,
                                                                         capsys):
    from mgdet.training.loop import train
    run = tmp_path / "run"
    monkeypatch.setattr(cpu, "gpu_details", lambda: [])  # a CPU-only machine, wherever tested

    def config(epochs):
        return load_config(os.path.join(ROOT, "configs", "default.yaml"),
                           TINY + [f"train.out_dir={run}", f"train.epochs={epochs}",
                                   "train.precision=auto"])

    monkeypatch.setattr(cpu, "CPUINFO", write_cpuinfo(tmp_path, AMX_XEON))
    first = train(config(1), verbose=0)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "precision: mixed_bfloat16 (AMX)"
    assert keras.mixed_precision.global_policy().name == "float32"  # set back after the run
    assert json.loads((run / rundir.RUN_CONFIG).read_text())["train"]["precision"] == "auto"
    amx = {"policy": "mixed_bfloat16", "reason": "AMX", "from_step": 0}
    assert rundir.read_manifest(str(run))["precision"] == [amx]

    # resumed on an Intel CPU without AMX: accepted, goes on in float32 and says so
    monkeypatch.setattr(cpu, "CPUINFO", write_cpuinfo(tmp_path, BF16_XEON))
    resumed = train(config(2), resume=True, verbose=0)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "precision: float32 (Intel CPU without AMX: bf16 is slower there)"
    step = first["steps"]
    assert (f"precision: this run trained in mixed_bfloat16 up to step {step} (AMX); it goes "
            "on in float32") in lines
    assert resumed["steps"] == 2 * step
    assert json.loads((run / rundir.RUN_CONFIG).read_text())["train"]["precision"] == "auto"
    assert rundir.read_manifest(str(run))["precision"] == [amx, {
        "policy": "float32", "reason": "Intel CPU without AMX: bf16 is slower there",
        "from_step": step}]

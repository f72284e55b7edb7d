"""Run folders: where a training run writes, and the small state a resumed run restores.

Rules (``resolve_run_dir``):

* default folder ``runs/<name>``: a new run never writes into an earlier run; when the folder
  is taken it goes to the next free ``runs/<name>-2``, ``-3``, ... and says so;
* an explicit folder (``--out-dir``, ``train.out_dir``) that is not empty is refused unless
  ``overwrite`` (which removes mgdet's outputs in it, nothing else);
* ``resume`` continues the given folder, by default the newest run of that name that has a
  checkpoint.

``train_state.json`` (written atomically after every evaluation) holds the best AP so far, its
epoch and the evaluation history, so that a resumed run keeps them.
"""
import json
import os
import re
import shutil

from mgdet.config import ConfigError

RUNS_DIR = "runs"
STATE_FILE = "train_state.json"
CHECKPOINT_DIR = "checkpoints"
# What a training run writes; ``overwrite`` removes these and nothing else.
OUTPUTS = (CHECKPOINT_DIR, "logs", "best.weights.h5", "final.weights.h5", "eval.json",
           "config.json", STATE_FILE)


def json_safe(value):
    """``value`` with NaN (e.g. APs when there are no small objects) as None: strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / TF scalars
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def write_json(path, payload):
    """Write ``payload`` as strict JSON through a temporary file and an atomic rename."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(json_safe(payload), f, indent=2)
    os.replace(tmp, path)


def has_checkpoint(run_dir):
    """Whether ``run_dir`` holds a ``tf.train.CheckpointManager`` checkpoint index."""
    return os.path.isfile(os.path.join(run_dir, CHECKPOINT_DIR, "checkpoint"))


def _is_empty(path):
    return not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path))


def numbered_runs(base):
    """``base`` and its numbered siblings ``base-2``, ``base-3``... that exist, oldest first."""
    parent, name = os.path.split(base)
    found = [(1, base)] if os.path.isdir(base) else []
    if os.path.isdir(parent or "."):
        for entry in os.listdir(parent or "."):
            match = re.fullmatch(re.escape(name) + r"-(\d+)", entry)
            if match and int(match.group(1)) >= 2:
                found.append((int(match.group(1)), os.path.join(parent, entry)))
    return [path for _, path in sorted(found)]


def clear_outputs(run_dir):
    """Remove what a training run wrote in ``run_dir`` (see ``OUTPUTS``)."""
    for name in OUTPUTS:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def resolve_run_dir(name, out_dir=None, resume=False, overwrite=False, log=print):
    """The folder a training run of ``name`` writes to (see the module docstring).

    Args:
      name: the config name (default folder ``runs/<name>``).
      out_dir: an explicit folder (``--out-dir`` or ``train.out_dir``), or None.
      resume: continue a run (the folder is not checked here; ``train`` needs a checkpoint).
      overwrite: allow a non-empty folder and remove the previous run's outputs from it.
      log: where the choice is reported (one line).
    Raises:
      ConfigError: ``out_dir`` is not empty and neither ``resume`` nor ``overwrite`` is set.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: use one")
    base = out_dir or os.path.join(RUNS_DIR, name)
    if resume:
        if out_dir:
            return out_dir
        runs = [path for path in numbered_runs(base) if has_checkpoint(path)]
        if runs and runs[-1] != base:
            log(f"resuming the newest run of '{name}': {runs[-1]}")
        return runs[-1] if runs else base
    if _is_empty(base):
        return base
    if overwrite:
        clear_outputs(base)
        log(f"--overwrite: removed the previous run's outputs from {base}")
        return base
    if out_dir:
        raise ConfigError(f"output folder {out_dir!r} is not empty: pass --resume to continue "
                          "the run in it, --overwrite to replace it, or another --out-dir")
    k = 2
    while not _is_empty(f"{base}-{k}"):
        k += 1
    log(f"{base} holds an earlier run: this run writes to {base}-{k} (--resume continues the "
        f"newest run, --overwrite replaces {base})")
    return f"{base}-{k}"


def load_state(run_dir, up_to_epoch=None):
    """Best AP, its epoch and the evaluation history saved in ``run_dir`` (defaults when there
    is none); history entries after ``up_to_epoch`` (not covered by the checkpoint) are dropped.
    """
    state = {"best_ap": -1.0, "best_epoch": None, "history": []}
    path = os.path.join(run_dir, STATE_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            state.update(json.load(f))
    if state["best_ap"] is None:
        state["best_ap"] = -1.0
    if up_to_epoch is not None:
        state["history"] = [h for h in state["history"] if h["epoch"] <= up_to_epoch]
    return state


def save_state(run_dir, best_ap, best_epoch, history):
    write_json(os.path.join(run_dir, STATE_FILE),
               {"best_ap": best_ap, "best_epoch": best_epoch, "history": history})

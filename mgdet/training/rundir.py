"""Run folders: where a training run writes, and the small state a resumed run restores.

Rules (``resolve_run_dir``):

* default folder ``runs/<name>``: a new run never writes into an earlier run; when the folder
  is taken it goes to the next free ``runs/<name>-2``, ``-3``, ... and says so;
* an explicit folder (``--out-dir``, ``train.out_dir``) that is not empty is refused unless
  ``overwrite``, which removes what mgdet recorded that it wrote there, nothing else;
* a new run claims its folder atomically (it creates the run's manifest ``mgdet_run.json``
  with an exclusive create, in a folder that is absent or empty): two runs started at the same
  time never share a folder; a run that fails before writing anything removes its claim
  (:func:`release`);
* ``resume`` continues the given folder, by default the newest run of that name that has a
  checkpoint, and only an mgdet run folder (one with a manifest; :func:`check_resumable`)
  whose config matches (:func:`check_compatible`).

The manifest lists the outputs the run wrote (:func:`output` records a name before it is
written), the folder's creation by the run, the steps per epoch and the precision the run
trained in (:func:`precision_history`).

Precision: ``config.json`` keeps ``train.precision`` as asked, ``auto`` included, and resume
compares that value (a run started with ``auto`` resumes with ``auto`` on any machine); each
start resolves ``auto`` on its own machine (:func:`mgdet.training.cpu.resolve_precision`) and
the manifest's ``precision`` list records the policy and why from the global step it applied.

``train_state.json`` (written atomically after every evaluation) holds the best AP so far, its
epoch and the evaluation history, so that a resumed run keeps them.
"""
import glob
import json
import logging
import os
import re
import shutil

from mgdet.config import RUNS_DIR, ConfigError, load_config

# The files of a run folder (their one home: training writes them, eval / export / predict and
# fine-tuning read them).
STATE_FILE = "train_state.json"
CHECKPOINT_DIR = "checkpoints"
MANIFEST = "mgdet_run.json"
LOGS_DIR = "logs"  # TensorBoard
BEST_WEIGHTS = "best.weights.h5"  # best validation AP (only with data.val_fraction > 0)
FINAL_WEIGHTS = "final.weights.h5"  # what eval / export / predict use by default
EVAL_FILE = "eval.json"
RUN_CONFIG = "config.json"  # the run's config and class names, beside the weights
# What a training run writes (``output`` records each one in the manifest when it is written).
OUTPUTS = (CHECKPOINT_DIR, LOGS_DIR, BEST_WEIGHTS, FINAL_WEIGHTS, EVAL_FILE, RUN_CONFIG,
           STATE_FILE)
# Config values a resumed run must share with the run it continues ("section.key").
RESUME_KEYS = ("model.arch", "model.backbone", "model.width", "model.image_size",
               "train.batch_size", "train.optimizer", "train.precision")

log = logging.getLogger("mgdet")


class ResumeError(ConfigError):
    """A run cannot be resumed as asked; the message says why and what to do instead."""


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


def read_manifest(run_dir):
    """The run manifest of ``run_dir`` (``{"created", "outputs", ...}``), or None if none."""
    path = os.path.join(run_dir, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
        if not isinstance(manifest.get("outputs"), list):
            raise ValueError("no list of outputs")
    except (ValueError, AttributeError) as err:
        raise ConfigError(f"{path} is not a readable mgdet run manifest ({err}); nothing in "
                          f"{run_dir} was changed") from None
    return manifest


def claim(run_dir):
    """Claim ``run_dir`` for a new run: create it (or take it when it is an empty folder) and
    create its manifest exclusively. Returns False, changing nothing, when the folder is not
    empty or another process claimed it first."""
    created = False
    try:
        os.makedirs(run_dir)
        created = True
    except FileExistsError:
        if not os.path.isdir(run_dir) or os.listdir(run_dir):
            return False
    try:
        fd = os.open(os.path.join(run_dir, MANIFEST), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"created": created, "outputs": []}, f)
    return True


def precision_history(history, policy, reason, step):
    """The manifest's ``precision`` list after a training start at global ``step`` in
    ``policy`` (``reason``: :func:`mgdet.training.cpu.resolve_precision`'s).

    Entries are ``{"policy", "reason", "from_step"}``, oldest first. Entries from ``step`` on
    are dropped (the run retrains those steps; a new run starts at 0 with an empty list), and
    the start is appended unless the last entry already says the same.
    """
    kept = [dict(h) for h in (history or []) if h.get("from_step", 0) < step]
    if kept and (kept[-1].get("policy"), kept[-1].get("reason")) == (policy, reason):
        return kept
    return kept + [{"policy": policy, "reason": reason, "from_step": int(step)}]


def update_manifest(run_dir, **values):
    """Set ``values`` in the manifest of ``run_dir`` (created if there is none)."""
    manifest = read_manifest(run_dir) or {"created": False, "outputs": []}
    write_json(os.path.join(run_dir, MANIFEST), {**manifest, **values})


def output(run_dir, name):
    """The path of output ``name`` (one of ``OUTPUTS``) in ``run_dir``, recorded in the
    manifest first, so that ``overwrite`` removes it and :func:`release` keeps the folder."""
    manifest = read_manifest(run_dir) or {"outputs": []}
    if name not in manifest["outputs"]:
        update_manifest(run_dir, outputs=manifest["outputs"] + [name])
    return os.path.join(run_dir, name)


def release(run_dir):
    """Undo :func:`claim` for a run that failed before writing any output: remove the manifest,
    and the folder when the run created it and it is empty. Otherwise nothing changes."""
    manifest = read_manifest(run_dir)
    if manifest is None or manifest["outputs"]:
        return
    os.remove(os.path.join(run_dir, MANIFEST))
    if manifest.get("created") and not os.listdir(run_dir):
        os.rmdir(run_dir)


def clear_outputs(run_dir):
    """Remove the outputs the manifest of ``run_dir`` lists (with their temporary files).

    Raises:
      ConfigError: ``run_dir`` has no manifest: nothing there is known to be mgdet's.
    """
    manifest = read_manifest(run_dir)
    if manifest is None:
        raise ConfigError(f"--overwrite: {run_dir} has no {MANIFEST}, so nothing in it is known "
                          "to be an mgdet output (an older mgdet run, or another program's "
                          "files); nothing was removed: empty it yourself or choose another "
                          "--out-dir")
    for name in manifest["outputs"]:
        if name not in OUTPUTS:  # a hand-edited manifest names nothing else
            continue
        for path in glob.glob(glob.escape(os.path.join(run_dir, name)) + "*"):
            if os.path.basename(path) not in (name, name + ".tmp", name + ".tmp.weights.h5"):
                continue
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    update_manifest(run_dir, outputs=[])


def resolve_run_dir(name, out_dir=None, resume=False, overwrite=False, log=print):
    """The folder a training run of ``name`` writes to (see the module docstring); a new run's
    folder is claimed (:func:`claim`) before it is returned.

    Args:
      name: the config name (default folder ``runs/<name>``).
      out_dir: an explicit folder (``--out-dir`` or ``train.out_dir``), or None.
      resume: continue a run (the folder is not checked here: :func:`check_resumable`).
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
    if claim(base):
        return base
    if overwrite:
        clear_outputs(base)
        log(f"--overwrite: removed the previous run's outputs from {base}")
        return base
    if out_dir:
        raise ConfigError(f"output folder {out_dir!r} is not empty: pass --resume to continue "
                          "the run in it, --overwrite to replace it, or another --out-dir")
    k = 2
    while not claim(f"{base}-{k}"):
        k += 1
    log(f"{base} holds an earlier run: this run writes to {base}-{k} (--resume continues the "
        f"newest run, --overwrite replaces {base})")
    return f"{base}-{k}"


def check_resumable(run_dir):
    """Raise unless ``run_dir`` is an mgdet run folder with a checkpoint (nothing is changed).

    Raises:
      FileNotFoundError: no checkpoint in it.
      ResumeError: not an mgdet run, or one written before run manifests (its checkpoint
        misses most layers).
    """
    checkpoints = os.path.join(run_dir, CHECKPOINT_DIR)
    if read_manifest(run_dir) is None and has_checkpoint(run_dir):
        raise ResumeError(
            f"--resume: {run_dir} was written by an mgdet version whose checkpoints missed most "
            f"layers (no {MANIFEST}): it cannot be resumed without losing weights or batch-norm "
            f"statistics; start a new run from its weights with --set "
            f"model.init_from={os.path.join(run_dir, FINAL_WEIGHTS)} (or {BEST_WEIGHTS})")
    if read_manifest(run_dir) is None and not _is_empty(run_dir):
        raise ResumeError(f"--resume: {run_dir} is not an mgdet run folder (no {MANIFEST}); "
                          "nothing in it was changed: pass the folder of a run")
    if not glob.glob(os.path.join(glob.escape(checkpoints), "ckpt-*.index")):
        raise FileNotFoundError(f"--resume: no checkpoint under {checkpoints}; train without "
                                "--resume first")


def check_compatible(run_dir, config, class_names, steps_per_epoch):
    """Raise unless a run with ``config`` (a config dict), ``class_names`` and
    ``steps_per_epoch`` can continue the run in ``run_dir``: the same detector, classes, input
    size, batch size and steps per epoch (another batch size would change the steps per epoch
    and the learning-rate schedule under the checkpoint; it is refused, not converted).

    Raises:
      ResumeError: what differs (config value: run's -> now) and what to do instead.
    """
    path = os.path.join(run_dir, RUN_CONFIG)
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as err:
        raise ResumeError(f"--resume: the run's {path} is missing or unreadable ({err}); "
                          "cannot check that this config continues it") from None
    saved_steps = (read_manifest(run_dir) or {}).get("steps_per_epoch")
    differ = []
    for key in RESUME_KEYS:
        section, name = key.split(".")
        was, now = saved.get(section, {}).get(name), config.get(section, {}).get(name)
        if was != now:
            differ.append(f"{key} {was!r} -> {now!r}")
    if list(saved.get("class_names") or []) != list(class_names):
        differ.append(f"class names {saved.get('class_names')} -> {list(class_names)}")
    if saved_steps is not None and saved_steps != steps_per_epoch:
        differ.append(f"steps per epoch {saved_steps} -> {steps_per_epoch}")
    if differ:
        raise ResumeError(
            f"--resume: this config does not continue the run in {run_dir} ({'; '.join(differ)})"
            "; nothing was changed: resume with the run's values, or start a new run from its "
            f"weights with --set model.init_from={os.path.join(run_dir, FINAL_WEIGHTS)}")


def load_state(run_dir, up_to_epoch=None):
    """Best AP, its epoch and the evaluation history saved in ``run_dir`` (defaults when there
    is none); history entries after ``up_to_epoch`` (not covered by the checkpoint) are dropped.
    """
    state = {"best_ap": -1.0, "best_epoch": None, "history": []}
    path = os.path.join(run_dir, STATE_FILE)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                loaded = json.load(f)
            if not isinstance(loaded, dict) or not isinstance(loaded.get("history", []), list):
                raise ValueError("not a state object")
            state.update(loaded)
        except (OSError, ValueError) as err:
            log.warning("%s is unreadable (%s): the best AP and evaluation history of the epochs "
                        "before are lost (the next validation replaces best.weights.h5)", path, " ".join(str(err).split())[:120])
    if state["best_ap"] is None:
        state["best_ap"] = -1.0
    if up_to_epoch is not None:
        state["history"] = [h for h in state["history"] if h["epoch"] <= up_to_epoch]
    return state


def save_state(run_dir, best_ap, best_epoch, history):
    write_json(output(run_dir, STATE_FILE),
               {"best_ap": best_ap, "best_epoch": best_epoch, "history": history})


# --- reading a finished run (eval, export, predict, fine-tuning) -----------------------------

def run_config_path(weights):
    """The ``config.json`` of the training run that wrote ``weights`` (a run folder or a file in
    it), or None when there is none."""
    folder = weights if os.path.isdir(weights) else os.path.dirname(os.path.abspath(weights))
    path = os.path.join(folder, RUN_CONFIG)
    return path if os.path.isfile(path) else None


def config_beside(weights):
    """The training run's ``config.json`` next to a weights file (``cli.py train`` writes one),
    as ``(Config, class_names or None)``; ``(None, None)`` when there is none."""
    path = run_config_path(weights)
    if path is None:
        return None, None
    # the run's weights hold the trained backbone: its ImageNet starting file is not needed
    config = load_config(path, {"model": {"weights": None}})
    return config, list(config.class_names) or None


def resolve_weights(path):
    """A run folder -> its ``final.weights.h5``; a file -> itself (FileNotFoundError, saying
    what to give, when neither exists).

    The final weights, not ``best.weights.h5``: a model picked on some images must not be
    reported on them, and the best is only ever picked on the validation split held out of the
    training images (``data.val_fraction``); name it explicitly to use it."""
    if path and os.path.isdir(path):
        final = os.path.join(path, FINAL_WEIGHTS)
        if os.path.isfile(final):
            return final
        hint = (f"; {os.path.join(path, BEST_WEIGHTS)} (best validation AP) exists: "
                "pass it explicitly" if os.path.isfile(os.path.join(path, BEST_WEIGHTS))
                else "")
        raise FileNotFoundError(f"no final.weights.h5 in {path}: the run has not finished "
                                f"(`cli.py train --resume` finishes it){hint}")
    if path and not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} not found: give a .weights.h5 file written by "
                                "`cli.py train` or its output folder")
    return path

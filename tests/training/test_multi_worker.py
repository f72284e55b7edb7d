"""Training on several workers (MultiWorkerMirroredStrategy) with real worker processes on
127.0.0.1, on ports picked at run time: 2 and 3 workers train exactly as one process on the same
global batch and split each of its batches between them, the chief alone writes and evaluates, a killed worker fails the job within a
timeout and ``--resume`` on every worker continues from the last checkpoint.

Every process runs under a deadline and is killed in the fixture's teardown.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests.cluster import loopback_tf_configs

from tests import ROOT

DEADLINE_S = 600  # per group of processes: far above what they need, even on 2 busy cores
# The default config, tiny: 4 steps of 8 images per epoch, 8 eval images.
TINY = ["model.image_size=64", "model.width=0.25", "data.num_train=32", "data.num_eval=8",
        "data.max_objects=10", "train.batch_size=8", "train.warmup_steps=2",
        "eval.batch_size=8", "eval.max_detections=50"]


class Processes:
    """Python processes started with their own environment, output in log files; all are killed
    (SIGKILL) at :meth:`close` if still running."""

    def __init__(self, log_dir):
        self.log_dir, self.procs, self.logs = log_dir, [], []

    def start(self, argv, env_extra, name):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_extra)
        log = os.path.join(self.log_dir, f"{name}.log")
        with open(log, "w") as f:
            self.procs.append(subprocess.Popen([sys.executable] + argv, env=env, cwd=ROOT,
                                               stdout=f, stderr=subprocess.STDOUT))
        self.logs.append(log)
        return self.procs[-1]

    def wait(self, procs=None, deadline=None):
        """Exit codes of ``procs`` (default all); kills them all past ``deadline`` (time.time)."""
        deadline = deadline or time.time() + DEADLINE_S
        codes = []
        for p in procs or self.procs:
            try:
                codes.append(p.wait(timeout=max(deadline - time.time(), 0.1)))
            except subprocess.TimeoutExpired:
                self.close()
                pytest.fail(f"processes still running after their deadline:\n{self.tail()}")
        return codes

    def tail(self, chars=3000):
        out = []
        for log in self.logs:
            with open(log) as f:
                out.append(f"--- {os.path.basename(log)}\n{f.read()[-chars:]}")
        return "\n".join(out)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


@pytest.fixture
def processes(tmp_path):
    procs = Processes(str(tmp_path))
    try:
        yield procs
    finally:
        procs.close()


# One model, 3 training steps on 3 fixed global batches of 6 painted images (6: split evenly
# between 2 and between 3 workers): in one process (argv[1] == "single") or as one worker of a
# TF_CONFIG cluster ("worker"); writes the initial and final weights to argv[2] (.npz).
# argv[3]: a COCO-format JSON of 36 JPEG files, read with data.worker_sharding: files.
# The assignment is IoU-anchor: its labels do not depend on the predictions, so 3 steps compare
# the arithmetic alone. Under Mutual Guidance the labels rank the predictions, and the float
# rounding of another batch split (~1e-6 after one step, which test_distribute checks for MG)
# can turn a near-tie the other way in a later step: measured here on these batches, MG and L2C
# differ by 1.3e-3 after 3 steps (4.7e-5 after 2) on 2 or 3 workers alike, IoU and C2L by 3e-6.
_STEPS = textwrap.dedent(r'''
    import sys
    import numpy as np
    from mgdet.training import distributed
    role, out, coco_json = sys.argv[1:4]
    if role == "worker":
        strategy = distributed.multi_worker_strategy()  # before any other TF op
    import keras
    import tensorflow as tf
    from mgdet.models import MODELS
    from mgdet.training.optim import SGDWithL2
    from tests.batches import painted_batch
    if role == "single":
        strategy = tf.distribute.get_strategy()
    batches = [painted_batch(64, 6, 4, 3, seed=s) for s in (1, 2, 3)]
    images = np.concatenate([b[0] for b in batches])
    targets = {k: np.concatenate([b[1][k] for b in batches]) for k in batches[0][1]}
    dataset = distributed.shard(tf.data.Dataset.from_tensor_slices((images, targets)).batch(6),
                                strategy)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = MODELS["fssd"](num_classes=3, backbone="resnet18", image_size=64, width=0.25,
                               strategy="iou")
        model.compile(optimizer=SGDWithL2(l2=5e-4, learning_rate=0.05, momentum=0.9))
    initial = model.get_weights()
    history = model.fit(dataset, epochs=1, verbose=0).history
    # the training input pipeline itself (synthetic source, augmentation, shuffle, repeat):
    # a digest of every image this worker receives in the first epoch, step by step
    import hashlib
    from mgdet.config import load_config
    from mgdet.data.datasets import build_datasets
    cfg = load_config("default", ["model.image_size=64", "data.num_train=36", "data.num_eval=8",
                                  "data.max_objects=10", "train.batch_size=6"])
    train_ds, _, _, _, steps = build_datasets(cfg)
    batches = iter(strategy.experimental_distribute_dataset(distributed.shard(train_ds, strategy)))

    def digests(batches, steps):
        out = []
        for _ in range(steps):
            local = strategy.experimental_local_results(next(batches)[0])
            out.append([hashlib.sha1(np.asarray(im).tobytes()).hexdigest()
                        for part in local for im in np.asarray(part)])
        return out

    seen = digests(batches, steps)
    # data.worker_sharding: files, on JPEG files (no augmentation: an image's digest names its
    # file): each worker reads and decodes only its own share of the files
    cfg = load_config("default", ["model.image_size=64", "data.source=coco_json",
                                  f"data.train_ann={coco_json}", f"data.eval_ann={coco_json}",
                                  "data.augment=none", "data.max_objects=10",
                                  "train.batch_size=6", "data.worker_sharding=files"])
    worker = distributed.input_shard(strategy)
    files_ds, _, _, _, file_steps = build_datasets(cfg, worker)
    files_ds = distributed.shard(files_ds, strategy, "files")
    files_seen = digests(iter(strategy.experimental_distribute_dataset(files_ds)), file_steps)
    np.savez(out, replicas=strategy.num_replicas_in_sync, seen=np.array(seen),
             files_seen=np.array(files_seen), worker=np.array(worker or (0, 1)),
             loss=history["loss"][-1], num_pos_cls=history["num_pos_cls"][-1],
             **{f"initial_{i}": w for i, w in enumerate(initial)},
             **{f"final_{i}": w for i, w in enumerate(model.get_weights())})
''')


def _weights(npz, prefix):
    return [npz[f"{prefix}_{i}"] for i in range(len([k for k in npz if k.startswith(prefix)]))]


def _max_diff(npz_a, prefix_a, npz_b, prefix_b):
    """Largest |a - b| over all the weights of two saved sets."""
    return max(np.abs(a - b).max()
               for a, b in zip(_weights(npz_a, prefix_a), _weights(npz_b, prefix_b)))


def _coco_files(folder, count=36, side=64):
    """A COCO-format JSON of ``count`` distinct JPEG files, one box each."""
    from tests.data_files import jpeg
    images, anns = [], []
    for i in range(count):
        name = f"{i:03d}.jpg"
        jpeg(os.path.join(folder, name), side, side, seed=i)
        images.append({"id": i + 1, "file_name": name, "width": side, "height": side})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                     "bbox": [4, 4, 20 + i % 30, 24], "area": (20.0 + i % 30) * 24})
    path = os.path.join(folder, "instances.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": 1, "name": "thing"}]}, f)
    return path


@pytest.mark.slow
def test_two_and_three_workers_train_as_one_process_on_the_global_batch(tmp_path, processes):
    """One process, a cluster of 2 workers and a cluster of 3, side by side on the same global
    batches: the same weights after 3 steps, the same logged loss, and each worker of each
    cluster receives its disjoint share of every global batch."""
    coco_json = _coco_files(str(tmp_path))
    single_out = str(tmp_path / "single.npz")
    processes.start(["-c", _STEPS, "single", single_out, coco_json], {}, "single")
    clusters = {}
    for n in (2, 3):
        clusters[n] = [str(tmp_path / f"c{n}_worker{i}.npz") for i in range(n)]
        for i, tf_config in enumerate(loopback_tf_configs(n)):
            processes.start(["-c", _STEPS, "worker", clusters[n][i], coco_json],
                            {"TF_CONFIG": tf_config}, f"c{n}_worker{i}")
    assert processes.wait() == [0] * 6, processes.tail()
    single = np.load(single_out)
    assert _max_diff(single, "final", single, "initial") > 1e-3  # the steps changed the weights
    epoch, all_files = single["seen"], set(single["files_seen"].ravel())
    assert epoch.shape == (6, 6) and len(set(epoch.ravel())) == 36
    assert single["files_seen"].shape == (6, 6) and len(all_files) == 36
    for n, outs in clusters.items():
        workers = [np.load(path) for path in outs]
        assert [int(w["replicas"]) for w in workers] == [n] * n
        for worker in workers:
            for a, b in zip(_weights(single, "initial"), _weights(worker, "initial")):
                np.testing.assert_array_equal(a, b)
            diff = _max_diff(single, "final", worker, "final")
            print(f"max |w({n} workers) - w(1 process)| after 3 steps: {diff:.1e}")
            assert diff <= 1e-5, (n, diff)
            for key in ("loss", "num_pos_cls"):  # logs: global values, as in one process
                assert float(worker[key]) == pytest.approx(float(single[key]), rel=1e-4), key
        # input sharding (batches): each worker gets its 6/n images of every global batch of
        # one process's epoch: the shares are disjoint and complete, the step counts equal
        assert all(w["seen"].shape == (6, 6 // n) for w in workers)
        for step in range(6):
            shares = [set(w["seen"][step]) for w in workers]
            assert sum(len(x) for x in shares) == 6 and set().union(*shares) == set(epoch[step])
        # data.worker_sharding: files: worker i reads files i, i + n, ...: over the epoch's 6
        # steps each sees 36/n distinct images, the shares disjoint and together the 36 files
        # of one process's epoch (so no worker read a file of another's share)
        assert [tuple(w["worker"]) for w in workers] == [(i, n) for i in range(n)]
        files = [set(w["files_seen"].ravel()) for w in workers]
        assert all(w["files_seen"].shape == (6, 6 // n) for w in workers)
        assert [len(x) for x in files] == [36 // n] * n
        assert sum(len(x) for x in files) == 36 and set().union(*files) == all_files


def _train_argv(out_dir, *extra):
    argv = [os.path.join(ROOT, "cli.py"), "train", "--distribute", "multi_worker",
            "--out-dir", str(out_dir), "--set", "train.epochs=3", "--set", "train.eval_every=0"]
    for item in TINY:
        argv += ["--set", item]
    return argv + list(extra)


def _wait_for(path, procs, timeout):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow
def test_killed_worker_fails_the_job_and_resume_continues(tmp_path, processes):
    shared, other = tmp_path / "shared", tmp_path / "worker1_out"
    tmp1, tmp2 = tmp_path / "tmp1", tmp_path / "tmp2"
    tmp1.mkdir(), tmp2.mkdir()
    # 1. Two workers; worker 1 is killed once the chief has checkpointed epoch 1 (global step 4).
    configs = loopback_tf_configs(2)
    chief = processes.start(_train_argv(shared), {"TF_CONFIG": configs[0]}, "run1_chief")
    worker = processes.start(_train_argv(other), {"TF_CONFIG": configs[1], "TMPDIR": str(tmp1)},
                             "run1_worker1")
    assert _wait_for(str(shared / "checkpoints" / "ckpt-4.index"), [chief, worker], DEADLINE_S), \
        processes.tail()
    worker.send_signal(signal.SIGKILL)
    killed_at = time.time()
    code = processes.wait([chief], deadline=killed_at + 180)[0]
    failed_after = time.time() - killed_at
    print(f"chief exited with {code} {failed_after:.1f} s after worker 1 was killed")
    assert code == 2, processes.tail()
    with open(processes.logs[0]) as f:
        assert "error: a worker of the multi-worker job failed" in f.read()
    assert not (shared / "final.weights.h5").exists()
    assert not other.exists()  # worker 1 wrote nothing into its output folder
    import shutil
    shutil.copytree(shared / "checkpoints", tmp_path / "before_kill")  # (resuming rotates them)
    # 2. Both restarted with --resume: training continues from epoch 1.
    configs = loopback_tf_configs(2)
    resume = ("--resume", "--set", "train.eval_every=1")
    chief = processes.start(_train_argv(shared, *resume), {"TF_CONFIG": configs[0]}, "run2_chief")
    worker = processes.start(_train_argv(shared, *resume),
                             {"TF_CONFIG": configs[1], "TMPDIR": str(tmp2)}, "run2_worker1")
    assert processes.wait([chief, worker]) == [0, 0], processes.tail()
    with open(processes.logs[-2]) as f:
        assert "ckpt-4: epoch 1, step 4" in f.read()
    with open(shared / "eval.json") as f:
        result = json.load(f)
    assert result["steps"] == 12  # 4 restored + 8 more: no step lost or repeated
    _check_checkpoints_hold_every_variable(shared, tmp_path / "before_kill" / "ckpt-4",
                                           last=12)
    assert [h["epoch"] for h in result["history"]] == [2, 3]  # once per epoch, on the chief
    with open(processes.logs[-1]) as f:
        assert "AP50" not in f.read()  # the other worker neither evaluates nor prints
    assert os.listdir(tmp2) == []  # its temporary write folder was removed at exit


@pytest.mark.parametrize("value,match", [
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}',
     "not one of the cluster's tasks"),
])
def test_bad_tf_config_is_one_clear_error(monkeypatch, value, match):
    from mgdet.training.distributed import tf_config
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match=match):
        tf_config()


def test_reader_index_puts_the_chief_first_and_counts_only_readers():
    from mgdet.training.distributed import reader_index
    workers = {"worker": ["a:1", "b:1", "c:1"]}
    assert [reader_index(workers, "worker", i) for i in range(3)] == [(0, 3), (1, 3), (2, 3)]
    cluster = {"chief": ["c:1"], "worker": ["a:1", "b:1"], "ps": ["p:1"], "evaluator": ["e:1"]}
    assert reader_index(cluster, "chief", 0) == (0, 3)
    assert [reader_index(cluster, "worker", i) for i in range(2)] == [(1, 3), (2, 3)]
    for task_type, task_id in (("ps", 0), ("evaluator", 0), ("worker", 2), ("chief", 1)):
        with pytest.raises(ValueError, match="reads no training input"):
            reader_index(cluster, task_type, task_id)


def test_loopback_tf_configs_name_every_task_once():
    configs = [json.loads(c) for c in loopback_tf_configs(3)]
    workers = configs[0]["cluster"]["worker"]
    assert len(set(workers)) == 3 and all(w.startswith("127.0.0.1:") for w in workers)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)


def _held_port():
    """A socket listening on 127.0.0.1 (a port no TensorFlow server can take) and its port."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


def _join_argv():
    return ["-c", "from mgdet.training.distributed import multi_worker_strategy; multi_worker_strategy()"]


@pytest.mark.slow
def test_unusable_own_address_is_one_clear_error(tmp_path, processes):
    held, port = _held_port()
    with held:
        tf_config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}", "127.0.0.1:1"]},
                                "task": {"type": "worker", "index": 0}})
        proc = processes.start(_train_argv(tmp_path / "run"), {"TF_CONFIG": tf_config}, "own")
        assert processes.wait([proc], deadline=time.time() + 300) == [2], processes.tail()
    with open(processes.logs[0]) as f:
        out = f.read()
    assert f"address 127.0.0.1:{port} (worker:0) cannot be served here" in out, out[-2000:]
    assert "Traceback" not in out and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_cluster_that_never_forms_times_out_and_ctrl_c_ends_the_wait(processes):
    held, port = _held_port()  # the leader's address: something that is not a TF server
    with held:
        envs = []
        for timeout in ("5", "600"):  # worker 1 of 2, each its own port
            config = json.loads(loopback_tf_configs(2)[1])
            config["cluster"]["worker"][0] = f"127.0.0.1:{port}"
            envs.append({"TF_CONFIG": json.dumps(config), "MGDET_JOIN_TIMEOUT_S": timeout})
        timed = processes.start(_join_argv(), envs[0], "timeout")
        waiting = processes.start(_join_argv(), envs[1], "ctrl_c")
        assert _wait_for_text(processes.logs[1], "joining the multi-worker cluster", [waiting],
                              300), processes.tail()
        time.sleep(2)  # inside the wait
        waiting.send_signal(signal.SIGINT)
        assert processes.wait([waiting], deadline=time.time() + 60) == [-signal.SIGINT]
        assert processes.wait([timed], deadline=time.time() + 300) == [1], processes.tail()
    with open(processes.logs[0]) as f:
        out = f.read()
    assert "did not form within 5 s" in out and "MGDET_JOIN_TIMEOUT_S" in out, out[-2000:]


def _wait_for_text(path, text, procs, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p in procs):
        with open(path) as f:
            if text in f.read():
                return True
        time.sleep(0.2)
    return False


def _check_checkpoints_hold_every_variable(run, first, last):
    """The multi-worker run's checkpoints hold every model and optimizer variable: ``first``
    (written before the kill) restores all of them into a fresh model and optimizer, and
    ``ckpt-<last>`` equals ``final.weights.h5`` in every model variable (batch-norm statistics
    included)."""
    import mgdet
    import tensorflow as tf
    from mgdet.training import checkpoint
    from mgdet.config import load_config
    from mgdet.training.optim import build_optimizer
    from tests.training.test_train import _final_and_checkpoint_weights
    cfg = load_config("default", TINY)
    names = json.loads((run / "config.json").read_text())["class_names"]
    model = mgdet.build_model(cfg, class_names=names)
    model.compile(optimizer=build_optimizer(cfg.train, total_steps=12))
    model.optimizer.build(model.trainable_variables)
    epoch = tf.Variable(0, dtype=tf.int64)
    initial = [v.numpy() for v in model.variables]
    checkpoint.restore(checkpoint.training_checkpoint(model, model.optimizer, epoch),
                       str(first))  # raises if any variable is missing
    assert int(epoch.numpy()) == 1 and int(model.optimizer.iterations.numpy()) == 4
    moved = [not np.array_equal(a, v.numpy()) for a, v in zip(initial, model.variables)]
    assert all(m for m, v in zip(moved, model.variables) if "moving_" in v.path)
    for final, saved in _final_and_checkpoint_weights(cfg, run, last):
        np.testing.assert_array_equal(final, saved)

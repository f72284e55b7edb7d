"""Distribution strategies: one device, several devices of one host (MirroredStrategy), several
hosts (MultiWorkerMirroredStrategy driven by ``TF_CONFIG``).

Several hosts follow TensorFlow's multi-worker Keras recipe:

- the strategy is created once per process, before any other TensorFlow op
  (:func:`build_strategy` caches it, so ``cli.py`` creates it first and ``train`` reuses it);
- worker 0 (or the ``chief`` task, if the cluster has one) is the chief: it alone writes into
  the output folder; the other workers write into a temporary folder removed at exit
  (:func:`write_dir`), so every process still runs the same code (checkpoint saving included);
- each worker reads the same, identically seeded global batches and keeps its replicas' share of
  each one (``AutoShardPolicy.DATA``, :func:`shard`): the shares are disjoint, every worker runs
  the same number of steps, and N workers see exactly the batches one process would; or, with
  ``data.worker_sharding: files``, each worker reads and decodes only its 1/N of the training
  images (:func:`input_shard`) and keeps all it reads.

    strategy = build_strategy(cfg.train)        # first, before other TF ops
    out = write_dir(cfg.out_dir, strategy)      # cfg.out_dir on the chief, a temp dir elsewhere
    train_ds = shard(train_ds, strategy)
"""
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile

import tensorflow as tf

from mgdet.config import WORKER_SHARDING, ConfigError
from mgdet.models.steps import is_multi_worker

# The errors a collective raises when a peer worker died or stopped answering.
PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.AbortedError,
                 tf.errors.DeadlineExceededError)

_multi_worker = None  # this process's MultiWorkerMirroredStrategy (there can be only one)


def tf_config():
    """``TF_CONFIG`` parsed: ``{"cluster": {...}, "task": {"type", "index"}}``, or {} if unset.

    Raises:
      ConfigError: not JSON, or the task is not in the cluster (the message says what to fix).
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({err}); expected e.g. "
                         '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}}') from None
    if not isinstance(config, dict):
        config = {}
    cluster, task = config.get("cluster") or {}, config.get("task") or {}
    task_type, index = task.get("type"), task.get("index")
    if (not isinstance(cluster, dict) or task_type not in cluster
            or not isinstance(index, int) or not 0 <= index < len(cluster[task_type])):
        raise ConfigError(f"TF_CONFIG: task {task} is not one of the cluster's tasks {cluster}; "
                         'set "task": {"type": "worker", "index": i} with i < the number of '
                         "workers")
    return config


def build_strategy(train_cfg):
    """The ``tf.distribute`` strategy named by ``train.distribute`` (default: one device).

    ``mirrored``: the first ``train.devices`` GPUs (else logical CPUs, see :func:`split_cpu`).
    ``multi_worker``: one MultiWorkerMirroredStrategy per process, over the first
    ``train.devices`` local GPUs (all by default; one CPU replica without GPUs), cluster and
    task from ``TF_CONFIG`` (unset: a cluster of this process alone).
    """
    if train_cfg.distribute == "mirrored":
        devices = None
        if train_cfg.devices:
            gpus = tf.config.list_logical_devices("GPU")
            pool = gpus if gpus else tf.config.list_logical_devices("CPU")
            if len(pool) < train_cfg.devices:
                raise ValueError(f"train.devices is {train_cfg.devices} but only {len(pool)} "
                                 "devices are visible")
            devices = [d.name for d in pool[:train_cfg.devices]]
        return tf.distribute.MirroredStrategy(devices)
    if train_cfg.distribute == "multi_worker":
        return multi_worker_strategy(train_cfg.devices)
    return tf.distribute.get_strategy()


JOIN_TIMEOUT_ENV = "MGDET_JOIN_TIMEOUT_S"  # seconds a worker waits for the cluster to form
DEFAULT_JOIN_TIMEOUT_S = 300


def multi_worker_strategy(devices=None, join_timeout=None):
    """This process's MultiWorkerMirroredStrategy, created on the first call (which must come
    before any other TensorFlow op: it starts the worker's gRPC server and joins the cluster).

    ``devices``: use only the first ``devices`` local GPUs (ignored without GPUs).
    ``join_timeout``: seconds to wait for every task of ``TF_CONFIG`` to join (default
    ``$MGDET_JOIN_TIMEOUT_S``, else 300). TensorFlow alone waits without end, silent and deaf to
    SIGTERM (its preemption notifier takes that signal) and Ctrl-C (Python handles signals only
    between bytecodes, and the wait holds the interpreter): here this task's own address is
    checked first (:func:`check_own_address`), the wait is announced and bounded (the
    registration with the coordination service times out), and Ctrl-C ends it at once (the
    default action: the process exits). SIGTERM still ends it only at the timeout.

    Raises:
      ConfigError: a malformed ``TF_CONFIG``, an own address this machine cannot serve, or a
        cluster that did not form within ``join_timeout`` (the message names the addresses).
    """
    global _multi_worker
    if _multi_worker is None:
        config = tf_config()  # a clear error for a malformed TF_CONFIG
        if config:
            check_own_address(config)
        timeout = float(join_timeout or os.environ.get(JOIN_TIMEOUT_ENV) or DEFAULT_JOIN_TIMEOUT_S)
        gpus = tf.config.list_physical_devices("GPU")
        if devices and gpus:
            if len(gpus) < devices:
                raise ConfigError(f"train.devices is {devices} but this worker has only "
                                 f"{len(gpus)} GPUs")
            tf.config.set_visible_devices(gpus[:devices], "GPU")
        leader = None
        if config:
            leader = _bound_registration(timeout)
            print(f"joining the multi-worker cluster as {config['task']['type']}:"
                  f"{config['task']['index']} (leader {leader}; waiting at most {timeout:g} s, "
                  f"${JOIN_TIMEOUT_ENV})", flush=True)
        previous = signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the wait
        try:
            _multi_worker = tf.distribute.MultiWorkerMirroredStrategy()
        except PEER_FAILURES as err:
            task = config["task"]
            raise ConfigError(
                f"multi-worker: the cluster did not form within {timeout:g} s: task "
                f"{task['type']}:{task['index']} waited for the other tasks of TF_CONFIG "
                f"{config['cluster']} (leader {leader}) to join; start every task, check their "
                f"addresses and ports, or wait longer with {JOIN_TIMEOUT_ENV} "
                f"({' '.join(str(err).split())[:80]})") from None
        finally:
            signal.signal(signal.SIGINT, previous)
    return _multi_worker


def check_own_address(config):
    """Raise ConfigError unless this task's ``host:port`` in ``config`` (a parsed ``TF_CONFIG``)
    is an address of this machine with the port free (checked by binding it for a moment)."""
    task = config["task"]
    address = config["cluster"][task["type"]][task["index"]]
    host, _, port = str(address).rpartition(":")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET,
                           socket.SOCK_STREAM) as s:
            s.bind((host.strip("[]"), int(port)))
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ConfigError(f"TF_CONFIG: this task's address {address} ({task['type']}:"
                          f"{task['index']}) cannot be served here ({reason}): give this "
                          "machine's host name or IP and a free port") from None


def _bound_registration(timeout):
    """Configure TensorFlow's coordination service as MultiWorkerMirroredStrategy does, with
    the registration bounded by ``timeout`` seconds (the strategy then keeps this
    configuration); returns the leader's address. (No public API sets this timeout.)"""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context
    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    leader = multi_worker_util.coordination_leader(spec)
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
            for job in ("chief", "worker") if job in spec.jobs]
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=leader, coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=int(timeout * 1000))
    return leader


def split_cpu(num_devices):
    """Split the CPU into ``num_devices`` logical devices (call before TF initializes devices), so
    that MirroredStrategy can be run and tested without GPUs."""
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])


def task(strategy):
    """``(task_type, task_id)`` of this process (``(None, 0)`` outside a multi-worker job)."""
    if not is_multi_worker(strategy):
        return None, 0
    resolver = strategy.cluster_resolver
    return resolver.task_type, resolver.task_id


def is_chief(strategy):
    """True on the process that writes the outputs: the ``chief`` task, else worker 0 (and any
    process outside a multi-worker job)."""
    task_type, task_id = task(strategy)
    if task_type is None or task_type == "chief":
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def write_dir(out_dir, strategy):
    """``out_dir`` on the chief; on the other workers a new temporary folder, removed when the
    process exits (TensorFlow's pattern: every worker saves, only the chief's files are kept)."""
    if is_chief(strategy):
        return out_dir
    task_type, task_id = task(strategy)
    path = tempfile.mkdtemp(prefix=f"mgdet-{task_type}{task_id}-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def input_shard(strategy):
    """``(index, count)`` of this process among the ``count`` tasks that read training input,
    or None outside a multi-worker job (see :func:`reader_index`)."""
    task_type, task_id = task(strategy)
    if task_type is None:
        return None
    return reader_index(strategy.cluster_resolver.cluster_spec().as_dict(), task_type, task_id)


def reader_index(cluster, task_type, task_id):
    """``(index, count)`` of task ``task_type:task_id`` among the tasks of ``cluster`` (a
    ``TF_CONFIG`` cluster dict) that read training input: the ``chief`` task first when there
    is one, then the ``worker`` tasks in order. Other jobs (``ps``, ``evaluator``) read none.

    Raises ValueError for a task that reads no input or is not in the cluster.
    """
    chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    if task_type == "chief" and 0 <= task_id < chiefs:
        return task_id, chiefs + workers
    if task_type == "worker" and 0 <= task_id < workers:
        return chiefs + task_id, chiefs + workers
    raise ValueError(f"task {task_type}:{task_id} reads no training input in cluster {cluster}")


def shard(dataset, strategy, sharding="batches"):
    """Set how a multi-worker job splits the training ``dataset`` (of global batches) between
    the workers. Unchanged outside a multi-worker job.

    - ``"batches"``: every worker reads the same, identically seeded global batches and keeps
      its replicas' slices of each (``AutoShardPolicy.DATA``): the shares are disjoint and
      N workers train on exactly the batches of one process.
    - ``"files"``: each worker's ``dataset`` already reads only its own share of the files
      (:func:`input_shard`, applied before decoding by ``build_datasets``), so nothing more is
      split (``AutoShardPolicy.OFF``): each step, every replica takes the next
      ``global batch / replicas`` images of its worker's stream.

    Either way every worker runs the same number of steps (the training stream repeats).
    """
    if not is_multi_worker(strategy):
        return dataset
    if sharding not in WORKER_SHARDING:
        raise ValueError(f"sharding must be one of {WORKER_SHARDING}, got {sharding!r}")
    policy = tf.data.experimental.AutoShardPolicy
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        policy.DATA if sharding == "batches" else policy.OFF)
    return dataset.with_options(options)


def chief_only(callbacks, strategy, types):
    """``callbacks`` without the instances of ``types`` on the non-chief workers (e.g. COCO
    evaluation, which must run once, on the chief)."""
    if is_chief(strategy):
        return list(callbacks)
    return [cb for cb in callbacks if not isinstance(cb, types)]


class WorkerLost(RuntimeError):
    """A worker of a multi-worker job died or stopped answering: the job stopped."""


@contextlib.contextmanager
def worker_failures_as_errors():
    """Turns the collective error raised on the surviving workers when a peer dies (found by the
    coordination service's heartbeats, hosted on the chief) into one :class:`WorkerLost` that
    says how to continue."""
    try:
        yield
    except PEER_FAILURES as err:
        detail = " ".join(str(err).split())[:400]
        raise WorkerLost(f"a worker of the multi-worker job failed ({detail}). Restart every "
                         "worker with --resume: training continues from the chief's last "
                         "checkpoint (the interrupted epoch is run again)") from err

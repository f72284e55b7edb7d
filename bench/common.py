"""Shared helpers of the benchmarks: timing, machine description, table and JSON output."""
import json
import os
import platform
import statistics
import time


def time_call(fn, warmup=2, reps=7):
    """Median and p90 wall time in ms of ``fn()`` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {"median_ms": statistics.median(times),
            "p90_ms": times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]}


def machine():
    """A short description of where the numbers were measured (``/proc/cpuinfo`` read once)."""
    import tensorflow as tf
    from mgdet.training.cpu import FLAGS, cpu_info
    info = cpu_info()
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"cpu": info["model"] or platform.processor() or platform.machine(),
            "cpu_flags": {flag: flag in info["flags"] for flag in FLAGS},
            "cores": os.cpu_count(), "gpus": gpus,
            "tensorflow": tf.__version__, "python": platform.python_version(),
            "load_average": list(os.getloadavg())}


def cpu_line(info):
    """``CPU: <model>, <n> cores; flags: avx2 yes, ...`` from :func:`machine`'s result."""
    return (f"CPU: {info['cpu']}, {info['cores']} cores; flags: "
            + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["cpu_flags"].items()))


def print_table(rows, columns):
    """Print ``rows`` (dicts) as a markdown table with ``columns`` [(key, header, fmt)]."""
    header = "| " + " | ".join(h for _, h, _ in columns) + " |"
    print(header)
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("-" if value is None else (fmt.format(value) if fmt else str(value)))
        print("| " + " | ".join(cells) + " |")


def write_json(path, payload):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {path}")


def write_results(path, payload):
    """Write a finished comparison's JSON and remove its ``<path>.partial`` (the runs so far)."""
    write_json(path, payload)
    if os.path.exists(path + ".partial"):
        os.remove(path + ".partial")


def read_runs(paths):
    """The run records kept in ``paths``: results JSON files (``{"runs": [...]}``) or
    ``.partial`` files (a list of records); missing files are skipped."""
    runs = []
    for path in paths:
        if os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
            runs.extend(data["runs"] if isinstance(data, dict) else data)
    return runs


def _has_run(runs, arm_key, arm, seed):
    return any(r[arm_key] == arm and r["seed"] == seed for r in runs)


def include_runs(runs, paths, arm_key):
    """Append to ``runs`` the records of ``paths`` (:func:`read_runs`) whose (arm, seed) it has
    not yet: runs of the same comparison made by other processes. Returns ``runs``."""
    for r in read_runs(paths):
        if not _has_run(runs, arm_key, r[arm_key], r["seed"]):
            runs.append(r)
    return runs


def run_paired(arm_key, arms, seeds, run, runs, partial, describe):
    """Run ``run(arm, seed)`` (-> a record dict) for each seed in ``range(seeds)`` and each arm
    whose record (``record[arm_key] == arm``, ``record["seed"] == seed``) is not in ``runs``
    yet; each new record gets ``seconds`` (wall time of the run) and ``cpu``, is appended to
    ``runs`` and all of them are saved to ``partial`` at once, so an interrupted comparison
    resumes where it stopped. Prints ``describe(record)`` per run. Returns ``runs``."""
    for seed in range(seeds):
        for arm in arms:
            if _has_run(runs, arm_key, arm, seed):
                continue
            t0 = time.perf_counter()
            record = run(arm, seed)
            record["seconds"] = time.perf_counter() - t0
            record["cpu"] = machine()["cpu"]
            runs.append(record)
            print(f"{arm} seed {seed}: {describe(record)} ({record['seconds']:.0f} s)", flush=True)
            os.makedirs(os.path.dirname(partial) or ".", exist_ok=True)
            with open(partial, "w") as f:
                json.dump(runs, f)
    return runs


def forward_gflop(model, image_size):
    """GFLOP of one forward pass of a Keras detector on one ``image_size``² image, counted by
    the TF profiler (``float_operation``) on the frozen inference graph: multiply-adds count 2.
    A training step is about 3x that per image (forward, and backward through activations and
    weights)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, image_size, image_size, 3], tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts)
    return profile.total_float_ops / 1e9


def peak_gflops(path=None):
    """This machine's measured 3x3-convolution throughput (GFLOP/s) in fp32 and bf16 from
    ``bench/peak.py``'s JSON, or None where it was not measured."""
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "peak.json")
    try:
        with open(path) as f:
            return json.load(f)["gflops"]
    except (OSError, ValueError, KeyError):
        return None

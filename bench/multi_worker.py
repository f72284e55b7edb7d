"""Training steps/s of one process vs N workers (MultiWorkerMirroredStrategy) on loopback.

    python bench/multi_worker.py [--workers 1 2] [--batch 16] [--image-size 128] [--steps 20]

The default config's detector (FSSD ResNet-18, width 0.25, MG assignment) trains on a fixed,
repeated global batch of painted images, ``--warmup`` steps untimed then ``--steps`` timed, in
one plain process (no strategy) and in clusters of N worker processes on 127.0.0.1 (each worker
keeps its 1/N of every global batch). Reports the chief's steps/s and images/s, the step time's
ratio to the single process, and the extra time per step (all-reduce of gradients, batch-norm
statistics and positive counts, plus scheduling). On one host the workers share its cores, so
no speed-up is expected: the figure shows the communication overhead per step. Prints a table
and writes bench/results/multi_worker.json.
"""
import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_RUN = textwrap.dedent(r'''
    import json, sys, time
    from mgdet.training import distributed
    role, batch, size, warmup, steps = sys.argv[1], *map(int, sys.argv[2:6])
    if role == "worker":
        strategy = distributed.multi_worker_strategy()  # before any other TF op
    import keras
    import tensorflow as tf
    from mgdet.models import MODELS
    from mgdet.training.optim import SGDWithL2
    from tests.batches import painted_batch
    if role == "single":
        strategy = tf.distribute.get_strategy()
    images, targets = painted_batch(size, batch, 10, 3, seed=0)
    dataset = distributed.shard(tf.data.Dataset.from_tensors((images, targets)).repeat(),
                                strategy)

    class Clock(keras.callbacks.Callback):
        times = []
        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = MODELS["fssd"](num_classes=3, backbone="resnet18", image_size=size, width=0.25)
        model.compile(optimizer=SGDWithL2(l2=5e-4, learning_rate=0.01, momentum=0.9))
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[Clock()], verbose=0)
    t = Clock.times
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "step_s": (t[-1] - t[warmup - 1]) / steps}))
''')


def run(workers, args):
    """Seconds per step of the chief (one plain process when ``workers`` is 0)."""
    from tests.cluster import loopback_tf_configs
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [str(a) for a in (args.batch, args.image_size, args.warmup, args.steps)]
    configs = loopback_tf_configs(workers) if workers else [None]
    procs = []
    try:
        for config in configs:
            extra = {"TF_CONFIG": config} if config else {}
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _RUN, "worker" if config else "single"] + argv,
                env={**env, **extra}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
        outs = [p.communicate(timeout=args.timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"a benchmark process failed:\n{err[-3000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])


def main():
    from bench.common import machine, print_table, write_json
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--batch", type=int, default=16, help="global batch")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per configuration")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                      "multi_worker.json"))
    args = parser.parse_args()
    rows = []
    for workers in [0] + [w for w in args.workers if w > 0]:
        t0 = time.perf_counter()
        result = run(workers, args)
        rows.append({"setup": f"{workers} workers" if workers else "1 process",
                     "workers": workers or 1, "replicas": result["replicas"],
                     "step_ms": 1000 * result["step_s"], "steps_s": 1 / result["step_s"],
                     "img_s": args.batch / result["step_s"],
                     "wall_s": time.perf_counter() - t0})
    base = rows[0]["step_ms"]
    for row in rows:
        row["ratio"] = row["step_ms"] / base
        row["extra_ms"] = row["step_ms"] - base
    print(f"global batch {args.batch}, {args.image_size} px, FSSD ResNet-18 width 0.25, "
          f"{args.steps} timed steps after {args.warmup}")
    print_table(rows, [("setup", "setup", None), ("step_ms", "ms/step", "{:.0f}"),
                       ("steps_s", "steps/s", "{:.2f}"), ("img_s", "img/s", "{:.1f}"),
                       ("ratio", "step time vs 1 process", "{:.2f}x"),
                       ("extra_ms", "extra ms/step", "{:+.0f}")])
    write_json(args.out, {"machine": machine(), "batch": args.batch,
                          "image_size": args.image_size, "steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()

"""mgdet command line: train | eval | export | predict | show-assign | convert-weights.

Installed as the ``mgdet`` command (``python cli.py`` in a checkout is the same):

    mgdet train                                  # default config, embedded dataset
    mgdet train --config retinanet_resnet18_voc --strategy iou   # a shipped config by name
    mgdet train --config my.yaml --print-config  # the merged config (with its base: files)
    mgdet eval --weights runs/default             # its final.weights.h5 and config.json
    mgdet export --weights runs/default/final.weights.h5
    mgdet predict --model saved_models/default images/
    mgdet show-assign --config default --images 4
    mgdet convert-weights resnet18-f37072fd.pth weights/resnet18_imagenet.npz
    mgdet convert-weights VOC_rfbnet_vgg16_size320_anchor24.0_MG.pth pretrained/rfbnet_mg_voc
"""
import argparse
import contextlib
import json
import logging
import os
import sys

# TensorFlow-free, as the whole CLI start-up: TensorFlow is imported by import_tensorflow
# once the arguments are checked, and the commands import the stages they run after it.
from mgdet.config import (DISTRIBUTE, EXPORT_FORMATS, PRECISION, QUANTIZE, STRATEGIES,
                          ConfigError, config_to_yaml, load_config)
from mgdet.convert.command import run_convert_weights
from mgdet.convert.torchvision import ARCHS, WeightsError
from mgdet.data.common import DataError
from mgdet.training.rundir import json_safe, resolve_weights, run_config_path

DEFAULT_CONFIG = "default"  # configs/default.yaml, shipped in the package
log = logging.getLogger("mgdet")


def _config(args, extra=()):
    overrides = list(args.set or []) + list(extra)
    cfg = load_config(args.config, overrides)
    if not getattr(args, "print_config", False):
        import_tensorflow(getattr(args, "verbose", 0))  # once the config is known to be good
    return cfg


def _trained_config(args, weights, stream=None):
    """The config of a command on trained ``weights`` (eval, export, show-assign, predict):
    ``--config`` when given, else the ``config.json`` of the run that wrote the weights, else
    the default; ``--set`` applies on top. Prints which one is used (to ``stream``, default
    stdout)."""
    run_config = run_config_path(weights) if weights else None
    if args.config is not None:
        origin = "--config" + (f"; {run_config} of the weights' run is not used"
                               if run_config else "")
    elif run_config:
        args.config, origin = run_config, "the run that wrote the weights"
    else:
        args.config, origin = DEFAULT_CONFIG, ("no --config, and no config.json beside the "
                                               "weights")
    cfg = _config(args)
    changed = f", with --set {' '.join(args.set)}" if args.set else ""
    print(f"config: {args.config} ({origin}{changed})", file=stream or sys.stdout, flush=True)
    return cfg


class _StderrHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment, not the one at set-up (``main()`` may run
    several times in one process, e.g. from a notebook or tests that replace stderr)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def setup_logging(verbosity):
    """``mgdet`` loggers to stderr: INFO by default, DEBUG with ``-v``, WARNING with ``-q``."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    logger = logging.getLogger("mgdet")
    logger.setLevel(level)
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def import_tensorflow(verbosity=0):
    """Import TensorFlow, without its C++ start-up noise unless ``verbosity > 0``.

    TF prints device probes (``cuInit`` failures on CPU machines, CPU-feature notes) from C++
    before its own log level applies: ``TF_CPP_MIN_LOG_LEVEL=3`` (unless the user set it)
    silences the later ones, and the import itself runs with the stderr file descriptor
    pointed at /dev/null (Python errors still raise). ``-v`` shows everything.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if verbosity > 0:
        import tensorflow as tf
        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_fd_silenced():
        import keras  # noqa: F401 - imported here so its own probes are silenced too
        import tensorflow as tf
    tf.get_logger().setLevel(logging.ERROR)
    import absl.logging
    absl.logging.set_verbosity(absl.logging.ERROR)
    return tf


@contextlib.contextmanager
def _stderr_fd_silenced():
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _add_config_args(p, weights=False, weights_required=False):
    if weights:
        p.add_argument("--config", help="YAML file, or the name of a shipped config (default: "
                       "the config.json of the weights' run, else default)")
    else:
        p.add_argument("--config", default=DEFAULT_CONFIG,
                       help="YAML file, or the name of a shipped config (default: %(default)s)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    if weights:
        p.add_argument("--weights", required=weights_required,
                       help="weights file (.weights.h5) or training output folder (its "
                            "final.weights.h5)")


def eval_output_path(weights):
    """Where ``eval`` writes its JSON: beside the weights it evaluated
    (``runs/x/best.weights.h5`` -> ``runs/x/best.eval.json``)."""
    name = os.path.basename(weights)
    for suffix in (".weights.h5", ".keras", ".h5"):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
            break
    return os.path.join(os.path.dirname(os.path.abspath(weights)), name + ".eval.json")


def cmd_train(args):
    extra = []
    if args.strategy:
        extra.append(f"assign.strategy={args.strategy}")
    if args.epochs:
        extra.append(f"train.epochs={args.epochs}")
    if args.distribute:
        extra.append(f"train.distribute={args.distribute}")
    if args.devices:
        extra.append(f"train.devices={args.devices}")
    if args.precision:
        extra.append(f"train.precision={args.precision}")
    cfg = _config(args, extra)
    if args.print_config:
        print(config_to_yaml(cfg), end="")
        return
    if cfg.train.distribute == "multi_worker":  # joins the TF_CONFIG cluster before other TF ops
        from mgdet.training.distributed import build_strategy  # TensorFlow
        build_strategy(cfg.train)
    if cfg.train.distribute == "mirrored" and (cfg.train.devices or 0) > 1:
        import tensorflow as tf
        if not tf.config.list_physical_devices("GPU"):
            from mgdet.training.distributed import split_cpu  # TensorFlow
            split_cpu(cfg.train.devices)
    from mgdet.training.distributed import worker_failures_as_errors  # TensorFlow
    from mgdet.training.loop import train
    with worker_failures_as_errors():
        train(cfg, resume=args.resume, out_dir=args.out_dir, overwrite=args.overwrite)  # says where


def cmd_eval(args):
    weights = resolve_weights(args.weights)
    cfg = _trained_config(args, weights)
    from mgdet.data.datasets import build_eval_dataset  # TensorFlow: after import_tensorflow
    from mgdet.evaluation.analysis import plot_confusion, plot_pr_curves
    from mgdet.evaluation.coco import evaluate, format_table
    from mgdet.evaluation.voc_metric import format_voc_table
    from mgdet.training.trained import load_detector
    model, _ = load_detector(cfg, weights)
    eval_ds, gt_coco = build_eval_dataset(cfg)  # the training split is not needed
    metrics = evaluate(model, eval_ds, gt_coco, per_class=True, analysis=True)
    shown = metrics if args.per_class else {k: v for k, v in metrics.items() if k != "per_class"}
    print(format_table(shown, title=f"{cfg.name}: COCO metrics on {metrics['num_images']} images (%)"))
    if cfg.data.source in ("voc", "voc_xml") or "voc" in (cfg.data.tfds_name or ""):
        print(format_voc_table(metrics["voc07"], title="the authors' VOC07 metric (paper Table 1) (%)"))
    out = args.out or eval_output_path(weights)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    stem = out[:-len(".json")] if out.endswith(".json") else out
    pictures = [plot_pr_curves(metrics["pr_curves"], stem + ".pr_curves.png",
                               title=f"{cfg.name}: precision-recall at IoU 0.5 (AP50 per class)"),
                plot_confusion(metrics["confusion"]["matrix"], metrics["confusion"]["names"],
                               stem + ".confusion.png",
                               title=f"{cfg.name}: confusion at IoU 0.5, score >= "
                                     f"{metrics['confusion']['score_threshold']}")]
    with open(out, "w") as f:  # strict JSON: NaN (no objects of a size) becomes null
        json.dump(json_safe(metrics), f, indent=2)
    print(f"wrote {out} (COCO metrics, AP per class, PR curves, confusion matrix), "
          f"{', '.join(pictures)}")


def cmd_export(args):
    weights = resolve_weights(args.weights)
    cfg = _trained_config(args, weights)
    from mgdet.export.command import run_export  # TensorFlow: after import_tensorflow
    path = run_export(cfg, weights, name=args.name, version=args.version,
                      score_threshold=args.score_threshold, nms_iou=args.nms_iou,
                      max_detections=args.max_detections, format=args.format,
                      quantize=args.quantize, out=args.out, untrained=args.untrained)
    print(f"exported {path}" + (" (untrained: random weights)" if args.untrained else ""))


def cmd_predict(args):
    cfg = None
    if args.config or args.set:  # --set alone applies over the run's config.json
        if not args.config and not (os.path.exists(args.model) and run_config_path(args.model)):
            raise ConfigError(f"predict: --set needs a config: give --config, or a run folder "
                              f"or weights file with config.json beside it (not {args.model!r})")
        cfg = _trained_config(args, args.model, sys.stderr)  # stdout: JSON lines
    import_tensorflow(args.verbose)
    from mgdet.inference import predict_out_dir, run_predict  # TensorFlow: after its import
    out_dir = predict_out_dir(args.out_dir)
    results = run_predict(args.model, args.inputs, out_dir,
                          score_threshold=args.score_threshold, config=cfg)
    print(f"wrote {len(results)} pictures and detections.json to {out_dir}")


def cmd_show_assign(args):
    weights = resolve_weights(args.weights)
    cfg = _trained_config(args, weights)
    from mgdet.viz.show_assign import run_show_assign  # TensorFlow: after its import
    results = run_show_assign(cfg, weights, num_images=args.images, out_dir=args.out_dir)
    print(f"wrote {len(results)} pictures to {args.out_dir}")


def cmd_convert_weights(args):
    try:
        print(run_convert_weights(args.src, args.dst, args.arch, args.config, args.set or (),
                                  on_detector=lambda: import_tensorflow(args.verbose)))
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def build_parser():
    parser = argparse.ArgumentParser(prog="mgdet", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="debug messages and TensorFlow's own start-up log")
    parser.add_argument("-q", "--quiet", action="count", default=0,
                        help="warnings and errors only")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("train", help="train a detector (default: configs/default.yaml)")
    _add_config_args(p)
    p.add_argument("--strategy", choices=STRATEGIES, help="label assignment (assign.strategy)")
    p.add_argument("--epochs", type=int, help="number of epochs (train.epochs)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--distribute", choices=DISTRIBUTE,
                   help="tf.distribute strategy (train.distribute)")
    p.add_argument("--devices", type=int, help="devices for --distribute mirrored (CPU: split)")
    p.add_argument("--precision", choices=PRECISION,
                   help="compute precision (train.precision; default float32). auto: "
                   "mixed_bfloat16 where bf16 is faster (a CPU with AMX, an AMD CPU with "
                   "avx512_bf16, a GPU of compute capability >= 8.0), float32 elsewhere")
    p.add_argument("--out-dir", help="output folder (default runs/<config name>, or the next free "
                   "runs/<name>-2, -3... when taken; with --resume: the newest run of that name)")
    p.add_argument("--overwrite", action="store_true",
                   help="train into a non-empty --out-dir, replacing its earlier outputs")
    p.add_argument("--print-config", action="store_true",
                   help="print the merged config (bases, --set) as YAML and exit")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="COCO metrics of trained weights on the eval split")
    _add_config_args(p, weights=True, weights_required=True)
    p.add_argument("--per-class", action="store_true",
                   help="also print AP per class (the JSON always has it)")
    p.add_argument("--out", help="JSON output (default: beside the weights, <stem>.eval.json); "
                   "the PR-curve and confusion-matrix PNGs go beside it")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="SavedModel for TF Serving (saved_models/<name>/<version>), "
                       "ONNX or TFLite (exports/<name>/)")
    _add_config_args(p, weights=True)
    p.add_argument("--format", default="saved_model", choices=EXPORT_FORMATS,
                   help="saved_model (default; TF Serving), onnx (tf2onnx), tflite (no NMS)")
    p.add_argument("--quantize", choices=QUANTIZE,
                   help="tflite only: float16 weights, or int8 network calibrated on 32 training "
                   "images (default: none, float32)")
    p.add_argument("--out", help="onnx / tflite file (default exports/<name>/<name>[-<quantize>]"
                   ".<ext>)")
    p.add_argument("--name", help="model name (default: config name)")
    p.add_argument("--version", type=int, help="integer version (default: next free)")
    p.add_argument("--score-threshold", type=float,
                   help="drop detections below this score (default: eval.score_threshold)")
    p.add_argument("--nms-iou", type=float, help="NMS IoU threshold (default: eval.nms_iou)")
    p.add_argument("--max-detections", type=int,
                   help="detections per image (default: eval.max_detections)")
    p.add_argument("--untrained", action="store_true",
                   help="export without --weights: the random initialization, for testing a "
                   "serving setup (recorded as trained: false in the metadata)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="detect objects in images with a SavedModel or weights")
    p.add_argument("--model", required=True, help="saved_models/<name>[/<version>], a run "
                   "folder (its final.weights.h5), a .weights.h5 or a .keras file")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out-dir", help="folder of the PNGs and detections.json (default: "
                   "runs/predict, or the next free runs/predict-2, -3... when taken); not a "
                   "folder of the input images")
    p.add_argument("--score-threshold", type=float, default=0.3,
                   help="drop detections below this score (default: %(default)s)")
    p.add_argument("--config", help="training config, for a .weights.h5 without config.json beside")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a value of --config (repeatable)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("show-assign", help="draw IoU-anchor vs L2C / C2L positives (paper Fig. 4)")
    _add_config_args(p, weights=True)
    p.add_argument("--images", type=int, default=4, help="pictures to draw (default: %(default)s)")
    p.add_argument("--out-dir", default="runs/show_assign",
                   help="folder of the pictures (default: %(default)s)")
    p.set_defaults(func=cmd_show_assign)

    p = sub.add_parser("convert-weights", help="torchvision ImageNet resnet18 / vgg16_bn weights "
                       "-> backbone .npz for model.weights; the paper authors' FSSD / RetinaNet "
                       "/ RFBNet checkpoints -> a run folder (docs/zoo.md); .pth or .safetensors")
    p.add_argument("src", help="torchvision's resnet18-f37072fd.pth, or an authors' detector")
    p.add_argument("dst", help="output: an .npz (backbone, e.g. weights/resnet18_imagenet.npz) "
                   "or a new run folder (detector, e.g. pretrained/rfbnet_mg_voc)")
    p.add_argument("--arch", choices=ARCHS, help="backbone: default from the names")
    p.add_argument("--config", help="detector: the config its run folder gets (default: the "
                   "shipped <arch>_vgg16_<voc|coco>); the checkpoint fixes the model keys")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="detector: override")
    p.set_defaults(func=cmd_convert_weights)
    return parser


GLOBAL_OPTIONS = ("--debug", "-v", "-vv", "--verbose", "-q", "--quiet")


def main(argv=None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    n = 0  # options before the command; `mgdet` alone (or with train's options) trains
    while n < len(argv) and argv[n] in GLOBAL_OPTIONS:
        n += 1
    if n == len(argv) or argv[n].startswith("-") and argv[n] not in ("-h", "--help"):
        argv.insert(n, "train")
    args = parser.parse_args(argv)
    args.verbose -= args.quiet
    setup_logging(args.verbose)
    return _run_command(args)


def _user_errors():
    """Exceptions that are the user's input (one line, exit 2): bad config, missing or existing
    files, bad data."""
    errors = (ConfigError, DataError, FileNotFoundError, FileExistsError)
    # imported (with TF) by multi-worker runs
    distributed = sys.modules.get("mgdet.training.distributed")
    if distributed is not None:
        errors += (distributed.WorkerLost,)
    return errors


def _run_command(args):
    """Run ``args.func``; map errors to one line on stderr and an exit status: 2 bad input,
    1 training diverged (NaN), 143 stopped by SIGTERM (checkpointed), 130 Ctrl-C."""
    try:
        args.func(args)
    except _user_errors() as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # train's says which checkpoint, if any, is kept
        print("interrupted" + (f": {err}" if str(err) else ""), file=sys.stderr)
        return 130
    except Exception as err:
        # mgdet.training.faults imports Keras (and TF): looked up only once training has loaded
        # it, so that TF is first imported by import_tensorflow, which silences its start-up noise.
        faults = sys.modules.get("mgdet.training.faults")
        if faults is not None and isinstance(err, faults.TrainingPreempted):
            print(str(err), file=sys.stderr)
            return faults.SIGTERM_EXIT_CODE
        if faults is not None and isinstance(err, faults.TrainingDiverged) and not args.debug:
            print(f"error: {err}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

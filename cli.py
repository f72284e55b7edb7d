#!/usr/bin/env python
"""mgdet command line: train | eval | export | predict | show-assign.

    python cli.py train                                  # default config, embedded dataset
    python cli.py train --config configs/retinanet_resnet18_voc.yaml --strategy iou
    python cli.py eval --config configs/default.yaml --weights runs/default/best.weights.h5
    python cli.py export --config configs/default.yaml --weights runs/default/final.weights.h5
    python cli.py predict --model saved_models/default images/
    python cli.py show-assign --config configs/default.yaml --images 4
"""
import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.yaml")


def _config(args, extra=()):
    from mgdet.config import load_config
    overrides = list(args.set or []) + list(extra)
    return load_config(args.config, overrides)


def _add_config_args(p, weights=False, weights_required=False):
    p.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default: %(default)s)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    if weights:
        p.add_argument("--weights", required=weights_required,
                       help="weights file (.weights.h5) or training output folder")


def _resolve_weights(path):
    """A run folder -> its best (else final) weights; a file -> itself."""
    if path and os.path.isdir(path):
        for name in ("best.weights.h5", "final.weights.h5"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise FileNotFoundError(f"no best.weights.h5 or final.weights.h5 in {path}")
    if path and not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} not found: give a .weights.h5 file written by "
                                "`cli.py train` or its output folder")
    return path


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
    if args.out_dir:
        extra.append(f"train.out_dir={args.out_dir}")
    cfg = _config(args, extra)
    if cfg.train.distribute == "mirrored" and (cfg.train.devices or 0) > 1:
        import tensorflow as tf
        if not tf.config.list_physical_devices("GPU"):
            from mgdet.train import split_cpu
            split_cpu(cfg.train.devices)
    from mgdet.train import train
    train(cfg, resume=args.resume)


def cmd_eval(args):
    cfg = _config(args)
    from mgdet.evaluation import evaluate, format_table
    from mgdet.train import build_eval_dataset, json_safe
    from mgdet.predict import load_detector
    model, _ = load_detector(cfg, _resolve_weights(args.weights))
    eval_ds, gt_coco = build_eval_dataset(cfg)  # the training split is not needed
    metrics = evaluate(model, eval_ds, gt_coco, per_class=args.per_class)
    print(format_table(metrics, title=f"{cfg.name}: COCO metrics on {metrics['num_images']} images (%)"))
    if cfg.data.source in ("voc", "voc_xml") or "voc" in (cfg.data.tfds_name or ""):
        from mgdet.voc_metric import format_voc_table
        print(format_voc_table(metrics["voc07"], title="the authors' VOC07 metric (paper Table 1) (%)"))
    out = args.out or os.path.join(cfg.out_dir, "eval_cli.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:  # strict JSON: NaN (no objects of a size) becomes null
        json.dump(json_safe(metrics), f, indent=2)
    print(f"wrote {out}")


def cmd_export(args):
    cfg = _config(args)
    from mgdet.export import run_export
    path = run_export(cfg, _resolve_weights(args.weights), name=args.name, version=args.version,
                      score_threshold=args.score_threshold, nms_iou=args.nms_iou,
                      max_detections=args.max_detections)
    print(f"exported {path}")


def cmd_predict(args):
    from mgdet.predict import run_predict
    cfg = _config(args) if args.config else None
    run_predict(args.model, args.inputs, args.out_dir, score_threshold=args.score_threshold,
                config=cfg)


def cmd_show_assign(args):
    cfg = _config(args)
    from mgdet.viz import run_show_assign
    run_show_assign(cfg, _resolve_weights(args.weights), num_images=args.images,
                    out_dir=args.out_dir)


def build_parser():
    parser = argparse.ArgumentParser(prog="cli.py", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("train", help="train a detector (default: configs/default.yaml)")
    _add_config_args(p)
    p.add_argument("--strategy", choices=["iou", "l2c", "c2l", "mg"], help="label assignment")
    p.add_argument("--epochs", type=int)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--distribute", choices=["none", "mirrored", "multi_worker"])
    p.add_argument("--devices", type=int, help="devices for --distribute mirrored (CPU: split)")
    p.add_argument("--out-dir", help="output folder (default runs/<config name>)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="COCO metrics of trained weights on the eval split")
    _add_config_args(p, weights=True, weights_required=True)
    p.add_argument("--per-class", action="store_true")
    p.add_argument("--out", help="JSON output (default runs/<name>/eval_cli.json)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="SavedModel for TF Serving: saved_models/<name>/<version>")
    _add_config_args(p, weights=True)
    p.add_argument("--name", help="model name (default: config name)")
    p.add_argument("--version", type=int, help="integer version (default: next free)")
    p.add_argument("--score-threshold", type=float)
    p.add_argument("--nms-iou", type=float)
    p.add_argument("--max-detections", type=int)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="detect objects in images with a SavedModel or weights")
    p.add_argument("--model", required=True, help="saved_models/<name>[/<version>] or .keras file")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out-dir", default="runs/predict")
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.add_argument("--config", help="training config, for a .weights.h5 without config.json beside")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("show-assign", help="draw IoU-anchor vs L2C / C2L positives (paper Fig. 4)")
    _add_config_args(p, weights=True)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--out-dir", default="runs/show_assign")
    p.set_defaults(func=cmd_show_assign)
    return parser


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("--") and argv[0] != "--debug" and argv[0] not in ("-h", "--help"):
        argv = ["train"] + list(argv)  # `cli.py` alone trains the default config
    if argv == ["--debug"]:
        argv = ["--debug", "train"]
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        args = parser.parse_args(["train"] if not args.debug else ["--debug", "train"])
    from mgdet.config import ConfigError
    user_errors = (ConfigError, FileNotFoundError)
    try:
        from mgdet.data.common import DataError
        user_errors += (DataError,)
    except ImportError:
        pass
    try:
        args.func(args)
    except user_errors as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last completed epoch is checkpointed; continue with --resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

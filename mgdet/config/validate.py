"""Checks of config values: YAML values coerced to the fields' types, and one validator
(:func:`validate`, per value :func:`check_value`) that file loading, ``--set`` overrides, the
CLI, the API and the detector's own arguments all use. Ranges and choices come from the field
metadata of :mod:`mgdet.config.schema`; errors are one :class:`ConfigError` naming the key and
the fix.
"""
import dataclasses
import math
import numbers
import os
import re
import reprlib
import typing
from typing import Tuple

from mgdet.config.schema import ARCH_BACKBONES, RUNS_DIR, Config, fields_by_key


class ConfigError(ValueError):
    """A bad configuration key or value; the message names it and says how to fix it."""


FIELDS = fields_by_key()  # "section.key" -> its dataclasses.Field (metadata: range / choices)
# Allowed range of every numeric field: key -> (low, high, low_open, high_open).
RANGES = {key: f.metadata["range"] for key, f in FIELDS.items() if "range" in f.metadata}


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 2, 4, 4
_SHORT.maxstring = _SHORT.maxother = 40


def shown(value):
    """A short repr of a config value for error messages (at most ~100 characters and a few
    nested levels: a YAML value built from aliases may expand to gigabytes)."""
    return _SHORT.repr(value)


def _coerce(value, hint, key):
    """Convert a YAML value to the dataclass field's type, or raise ConfigError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(value, [a for a in args if a is not type(None)][0], key)
    if origin in (tuple, Tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {shown(value)}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"config key '{key}' must be true or false, got {shown(value)}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"config key '{key}' must be an integer, got {shown(value)}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"config key '{key}' must be an integer, "
                              f"got {shown(value)}") from None
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise ConfigError(f"config key '{key}' must be an integer, got {shown(value)}")
        return int(as_float)
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' must be a number, "
                              f"got {shown(value)}") from None
    if hint is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"config key '{key}' must be a string, got {shown(value)}")
        return str(value)
    return value


def build(cls, values, prefix):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix}' must be a mapping, got {shown(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{path}'; allowed keys here: "
                              f"{', '.join(sorted(fields))}")
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = build(hints[key], value, path)
        elif fields[key].metadata.get("coerce") == "augment" and isinstance(value, bool):
            kwargs[key] = "ssd" if value else "none"
        else:
            kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def check_value(key, value, what=None):
    """Refuse ``value`` for the config key ``key`` (``"eval.nms_iou"``) outside the key's
    choices or range (a finite number inside the interval, an integer for an int field, a
    multiple of ``multiple_of``; None, an unset Optional, passes). Raises ConfigError naming
    ``what`` (default: the key); returns ``value``."""
    f = FIELDS[key]
    what = what or f"config key '{key}'"
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{what} is {shown(value)}; use one of {', '.join(meta['choices'])}")
    if "range" in meta and value is not None:
        low, high, low_open, high_open = meta["range"]
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if number and int in (f.type, *typing.get_args(f.type)) and (
                not math.isfinite(value) or value != int(value)):
            raise ConfigError(f"{what} must be an integer, got {shown(value)}")
        inside = (number and math.isfinite(value) and (value > low if low_open else value >= low)
                  and (value < high if high_open else value <= high))
        if not inside:
            interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            raise ConfigError(f"{what} must be a finite number in {interval}, "
                              f"got {shown(value)}")
        multiple = meta.get("multiple_of")
        if multiple and value % multiple:
            raise ConfigError(f"{what} must be a positive multiple of {multiple}, "
                              f"got {shown(value)}")
    return value


def numeric_keys(cls=None, prefix=""):
    """``section.key`` of every int / float field of the config (nested), in field order."""
    keys = []
    hints = typing.get_type_hints(cls or Config)
    for f in dataclasses.fields(cls or Config):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys += numeric_keys(hint, f"{prefix}{f.name}.")
            continue
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if hint in (int, float) or (typing.get_origin(hint) is typing.Union
                                    and args and args[0] in (int, float)):
            keys.append(prefix + f.name)
    return keys


# A run / model name: one folder name under runs/ and saved_models/, short enough for every
# file system (255 bytes a name) with room for the suffixes mgdet adds ("-2", ".tmp-..-xxxx").
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
MAX_NAME_LENGTH = 128


def check_name(name, what="config 'name'", where="runs/<name> and saved_models/<name>"):
    """Refuse a run / model ``name`` that is not one plain folder name of at most
    :data:`MAX_NAME_LENGTH` characters (ConfigError naming ``what`` and the fix)."""
    if not _NAME.match(name) or ".." in name:
        raise ConfigError(f"{what} {shown(name)} must be a plain folder name (letters, digits, "
                          f"'_', '-', '.', '+'; no '/' or '..'): it names {where}")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(f"{what} is {len(name)} characters long: use at most "
                          f"{MAX_NAME_LENGTH} (it names {where}; file systems allow 255 bytes)")


def _check_paths(cfg):
    """``name`` must be one plain folder name; a relative ``train.out_dir`` must stay inside
    ``runs/`` (an absolute one is taken as given). An explicit ``--out-dir`` is not checked."""
    check_name(cfg.name)
    out = cfg.train.out_dir
    if out is not None and not os.path.isabs(out):
        parts = os.path.normpath(out).split(os.sep)
        if len(parts) < 2 or parts[0] != RUNS_DIR:
            raise ConfigError(f"config key 'train.out_dir' {out!r} leaves runs/: use a folder "
                              "under runs/ or an absolute path, or pass --out-dir")


def validate(cfg):
    """Every value of ``cfg``: choices, numeric ranges (finite), cross-field constraints and
    paths; raises ConfigError naming the key and the allowed values. Returns ``cfg``."""
    m, a, lo, t, d = cfg.model, cfg.assign, cfg.loss, cfg.train, cfg.data
    for key in FIELDS:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        check_value(key, value)
    allowed = ARCH_BACKBONES[m.arch]
    if m.backbone not in allowed:
        raise ConfigError(f"model.arch {m.arch!r} is built on {' or '.join(allowed).upper()} only: "
                          f"set model.backbone: {allowed[0]}")
    if a.neg_iou > a.pos_iou:
        raise ConfigError(f"need 0 < assign.neg_iou <= assign.pos_iou <= 1, got "
                          f"{a.neg_iou} and {a.pos_iou}")
    if lo.bl1_gamma / lo.bl1_alpha > 20:
        raise ConfigError("loss.bl1_gamma / loss.bl1_alpha must be <= 20 (the balanced L1 loss's "
                          f"b = e^(gamma/alpha) - 1 overflows), got {lo.bl1_gamma} / {lo.bl1_alpha}")
    if t.min_lr > t.lr:
        raise ConfigError(f"train.min_lr ({t.min_lr}) must be <= train.lr ({t.lr}): the cosine "
                          "schedule decays from lr down to min_lr")
    if d.source == "synthetic" and t.batch_size > d.num_train:
        raise ConfigError(f"train.batch_size ({t.batch_size}) is larger than the training set "
                          f"(data.num_train = {d.num_train}): lower the batch size or add images")
    _check_paths(cfg)
    return cfg


def merge(base, extra):
    """``extra`` over ``base``: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(values):
    """Build and validate a :class:`Config` from a nested dict."""
    return validate(build(Config, values, ""))



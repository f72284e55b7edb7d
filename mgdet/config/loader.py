"""Reading configs: YAML files with ``base:`` inheritance, shipped config names and
``section.key=value`` overrides, merged and validated (:func:`load_config`).

    cfg = load_config("configs/retinanet_resnet18_voc.yaml", ["assign.strategy=iou"])
"""
import os

import yaml

from mgdet.config.schema import Config
from mgdet.config.validate import ConfigError, build, config_from_dict, merge, shown


MAX_YAML_NODES = 100_000  # values a config document may hold once its aliases are expanded


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader that refuses a document whose aliases (``*name``) expand to more than
    :data:`MAX_YAML_NODES` values: a few hundred bytes of nested aliases (a "billion laughs"
    file) otherwise become gigabytes as soon as anything prints or walks the value."""

    def construct_document(self, node):
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConfigError(f"{self.what}: its YAML aliases (*name) expand to more than "
                              f"{MAX_YAML_NODES} values; write the values out instead")
        return super().construct_document(node)


def _expanded_size(node, memo):
    """Number of nodes of ``node`` with every alias expanded (shared nodes counted each time
    they are used; computed once per node)."""
    key = id(node)
    if key not in memo:
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        memo[key] = 1 + sum(_expanded_size(child, memo) for child in children)
    return memo[key]


def safe_load(text, what):
    """``yaml.safe_load(text)`` with aliases bounded (:class:`_BoundedLoader`) and nesting too
    deep for the parser refused; ``what`` (e.g. ``"config file 'x.yaml'"``) starts the
    ConfigError message."""
    loader = _BoundedLoader(text)
    loader.what = what
    try:
        return loader.get_single_data()
    except RecursionError:
        raise ConfigError(f"{what}: its YAML is nested too deeply; flatten it") from None
    finally:
        loader.dispose()


def parse_overrides(overrides):
    """``["train.epochs=3", "assign.strategy=iou"]`` -> nested dict (values parsed as YAML)."""
    tree = {}
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {shown(item)} must look like section.key=value")
        path, raw = item.split("=", 1)
        node = tree
        parts = path.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = safe_load(raw, f"override {shown(item)}")
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"override {shown(item)}: the value is not valid YAML ({problem}); "
                              "quote strings, e.g. --set 'name=\"my run\"'") from None
    return tree


BASE_KEY = "base"  # a config's parent(s): beside the file, else shipped (`base: default`)


def configs_dir():
    """The folder of the shipped configs: ``mgdet/configs`` in an installed wheel, the
    checkout's top-level ``configs/`` otherwise."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # mgdet/
    for candidate in (os.path.join(package, "configs"),
                      os.path.join(os.path.dirname(package), "configs")):
        if os.path.isdir(candidate):
            return candidate
    return os.path.join(package, "configs")


def config_names():
    """Names of the shipped configs (``default``, ``retinanet_resnet18_voc``, ...)."""
    folder = configs_dir()
    if not os.path.isdir(folder):
        return []
    return sorted(n[:-5] for n in os.listdir(folder) if n.endswith(".yaml"))


def resolve_config_path(path_or_name):
    """A YAML path as given, else the shipped config of that name (``"default"`` or
    ``"default.yaml"``); raises ConfigError listing the shipped names."""
    if os.path.isfile(path_or_name):
        return path_or_name
    name = os.path.basename(path_or_name)
    shipped = os.path.join(configs_dir(), name if name.endswith(".yaml") else name + ".yaml")
    if os.path.dirname(path_or_name) in ("", "configs") and os.path.isfile(shipped):
        return shipped
    raise ConfigError(f"config file {path_or_name!r} not found: pass a YAML file, or the name of "
                      f"a shipped config: {', '.join(config_names())}")


def _read_yaml(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path!r} is not UTF-8 text (byte {data[err.start]:#04x} "
                          f"at offset {err.start}): save it as UTF-8") from None
    try:
        values = safe_load(text, f"config file {path!r}") or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path!r} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of sections")
    return values


def find_base(path, base):
    """The file that ``base:`` names in the config file ``path``: ``base`` relative to the
    file's folder, else the shipped config of that name or relative path (``default``,
    ``retinanet_resnet18_voc.yaml``, ``_base_/voc.yaml``; ``.yaml`` may be left out), so that a
    user's YAML anywhere can start from a shipped one. Raises ConfigError naming the places
    searched."""
    folders = [os.path.dirname(os.path.abspath(path))]
    if not os.path.isabs(base):
        folders.append(configs_dir())
    names = [base] if base.endswith((".yaml", ".yml")) else [base, base + ".yaml"]
    tried = [os.path.join(folder, name) for folder in folders for name in names]
    for candidate in tried:
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(f"config file {path!r}: its base {base!r} does not exist (looked for "
                      f"{', '.join(tried)}); give a path relative to the file or a shipped "
                      f"config: {', '.join(config_names())}")


def read_config_file(path, _chain=()):
    """The values of the YAML file ``path`` merged over its ``base:`` file(s), as a nested dict.

    ``base`` is a path (or a list of paths, later ones winning) found by :func:`find_base`:
    relative to the file, else a shipped config (``base: default``); bases may have bases;
    mappings merge key by key, anything else (lists too) is replaced. Each file's keys and types
    are checked on their own, so an error names the file and the key; a cycle of bases is
    refused. A base's ``name`` is not inherited.
    """
    real = os.path.realpath(path)
    if real in _chain:
        cycle = " -> ".join(list(_chain[_chain.index(real):]) + [real])
        raise ConfigError(f"config file {path!r}: its bases form a cycle ({cycle}); remove one "
                          f"'{BASE_KEY}:' line")
    values = _read_yaml(path)
    bases = values.pop(BASE_KEY, None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"config file {path!r}: '{BASE_KEY}' must be a file path or a list of "
                          f"them, got {bases!r}")
    try:
        build(Config, values, "")  # keys and types of this file alone (cross-field: later)
    except ConfigError as err:
        raise ConfigError(f"config file {path!r}: {err}") from None
    merged = {}
    for base in bases:
        inherited = read_config_file(find_base(path, base), _chain + (real,))
        inherited.pop("name", None)
        merged = merge(merged, inherited)
    return merge(merged, values)


def load_config(path=None, overrides=None):
    """Load ``path`` (a YAML file, or the name of a shipped config such as ``"default"``; None:
    all defaults) with its ``base:`` files, apply ``overrides`` (``"a.b=v"`` strings or a nested
    dict), validate, and return a frozen :class:`Config`."""
    values = {}
    if path is not None:
        path = resolve_config_path(os.fspath(path))
        values = read_config_file(path)
        values.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    return config_from_dict(merge(values, extra))


def config_to_yaml(cfg):
    """The merged, validated ``cfg`` as YAML text (what ``mgdet train --print-config`` shows)."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return yaml.safe_dump(plain(cfg.to_dict()), sort_keys=False)


def replace(cfg, **sections):
    """Copy of ``cfg`` with sections' fields replaced: ``replace(cfg, train={"epochs": 1})``."""
    return config_from_dict(merge(cfg.to_dict(), sections))

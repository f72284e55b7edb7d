"""Experiment configuration: YAML -> frozen, validated dataclasses (the lowest stage: it
imports no other mgdet package).

A config file holds up to six sections (``model``, ``assign``, ``loss``, ``data``, ``train``,
``eval``) plus ``name``; every key is optional and falls back to the defaults of
:mod:`mgdet.config.schema`. Unknown keys, wrong types and out-of-range values raise
:class:`ConfigError` naming the key and the fix (:mod:`mgdet.config.validate`).

    cfg = load_config("configs/retinanet_resnet18_voc.yaml", ["assign.strategy=iou"])
"""
from mgdet.config.files import TORCHVISION_URLS, check_files, missing_weights_message
from mgdet.config.loader import (BASE_KEY, MAX_YAML_NODES, config_names, config_to_yaml,
                                 configs_dir, find_base, load_config, parse_overrides,
                                 read_config_file, replace, resolve_config_path, safe_load)
from mgdet.config.schema import (ARCHS, AUGMENT_MODES, BACKBONES, CLS_LOSSES, DEFAULT_MAX_PIXELS,
                                 DIFFICULT, DISTRIBUTE, EXPORT_FORMATS, OPTIMIZERS,
                                 PAPER_STRATEGIES, PRECISION, QUANTIZE, RUNS_DIR, SOURCES,
                                 STRATEGIES, WORKER_SHARDING, AssignConfig, Config, DataConfig,
                                 EvalConfig, LossConfig, ModelConfig, TrainConfig)
from mgdet.config.validate import (MAX_NAME_LENGTH, RANGES, ConfigError, check_name,
                                   check_value, config_from_dict, numeric_keys, shown, validate)

__all__ = [name for name in dir() if not name.startswith("_")]

"""Every config value is validated in `load_config`, before any work; bad ones are one
ConfigError naming the key (and one line + exit 2 from the CLI)."""
import os

import pytest

from mgdet.config import RANGES, ConfigError, load_config, numeric_keys

from tests import ROOT

DEFAULT = os.path.join(ROOT, "configs", "default.yaml")


def _refused(*overrides):
    with pytest.raises(ConfigError) as err:
        load_config(DEFAULT, list(overrides))
    return str(err.value)


def test_every_numeric_field_has_a_range():
    assert set(numeric_keys()) == set(RANGES)
    assert "train.clip_norm" in RANGES and "data.max_pixels" in RANGES


@pytest.mark.parametrize("key", sorted(RANGES))
def test_every_numeric_field_refuses_non_finite_and_out_of_range(key):
    low, high, _, _ = RANGES[key]
    for bad in (".inf", "-.inf", ".nan", str(low - 1), str(high * 10 + 1)):
        message = _refused(f"{key}={bad}")
        assert f"'{key}'" in message, (bad, message)


@pytest.mark.parametrize("override,key", [  # what the range sweep above does not try
    ("model.width=inf", "model.width"),            # the string "inf", not YAML's .inf
    ("train.clip_norm=0", "train.clip_norm"),      # the open lower bound itself
    ("data.worker_sharding=shards", "data.worker_sharding"),
])
def test_values_from_the_issue_are_refused(override, key):
    assert f"'{key}'" in _refused(override)


def test_cross_field_checks():
    assert "train.min_lr" in _refused("train.lr=0.01", "train.min_lr=0.1")
    assert "larger than the training set" in _refused("data.num_train=8", "train.batch_size=16")
    assert "bl1_gamma / loss.bl1_alpha" in _refused("loss.bl1_alpha=0.01", "loss.bl1_gamma=1")
    cfg = load_config(DEFAULT, ["train.clip_norm=10", "train.lr=0.01", "train.min_lr=0.01"])
    assert cfg.train.clip_norm == 10.0


def test_names_and_out_dirs_that_leave_runs_are_refused(tmp_path):
    for name in ("../../x", "a/b", "..", ".hidden"):
        assert "'name'" in _refused(f"name={name}")
    for out in ("../../x", "runs/../x", "runs", "elsewhere/x"):
        assert "'train.out_dir'" in _refused(f"train.out_dir={out}")
    assert load_config(DEFAULT, ["train.out_dir=runs/a/b"]).out_dir == "runs/a/b"
    assert load_config(DEFAULT, [f"train.out_dir={tmp_path}"]).out_dir == str(tmp_path)


def test_yaml_syntax_error_in_an_override_is_a_config_error():
    assert "not valid YAML" in _refused("train.epochs=[1")


def _main(capsys, *argv):
    import cli
    code = cli.main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("argv,expected", [
    (["train", "--set", "loss.focal_alpha=5"], "'loss.focal_alpha'"),
    (["train", "--set", "data.num_train=4", "--set", "train.batch_size=8"], "larger than"),
    (["train", "--set", "model.width=[0.5"], "not valid YAML"),
    (["train", "--set", "name=../../x"], "'name'"),
])
def test_cli_bad_values_are_one_line_and_exit_2(capsys, argv, expected):
    code, err = _main(capsys, *argv)
    assert code == 2 and len(err) == 1 and expected in err[0], err


def test_choice_lists_match_the_tables_that_implement_them():
    """The config declares each choice list once; the tables that implement the choices
    (sources, augment transforms, strategies, classification losses) cover exactly them."""
    from mgdet import config, data
    from mgdet.data import pipeline
    assert set(data.SOURCES) == set(config.SOURCES)
    assert set(pipeline.AUGMENT_TRANSFORMS) | {"none"} == set(config.AUGMENT_MODES)
    refused = _refused("data.augment=mosaic")
    assert "'data.augment'" in refused and "paper" in refused



def test_precision_auto_is_a_choice_of_the_config_and_the_cli(capsys):
    """``train.precision: auto`` is the default and a choice of the config and ``--precision``;
    other values are refused naming the choices."""
    import yaml

    import cli
    from mgdet.config import PRECISION
    assert PRECISION == ("float32", "mixed_float16", "mixed_bfloat16", "auto")
    assert load_config(DEFAULT).train.precision == "auto"
    assert load_config(DEFAULT, ["train.precision=float32"]).train.precision == "float32"
    refused = _refused("train.precision=bf16")
    assert "'train.precision'" in refused and "auto" in refused
    assert cli.main(["train", "--precision", "auto", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["precision"] == "auto"
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        cli.main(["train", "--precision", "bfloat16", "--print-config"])
    assert "auto" in capsys.readouterr().err

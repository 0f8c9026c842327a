"""params.yaml -> typed config: defaults, overrides, and errors that name the key at fault."""

from pathlib import Path

import pytest
import yaml

from tvs.config import ConfigError, load_params

from .conftest import PROJECT, write_params


def test_project_params_file_is_valid_and_keeps_the_documented_names():
    params = load_params(PROJECT / "params.yaml")
    assert params.lr > 0 and params.seed >= 0
    assert params.data.image_size == 128 and params.data.train_fraction == 1.0
    assert params.model.arch == "tf_efficientnet_lite0"
    assert params.pretrained.init == "pretrained" and params.scratch.init == "scratch"
    assert params.train.epochs >= 1 and params.train.batch_size >= 1


def test_missing_keys_take_defaults_and_ints_are_accepted_as_floats(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("lr: 1\nscratch: {lr_mult: 2}\n")
    params = load_params(path)
    assert params.lr == 1.0 and isinstance(params.lr, float)
    assert params.scratch.lr_mult == 2.0 and params.scratch.init == "scratch"
    assert params.pretrained.lr_mult == 1.0


def test_dotted_overrides_apply_on_top_of_the_file(tiny_params_file: Path):
    params = load_params(tiny_params_file, overrides={"data.train_fraction": 0.25, "seed": 7})
    assert params.data.train_fraction == 0.25 and params.seed == 7


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"learning_rate": 0.1}, r"unknown key 'learning_rate'"),
        ({"train": {"epochz": 3}}, r"unknown key 'train\.epochz'.*valid keys under train: epochs"),
        ({"lr": -0.1}, r"lr: must be > 0"),
        ({"lr": "fast"}, r"lr: expected float, got str"),
        ({"train": {"epochs": 0}}, r"train\.epochs: must be at least 1"),
        ({"train": {"epochs": 2.5}}, r"train\.epochs: expected int, got float"),
        ({"train": {"channels_last": "yes"}}, r"train\.channels_last: expected bool"),
        ({"train": {"precision": "fp8"}}, r"train\.precision: must be one of 'auto', 'fp32', 'bf16', 'fp16'"),
        ({"data": {"train_fraction": 0}}, r"data\.train_fraction: must be in \(0, 1\]"),
        ({"data": {"train_fraction": 1.5}}, r"data\.train_fraction: must be in \(0, 1\]"),
        ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}}, r"data\.val_fraction: plus data\.test_fraction"),
        ({"model": {"arch": "vgg99"}}, r"model\.arch: must be one of \['resnet18', 'tf_efficientnet_lite0'\]"),
        ({"scratch": {"freeze_epochs": 1}}, r"scratch\.freeze_epochs: only makes sense with init: pretrained"),
        ({"scratch": {"lr_mult": 0}}, r"scratch\.lr_mult: must be > 0"),
        ({"scratch": {"init": "imagenet"}}, r"scratch\.init: must be one of 'pretrained', 'scratch'"),
        ({"train": 5}, r"train: expected a mapping, got int"),
    ],
)
def test_bad_params_stop_with_an_error_naming_the_file_and_key(tmp_path: Path, content: dict, message: str):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError, match=message) as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_unreadable_params_files_are_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_params(bad)


def test_tiny_params_fixture_is_valid(tmp_path: Path):
    params = load_params(write_params(tmp_path / "p.yaml", train={"epochs": 2}))
    assert params.train.epochs == 2 and params.data.image_size == 32

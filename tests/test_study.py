"""The study's building blocks: a cell's training subset and budget, its params, break-even."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tvs.config import ConfigError, DataConfig, TrainConfig
from tvs.data import make_manifest
from tvs.stats import Estimate
from tvs.study import (
    SizeSummary,
    break_even,
    load_study_params,
    parse_override,
    step_budget,
    training_manifest,
    training_sizes,
)

from .conftest import PROJECT


def table(per_class: dict[str, int]) -> pd.DataFrame:
    rows = [{"path": f"{c}/{i}.png", "class": c, "sha1": f"{c}{i}"} for c, n in per_class.items() for i in range(n)]
    return pd.DataFrame(rows)


def train_paths(manifest: pd.DataFrame) -> set[str]:
    return set(manifest.loc[manifest["split"] == "train", "path"])


FULL = make_manifest(table({"a": 60, "b": 30}), DataConfig(val_fraction=0.2, test_fraction=0.2), seed=7)


def test_training_manifest_reproduces_prepares_own_subset_exactly():
    # The main pipeline: prepare applied data.train_fraction; train applies the same rule again.
    for fraction in (0.1, 0.3, 0.75):
        prepared = make_manifest(
            table({"a": 60, "b": 30}), DataConfig(val_fraction=0.2, test_fraction=0.2, train_fraction=fraction), seed=7
        )
        cut = training_manifest(prepared, fraction, seed=7)
        assert cut["split"].tolist() == prepared["split"].tolist()


def test_training_manifest_subsets_are_nested_stratified_and_leave_val_and_test_alone():
    sizes = []
    for seed in (1, 2):
        previous: set[str] = set()
        for fraction in (0.1, 0.25, 0.5, 1.0):
            cut = training_manifest(FULL, fraction, seed)
            kept = train_paths(cut)
            assert previous <= kept  # nested: a smaller subset is inside the larger one
            previous = kept
            for split in ("val", "test"):
                assert (cut["split"] == split).equals(FULL["split"] == split)
            per_class = cut[cut["split"] == "train"].groupby("class").size()
            full_per_class = FULL[FULL["split"] == "train"].groupby("class").size()
            assert per_class.to_dict() == {c: math.ceil(n * fraction) for c, n in full_per_class.items()}
        sizes.append(train_paths(training_manifest(FULL, 0.25, seed)))
    assert sizes[0] != sizes[1]  # each seed draws its own subset
    assert train_paths(training_manifest(FULL, 1.0, seed=3)) == train_paths(FULL)


def test_training_manifest_starts_from_the_whole_training_split_even_if_prepare_cut_it():
    prepared = make_manifest(
        table({"a": 60, "b": 30}), DataConfig(val_fraction=0.2, test_fraction=0.2, train_fraction=0.3), seed=7
    )
    assert train_paths(training_manifest(prepared, 1.0, seed=1)) == train_paths(FULL)


def test_training_sizes_count_images_and_their_mean_per_class():
    n, per_class = training_sizes(FULL, 0.5)
    assert n == math.ceil(36 * 0.5) + math.ceil(18 * 0.5)
    assert per_class == n / 2


def test_step_budget_raises_epochs_to_the_minimum_number_of_steps_and_never_lowers_them():
    train = TrainConfig(epochs=8, batch_size=64)
    assert step_budget(train, 85, min_steps=40).epochs == 20  # 2 steps per epoch
    assert step_budget(train, 1706, min_steps=40).epochs == 8  # 27 steps per epoch: 8 epochs suffice
    assert step_budget(train, 85, min_steps=0).epochs == 8


def test_parse_override_reads_the_value_as_yaml():
    assert parse_override("data.train_fraction=0.05") == ("data.train_fraction", 0.05)
    assert parse_override("seed=3") == ("seed", 3)
    assert parse_override("train.compile=true") == ("train.compile", True)
    assert parse_override("model.arch=resnet18") == ("model.arch", "resnet18")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("seed")


def test_the_projects_study_params_are_valid(tmp_path):
    study = load_study_params(PROJECT / "study" / "params.yaml")
    assert study.fractions == sorted(study.fractions) and study.fractions[-1] == 1.0
    assert len(study.seeds) >= 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fractions: [0.1, 0]\nseeds: [1, 2]\n", "fractions: each must be in"),
        ("fractions: [0.1]\nseeds: [1, 1]\n", "seeds: must not repeat"),
        ("fractions: [0.1]\nseeds: [1]\nepochs: 3\n", "unknown key 'epochs'"),
        ("fractions: [0.1]\nseeds: [1]\nreport: {confidence: 2}\n", "report.confidence"),
        ("fractions: [0.1]\nseeds: [1]\nreport: {alpha: 0.1}\n", "report: valid keys"),
        ("seeds: [1]\n", "fractions: must be a non-empty list"),
    ],
)
def test_study_params_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_study_params(path)
    assert str(path) in str(err.value)


def size(fraction: float, pretrained: tuple[float, float, float], scratch: float) -> SizeSummary:
    """A size whose pretrained arm has (mean, low, high) and whose scratch arm has mean ``scratch``."""
    mean, low, high = pretrained
    return SizeSummary(
        fraction=fraction, train_images=int(1000 * fraction), images_per_class=500 * fraction,
        accuracy={"pretrained": Estimate(mean, 0.01, low, high, 3), "scratch": Estimate(scratch, 0.01, None, None, 3)},
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

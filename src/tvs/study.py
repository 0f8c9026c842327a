"""The data-efficiency study: its params, what one cell trains on, and the curve its cells make.

A cell is (train_fraction, arm, seed). Every cell uses the split ``prepare`` made (so every cell
is scored on the same test images) and trains on the nested, stratified subset of the training
split for its own fraction and seed (:func:`training_subset`). Budget rule: both arms of a cell
get the same epochs, ``train.epochs``, raised where needed so that every cell makes at least
``min_steps`` optimizer steps (:func:`step_budget`); without that floor, 5% of the data for 8
epochs would be a handful of steps and "less data" would be confounded with "less training".
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tvs.config import ARMS, ConfigError, Params, TrainConfig
from tvs.data import UNUSED, PreparedData, nested_train_subset
from tvs.io import read_json
from tvs.stats import Estimate, EvidenceSettings, mean_ci

log = logging.getLogger(__name__)


# --- one cell ---------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, Any]:
    """``"data.train_fraction=0.1"`` -> ``("data.train_fraction", 0.1)``; the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. data.train_fraction=0.1")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({err})") from None


def training_manifest(manifest: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """``manifest`` with its training split cut to the nested, stratified subset for ``fraction`` and ``seed``.

    Rows ``prepare`` left out (``unused``) go back into the pool first, so the result depends only
    on the split, the fraction and the seed: with ``prepare``'s own fraction and seed (the main
    pipeline) it is exactly ``prepare``'s subset; with a study cell's, that cell's subset. The
    validation and test rows never change.
    """
    manifest = manifest.copy()
    pool = manifest["split"].isin(["train", UNUSED])
    manifest.loc[pool, "split"] = "train"
    keep = nested_train_subset(manifest, fraction, seed)
    manifest.loc[pool & ~keep, "split"] = UNUSED
    return manifest


def training_subset(data: PreparedData, fraction: float, seed: int) -> PreparedData:
    """``data`` whose training split is :func:`training_manifest`'s subset."""
    return dataclasses.replace(data, manifest=training_manifest(data.manifest, fraction, seed))


def step_budget(train: TrainConfig, train_images: int, min_steps: int) -> TrainConfig:
    """``train`` with its epochs raised, if needed, so that training makes at least ``min_steps`` steps."""
    steps_per_epoch = math.ceil(train_images / train.batch_size)
    epochs = max(train.epochs, math.ceil(min_steps / steps_per_epoch)) if min_steps > 0 else train.epochs
    return dataclasses.replace(train, epochs=epochs)


def cell_setup(data: PreparedData, params: Params, min_steps: int = 0) -> tuple[PreparedData, Params]:
    """The training data and params of one run: the subset for its fraction and seed, and its budget."""
    data = training_subset(data, params.data.train_fraction, params.seed)
    train_images = int((data.manifest["split"] == "train").sum())
    train = step_budget(params.train, train_images, min_steps)
    if train.epochs != params.train.epochs:
        log.info(
            "%d training images: %d epochs instead of %d, for at least %d optimizer steps",
            train_images, train.epochs, params.train.epochs, min_steps,
        )  # fmt: skip
    return data, dataclasses.replace(params, train=train)


def training_sizes(manifest: pd.DataFrame, fraction: float) -> tuple[int, float]:
    """Training images at ``fraction`` (the same for every seed) and their mean number per class."""
    subset = training_manifest(manifest, fraction, seed=0)
    n = int((subset["split"] == "train").sum())
    return n, n / manifest["class"].nunique()


# --- the study's params -----------------------------------------------------------------------


@dataclass(frozen=True)
class StudyParams:
    """``study/params.yaml``: the grid and the evidence settings (validated here, read nowhere else)."""

    fractions: list[float]
    seeds: list[int]
    min_steps: int = 0
    report: EvidenceSettings = field(default_factory=EvidenceSettings)


def load_study_params(path: str | Path) -> StudyParams:
    """Read and check the study's params; an error names the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    known = {"fractions", "seeds", "min_steps", "report"}
    unknown = sorted(set(raw) - known) if isinstance(raw, dict) else ["(top level is not a mapping)"]
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}")

    def check(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{path}: {key}: {message}, got {raw.get(key.split('.')[0])!r}")

    fractions, seeds = raw.get("fractions"), raw.get("seeds")
    check(isinstance(fractions, list) and len(fractions) > 0, "fractions", "must be a non-empty list")
    check(all(_is_number(f) and 0 < f <= 1 for f in fractions), "fractions", "each must be in (0, 1]")
    check(len(set(fractions)) == len(fractions), "fractions", "must not repeat")
    check(isinstance(seeds, list) and len(seeds) > 0, "seeds", "must be a non-empty list")
    check(all(type(s) is int and s >= 0 for s in seeds), "seeds", "each must be an integer >= 0")
    check(len(set(seeds)) == len(seeds), "seeds", "must not repeat")
    min_steps = raw.get("min_steps", 0)
    check(type(min_steps) is int and min_steps >= 0, "min_steps", "must be an integer >= 0")
    report = raw.get("report") or {}
    check(isinstance(report, dict), "report", "must be a mapping")
    fields = {f.name for f in dataclasses.fields(EvidenceSettings)}
    check(set(report) <= fields, "report", f"valid keys are {', '.join(sorted(fields))}")
    try:
        settings = EvidenceSettings(**report)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}: report.{err}") from None
    # Values stay as written: dvc.yaml names the cells' folders after them (`1` and `1.0` differ).
    return StudyParams(sorted(fractions), list(seeds), min_steps, settings)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- the curve --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeSummary:
    """Both arms at one training size, over seeds."""

    fraction: float
    train_images: int
    images_per_class: float
    accuracy: dict[str, Estimate]  # per arm, test accuracy over seeds
    difference: Estimate  # pretrained minus scratch, paired by seed
    significant_seeds: int  # seeds whose McNemar p < alpha
    seconds_to_target: dict[str, Estimate | None]  # per arm, over the seeds that reached the target
    reached_target: dict[str, int]  # per arm, how many seeds reached it
    target_val_accuracy: float  # mean over seeds of each pair's target (a share of its better arm's best)
    epochs: int  # the budget each run of this size got
    seeds: int


def cell_dir(results: Path, fraction: float, seed: int) -> Path:
    """Where the study's ``evaluate`` cell for ``fraction`` and ``seed`` writes (as ``dvc.yaml`` names it)."""
    return Path(results) / f"{fraction}-{seed}"


def summarise_size(
    results: Path, fraction: float, seeds: Sequence[int], sizes: tuple[int, float], settings: EvidenceSettings
) -> SizeSummary:
    """Read one size's cells (``<arm>.json``, ``comparison.json``) and summarise them over seeds."""
    cells = [{name: read_json(cell_dir(results, fraction, s) / f"{name}.json") for name in (*ARMS, "comparison")}
             for s in seeds]  # fmt: skip
    conf = settings.confidence
    times: dict[str, Estimate | None] = {}
    reached: dict[str, int] = {}
    for arm in ARMS:
        got = [c["comparison"]["time_to_accuracy"][f"{arm}_seconds"] for c in cells]
        got = [t for t in got if t is not None]
        times[arm], reached[arm] = (mean_ci(got, conf, (0, math.inf)) if got else None), len(got)
    return SizeSummary(
        fraction=fraction,
        train_images=sizes[0],
        images_per_class=sizes[1],
        accuracy={arm: mean_ci([c[arm]["accuracy"] for c in cells], conf, (0, 1)) for arm in ARMS},
        difference=mean_ci([c["comparison"]["accuracy"] for c in cells], conf, (-1, 1)),
        significant_seeds=sum(c["comparison"]["significance"]["mcnemar_p"] < settings.alpha for c in cells),
        seconds_to_target=times,
        reached_target=reached,
        target_val_accuracy=mean_ci([c["comparison"]["time_to_accuracy"]["target_val_accuracy"] for c in cells]).mean,
        epochs=max(c["comparison"]["time_to_accuracy"]["pretrained_epochs_trained"] for c in cells),
        seeds=len(cells),
    )


def break_even(sizes: Sequence[SizeSummary]) -> SizeSummary | None:
    """The smallest size from which on scratch's mean accuracy lies within (or above) pretrained's CI.

    "From which on": scratch must stay there at every larger size too, so one lucky small size does
    not count. ``None``: not reached within this data (also when a CI is missing: one seed).
    """
    found = None
    for size in sorted(sizes, key=lambda s: s.fraction, reverse=True):
        low = size.accuracy["pretrained"].low
        if low is None or size.accuracy["scratch"].mean < low:
            break
        found = size
    return found

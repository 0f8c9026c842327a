"""The data-efficiency study's curve: each training size summarised over seeds, and the break-even.

A cell is (train_fraction, arm, seed). Seed ``s`` is a repeated stratified split of its own
(``prepare@s``, so each seed is scored on its own test images); a cell trains, through the main
pipeline's training stage, on the nested subset of that split for its own fraction and seed
(:func:`tvs.data.split.training_subset`), for at least ``min_steps`` optimizer steps
(:func:`tvs.train.worker.step_budget`). This module only reads what the cells' ``evaluate`` wrote.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tvs.config import ARMS, EvaluateConfig
from tvs.evaluate.stats import Estimate, mean_ci
from tvs.io import read_json
from tvs.verdict.rules import Baseline, mean_baseline


@dataclass(frozen=True)
class SizeSummary:
    """Both arms at one training size, over seeds."""

    fraction: float
    train_images: int
    images_per_class: float
    accuracy: dict[str, Estimate]  # per arm, test accuracy over seeds
    balanced_accuracy: dict[str, Estimate]  # per arm, test balanced accuracy over seeds
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


Cell = dict[str, dict]  # what one cell's ``evaluate`` wrote: each arm's metrics and the comparison, by file stem


def read_cells(results: Path, fractions: Sequence[float], seeds: Sequence[int]) -> dict[tuple[float, int], Cell]:
    """Every cell of the grid, read once: ``(fraction, seed)`` -> its ``<arm>.json`` and ``comparison.json``."""
    return {
        (f, s): {name: read_json(cell_dir(results, f, s) / f"{name}.json") for name in (*ARMS, "comparison")}
        for f in fractions
        for s in seeds
    }


def summarise_size(
    cells: Sequence[Cell], fraction: float, sizes: tuple[int, float], settings: EvaluateConfig
) -> SizeSummary:
    """One size's cells, one per seed, summarised over the seeds."""
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
        balanced_accuracy={arm: mean_ci([c[arm]["balanced_accuracy"] for c in cells], conf, (0, 1)) for arm in ARMS},
        difference=mean_ci([c["comparison"]["accuracy"] for c in cells], conf, (-1, 1)),
        significant_seeds=sum(c["comparison"]["significance"]["mcnemar_p"] < settings.alpha for c in cells),
        seconds_to_target=times,
        reached_target=reached,
        target_val_accuracy=mean_ci([c["comparison"]["time_to_accuracy"]["target_val_accuracy"] for c in cells]).mean,
        epochs=max(c["comparison"]["time_to_accuracy"]["pretrained_epochs_trained"] for c in cells),
        seeds=len(cells),
    )


def split_baseline(results: Path, cells: Mapping[tuple[float, int], Cell]) -> Baseline:
    """The majority-class baseline of the seeds' test splits, averaged over every cell's ``comparison.json``."""
    comparisons = {str(cell_dir(results, f, s)): cell["comparison"] for (f, s), cell in cells.items()}
    return mean_baseline(comparisons, rerun="dvc repro study/dvc.yaml")


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

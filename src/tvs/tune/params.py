"""``tune/params.yaml``: the tuning pipeline's grid and evidence settings, read by :func:`tvs.config.load_config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tvs.config import EvaluateConfig, check, load_config


@dataclass(frozen=True)
class TuneParams:
    """Each arm's learning-rate grid, the budgets, the splits, and the evidence settings."""

    lrs: list[float]  # every arm searches the same grid: an equal number of trials per arm
    epochs: int  # the budget of every search run and of the pretrained arm's final runs
    scratch_epochs: list[int]  # the scratch arm's final schedules (compute matching); one of them is `epochs`
    search_repeat: int  # the search's own split (and seed), none of `repeats`; the choice reads its validation only
    repeats: list[int]  # final scoring: repeat r is its own stratified split (`prepare` with seed r) and seed r
    image_size: int = 128  # of every run (`data.image_size`)
    report: EvaluateConfig = field(default_factory=EvaluateConfig)  # params.yaml's `evaluate`, its rules

    def validate(self) -> None:
        check(len(self.lrs) > 0, "lrs", "must be a non-empty list")
        check(all(lr > 0 for lr in self.lrs), "lrs", f"each must be > 0, got {self.lrs}")
        check(len(set(self.lrs)) == len(self.lrs), "lrs", f"must not repeat, got {self.lrs}")
        # No floor on small rates: DVC writes str(lr) into the command (`--set lr=5e-05`), and the
        # stage reads it back as DVC reads YAML (tvs.config.parse_yaml, YAML 1.2), as the number 5e-05.
        check(self.epochs >= 1, "epochs", f"must be an integer >= 1, got {self.epochs}")
        check(all(e >= 1 for e in self.scratch_epochs), "scratch_epochs", f"must be >= 1, got {self.scratch_epochs}")
        check(
            self.epochs in self.scratch_epochs, "scratch_epochs",
            f"must include `epochs` ({self.epochs}): tuned against tuned compares the arms at the same budget",
        )  # fmt: skip
        check(len(set(self.scratch_epochs)) == len(self.scratch_epochs), "scratch_epochs", "must not repeat")
        check(len(self.repeats) > 0, "repeats", "must be a non-empty list")
        check(all(r >= 0 for r in self.repeats), "repeats", f"each must be an integer >= 0, got {self.repeats}")
        check(len(set(self.repeats)) == len(self.repeats), "repeats", f"must not repeat, got {self.repeats}")
        check(self.search_repeat >= 0, "search_repeat", f"must be an integer >= 0, got {self.search_repeat}")
        check(
            self.search_repeat not in self.repeats, "search_repeat",
            f"must not be one of `repeats` {self.repeats}: the search has its own split, so that no final run "
            f"repeats a search run and no final score saw the choice; got {self.search_repeat}",
        )  # fmt: skip
        check(self.image_size >= 16, "image_size", f"must be at least 16, got {self.image_size}")
        self.report.validate("report")


def load_tune_params(path: str | Path) -> TuneParams:
    """Read and check the tuning pipeline's params; an error names the file and the key."""
    tune = load_config(TuneParams, path)
    # Values stay as read: dvc.yaml names the cells' folders after str(value) (`1` and `1.0` differ; `1e-3`
    # is read as 0.001 by DVC and here alike, so its folder is `...-0.001`).
    return TuneParams(
        list(tune.lrs), tune.epochs, sorted(tune.scratch_epochs), tune.search_repeat, list(tune.repeats),
        tune.image_size, tune.report,
    )  # fmt: skip

"""``study/params.yaml``: the study's grid and evidence settings, read by :func:`tvs.config.load_config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tvs.config import EvaluateConfig, check, load_config


@dataclass(frozen=True)
class StudyParams:
    """The grid (training fractions x seeds), the step floor, and the evidence settings."""

    fractions: list[float]
    seeds: list[int]
    min_steps: int = 0
    report: EvaluateConfig = field(default_factory=EvaluateConfig)  # params.yaml's `evaluate`, its rules

    def validate(self) -> None:
        check(len(self.fractions) > 0, "fractions", "must be a non-empty list")
        check(all(0 < f <= 1 for f in self.fractions), "fractions", f"each must be in (0, 1], got {self.fractions}")
        check(len(set(self.fractions)) == len(self.fractions), "fractions", f"must not repeat, got {self.fractions}")
        check(len(self.seeds) > 0, "seeds", "must be a non-empty list")
        check(all(s >= 0 for s in self.seeds), "seeds", f"each must be an integer >= 0, got {self.seeds}")
        check(len(set(self.seeds)) == len(self.seeds), "seeds", f"must not repeat, got {self.seeds}")
        check(self.min_steps >= 0, "min_steps", f"must be an integer >= 0, got {self.min_steps}")
        self.report.validate("report")


def load_study_params(path: str | Path) -> StudyParams:
    """Read and check the study's params; an error names the file and the key."""
    study = load_config(StudyParams, path)
    # Values stay as read (as DVC reads them): dvc.yaml names cells' folders after str(value) (`1`, `1.0` differ).
    return StudyParams(sorted(study.fractions), list(study.seeds), study.min_steps, study.report)

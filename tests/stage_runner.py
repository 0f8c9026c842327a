"""Helpers for tests that run stages as DVC does: a subprocess in a project root, relative paths.

A stage checks its output paths against the ``dvc.yaml`` of its working directory, so a project
made here holds a copy of the project's ``dvc.yaml``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tvs.config import load_params
from tvs.data.prepare import prepare_dataset

from .conftest import ENV, PROJECT, write_params


def stage_cmd(stage: str, *args: str) -> list[str]:
    """``python src/stages/<stage>.py ARGS`` of the project, as dvc.yaml runs it."""
    return [sys.executable, str(PROJECT / "src" / "stages" / f"{stage}.py"), *args]


def train_cmd(arm: str) -> list[str]:
    """The command line dvc.yaml gives a training stage."""
    return stage_cmd(
        "train", "--arm", arm, "--params", "params.yaml", "--data", "data/prepared",
        "--out", f"models/{arm}", "--live", f"dvclive/{arm}",
    )  # fmt: skip


def evaluate_cmd() -> list[str]:
    """The evaluate stage's command line, on ``models/<arm>`` (with fewer bootstrap resamples)."""
    return stage_cmd(
        "evaluate", "--data", "data/prepared", "--pretrained", "models/pretrained", "--scratch", "models/scratch",
        "--metrics", "metrics", "--eval-dir", "eval", "--set", "evaluate.resamples=200",
    )  # fmt: skip


def run_stage(
    project: Path, cmd: list[str], timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=project, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def empty_project(root: Path) -> Path:
    """A project folder holding only the project's ``dvc.yaml`` (where stages may write)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / "dvc.yaml", root / "dvc.yaml")
    return root


def make_project(root: Path, raw: Path, **sections) -> Path:
    """``dvc.yaml``, ``params.yaml`` (tiny params plus ``sections``) and ``data/prepared`` from ``raw``."""
    empty_project(root)
    (root / "weights").mkdir(exist_ok=True)
    params = load_params(write_params(root / "params.yaml", **sections))
    prepare_dataset(raw=raw, out=root / "data" / "prepared", params=params, summary_path=root / "prepare.json")
    return root


def last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.strip().splitlines()[-1]


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The error line of a stage that failed as a user error should: exit 1, no traceback."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return last_line(proc)

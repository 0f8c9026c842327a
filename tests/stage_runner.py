"""Helpers for tests that run stages as DVC does: a subprocess in a project root, relative paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tvs.config import load_params
from tvs.data import prepare_dataset

from .conftest import PROJECT, write_params

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}


def train_cmd(arm: str) -> list[str]:
    """The command line dvc.yaml gives a training stage."""
    cmd = [sys.executable, str(PROJECT / "src" / "stages" / "train.py"), "--arm", arm, "--params", "params.yaml"]
    return cmd + ["--data", "data/prepared", "--out", f"models/{arm}", "--live", f"dvclive/{arm}"]


def run_stage(project: Path, cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=project, env=ENV, capture_output=True, text=True, timeout=timeout)


def make_project(root: Path, raw: Path, **sections) -> Path:
    """``root/params.yaml`` (tiny params plus ``sections``) and ``root/data/prepared`` from ``raw``."""
    root.mkdir(parents=True, exist_ok=True)
    params = load_params(write_params(root / "params.yaml", **sections))
    prepare_dataset(raw=raw, out=root / "data" / "prepared", params=params, summary_path=root / "prepare.json")
    return root


def last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.strip().splitlines()[-1]

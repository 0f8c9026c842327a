"""Logs outside a terminal (CI, `dvc queue logs`, a pipe): one line per event, no progress bars.

tqdm's ``disable=None`` draws its bars on a terminal only; piped, each bar update would be a line
of its own (the prepare stage's decoding bar printed one per batch of images before).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ENV, PROJECT, write_imagefolder, write_params
from .stage_runner import empty_project, run_stage, stage_cmd, train_cmd

BAR = re.compile(r"\d+/\d+ \[|it/s|img/s|batch/s|\r")  # what any tqdm bar prints


@pytest.mark.e2e  # runs the stage scripts in subprocesses
def test_prepare_and_train_log_plain_lines_when_piped(tmp_path: Path):
    project = empty_project(tmp_path / "project")
    write_imagefolder(project / "data" / "raw", {"cats": 8, "dogs": 8})
    write_params(project / "params.yaml", train={"epochs": 2})
    prepare = stage_cmd(
        "prepare", "--params", "params.yaml", "--raw", "data/raw", "--out", "data/prepared",
        "--summary", "metrics/prepare.json",
    )  # fmt: skip
    for cmd in (prepare, train_cmd("scratch")):
        proc = run_stage(project, cmd)
        assert proc.returncode == 0, proc.stderr
        assert not BAR.search(proc.stderr), proc.stderr
        assert all(line.startswith("[") for line in proc.stderr.splitlines()), proc.stderr  # none indented by a bar
    epochs = [line for line in proc.stderr.splitlines() if re.search(r" epoch \d+/\d+:", line)]
    assert [line.split(":")[0] for line in epochs] == ["[train] scratch epoch 1/2", "[train] scratch epoch 2/2"]


HELP = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as done:
    assert done.code == 0, done.code
print("heavy modules loaded:", sorted(m for m in ("torch", "pandas", "timm", "dvclive") if m in sys.modules))
"""


@pytest.mark.parametrize("script", sorted(p.name for p in (PROJECT / "src" / "stages").glob("*.py")))
def test_help_answers_before_any_heavy_import(script: str):
    """`--help` of a stage script took 2-4 s while torch loaded; the scripts parse their options first."""
    proc = subprocess.run(
        [sys.executable, "-c", HELP, str(PROJECT / "src" / "stages" / script)],
        env=ENV, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("heavy modules loaded: []"), proc.stdout

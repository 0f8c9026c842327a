"""A stage runs the package code of its own working copy: the workspace's, or the copy DVC checked
out for a queued or temporary experiment, never the one the editable install points at."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ENV, dvc

pytestmark = pytest.mark.e2e

MARKER = 'print("tvs package:", __file__)\n'


def test_a_stage_imports_the_package_of_its_own_working_copy(tiny_repo: Path):
    root = tiny_repo
    init = root / "src" / "tvs" / "__init__.py"
    init.write_text(init.read_text() + MARKER)
    out = dvc(root, "repro", "prepare")
    assert f"tvs package: {init}" in out  # not the src/ the editable install points at


def test_a_queued_experiment_runs_the_code_it_was_queued_with(tiny_repo: Path):
    root = tiny_repo
    init = root / "src" / "tvs" / "__init__.py"
    original = init.read_text()
    init.write_text(original + 'print("queued code ran")\n')  # the experiment's code differs from the workspace's
    dvc(root, "exp", "run", "--queue", "-n", "marked", "prepare")
    init.write_text(original)  # the workspace's code, edited while the experiment waits in the queue
    dvc(root, "queue", "start")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = dvc(root, "queue", "status")
        if "Success" in status or "Failed" in status:
            break
        time.sleep(2)
    assert "Success" in status, status
    logs = subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "logs", "marked"], cwd=root, env=ENV, capture_output=True, text=True
    ).stdout
    assert "queued code ran" in logs
    assert "marked" in dvc(root, "exp", "list")  # its result landed
    assert init.read_text() == original  # and the workspace's code was left alone

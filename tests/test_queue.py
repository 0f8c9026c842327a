"""Many runs at once on DVC's own queue: `dvc exp run --queue` and `dvc queue start -j 2`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from .conftest import dvc

pytestmark = pytest.mark.e2e


def wait_for_queue(root, expected: int, timeout: float = 420) -> str:
    """Poll `dvc queue status` until ``expected`` tasks are done (success or failure); its last output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dvc(root, "queue", "status")
        if status.count("Success") + status.count("Failed") >= expected:
            return status
        time.sleep(2)
    raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")


def test_two_workers_run_every_queued_experiment_and_none_is_lost_or_mixed(tiny_repo: Path):
    root = tiny_repo  # the baseline, reproduced; each experiment then retrains the scratch arm only
    mults = ["2", "3"]  # two workers, two experiments at once: enough to lose or mix one
    for mult in mults:
        dvc(root, "exp", "run", "--queue", "-n", f"x{mult}", "-S", f"scratch.lr_mult={mult}")
    dvc(root, "queue", "start", "-j", "2")
    status = wait_for_queue(root, len(mults))
    assert status.count("Success") == len(mults), status
    shown = json.loads(dvc(root, "exp", "show", "--json", "--no-fetch"))
    runs = {
        rev["name"]: (rev["data"]["params"]["params.yaml"]["data"]["scratch"]["lr_mult"], rev["data"]["metrics"])
        for row in shown
        for exp in row.get("experiments") or []
        for rev in exp["revs"]
    }
    assert set(runs) == {f"x{mult}" for mult in mults}  # none lost
    for name, (mult, metrics) in runs.items():
        assert float(name.removeprefix("x")) == mult  # each result under its own params: none mixed
        assert metrics["metrics/comparison.json"]["data"]["accuracy"] is not None
        assert "metrics/pretrained.json" in metrics and "metrics/scratch.json" in metrics


@pytest.mark.bench
def test_one_worker_against_two_on_the_same_queue(dvc_repo):
    """The queue's wall time with `-j 1` and `-j 2` (printed, and written to $TVS_BENCH_OUT if set).

    Four experiments on the tiny project, each retraining the scratch arm; both runs start from
    the same committed baseline. Timings are reported, never asserted.
    """
    results = {}
    for workers in (1, 2):
        root = dvc_repo(f"queue-j{workers}")
        dvc(root, "repro")
        mults = ["2", "3", "4", "5"]
        for mult in mults:
            dvc(root, "exp", "run", "--queue", "-n", f"x{mult}", "-S", f"scratch.lr_mult={mult}")
        start = time.monotonic()
        dvc(root, "queue", "start", "-j", str(workers))
        status = wait_for_queue(root, len(mults))
        results[f"j{workers}_seconds"] = time.monotonic() - start
        assert status.count("Success") == len(mults), status
    results["experiments"] = 4
    print(json.dumps(results))
    if out := os.environ.get("TVS_BENCH_OUT"):
        Path(out).write_text(json.dumps(results, indent=2) + "\n")

"""A fresh clone of the repository: its results are in git, and only what the README says is missing.

docs/pipeline.md, "What a fresh clone has": the data and the main pipeline's checkpoints, curves and
scoring live in DVC's cache, rebuilt by `make repro` or pulled from a remote. Everything else (metrics,
reports, the page, the main pipeline's and the data's dvc.lock) is in git, and each dvc.lock agrees with
the committed code: no stage is out of date for any other reason. The study and the tuning pipeline
have no dvc.lock in git (their cells live in the cache of the clone that ran them): their results are
kept as evidence with the record of what they ran with (evidence/), which no code change makes stale.
`dvc repro prepare` rebuilds the data too: the default dataset is the output of `data/dvc.yaml:elpv`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ENV, PROJECT, checkout_failures, fresh_shell, run_ok

pytestmark = pytest.mark.e2e

REBUILT = {  # README's right-hand column: (pipeline file, patterns of outputs a clone lacks)
    "data/dvc.yaml": r"data/raw",
    "dvc.yaml": r"data/raw|data/prepared|models/(pretrained|scratch)|dvclive/(pretrained|scratch)|eval",
}

# The study's and the tuning pipeline's outputs: no clone has them until it runs those pipelines (or pulls
# them), and with no lock in git DVC has no hash to check them out by.
GRIDS = (
    r"study/(prepared/\d+|splits/\d+\.json|(models|dvclive)/[0-9.]+-(pretrained|scratch)-\d+|eval/[0-9.]+-\d+|"
    r"reports/[^/]+|metrics/summary\.json)|"
    r"tune/(prepared/\d+|splits/\d+\.json|(models|dvclive|eval)/(search|final)/[^/]+|selected|reports/[^/]+|"
    r"metrics/summary\.json)"
)
ANYWHERE = "|".join(f"(?:{pattern})" for pattern in (*REBUILT.values(), GRIDS))


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fresh") / "clone"
    run_ok(["git", "clone", "-q", str(PROJECT), str(root)], PROJECT.parent)
    return root


def rebuilt(pattern: str, path: str) -> bool:
    """Whether `path` is one of the outputs a clone lacks, or a file inside one."""
    return re.fullmatch(rf"(?:{pattern})(?:/.*)?", path) is not None


def status(clone: Path, pipeline: str) -> dict[str, list]:
    return json.loads(run_ok([sys.executable, "-m", "dvc", "status", "--json", pipeline], clone))


@pytest.mark.parametrize("pipeline", sorted(REBUILT))
def test_a_fresh_clone_lacks_only_the_cached_outputs_and_no_stage_is_stale(clone: Path, pipeline: str):
    changes = [(stage, change) for stage, listed in status(clone, pipeline).items() for change in listed]
    stale = [f"{stage}: {change}" for stage, change in changes if not isinstance(change, dict)]  # the map moved
    outs = {
        path: what
        for _, change in changes
        if isinstance(change, dict)
        for path, what in change.get("changed outs", {}).items()
    }
    assert outs and all(rebuilt(REBUILT[pipeline], path) for path in outs), sorted(outs)
    assert set(outs.values()) == {"not in cache"}, outs
    for stage, change in changes:
        for path, what in change.get("changed deps", {}).items() if isinstance(change, dict) else ():
            lacking = rebuilt(ANYWHERE, path) or any(out.startswith(f"{path}/") for out in outs)  # or their folder
            if not (what in ("deleted", "modified") and lacking):
                stale.append(f"{stage}: {path} {what}")  # code or params the lock was not run with
    assert stale == [], f"dvc.lock is out of date with the committed code or params (rerun and commit): {stale}"


def test_checkout_in_a_fresh_clone_fails_only_on_the_cached_outputs(clone: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "checkout"], cwd=clone, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0 and "Is your cache up to date?" in proc.stderr
    failed = checkout_failures(proc.stderr)
    assert failed and all(rebuilt(ANYWHERE, path) for path in failed), failed
    for kept in ("metrics/comparison.json", "reports/verdict.md", "reports/answer.md", "evidence/study/record.json"):
        assert (clone / kept).is_file()  # results a clone has without any cache


def test_the_study_and_the_tuning_pipeline_are_kept_as_evidence_not_as_locks(clone: Path):
    assert run_ok(["git", "ls-files", "study/dvc.lock", "tune/dvc.lock", "study/metrics", "tune/metrics"], clone) == ""
    for pipeline, results in (("study", "cells.csv"), ("tune", "compute.csv")):
        record = json.loads((clone / "evidence" / pipeline / "record.json").read_text())
        assert record["data"] and record["config"]["data.image_size"], record  # what they ran with
        assert (clone / "evidence" / pipeline / results).stat().st_size > 0


def test_a_fresh_clone_exports_the_default_dataset_first_and_exp_apply_restores_an_experiment(tmp_path: Path):
    """One clone, as a user's first session in it (each step in a fresh shell):

    1. `dvc exp run` runs the export before prepare (it used to stop at once with DVC's own "missing
       data 'source': data/raw" and no hint), and the export has the committed hash.
    2. `dvc exp apply` ends with a `dvc checkout` of every pipeline: in a clone that has run an
       experiment, it restores that experiment's files and outputs, and fails only on the study's and
       the tuning pipeline's outputs, which this clone never built (DVC counts an output with no hash
       as a failed checkout; `dvc exp apply` has no --allow-missing).
    """
    root = tmp_path / "clone"
    run_ok(["git", "clone", "-q", str(PROJECT), str(root)], PROJECT.parent)
    (root / ".venv").symlink_to(PROJECT / ".venv")  # what the README's set-up made, not installed again
    tiny = "-S train.epochs=1 -S data.image_size=32 -S data.train_fraction=0.05 -S evaluate.resamples=200"
    done = fresh_shell(f"source .venv/bin/activate\ndvc exp run -n tiny {tiny}", root)
    assert done.returncode == 0, done.stdout + done.stderr
    # check_params is a root of the graph too (-S changed params.yaml): DVC runs it before or after the export.
    order = [stage for stage in re.findall(r"Running stage '([^']+)'", done.stdout) if stage != "check_params"]
    assert order[:2] == ["data/dvc.yaml:elpv", "prepare"]
    assert status(root, "data/dvc.yaml") == {}  # the export has the hash data/dvc.lock commits
    assert len(list((root / "data" / "raw" / "defective").iterdir())) == 821
    ran = json.loads((root / "metrics" / "comparison.json").read_text())
    run_ok(["git", "checkout", "--", "."], root)  # back to the committed results; the outputs stay the run's
    assert json.loads((root / "metrics" / "comparison.json").read_text()) != ran

    proc = fresh_shell("source .venv/bin/activate\ndvc exp apply tiny", root)

    assert proc.returncode != 0 and "Is your cache up to date?" in proc.stderr, proc.stdout + proc.stderr
    assert json.loads((root / "metrics" / "comparison.json").read_text()) == ran
    assert "image_size: 32" in (root / "params.yaml").read_text()
    failed = checkout_failures(proc.stderr)
    assert failed and all(rebuilt(GRIDS, path) for path in failed), failed
    assert json.loads(run_ok([sys.executable, "-m", "dvc", "status", "--json", "dvc.yaml"], root)) == {}


def test_metrics_show_and_diff_in_a_fresh_clone_are_the_two_arms_and_warn_of_nothing(clone: Path):
    """The study's and the tuning summaries are plain outputs, not DVC metrics: a clone that never ran those
    grids got "DVC failed to load some metrics" from every `dvc metrics diff`, and empty rows first."""
    diff = run_ok([sys.executable, "-m", "dvc", "metrics", "diff", "HEAD", "--all", "--md"], clone)
    assert "failed to load" not in diff and "| metrics/comparison.json" in diff
    shown = run_ok([sys.executable, "-m", "dvc", "metrics", "show"], clone)
    assert "study/" not in shown and "tune/" not in shown and "metrics/comparison.json" in shown

"""Sharing results through a DVC remote and its run-cache, with real DVC, between clones of one repo.

Clone A has trained the main pipeline (a copy of the run's reproduced repository) and trains half
of a tiny study (2 fractions x 1 seed), then `dvc push --run-cache`: the outputs and the records of
the runs. A's results are not committed (A takes its results out of git), so a clone
has no `dvc.lock` to pull by: what it gets back without training, it gets from the run-cache with
`dvc repro --pull` (which pulls the run records, the missing dependencies and each restored
stage's outputs; a bare `dvc pull` finds nothing to check out without a lock file).

What crosses machines: a stage whose outputs are all in DVC's cache (the training stages, every
study cell and each seed's split). A stage with a `cache: false` output runs again: with one under
`outs` DVC keeps no run record at all (verdict, report), and the copy of a `cache: false` metric
that a run record points to stays in the local cache, since `dvc push` sends only the workspace's
cached outputs (evaluate: seconds of work, deterministic, so the metrics still match; prepare is
the exception the first test explains).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from .conftest import Reproduced, add_pipeline, copy_repo, dvc, ran_stages, run_ok
from .s3 import s3_server  # noqa: F401 (the fixture s3_endpoint)
from .tiny_pipelines import TINY_STUDY
from .tiny_pipelines import study_cells as cells

pytestmark = pytest.mark.e2e

STUDY = {**TINY_STUDY, "min_steps": 0}  # one epoch per cell: the run-cache, not the budget rule, is tested here
FIRST_HALF, SECOND_HALF = STUDY["fractions"]
TRAINING = {"train_pretrained", "train_scratch"}


def splits(seeds: list[int]) -> set[str]:
    """The study's ``prepare`` cells: one split per seed."""
    return {f"prepare@{seed}" for seed in seeds}


def restored_stages(output: str) -> set[str]:
    """The stages DVC restored from the run-cache, without a ``study/dvc.yaml:`` prefix."""
    found = re.findall(r"Stage '([^']+)' is cached - skipping run, checking out outputs", output)
    return {name.rsplit(":", 1)[-1] for name in found}


def fully_cached_stages(dvc_yaml: Path) -> set[str]:
    """The stages of ``dvc_yaml`` with outputs (outs, metrics, plots) that all live in DVC's cache (DVC keeps
    no run record of a stage without outputs, such as ``check_params``)."""

    def cached(entry: str | dict) -> bool:
        return isinstance(entry, str) or all(opts.get("cache", True) for opts in entry.values())

    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {
        name
        for name, stage in stages.items()
        if any(stage.get(kind) for kind in ("outs", "metrics", "plots"))
        and all(cached(entry) for kind in ("outs", "metrics", "plots") for entry in stage.get(kind, []))
    }


def clone(origin: Path, dest: Path) -> Path:
    """A fresh `git clone` of ``origin``: the same code and remote config, no DVC cache, no results."""
    run_ok(["git", "clone", "-q", str(origin), str(dest)], origin.parent)
    return dest


def read_json(root: Path, pattern: str) -> dict[str, object]:
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in sorted(root.glob(pattern))}


@pytest.fixture(scope="module")
def origin(reproduced: Reproduced, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clone A: a shared-folder remote in its committed config; trains, pushes outputs and run-cache."""
    repo = copy_repo(reproduced.root, tmp_path_factory.mktemp("remote") / "origin")
    run_ok(["git", "rm", "-rq", "--cached", "dvc.lock", "metrics", "reports"], repo)  # results stay A's own
    add_pipeline(repo, "study", STUDY)
    dvc(repo, "remote", "add", "-d", "shared", str(tmp_path_factory.mktemp("shared-remote")))
    run_ok(["git", "add", "study", ".dvc/config"], repo)
    run_ok(["git", "commit", "-qm", "the study and the team's remote"], repo)
    assert "dvc.lock" not in run_ok(["git", "ls-files"], repo).split()
    assert (repo / "dvc.lock").is_file() and ran_stages(dvc(repo, "repro")) == set()  # the main pipeline has run
    out = dvc(repo, "repro", "--glob", f"study/dvc.yaml:*@{FIRST_HALF}-*")  # the study's first half
    assert ran_stages(out) == cells([FIRST_HALF], STUDY["seeds"]) | splits(STUDY["seeds"])
    dvc(repo, "push", "--run-cache")
    return repo


def assert_same_models(clone_dir: Path, origin: Path) -> None:
    for arm in ("pretrained", "scratch"):
        model = Path("models", arm, "model.safetensors")
        assert (clone_dir / model).read_bytes() == (origin / model).read_bytes()


def test_a_clone_restores_the_training_from_a_shared_folder_remote_without_running_it(origin: Path, tmp_path: Path):
    b = clone(origin, tmp_path / "b")
    out = dvc(b, "repro", "--pull")
    restorable = fully_cached_stages(b / "dvc.yaml")
    assert restorable >= TRAINING, "a training stage has a `cache: false` output: it cannot come from a remote"
    # `prepare` as well: its `cache: false` metric holds only counts, byte for byte the study's split
    # summary (study/splits/<seed>.json, a cached output A pushed), so all it wrote is in the remote.
    restorable |= {"prepare"}
    assert restored_stages(out) == restorable
    assert ran_stages(out) == set(yaml.safe_load((b / "dvc.yaml").read_text())["stages"]) - restorable
    assert_same_models(b, origin)
    assert read_json(b, "metrics/*.json") == read_json(origin, "metrics/*.json")
    assert ran_stages(dvc(b, "repro")) == set()  # what was restored is recorded in B's own dvc.lock


def test_a_clone_restores_the_training_from_an_s3_remote_without_running_it(
    origin: Path, s3_endpoint: str, tmp_path: Path
):
    a = copy_repo(origin, tmp_path / "a")  # A's own copy: the S3 remote is this test's alone
    dvc(a, "remote", "add", "s3", "s3://team-results/tvs")
    dvc(a, "remote", "modify", "s3", "endpointurl", s3_endpoint)
    run_ok(["git", "commit", "-qam", "an S3 remote beside the shared folder"], a)
    dvc(a, "push", "--run-cache", "-r", "s3")
    c = clone(a, tmp_path / "c")
    dvc(c, "remote", "default", "--local", "s3")  # this machine reads only from S3
    # The training stages and what they need: the rest of the pipeline is the shared folder's test.
    out = dvc(c, "repro", "--pull", *sorted(TRAINING))
    assert (restored_stages(out), ran_stages(out)) == (TRAINING | {"prepare"}, set())  # prepare: see above
    assert_same_models(c, origin)


def test_two_clones_each_train_half_the_study_and_a_third_pulls_the_whole_study_without_training(
    origin: Path, tmp_path: Path
):
    seeds = STUDY["seeds"]
    y = clone(origin, tmp_path / "y")
    out = dvc(y, "repro", "--pull", "--glob", f"study/dvc.yaml:*@{SECOND_HALF}-*")  # the README's command
    assert restored_stages(out) == splits(seeds)  # the seeds' splits: A made them
    assert ran_stages(out) == cells([SECOND_HALF], seeds)
    dvc(y, "push", "--run-cache")

    z = clone(origin, tmp_path / "z")
    out = dvc(z, "repro", "--pull", "study/dvc.yaml")
    assert restored_stages(out) == cells(STUDY["fractions"], seeds) | splits(seeds)
    assert ran_stages(out) == {"report"}  # seconds: a `cache: false` output (module docstring)
    assert read_json(z, "study/eval/*/comparison.json") == {
        **read_json(origin, "study/eval/*/comparison.json"),
        **read_json(y, "study/eval/*/comparison.json"),
    }
    summary = json.loads((z / "study" / "metrics" / "summary.json").read_text())
    assert {f"{round(100 * f)}pct" for f in STUDY["fractions"]} <= summary.keys()

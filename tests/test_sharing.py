"""Two DVC habits of docs/pipeline.md, run as written there: handing a teammate an experiment with its
training (`dvc exp push` / `dvc exp pull` / `dvc exp apply`), and getting the workspace back after a
`dvc exp run` that failed half-way.

Each test reads its commands from the page's ```bash blocks and runs them literally in copies of the
run's reproduced tiny repository; the one experiment they share is trained once per module.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

from .conftest import (
    ENV,
    PROJECT,
    Reproduced,
    add_pipeline,
    bash_block,
    checkout_failures,
    commit,
    copy_repo,
    dvc,
    ran_stages,
    run_ok,
)
from .s3 import BUCKET, s3_server  # noqa: F401 (s3_server: the fixture s3_endpoint)

pytestmark = pytest.mark.e2e

PIPELINE_DOC = PROJECT / "docs" / "pipeline.md"
MODELS = [Path("models", arm, "model.safetensors") for arm in ("pretrained", "scratch")]
# What the experiment changes in git, beside the checkpoints: the teammate must get these as they are.
RESULTS = ["params.yaml", "dvc.lock", "metrics/pretrained.json", "metrics/scratch.json", "metrics/comparison.json"]


def doc_block(heading: str, first_line: str) -> str:
    return bash_block(PIPELINE_DOC, heading, first_line)


def run_lines(lines: list[str], cwd: Path) -> str:
    """``lines`` in one ``bash -euo pipefail``, as a user pastes them (the tests' `python` and `dvc` on PATH)."""
    assert lines, "nothing to run"
    return run_ok(["bash", "-euo", "pipefail", "-c", "\n".join(lines)], cwd)


def changed_in_git(repo: Path) -> set[str]:
    """The paths `git status` lists (what .gitignore hides is not among them)."""
    return {line[3:] for line in run_ok(["git", "status", "--porcelain"], repo).splitlines()}


def dvc_status(repo: Path) -> dict:
    return json.loads(run_ok([sys.executable, "-m", "dvc", "status", "dvc.yaml", "--json"], repo))


# --- sharing an experiment ------------------------------------------------------------------------

SHARING = "## Sharing results"


def trainer_lines(command: str) -> list[str]:
    """The lines of the page's block for the machine that trains that run ``command`` (``dvc exp run``...)."""
    return [line for line in doc_block(SHARING, "dvc exp run -n").splitlines() if line.startswith(command)]


@pytest.fixture(scope="module")
def trainer(reproduced: Reproduced, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clone A after the page's `dvc exp run`: the experiment in its workspace and its refs, nothing pushed.

    The team's DVC remote is committed before the run, as a relative path (`../dvc-remote`, a sibling
    of the clone): every test's copy of A and clone of it then find their own remote there.
    """
    repo = copy_repo(reproduced.root, tmp_path_factory.mktemp("sharing") / "a")
    for grid in ("study", "tune"):  # as in the project: declared, never run in this clone
        add_pipeline(repo, grid, yaml.safe_load((PROJECT / grid / "params.yaml").read_text()))
    dvc(repo, "remote", "add", "-d", "team", "../dvc-remote")
    commit(repo, "the team's DVC remote, the study and the tuning grid")
    out = run_lines(trainer_lines("dvc exp run"), repo)
    assert ran_stages(out) == {"check_params", "train_pretrained", "train_scratch", "evaluate", "verdict"}
    assert {"params.yaml", "dvc.lock"} <= changed_in_git(repo)  # the experiment is A's workspace
    return repo


def use_s3(repo: Path, endpoint: str) -> None:
    """Make the moto server this clone's default DVC remote (its own config, not the committed one)."""
    dvc(repo, "remote", "add", "--local", "s3", f"s3://{BUCKET}/experiments")
    dvc(repo, "remote", "modify", "--local", "s3", "endpointurl", endpoint)
    dvc(repo, "remote", "default", "--local", "s3")


@pytest.mark.parametrize("remote", ["folder", "s3"])
def test_a_teammate_gets_a_pushed_experiment_with_its_models_and_nothing_retrains(
    trainer: Path, remote: str, request: pytest.FixtureRequest, tmp_path: Path
):
    a = copy_repo(trainer, tmp_path / "a")
    bare = tmp_path / "origin.git"
    run_ok(["git", "init", "-q", "--bare", "-b", "main", str(bare)], tmp_path)
    run_ok(["git", "remote", "add", "origin", str(bare)], a)
    run_ok(["git", "push", "-q", "origin", "HEAD:main"], a)  # the commit the experiment started from
    if remote == "s3":
        use_s3(a, request.getfixturevalue("s3_endpoint"))
    # No `dvc push`: whatever B gets of the experiment's outputs, `dvc exp push` sent.
    run_lines(trainer_lines("dvc exp push"), a)

    b = tmp_path / "b"
    run_ok(["git", "clone", "-q", str(bare), str(b)], tmp_path)
    if remote == "s3":
        use_s3(b, request.getfixturevalue("s3_endpoint"))
    *fetch, apply = doc_block(SHARING, "git pull").splitlines()
    run_lines(fetch, b)
    # `dvc exp apply` ends with a checkout of every pipeline, and DVC counts the grids' outputs, which
    # no clone built, as failed (its checkout has --allow-missing, `dvc exp apply` has not): it exits
    # 255 naming only those, as the README says, with the experiment applied.
    proc = subprocess.run(["bash", "-c", apply], cwd=b, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 255, proc.stdout + proc.stderr
    failed = checkout_failures(proc.stderr)
    assert failed and all(re.match(r"(study|tune)/", path) for path in failed), failed
    assert ran_stages(proc.stdout + proc.stderr) == set()
    dvc(b, "checkout", "dvc.yaml")  # the documented way out: the main pipeline's checkout alone exits 0
    for path in [*RESULTS, *map(str, MODELS)]:
        assert (b / path).read_bytes() == (a / path).read_bytes(), f"{path} differs from the trainer's"
    assert dvc_status(b) == {}
    assert ran_stages(dvc(b, "repro")) == set()


# --- a failed `dvc exp run` -----------------------------------------------------------------------

MISSING_WEIGHTS = "model.weights=weights/missing.safetensors"


def failed_exp_run(repo: Path, failing_stage: str, *args: str) -> None:
    """`dvc exp run` with ``args``, which must fail in ``failing_stage``."""
    cmd = [sys.executable, "-m", "dvc", "exp", "run", *args]
    proc = subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"failed to reproduce '{failing_stage}'" in out, out


def poisoned_weights(repo: Path) -> str:
    """A weights file of the right arch and shapes (the check before training passes) holding a NaN."""
    state = timm.create_model("tf_efficientnet_lite0", num_classes=2).state_dict()
    first = next(key for key, value in state.items() if value.is_floating_point())
    state[first] = torch.full_like(state[first], float("nan"))
    save_file({key: value.contiguous() for key, value in state.items()}, repo / "weights" / "nan.safetensors")
    return "model.weights=weights/nan.safetensors"  # git-ignored, as weights are


def test_the_documented_commands_restore_the_workspace_after_a_failed_exp_run(tiny_repo: Path, reproduced: Reproduced):
    # Each arm set to start as the other does, from weights that fit but hold a NaN: train_pretrained
    # (now from scratch) succeeds, so dvc.lock changes, then train_scratch refuses the weights at load.
    swapped = ["-S", "pretrained.init=scratch", "-S", "scratch.init=pretrained"]
    failed_exp_run(tiny_repo, "train_scratch", *swapped, "-S", poisoned_weights(tiny_repo))
    # The mess: the -S values stay, the lock records the stage that finished, its outputs are new
    # ones and the failed stage's are gone.
    assert changed_in_git(tiny_repo) == {"params.yaml", "dvc.lock"}
    assert not (tiny_repo / "models" / "scratch").exists()
    assert (tiny_repo / MODELS[0]).read_bytes() != (reproduced.root / MODELS[0]).read_bytes()

    (tiny_repo / "weights" / "nan.safetensors").unlink()  # the user's bad file goes (it is no commit's)
    run_lines(doc_block("### When `dvc exp run` fails", "git checkout").splitlines(), tiny_repo)
    assert changed_in_git(tiny_repo) == set()
    assert dvc_status(tiny_repo) == {}
    for model in MODELS:
        assert (tiny_repo / model).read_bytes() == (reproduced.root / model).read_bytes()


def test_a_failed_exp_run_with_temp_leaves_the_workspace_as_it_was(tiny_repo: Path, reproduced: Reproduced):
    # The first stage to run fails: in the workspace this alone leaves params.yaml changed and
    # models/pretrained deleted.
    failed_exp_run(tiny_repo, "train_pretrained", "--temp", "-S", MISSING_WEIGHTS)
    assert changed_in_git(tiny_repo) == set()
    assert dvc_status(tiny_repo) == {}
    for model in MODELS:
        assert (tiny_repo / model).read_bytes() == (reproduced.root / model).read_bytes()

"""Shared fixtures: tiny generated ImageFolders, tiny params, one tiny fit, and the git + DVC
repositories of the end-to-end tests: the one reproduced repository of the run (``reproduced``),
copied for each test that changes it (``tiny_repo``), and new ones for other params (``dvc_repo``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from filelock import FileLock
from PIL import Image

from tvs.compute.runtime import make_runtime, seed_everything
from tvs.config import Params
from tvs.data.prepared import PreparedData
from tvs.train.bookkeeping import Bookkeeping, FitResult
from tvs.train.loop import fit
from tvs.train.resume import ResumeSpec
from tvs.train.worker import checkpoint_meta

PROJECT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may phone home, even through a library

# What a subprocess (a stage, dvc, git) runs with: offline, no analytics, this environment's
# `python` first on PATH (dvc.yaml's commands run `python`), and an identity for git commits.
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "HF_HUB_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
}  # fmt: skip

# Small enough for a 2-core CPU: 32 px images, one epoch, batches of 4.
TINY_PARAMS = {
    "seed": 0,
    "lr": 0.003,
    "data": {"image_size": 32, "val_fraction": 0.25, "test_fraction": 0.25},
    "train": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0, "precision": "fp32", "num_threads": 1},
}


def make_image(label_index: int, i: int, size: int = 24) -> Image.Image:
    """A learnable image: class 0 is bright on the left, class 1 on the right, with noise."""
    rng = np.random.default_rng(1000 * label_index + i)
    arr = rng.integers(0, 60, (size, size), dtype=np.uint8)
    half = slice(0, size // 2) if label_index == 0 else slice(size // 2, size)
    arr[:, half] += 150
    return Image.fromarray(arr, mode="L")


def write_imagefolder(root: Path, classes: dict[str, int]) -> Path:
    """Write ``{class: count}`` PNGs under ``root/<class>/``."""
    for label_index, (label, count) in enumerate(classes.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            make_image(label_index, i).save(root / label / f"img{i:03d}.png")
    return root


def write_params(path: Path, **sections) -> Path:
    """The project's ``params.yaml`` with ``TINY_PARAMS``, then ``sections``, merged in."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    for overrides in (TINY_PARAMS, sections):
        for key, value in overrides.items():
            if isinstance(value, dict):
                params.setdefault(key, {}).update(value)
            else:
                params[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def fit_arm(params: Params, data: PreparedData, arm: str, out: Path, resume: ResumeSpec | None = None) -> FitResult:
    """Train ``arm`` as the training stage does (seeded runtime, checkpoint with its sidecar in ``out``)."""
    books = Bookkeeping(out, lambda result: checkpoint_meta(params, arm, data, result), resume=resume)
    return fit(params, arm, data, make_runtime(params.train), books, generator=seed_everything(params.seed))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def imagefolder(tmp_path: Path) -> Path:
    """Two classes of 12 tiny grayscale PNGs."""
    return write_imagefolder(tmp_path / "raw", {"cats": 12, "dogs": 12})


@pytest.fixture
def tiny_params_file(tmp_path: Path) -> Path:
    return write_params(tmp_path / "params.yaml")


# --- the git + DVC repository of the end-to-end tests -----------------------------------------


def run_ok(cmd: list[str], cwd: Path, timeout: float = 600) -> str:
    """Run ``cmd`` in ``cwd``; its stdout and stderr, after asserting that it succeeded."""
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out}"
    return out


def fresh_shell(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """``script`` in ``bash`` with a login-like environment: a bare PATH, HOME and a git identity only."""
    env = {
        "HOME": os.environ["HOME"],
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@example.com",
        "GIT_COMMITTER_NAME": "u", "GIT_COMMITTER_EMAIL": "u@example.com",
    }  # fmt: skip
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def bash_block(page: Path, heading: str, first_line: str) -> str:
    """The ```bash block of the Markdown file ``page`` under ``heading`` (up to the next heading) that starts
    with ``first_line``: the commands a test runs as the page shows them."""
    text = page.read_text()
    assert f"\n{heading}\n" in text, f"{page.name}: no heading {heading!r}"
    section = re.split(r"\n#{1,3} ", text.split(f"\n{heading}\n", 1)[1], maxsplit=1)[0]
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"{page.name}: no bash block starting {first_line!r} under {heading!r}")


def dvc(cwd: Path, *args: str) -> str:
    return run_ok([sys.executable, "-m", "dvc", *args], cwd)


def checkout_failures(stderr: str) -> list[str]:
    """The paths of DVC's "Checkout failed for following targets:" error, as it lists them."""
    return stderr.split("following targets:", 1)[1].split("Is your cache up to date?", 1)[0].split()


def ran_stages(output: str) -> set[str]:
    """The stages DVC ran, without a ``study/dvc.yaml:`` prefix."""
    return {name.rsplit(":", 1)[-1] for name in re.findall(r"Running stage '([^']+)'", output)}


# The files of the project a repository of its pipelines needs, beside src/ (copied whole); weights/
# is a dependency of train_pretrained, so it must exist (its own weights files are not copied).
PIPELINE_FILES = (
    "dvc.yaml",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots/arms_by_epoch.json",  # the top-level plots' templates
    ".dvc/plots/arms_xy.json",
    ".dvc/plots/arms_scatter.json",
    ".dvc/plots/confusion_cells.json",
    "weights/.gitignore",
    "weights/README.md",
)


def make_repo(
    root: Path, per_class: int = 10, study: dict[str, Any] | None = None, tune: dict[str, Any] | None = None,
    **sections,
) -> Path:  # fmt: skip
    """A committed git + DVC repository of the project's pipeline at ``root``, on a tiny ImageFolder.

    ``sections`` go into its ``params.yaml`` (over ``TINY_PARAMS``); with ``study`` or ``tune`` (that
    pipeline's params) it holds ``study/`` or ``tune/`` too.
    """
    for rel in PIPELINE_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT / rel, root / rel)
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for pipeline, pipeline_params in (("study", study), ("tune", tune)):
        if pipeline_params is not None:
            add_pipeline(root, pipeline, pipeline_params)
    write_params(root / "params.yaml", **sections)
    write_imagefolder(root / "data" / "raw", {"cats": per_class, "dogs": per_class})
    run_ok(["git", "init", "-q"], root)
    dvc(root, "add", "-q", "data/raw")
    commit(root, "tiny project")
    return root


def add_pipeline(root: Path, pipeline: str, params: dict[str, Any]) -> None:
    """Put the project's ``<pipeline>/dvc.yaml`` (study or tune) and its ``params`` into ``root``."""
    (root / pipeline).mkdir(exist_ok=True)
    shutil.copy(PROJECT / pipeline / "dvc.yaml", root / pipeline / "dvc.yaml")
    (root / pipeline / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def commit(root: Path, message: str) -> None:
    run_ok(["git", "add", "-A"], root)
    run_ok(["git", "commit", "-qm", message], root)


def copy_repo(source: Path, dest: Path) -> Path:
    """A copy of a repository, its git history, DVC cache and run-cache included: seconds, where
    reproducing it again takes minutes. DVC's own scratch folder (locks, queue state) is not copied."""
    shutil.copytree(source, dest, symlinks=True, ignore=lambda folder, _: ["tmp"] if folder.endswith(".dvc") else [])
    return dest


@pytest.fixture(scope="session")
def dvc_repo(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build a new committed repository on each call (``make_repo``'s arguments but the folder, which is
    ``name`` under pytest's temporary folder): for a test whose params differ from ``reproduced``'s."""

    def make(name: str, **kwargs) -> Path:
        return make_repo(tmp_path_factory.mktemp(name), **kwargs)

    return make


@dataclass(frozen=True)
class Reproduced:
    """The tiny repository after ``dvc repro`` and a commit of its results, and what ``dvc repro`` printed."""

    root: Path
    log: str


def reproduce(root: Path, pipeline: str, message: str) -> Reproduced:
    """`dvc repro` of ``pipeline`` (a folder of ``root`` holding a ``dvc.yaml``), then a commit of its results."""
    out = dvc(root / pipeline, "repro")
    commit(root, message)
    return Reproduced(root, out)


def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every pytest-xdist worker of this run sees (pytest's temporary folder without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


# The params of the shared repository: TINY_PARAMS, and fewer bootstrap resamples for a quick evaluate.
REPRODUCED_PARAMS = {"evaluate": {"resamples": 200}}


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Reproduced:
    """The one reproduced tiny repository of the run, built once (by the first xdist worker that asks)
    and only ever copied (``tiny_repo``) or cloned, never changed."""
    shared = shared_folder(tmp_path_factory)
    root, log = shared / "reproduced", shared / "reproduced.log"
    with FileLock(str(shared / "reproduced.lock")):
        if not log.exists():
            shutil.rmtree(root, ignore_errors=True)  # what a worker that failed half-way left
            make_repo(root, **REPRODUCED_PARAMS)
            log.write_text(reproduce(root, ".", "baseline results").log)
    return Reproduced(root, log.read_text())


@pytest.fixture
def tiny_repo(reproduced: Reproduced, tmp_path: Path) -> Path:
    """A private copy of the reproduced tiny repository (every stage up to date, results committed)."""
    return copy_repo(reproduced.root, tmp_path / "repo")


# --- running the suite on two workers (`make test`: pytest-xdist, --dist loadscope) ---------------
# loadscope keeps each module on one worker, so that a module-scoped fixture (a pipeline run once,
# then copied by each test) is built once; the run's one `reproduced` repository is shared by both
# workers through a file lock.

# The modules that take longest, started first (longest first) so that neither worker is left with one at
# the end; `make test` passes --no-loadscope-reorder, else xdist orders modules by their number of tests.
# The second needs `reproduced`: its worker builds that while the first worker runs the tuning pipeline.
SLOW_FIRST = ("test_tune_e2e.py", "test_queue.py", "test_distributed.py", "test_fresh_clone.py", "test_study_e2e.py",
              "test_remote.py", "test_any_model.py", "test_failures.py", "test_sharing.py", "test_readme_commands.py",
              "test_faults.py", "test_evaluate_params.py", "test_divergence.py", "test_working_copy.py")  # fmt: skip


class SlowModulesFirst:
    """Moves ``SLOW_FIRST``'s modules to the front, after any shuffle (``--random-order``) and keeping its order."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        rank = {name: i for i, name in enumerate(SLOW_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SlowModulesFirst(), "tvs-slow-modules-first")

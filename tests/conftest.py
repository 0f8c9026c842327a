"""Shared fixtures: tiny generated ImageFolders, tiny params, one tiny fit, and the one git + DVC
repository of the project's pipelines that every end-to-end module builds on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
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


def dvc(cwd: Path, *args: str) -> str:
    return run_ok([sys.executable, "-m", "dvc", *args], cwd)


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
    "weights/.gitignore",
    "weights/README.md",
)


@pytest.fixture(scope="session")
def dvc_repo(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Make a committed git + DVC repository of the project's pipeline on a tiny ImageFolder.

    ``make(name, per_class=10, study=None, tune=None, **sections)``: ``sections`` go into its
    ``params.yaml`` (over ``TINY_PARAMS``); with ``study`` or ``tune`` (that pipeline's params) it
    holds ``study/`` or ``tune/`` too.
    """

    def make(
        name: str, per_class: int = 10, study: dict[str, Any] | None = None, tune: dict[str, Any] | None = None,
        **sections,
    ) -> Path:  # fmt: skip
        root = tmp_path_factory.mktemp(name)
        for rel in PIPELINE_FILES:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(PROJECT / rel, root / rel)
        shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for pipeline, pipeline_params in (("study", study), ("tune", tune)):
            if pipeline_params is not None:
                (root / pipeline).mkdir()
                shutil.copy(PROJECT / pipeline / "dvc.yaml", root / pipeline / "dvc.yaml")
                (root / pipeline / "params.yaml").write_text(yaml.safe_dump(pipeline_params, sort_keys=False))
        write_params(root / "params.yaml", **sections)
        write_imagefolder(root / "data" / "raw", {"cats": per_class, "dogs": per_class})
        run_ok(["git", "init", "-q"], root)
        dvc(root, "add", "-q", "data/raw")
        run_ok(["git", "add", "-A"], root)
        run_ok(["git", "commit", "-qm", "tiny project"], root)
        return root

    return make

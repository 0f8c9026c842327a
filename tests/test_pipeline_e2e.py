"""The real DVC pipeline in a temporary git repository, on a tiny generated ImageFolder.

One repository is built for the module and the scenarios run in order, each starting from the
state the previous one left, as a user's session would: repro, no-op repro, `dvc exp run -S`,
a scratch-only change, a data change, `dvc metrics diff`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PROJECT, make_image, write_imagefolder, write_params

pytestmark = pytest.mark.e2e

STAGES = ("prepare", "train_pretrained", "train_scratch", "evaluate")


def run(cmd: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
    }  # fmt: skip
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out}"
    return out


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w@.-]+)'", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repository made from the project's pipeline files and a tiny dataset."""
    root = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(PROJECT / name, root / name)
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / ".dvc").mkdir()
    shutil.copy(PROJECT / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copy(PROJECT / ".dvc" / ".gitignore", root / ".dvc" / ".gitignore")
    write_params(root / "params.yaml")
    write_imagefolder(root / "data" / "raw", {"cats": 10, "dogs": 10})
    run(["git", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "add", "-q", "data/raw"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny project"], root)
    return root


def dvc(root: Path, *args: str) -> str:
    return run([sys.executable, "-m", "dvc", *args], root)


def test_1_repro_produces_checkpoints_and_both_arms_metrics(repo: Path):
    out = dvc(repo, "repro")
    assert ran_stages(out) == set(STAGES)
    for arm in ("pretrained", "scratch"):
        assert (repo / "models" / arm / "model.safetensors").is_file()
        assert (repo / "dvclive" / arm / "plots" / "metrics" / "val" / "accuracy.tsv").is_file()
        assert (repo / "eval" / arm / "plots" / "sklearn" / "confusion_matrix.json").is_file()
    metrics = {n: json.loads((repo / "metrics" / f"{n}.json").read_text()) for n in ("pretrained", "scratch")}
    keys = {"accuracy", "balanced_accuracy", "macro_f1", "log_loss", "train_seconds", "best_epoch"}
    assert keys <= metrics["pretrained"].keys() and metrics["pretrained"].keys() == metrics["scratch"].keys()
    comparison = json.loads((repo / "metrics" / "comparison.json").read_text())
    assert comparison["accuracy"] == pytest.approx(metrics["pretrained"]["accuracy"] - metrics["scratch"]["accuracy"])
    shown = dvc(repo, "metrics", "show")
    assert "metrics/pretrained.json" in shown and "metrics/scratch.json" in shown
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline results"], repo)


def test_2_second_repro_runs_nothing(repo: Path):
    out = dvc(repo, "repro")
    assert ran_stages(out) == set()
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change" in out


def test_3_exp_run_with_a_new_lr_reruns_both_arms_and_evaluate_but_not_prepare(repo: Path):
    out = dvc(repo, "exp", "run", "-S", "lr=0.01")
    assert ran_stages(out) == {"train_pretrained", "train_scratch", "evaluate"}


def test_4_a_scratch_only_param_reruns_only_train_scratch_and_evaluate(repo: Path):
    out = dvc(repo, "exp", "run", "-S", "scratch.lr_mult=2")
    assert ran_stages(out) == {"train_scratch", "evaluate"}


def test_5_metrics_diff_shows_both_arms_as_a_markdown_table(repo: Path):
    out = dvc(repo, "metrics", "diff", "HEAD", "--md", "--all")
    assert out.lstrip().startswith("| Path")
    for path in ("metrics/pretrained.json", "metrics/scratch.json", "metrics/comparison.json"):
        assert path in out
    assert "accuracy" in out and "train_seconds" in out


def test_6_changing_the_data_reruns_everything(repo: Path):
    make_image(0, 99).save(repo / "data" / "raw" / "cats" / "new.png")
    dvc(repo, "add", "-q", "data/raw")
    out = dvc(repo, "repro")
    assert ran_stages(out) == set(STAGES)
    assert json.loads((repo / "metrics" / "prepare.json").read_text())["images"] == 21

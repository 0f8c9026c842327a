"""The real DVC pipeline in a temporary git repository, on a tiny generated ImageFolder.

One repository is built for the module and the scenarios run in order, each starting from the
state the previous one left, as a user's session would: repro, no-op repro, `dvc exp run -S`,
a scratch-only change, `dvc metrics diff`, a data change, and a new file under `weights/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from tvs.models.weights import LITE0_PACKAGE, load_pretrained

from .conftest import dvc, make_image, ran_stages, run_ok

pytestmark = pytest.mark.e2e

STAGES = ("prepare", "train_pretrained", "train_scratch", "evaluate", "verdict")


@pytest.fixture(scope="module")
def repo(dvc_repo) -> Path:
    return dvc_repo("pipeline")


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
    run_ok(["git", "add", "-A"], repo)
    run_ok(["git", "commit", "-qm", "baseline results"], repo)


def test_2_second_repro_runs_nothing(repo: Path):
    out = dvc(repo, "repro")
    assert ran_stages(out) == set()
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change" in out


def test_3_exp_run_with_a_new_lr_reruns_both_arms_and_evaluate_but_not_prepare(repo: Path):
    out = dvc(repo, "exp", "run", "-S", "lr=0.01")
    assert ran_stages(out) == {"train_pretrained", "train_scratch", "evaluate", "verdict"}


def test_4_a_scratch_only_param_reruns_only_train_scratch_and_evaluate(repo: Path):
    out = dvc(repo, "exp", "run", "-S", "scratch.lr_mult=2")
    assert ran_stages(out) == {"train_scratch", "evaluate", "verdict"}


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


def test_7_a_file_under_weights_makes_only_train_pretrained_stale(repo: Path):
    # Where model.weights may name a local file: replacing one must rerun the pretrained arm.
    state = load_pretrained("tf_efficientnet_lite0", LITE0_PACKAGE).state
    save_file({k: v.contiguous() for k, v in state.items()}, repo / "weights" / "lite0.safetensors")
    assert set(json.loads(dvc(repo, "status", "--json"))) == {"train_pretrained"}
    (repo / "weights" / "lite0.safetensors").unlink()
    assert json.loads(dvc(repo, "status", "--json")) == {}

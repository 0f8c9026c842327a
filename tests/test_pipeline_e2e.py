"""The real DVC pipeline in a temporary git repository, on a tiny generated ImageFolder.

Each scenario starts from its own copy of the run's one reproduced repository (``tiny_repo``), as a
user's session would after `dvc repro` and a commit: the repro itself, a no-op repro, `dvc exp run
-S`, a scratch-only change, `dvc metrics diff`, a data change, and a new file under `weights/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from tvs.models.lite0 import LITE0_PACKAGE
from tvs.models.weights import load_pretrained

from .conftest import REPRODUCED_PARAMS, Reproduced, dvc, make_image, ran_stages, write_params

pytestmark = pytest.mark.e2e

STAGES = ("check_params", "prepare", "train_pretrained", "train_scratch", "evaluate", "verdict")
# check_params reads params.yaml's bytes, so any edit of the file runs it (tests/test_reliability_params.py)


def test_repro_produces_checkpoints_and_both_arms_metrics(reproduced: Reproduced):
    repo = reproduced.root
    assert ran_stages(reproduced.log) == set(STAGES)
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


def test_a_second_repro_runs_nothing(tiny_repo: Path):
    out = dvc(tiny_repo, "repro")
    assert ran_stages(out) == set()
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change" in out


def stale(repo: Path) -> set[str]:
    """The stages whose own deps or params changed: what `dvc repro` starts with (their downstream follows)."""
    return set(json.loads(dvc(repo, "status", "--json")))


def test_a_new_lr_makes_both_arms_stale_but_not_prepare(tiny_repo: Path):
    write_params(tiny_repo / "params.yaml", **REPRODUCED_PARAMS, lr=0.01)  # as `dvc exp run -S lr=0.01` does
    assert stale(tiny_repo) == {"check_params", "train_pretrained", "train_scratch"}  # evaluate, verdict: downstream


def test_a_scratch_only_param_makes_only_train_scratch_stale(tiny_repo: Path):
    write_params(tiny_repo / "params.yaml", **REPRODUCED_PARAMS, scratch={"lr_mult": 2})
    assert stale(tiny_repo) == {"check_params", "train_scratch"}


def test_metrics_diff_shows_both_arms_as_a_markdown_table(tiny_repo: Path):
    out = dvc(tiny_repo, "metrics", "diff", "HEAD", "--md", "--all")
    assert out.lstrip().startswith("| Path")
    for path in ("metrics/pretrained.json", "metrics/scratch.json", "metrics/comparison.json"):
        assert path in out
    assert "accuracy" in out and "train_seconds" in out


def test_changing_the_data_reruns_prepare_and_makes_everything_after_it_stale(tiny_repo: Path):
    make_image(0, 99).save(tiny_repo / "data" / "raw" / "cats" / "new.png")
    dvc(tiny_repo, "add", "-q", "data/raw")
    assert stale(tiny_repo) == {"prepare"}
    assert ran_stages(dvc(tiny_repo, "repro", "prepare")) == {"prepare"}
    assert json.loads((tiny_repo / "metrics" / "prepare.json").read_text())["images"] == 21
    assert stale(tiny_repo) == {"train_pretrained", "train_scratch", "evaluate"}  # all that reads data/prepared


def test_a_file_under_weights_makes_only_train_pretrained_stale(tiny_repo: Path):
    # Where model.weights may name a local file: replacing one must rerun the pretrained arm.
    state = load_pretrained("tf_efficientnet_lite0", LITE0_PACKAGE).state
    save_file({k: v.contiguous() for k, v in state.items()}, tiny_repo / "weights" / "lite0.safetensors")
    assert set(json.loads(dvc(tiny_repo, "status", "--json"))) == {"train_pretrained"}
    (tiny_repo / "weights" / "lite0.safetensors").unlink()
    assert json.loads(dvc(tiny_repo, "status", "--json")) == {}

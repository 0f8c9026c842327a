"""The data-efficiency study (study/dvc.yaml) with real DVC, on a tiny generated ImageFolder.

2 fractions x 2 arms, 32 px images, one epoch (more where the step floor asks), in a temporary
git repository holding both pipelines. The study runs once for the module (one seed) and is
committed; each later scenario works on its own copy, as a user would after that commit: add a
second seed (only its split and its cells run: 2 fractions x 2 arms x 2 seeds in all) and build the
pull-request comment from a real `dvc metrics diff` (the main pipeline's metrics; the study's verdict
beside them), add a fraction (only its cells are stale),
and score the study's checkpoints with the main pipeline's stages.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tvs.pr import pr_comment

from .conftest import Reproduced, copy_repo, dvc, ran_stages, reproduce, run_ok
from .tiny_pipelines import TINY_STUDY
from .tiny_pipelines import study_cells as cells

pytestmark = pytest.mark.e2e


def write_study_params(root: Path, **changes) -> None:
    (root / "study" / "params.yaml").write_text(yaml.safe_dump({**TINY_STUDY, **changes}, sort_keys=False))


def stale_stages(cwd: Path) -> set[str]:
    """The study's stages `dvc status` reports as changed (what `dvc repro` would run)."""
    status = json.loads(dvc(cwd, "status", "--json", "dvc.yaml"))
    return {name.rsplit(":", 1)[-1] for name in status}


@pytest.fixture(scope="module")
def study_run(dvc_repo) -> Reproduced:
    """A git + DVC repository with both pipelines and 12 tiny images per class, the study run and committed."""
    return reproduce(dvc_repo("study", per_class=12, study=TINY_STUDY), "study", "study results, one seed")


@pytest.fixture
def repo(study_run: Reproduced, tmp_path: Path) -> Path:
    """A private copy of ``study_run``'s repository."""
    return copy_repo(study_run.root, tmp_path / "repo")


def test_the_study_trains_every_cell_on_nested_subsets_and_writes_its_verdict(study_run: Reproduced):
    out, study = study_run.log, study_run.root / "study"
    assert ran_stages(out) == {"prepare@0", "report"} | cells([0.5, 1.0], [0])  # not the main pipeline's prepare
    summary = json.loads((study / "metrics" / "summary.json").read_text())
    assert (summary["50pct"]["images_per_class"], summary["100pct"]["images_per_class"]) == (3, 6)
    assert summary["seeds"] == 1 and summary["recommendation"] == "inconclusive"
    # The step floor: both arms of the small size trained 2 epochs, the full size 1.
    for arm in ("pretrained", "scratch"):
        for fraction, epochs in ((0.5, 2), (1.0, 1)):
            meta = json.loads((study / "models" / f"{fraction}-{arm}-0" / "meta.json").read_text())
            assert len(meta["history"]) == epochs and meta["params"]["data"]["train_fraction"] == fraction
            assert meta["train_images"] == int(12 * fraction)  # the nested subset, out of prepare's 12
    comparison = json.loads((study / "eval" / "0.5-0" / "comparison.json").read_text())
    assert {"mcnemar_p", "accuracy_diff_ci_low", "accuracy_diff_ci_high"} <= comparison["significance"].keys()
    assert (study / "eval" / "0.5-0" / "pretrained" / "predictions.csv").is_file()
    verdict = (study / "reports" / "verdict.md").read_text()
    assert verdict.startswith("# Verdict of the data-efficiency study")
    assert "**Inconclusive**: one seed gives no confidence interval" in verdict  # said plainly
    assert "](data_efficiency.png)" in verdict and "| Majority-class baseline (test) | 50.0%" in verdict
    assert summary["majority_accuracy"] == 0.5  # 3 test images per class
    assert (study / "reports" / "data_efficiency.png").read_bytes().startswith(b"\x89PNG")


def test_adding_a_seed_stales_only_its_cells_and_the_report_and_the_comment_shows_the_study(repo: Path):
    """What a new seed reruns, from `dvc status` (running it trains what the module run already showed
    trains; that another seed draws another split of the same class counts: tests/test_data.py, and the
    report's mean over several seeds' splits: tests/test_report.py)."""
    # The pull-request comment of the study's results: the real `dvc metrics diff` against the commit before.
    out = dvc(repo, "metrics", "diff", "HEAD~1", "--all", "--json")  # the workflow's command (stdout and stderr)
    diff = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert not any(path.startswith("study/") for path in diff)  # a plain output: DVC's metrics are the two arms'
    verdict = (repo / "study" / "reports" / "verdict.md").read_text()
    text = pr_comment(
        base="main", metrics_diff=diff, verdicts={"study/reports/verdict.md": verdict}, checks={"tests": "success"},
        image_base_urls={"study/reports/verdict.md": "https://github.com/o/r/raw/abc/study/reports"},
    )  # fmt: skip
    assert "#### Verdict of the data-efficiency study" in text
    assert "(https://github.com/o/r/raw/abc/study/reports/data_efficiency.png)" in text

    assert stale_stages(repo / "study") == set()
    write_study_params(repo, seeds=[0, 1])
    assert stale_stages(repo / "study") == cells([0.5, 1.0], [1]) | {"prepare@1", "report"}


def test_adding_a_fraction_leaves_every_existing_cell_up_to_date(repo: Path):
    write_study_params(repo, fractions=[0.25, 0.5, 1.0])
    assert stale_stages(repo / "study") == cells([0.25], [0]) | {"report"}
    write_study_params(repo)
    assert stale_stages(repo / "study") == set()


def test_a_key_every_cell_sets_reruns_no_cell_and_another_key_reruns_the_training_cells(repo: Path):
    """``data.train_fraction`` is set by each cell on its command line, so params.yaml's value cannot change
    a cell's result: changing it stales the main pipeline only. ``train.label_smoothing`` reaches every cell."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump({**params, "data": {**params["data"], "train_fraction": 0.5}}))
    assert stale_stages(repo / "study") == set()
    changed = {**params, "train": {**params["train"], "label_smoothing": 0.05}}
    (repo / "params.yaml").write_text(yaml.safe_dump(changed))
    training = {name for name in cells([0.5, 1.0], [0]) if name.startswith("train_")}
    assert training <= stale_stages(repo / "study")


def test_the_main_evaluate_and_verdict_write_the_verdict_and_its_plot_from_real_checkpoints(repo: Path):
    assert "evaluate" in dvc(repo, "stage", "list")  # the main dvc.yaml, with its new outputs, parses
    models = repo / "study" / "models"
    run_ok(
        [sys.executable, "src/stages/evaluate.py", "--data", "study/prepared/0", "--pretrained",
         str(models / "1.0-pretrained-0"), "--scratch", str(models / "1.0-scratch-0"), "--metrics", "metrics",
         "--eval-dir", "eval", "--set", "evaluate.resamples=200"],
        repo,
    )  # fmt: skip
    run_ok(
        [sys.executable, "src/stages/verdict.py", "--metrics", "metrics", "--pretrained",
         str(models / "1.0-pretrained-0" / "meta.json"), "--scratch", str(models / "1.0-scratch-0" / "meta.json"),
         "--verdict", "reports/verdict.md", "--curve-plot", "reports/val_accuracy.png"],
        repo,
    )  # fmt: skip
    comparison = json.loads((repo / "metrics" / "comparison.json").read_text())
    assert comparison["significance"]["test_images"] == 6
    assert comparison["time_to_accuracy"]["target_fraction_of_best"] == 0.95
    verdict = (repo / "reports" / "verdict.md").read_text()
    assert "12 training images (6 per class)" in verdict and "](val_accuracy.png)" in verdict
    # 3 test images per class: tied, so no class is named as the majority (1/k)
    assert "Baseline: the test split's classes are tied" in verdict and "Majority-class baseline (test)" in verdict
    assert (repo / "reports" / "val_accuracy.png").read_bytes().startswith(b"\x89PNG")

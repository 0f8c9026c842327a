"""The verdicts (rule, wording, table, plots) and the pull-request comment built from them."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tvs.config import load_params
from tvs.evaluate.stats import Estimate, EvidenceSettings
from tvs.pr import MARKER, absolute_images, demote_headings, main, pr_comment
from tvs.study.params import StudyParams
from tvs.study.report import data_requirement, size_key, study_recommendation, study_verdict, write_study_report
from tvs.study.summary import SizeSummary
from tvs.verdict.pair import pair_recommendation, pair_verdict, write_pair_report
from tvs.verdict.rules import decide, speed_clause

from .conftest import PROJECT

SETTINGS = EvidenceSettings(resamples=1000)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def comparison(diff: float, low: float, high: float, p: float, seconds=(161.0, None)) -> dict:
    return {
        "accuracy": diff,
        "significance": {
            "test_images": 525, "only_pretrained_correct": 59, "only_scratch_correct": 16, "mcnemar_p": p,
            "accuracy_diff": diff, "accuracy_diff_ci_low": low, "accuracy_diff_ci_high": high,
            "confidence": 0.95, "bootstrap_resamples": 1000,
        },
        "time_to_accuracy": {
            "target_val_accuracy": 0.851, "target_fraction_of_best": 0.95,
            "pretrained_epoch": 5 if seconds[0] else None, "pretrained_seconds": seconds[0],
            "pretrained_epochs_trained": 8,
            "scratch_epoch": 7 if seconds[1] else None, "scratch_seconds": seconds[1], "scratch_epochs_trained": 8,
            "pretrained_speedup": seconds[1] / seconds[0] if all(seconds) else None,
        },
    }  # fmt: skip


METRICS = {
    "pretrained": {"accuracy": 0.857, "balanced_accuracy": 0.805, "train_seconds": 246.7, "best_epoch": 5},
    "scratch": {"accuracy": 0.775, "balanced_accuracy": 0.710, "train_seconds": 228.5, "best_epoch": 7},
}


def test_decide_needs_a_ci_excluding_zero_and_a_significant_test():
    assert decide(0.05, 0.11, 0.001) == "pretrained"
    assert decide(-0.11, -0.05, 0.001) == "scratch"
    assert decide(-0.01, 0.05, 0.001) == "inconclusive"
    assert decide(0.01, 0.05, 0.2) == "inconclusive"  # CI and test disagree: not enough
    assert decide(None, None) == "inconclusive"
    assert decide(0.01, 0.05) == "pretrained"  # seed CIs carry no p-value


def test_speed_clause_compares_wall_seconds_to_the_target():
    epochs = {"pretrained": 8, "scratch": 8}
    assert speed_clause({"pretrained": 100.0, "scratch": 310.0}, epochs, 0.85, "pretrained") == (
        "3.1x faster to 85.0% validation accuracy"
    )
    assert speed_clause({"pretrained": 100.0, "scratch": None}, epochs, 0.85, "pretrained") == (
        "scratch never reached 85.0% validation accuracy in 8 epochs"
    )
    assert speed_clause({"pretrained": 200.0, "scratch": 100.0}, epochs, 0.85, "pretrained").startswith(
        "but 2.0x slower"
    )
    assert speed_clause({"pretrained": 200.0, "scratch": 100.0}, epochs, 0.85).startswith("scratch was 2.0x faster")
    assert speed_clause({"pretrained": None, "scratch": None}, epochs, 0.85).startswith("neither arm reached")


def test_pair_recommendation_for_a_clear_win_reads_like_the_issue_example():
    decision, line = pair_recommendation(comparison(0.082, 0.049, 0.114, 1e-5, (161.0, 500.0)), SETTINGS)
    assert decision == "pretrained"
    assert line == (
        "**Fine-tune**: +8.2 pp test accuracy (95% CI 4.9 to 11.4, McNemar p < 0.001); "
        "3.1x faster to 85.1% validation accuracy."
    )


def test_pair_recommendation_says_plainly_when_the_evidence_is_inconclusive():
    decision, line = pair_recommendation(comparison(0.012, -0.015, 0.039, 0.41), SETTINGS)
    assert decision == "inconclusive"
    assert line.startswith(
        "**Inconclusive**: the test accuracy difference, +1.2 pp for fine-tuning (95% CI -1.5 to 3.9"
    )
    assert "p = 0.410" in line and "could be noise" in line


def test_pair_recommendation_for_scratch_flips_the_sign_of_the_difference():
    decision, line = pair_recommendation(comparison(-0.05, -0.08, -0.02, 0.003, (100.0, 90.0)), SETTINGS)
    assert decision == "scratch"
    assert line.startswith("**Train from scratch**: +5.0 pp test accuracy (95% CI 2.0 to 8.0, McNemar p = 0.003)")


def test_pair_verdict_has_the_measured_rows_the_rule_and_the_plot():
    text = pair_verdict(METRICS, comparison(0.082, 0.049, 0.114, 1e-5), SETTINGS, 1706, 2, "val_accuracy.png")
    for row in ("Best accuracy", "Training time", "Data requirement", "Performance on small data", "Time to 85.1%"):
        assert f"| {row}" in text
    assert "85.7%" in text and "77.5%" in text and "1,706 training images (853 per class)" in text
    assert "not reached in 8 epochs" in text
    assert "Rule: recommend the arm" in text
    assert "![Validation accuracy against wall seconds of training, both arms](val_accuracy.png)" in text


def test_pair_verdict_of_a_diverged_arm_gives_no_verdict_and_says_what_diverged_when():
    metrics = {
        "pretrained": {**METRICS["pretrained"], "diverged": 0, "diverged_epoch": 0},
        "scratch": {**METRICS["scratch"], "best_epoch": 1, "diverged": 1, "diverged_epoch": 2},
    }
    comparison = {"accuracy": None, "significance": None, "time_to_accuracy": None, "diverged": 1}
    text = pair_verdict(metrics, comparison, SETTINGS, 10, 2, None)
    assert "**No verdict**: the scratch arm diverged" in text
    assert "| Outcome | finished, best epoch 5 | diverged in epoch 2; scored with epoch 1's weights |" in text


def test_write_pair_report_draws_the_png_the_verdict_links(tmp_path: Path):
    history = [{"epoch": e, "val_accuracy": 0.6 + 0.05 * e, "elapsed_seconds": 10.0 * e} for e in (1, 2, 3)]
    write_pair_report(
        verdict_path=tmp_path / "reports" / "verdict.md", curve_path=tmp_path / "reports" / "val_accuracy.png",
        metrics=METRICS, comparison=comparison(0.082, 0.049, 0.114, 1e-5), histories={"pretrained": history,
        "scratch": history}, settings=SETTINGS, train_images=1706, classes=2,
    )  # fmt: skip
    assert (tmp_path / "reports" / "val_accuracy.png").read_bytes().startswith(PNG_MAGIC)
    assert "](val_accuracy.png)" in (tmp_path / "reports" / "verdict.md").read_text()


# --- the study's verdict ---------------------------------------------------------------------


def size(fraction: float, pre: float, scr: float, diff_ci: tuple[float, float], seeds: int = 3) -> SizeSummary:
    est = {
        arm: Estimate(acc, 0.01, acc - 0.02, acc + 0.02, seeds) for arm, acc in (("pretrained", pre), ("scratch", scr))
    }
    return SizeSummary(
        fraction=fraction, train_images=int(1706 * fraction), images_per_class=853 * fraction, accuracy=est,
        difference=Estimate(pre - scr, 0.01, *diff_ci, seeds), significant_seeds=seeds,
        seconds_to_target={"pretrained": Estimate(160.0, 5.0, 150.0, 170.0, seeds), "scratch": None},
        reached_target={"pretrained": seeds, "scratch": 0}, target_val_accuracy=0.85, epochs=8, seeds=seeds,
    )  # fmt: skip


def test_study_recommends_fine_tuning_when_the_full_size_ci_excludes_zero():
    sizes = [size(0.05, 0.75, 0.62, (0.10, 0.16)), size(1.0, 0.861, 0.784, (0.059, 0.095))]
    decision, line = study_recommendation(sizes, SETTINGS)
    assert decision == "pretrained"
    assert line.startswith(
        "**Fine-tune**: +7.7 pp test accuracy with 853 images per class (95% CI 5.9 to 9.5), 3 seeds"
    )
    assert "+13.0 pp with 43 per class" in line
    assert "break-even not reached within this data" in line
    assert "scratch never reached 85.0% validation accuracy (95% of the best)" in line


def test_study_recommends_fine_tuning_for_small_data_when_only_the_small_size_differs():
    sizes = [size(0.05, 0.75, 0.62, (0.10, 0.16)), size(1.0, 0.861, 0.855, (-0.01, 0.02))]
    decision, line = study_recommendation(sizes, SETTINGS)
    assert decision == "pretrained for small data"
    assert line.startswith("**Fine-tune for small data**") and "indistinguishable" in line


def test_study_is_inconclusive_when_no_ci_excludes_zero_or_with_one_seed():
    sizes = [size(0.05, 0.70, 0.69, (-0.02, 0.04)), size(1.0, 0.861, 0.855, (-0.01, 0.02))]
    assert study_recommendation(sizes, SETTINGS)[1].startswith("**Inconclusive**: at no training size")
    one = [size(1.0, 0.86, 0.78, (None, None), seeds=1)]
    assert study_recommendation(one, SETTINGS)[1].startswith("**Inconclusive**: one seed gives no confidence interval")


def test_study_verdict_fills_the_seed_tables_rows_and_embeds_the_curve():
    sizes = [
        size(0.05, 0.75, 0.62, (0.10, 0.16)),
        size(0.25, 0.82, 0.72, (0.07, 0.13)),
        size(1.0, 0.861, 0.784, (0.059, 0.095)),
    ]
    assert data_requirement(sizes, "pretrained", 0.95 * 0.861).fraction == 0.25
    assert data_requirement(sizes, "scratch", 0.95 * 0.861) is None
    text = study_verdict(sizes, SETTINGS, "data_efficiency.png")
    for row in ("Best accuracy", "Performance on small data", "Data requirement", "Training time"):
        assert f"| {row}" in text
    assert "](data_efficiency.png)" in text and "## Every training size" in text and "| 25% |" in text
    assert "not reached within this data" in text and "Rule: at the largest training size" in text
    assert size_key(0.05) == "5pct" and size_key(0.125) == "12_5pct"


def write_cell(folder: Path, seed: int, pre: float, scr: float) -> None:
    folder.mkdir(parents=True)
    evidence = comparison(pre - scr, pre - scr - 0.05, pre - scr + 0.05, 0.01, (100.0 + seed, 300.0))
    (folder / "comparison.json").write_text(json.dumps(evidence))
    for arm, acc in (("pretrained", pre), ("scratch", scr)):
        (folder / f"{arm}.json").write_text(json.dumps({"accuracy": acc}))


def test_write_study_report_summarises_every_cell_of_the_grid(tmp_path: Path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    manifest = pd.DataFrame(
        {
            "path": [f"{i}.png" for i in range(40)],
            "class": ["a", "b"] * 20,
            "sha1": [str(i) for i in range(40)],
            "split": ["train"] * 30 + ["val"] * 4 + ["test"] * 6,
        }
    )
    manifest.to_csv(prepared / "manifest.csv", index=False)
    np.save(prepared / "images.npy", np.zeros((40, 3, 8, 8), dtype=np.uint8))
    rng = np.random.default_rng(0)
    for fraction in (0.2, 1.0):
        for seed in (1, 2, 3):
            pre, scr = 0.8 + rng.normal(0, 0.01), 0.6 + rng.normal(0, 0.01)
            write_cell(tmp_path / "eval" / f"{fraction}-{seed}", seed, pre, scr)
    out = tmp_path / "out"
    summary = write_study_report(
        study=StudyParams([0.2, 1.0], [1, 2, 3], 0, SETTINGS), data_dir=prepared, results=tmp_path / "eval",
        summary_path=out / "summary.json", verdict_path=out / "verdict.md", plot_path=out / "curve.png",
        table_path=out / "curve.csv",
    )  # fmt: skip
    assert summary["recommendation"] == "pretrained" and summary["break_even_images_per_class"] is None
    assert summary["20pct"]["images_per_class"] == 3 and summary["100pct"]["images_per_class"] == 15
    full = summary["100pct"]
    assert full["pretrained_accuracy_ci_low"] < full["pretrained_accuracy"] < full["pretrained_accuracy_ci_high"]
    assert full["pretrained_accuracy_sd"] > 0 and full["accuracy_diff_sd"] > 0
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (out / "curve.png").read_bytes().startswith(PNG_MAGIC)
    assert list(pd.read_csv(out / "curve.csv")["images_per_class"]) == [3.0, 15.0]
    assert "](curve.png)" in (out / "verdict.md").read_text()


# --- the pull-request comment ----------------------------------------------------------------

DIFF = """| Path                    | Metric   | HEAD    | workspace   | Change   |
|-------------------------|----------|---------|-------------|----------|
| metrics/comparison.json | accuracy | 0.08191 | 0.0619      | -0.02    |
"""


def test_pr_comment_holds_the_metrics_diff_the_verdicts_and_the_checks():
    verdict = "# Verdict: fine-tune or train from scratch?\n\n**Fine-tune**: ...\n\n![curve](val_accuracy.png)\n"
    text = pr_comment(
        base="main", metrics_diff=DIFF, verdicts={"reports/verdict.md": verdict, "study/reports/verdict.md": None},
        checks={"tests": "success", "quick pipeline": "failure"},
        image_base_urls={"reports/verdict.md": "https://github.com/o/r/raw/abc123/reports"},
    )  # fmt: skip
    assert text.startswith(MARKER + "\n## transfer-vs-scratch: results of this pull request")
    assert "tests: **passed** · quick pipeline: **FAILED**" in text
    assert "### Metrics compared with `main`\n\n| Path" in text and "| metrics/comparison.json | accuracy |" in text
    assert "#### Verdict: fine-tune or train from scratch?" in text  # nested under the comment's headings
    assert "![curve](https://github.com/o/r/raw/abc123/reports/val_accuracy.png)" in text
    assert "`study/reports/verdict.md` is not in this branch" in text


def test_pr_comment_says_so_when_no_metric_changed():
    text = pr_comment(base="main", metrics_diff="\n", verdicts={}, checks={})
    assert "No metric differs from `main`" in text


def test_markdown_helpers_leave_absolute_links_and_cap_heading_depth():
    assert (
        absolute_images("![a](https://x/y.png) ![b](b.png)", "https://h/r")
        == "![a](https://x/y.png) ![b](https://h/r/b.png)"
    )
    assert demote_headings("###### deep\n# top", levels=3) == "###### deep\n#### top"


def test_pr_comment_command_writes_the_file_the_workflow_posts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    Path("reports").mkdir()
    Path("reports/verdict.md").write_text("# Verdict\n\n![p](val_accuracy.png)\n")
    Path("diff.md").write_text(DIFF)
    main(["--base", "main", "--diff", "diff.md", "--verdict", "reports/verdict.md", "--check", "tests=success",
          "--image-base", "https://github.com/o/r/raw/abc", "--out", "comment.md"])  # fmt: skip
    text = Path("comment.md").read_text()
    assert "![p](https://github.com/o/r/raw/abc/reports/val_accuracy.png)" in text and "tests: **passed**" in text


WORKFLOW = PROJECT / ".github" / "workflows" / "pull-request.yml"


def workflow_step(job: str, needle: str) -> dict:
    """The step of ``job`` whose ``run`` script contains ``needle``."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"][job]["steps"]
    return next(step for step in steps if needle in step.get("run", ""))


def shell_words(step: dict, program: str, env: dict[str, str]) -> list[str]:
    """The arguments after ``program`` on the line of ``step`` that runs it, variables expanded."""
    script = step["run"].replace("\\\n", " ")
    line = next(line for line in script.splitlines() if program in line)
    words = shlex.split(line.split(program, 1)[1])
    return [re.sub(r"\$(\w+)", lambda m: env[m.group(1)], word) for word in words]


def declared_outputs(dvc_yaml: Path) -> set[str]:
    """The output paths of ``dvc_yaml``'s stages, relative to the project root."""
    prefix = "" if dvc_yaml.parent == PROJECT else dvc_yaml.parent.relative_to(PROJECT).as_posix() + "/"
    found = set()
    for stage in yaml.safe_load(dvc_yaml.read_text())["stages"].values():
        for entry in (e for key in ("outs", "metrics", "plots") for e in stage.get(key, [])):
            found.add(prefix + (next(iter(entry)) if isinstance(entry, dict) else entry))
    return found


def test_the_workflows_comment_command_runs_and_posts_the_file_it_writes(tmp_path: Path, monkeypatch):
    step = workflow_step("comment", "python -m tvs.pr")
    env = {"RUNNER_TEMP": str(tmp_path / "runner"), "BASE": "main", "TESTS": "success", "QUICK": "failure",
           "IMAGES": "https://github.com/o/r/raw/abc"}  # fmt: skip
    assert set(step["env"]) == {"BASE", "TESTS", "QUICK", "IMAGES"}
    args = shell_words(step, "python -m tvs.pr", env)
    verdicts = [args[i + 1] for i, arg in enumerate(args) if arg == "--verdict"]
    assert set(verdicts) <= declared_outputs(PROJECT / "dvc.yaml") | declared_outputs(PROJECT / "study" / "dvc.yaml")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runner").mkdir()
    (tmp_path / "runner" / "metrics-diff.md").write_text(DIFF)
    for verdict in verdicts:
        Path(verdict).parent.mkdir(parents=True, exist_ok=True)
        Path(verdict).write_text(f"# Verdict of {verdict}\n\n![p](plot.png)\n")
    main(args)  # the workflow's own command line: a renamed or removed option fails here
    comment = (tmp_path / "runner" / "comment.md").read_text()
    assert "tests: **passed** · quick pipeline: **FAILED**" in comment and "| metrics/comparison.json |" in comment
    for verdict in verdicts:
        assert f"#### Verdict of {verdict}" in comment
        assert f"![p](https://github.com/o/r/raw/abc/{Path(verdict).parent.as_posix()}/plot.png)" in comment

    post = workflow_step("comment", "gh pr comment")
    body = shell_words(post, "gh pr comment", {**env, **{k: "1" for k in post["env"]}})
    assert body[body.index("--body-file") + 1] == args[args.index("--out") + 1]  # it posts what tvs.pr wrote


def test_the_workflows_quick_pipeline_sets_params_that_exist():
    args = shell_words(workflow_step("quick-pipeline", "dvc exp run"), "dvc exp run", {})
    overrides = dict(args[i + 1].split("=", 1) for i, arg in enumerate(args) if arg == "-S")
    assert overrides  # a renamed key in params.yaml is refused below, as `dvc exp run -S` would not notice
    params = load_params(PROJECT / "params.yaml", overrides={k: yaml.safe_load(v) for k, v in overrides.items()})
    assert params.train.epochs == 1


def test_the_workflows_test_job_runs_the_ci_script():
    step = workflow_step("test", ".ci/run")
    assert step["run"].strip() == ".ci/run"
    assert os.access(PROJECT / ".ci" / "run", os.X_OK)

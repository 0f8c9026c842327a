"""The verdicts (rule, wording, table, plots) and the pull-request comment built from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tvs.config import EvaluateConfig
from tvs.errors import DataError
from tvs.evaluate.stats import Estimate
from tvs.pr import MARKER, absolute_images, demote_headings, main, pr_comment
from tvs.study.params import StudyParams
from tvs.study.report import data_requirement, size_key, study_recommendation, study_verdict, write_study_report
from tvs.study.summary import SizeSummary, read_cells, split_baseline
from tvs.verdict.pair import pair_recommendation, pair_verdict, write_pair_report, write_verdict
from tvs.verdict.rules import Baseline, decide, half_width, speed_clause

SETTINGS = EvaluateConfig(resamples=1000)
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
        **BASELINE,
    }  # fmt: skip


# The default ELPV test split: 361 functional and 164 defective cells.
BASELINE = {"majority_class": "functional", "majority_accuracy": 361 / 525, "majority_balanced_accuracy": 0.5}
METRICS = {
    "pretrained": {"accuracy": 0.857, "accuracy_ci_low": 0.824, "accuracy_ci_high": 0.885, "balanced_accuracy": 0.805,
                   "majority_accuracy": 361 / 525, "train_seconds": 246.7, "best_epoch": 5, "test_images": 525},
    "scratch": {"accuracy": 0.775, "accuracy_ci_low": 0.738, "accuracy_ci_high": 0.808, "balanced_accuracy": 0.710,
                "majority_accuracy": 361 / 525, "train_seconds": 228.5, "best_epoch": 7, "test_images": 525},
}  # fmt: skip


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


def test_pair_verdict_reads_every_accuracy_against_the_majority_class_and_its_ci():
    text = pair_verdict(METRICS, comparison(0.082, 0.049, 0.114, 1e-5), SETTINGS, 1706, 2, None)
    assert (
        "Baseline: predicting the majority class (“functional”) for every test image scores 68.8% accuracy "
        "and 50.0% balanced accuracy; every accuracy here is read against that. One run's accuracy on these "
        "525 test images is known to ±3.1 pp (pretrained) and ±3.5 pp (scratch)"
    ) in text
    assert "| 85.7% (95% CI 82.4 to 88.5) | 77.5% (95% CI 73.8 to 80.8) |" in text
    assert (
        "| Majority-class baseline (test) | 68.8%: always “functional” | the same | "
        "above it: pretrained +16.9 pp, scratch +8.7 pp |"
    ) in text
    assert "+9.5 pp; the baseline scores 50.0% |" in text  # the balanced accuracy row
    assert "cannot be told from the baseline" not in text


def test_pair_verdict_says_when_an_arm_is_no_better_than_the_majority_class():
    metrics = {**METRICS, "scratch": {**METRICS["scratch"], "accuracy": 0.70, "accuracy_ci_low": 0.66}}
    text = pair_verdict(metrics, comparison(0.157, 0.1, 0.2, 1e-5), SETTINGS, 1706, 2, None)
    assert "**The scratch arm cannot be told from the baseline**: its CI reaches down to it." in text


def test_half_width_is_half_the_ci_in_points():
    assert half_width(0.8287, 0.8879) == "±3.0 pp"


def test_pair_verdict_of_a_diverged_arm_gives_no_verdict_and_says_what_diverged_when():
    metrics = {
        "pretrained": {**METRICS["pretrained"], "diverged": 0, "diverged_epoch": 0},
        "scratch": {**METRICS["scratch"], "best_epoch": 1, "diverged": 1, "diverged_epoch": 2},
    }
    comparison = {"accuracy": None, "significance": None, "time_to_accuracy": None, "diverged": 1, **BASELINE}
    text = pair_verdict(metrics, comparison, SETTINGS, 10, 2, None)
    assert "**No verdict**: the scratch arm diverged" in text
    assert "| Outcome | finished, best epoch 5 | diverged in epoch 2; scored with epoch 1's weights |" in text
    assert "| Majority-class baseline (test) | 68.8%: always “functional” | the same |" in text
    assert "Baseline: predicting the majority class (“functional”)" in text


def test_write_pair_report_draws_the_png_the_verdict_links(tmp_path: Path):
    history = [{"epoch": e, "val_accuracy": 0.6 + 0.05 * e, "elapsed_seconds": 10.0 * e} for e in (1, 2, 3)]
    write_pair_report(
        verdict_path=tmp_path / "reports" / "verdict.md", curve_path=tmp_path / "reports" / "val_accuracy.png",
        metrics=METRICS, comparison=comparison(0.082, 0.049, 0.114, 1e-5), histories={"pretrained": history,
        "scratch": history}, settings=SETTINGS, train_images=1706, classes=2,
    )  # fmt: skip
    assert (tmp_path / "reports" / "val_accuracy.png").read_bytes().startswith(PNG_MAGIC)
    assert "](val_accuracy.png)" in (tmp_path / "reports" / "verdict.md").read_text()


def test_write_verdict_reads_what_evaluate_wrote_and_the_sidecars(tmp_path: Path):
    history = [{"epoch": e, "val_accuracy": 0.6 + 0.05 * e, "elapsed_seconds": 10.0 * e} for e in (1, 2, 3)]
    (tmp_path / "metrics").mkdir()
    for arm, metrics in METRICS.items():
        (tmp_path / "metrics" / f"{arm}.json").write_text(json.dumps(metrics))
        (tmp_path / f"{arm}.json").write_text(json.dumps({"history": history, "train_images": 1706,
                                                          "classes": ["defective", "functional"]}))  # fmt: skip
    (tmp_path / "metrics" / "comparison.json").write_text(json.dumps(comparison(0.082, 0.049, 0.114, 1e-5)))
    write_verdict(
        metrics_dir=tmp_path / "metrics", sidecars={arm: tmp_path / f"{arm}.json" for arm in METRICS},
        settings=SETTINGS, verdict_path=tmp_path / "reports" / "verdict.md",
        curve_path=tmp_path / "reports" / "val_accuracy.png",
    )  # fmt: skip
    text = (tmp_path / "reports" / "verdict.md").read_text()
    assert text == pair_verdict(METRICS, comparison(0.082, 0.049, 0.114, 1e-5), SETTINGS, 1706, 2, "val_accuracy.png")
    assert (tmp_path / "reports" / "val_accuracy.png").read_bytes().startswith(PNG_MAGIC)


# --- the study's verdict ---------------------------------------------------------------------


def size(fraction: float, pre: float, scr: float, diff_ci: tuple[float, float], seeds: int = 3) -> SizeSummary:
    est = {
        arm: Estimate(acc, 0.01, acc - 0.02, acc + 0.02, seeds) for arm, acc in (("pretrained", pre), ("scratch", scr))
    }
    balanced = {arm: Estimate(e.mean - 0.05, 0.01, e.mean - 0.07, e.mean - 0.03, seeds) for arm, e in est.items()}
    return SizeSummary(
        fraction=fraction, train_images=int(1706 * fraction), images_per_class=853 * fraction, accuracy=est,
        balanced_accuracy=balanced,
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
    text = study_verdict(sizes, SETTINGS, "data_efficiency.png", STUDY_BASELINE)
    for row in ("Best accuracy", "Performance on small data", "Data requirement", "Training time"):
        assert f"| {row}" in text
    assert "Baseline: predicting the majority class (“functional”) for every test image scores 68.8% accuracy" in text
    assert (
        "| Majority-class baseline (test) | 68.8%: always “functional” | the same | above it: pretrained +17.3 pp, "
        "scratch +9.6 pp (853 per class); pretrained +6.2 pp, scratch -6.8 pp (43 per class) |"
    ) in text
    assert "| Balanced accuracy (test, 853 images per class) | 81.1% (95% CI 79.1 to 83.1) |" in text
    assert "](data_efficiency.png)" in text and "## Every training size" in text and "| 25% |" in text
    assert "not reached within this data" in text and "Rule: at the largest training size" in text
    assert size_key(0.05) == "5pct" and size_key(0.125) == "12_5pct"


STUDY_BASELINE = Baseline("functional", 361 / 525, 0.5)


def write_cell(folder: Path, seed: int, pre: float, scr: float) -> None:
    folder.mkdir(parents=True)
    evidence = comparison(pre - scr, pre - scr - 0.05, pre - scr + 0.05, 0.01, (100.0 + seed, 300.0))
    (folder / "comparison.json").write_text(json.dumps(evidence))
    for arm, acc in (("pretrained", pre), ("scratch", scr)):
        metrics = {"accuracy": acc, "balanced_accuracy": acc - 0.05, "train_seconds": 200.0 + seed, "best_epoch": 8}
        (folder / f"{arm}.json").write_text(json.dumps(metrics))


def write_split(folder: Path, train_per_class: int) -> None:
    """A prepared split of 40 images, two classes, 3 test images per class."""
    folder.mkdir(parents=True)
    val = 20 - 3 - train_per_class
    manifest = pd.DataFrame(
        {
            "path": [f"{i}.png" for i in range(40)],
            "class": ["a", "b"] * 20,
            "sha1": [str(i) for i in range(40)],
            "split": ["train"] * 2 * train_per_class + ["val"] * 2 * val + ["test"] * 6,
        }
    )
    manifest.to_csv(folder / "manifest.csv", index=False)
    np.save(folder / "images.npy", np.zeros((40, 3, 8, 8), dtype=np.uint8))


def test_write_study_report_summarises_every_cell_of_the_grid_over_each_seeds_split(tmp_path: Path):
    prepared = tmp_path / "prepared"
    for seed, train_per_class in ((1, 15), (2, 15), (3, 16)):  # seed 3's split: one image more per class
        write_split(prepared / str(seed), train_per_class)
    rng = np.random.default_rng(0)
    for fraction in (0.2, 1.0):
        for seed in (1, 2, 3):
            pre, scr = 0.8 + rng.normal(0, 0.01), 0.6 + rng.normal(0, 0.01)
            write_cell(tmp_path / "eval" / f"{fraction}-{seed}", seed, pre, scr)
    out = tmp_path / "out"
    summary = write_study_report(
        study=StudyParams([0.2, 1.0], [1, 2, 3], 0, SETTINGS), data_dir=prepared, results=tmp_path / "eval",
        summary_path=out / "summary.json", verdict_path=out / "verdict.md", plot_path=out / "curve.png",
        table_path=out / "curve.csv", cells_path=out / "cells.csv",
    )  # fmt: skip
    assert summary["recommendation"] == "pretrained" and summary["break_even_images_per_class"] is None
    assert summary["20pct"]["images_per_class"] == pytest.approx(10 / 3)  # 3, 3 and 4 per class
    assert summary["100pct"]["images_per_class"] == pytest.approx(46 / 3)  # 15, 15 and 16
    full = summary["100pct"]
    assert full["pretrained_accuracy_ci_low"] < full["pretrained_accuracy"] < full["pretrained_accuracy_ci_high"]
    assert full["pretrained_accuracy_sd"] > 0 and full["accuracy_diff_sd"] > 0
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["majority_class"] == "functional" and summary["majority_accuracy"] == 361 / 525
    assert full["pretrained_balanced_accuracy"] == pytest.approx(full["pretrained_accuracy"] - 0.05)
    assert (out / "curve.png").read_bytes().startswith(PNG_MAGIC)
    table = pd.read_csv(out / "curve.csv")
    assert list(table["train_images"]) == [7, 31] and list(table["majority"]) == [361 / 525] * 2
    cells = pd.read_csv(out / "cells.csv")  # each seed's own numbers, which the means above summarise
    assert list(zip(cells["train_fraction"], cells["seed"], strict=True)) == [
        (f, s) for f in (0.2, 1.0) for s in (1, 2, 3)
    ]
    assert list(cells["train_images"]) == [6, 6, 8, 30, 30, 32] and list(cells["pretrained_train_seconds"][:3]) == [
        201.0, 202.0, 203.0
    ]  # fmt: skip
    full_cells = cells[cells["train_fraction"] == 1.0]
    assert full_cells["pretrained_accuracy"].mean() == pytest.approx(full["pretrained_accuracy"])
    assert full_cells["accuracy_diff"].mean() == pytest.approx(full["accuracy_diff"])
    assert (full_cells["accuracy_diff_ci_low"] < full_cells["accuracy_diff"]).all() and set(cells["mcnemar_p"]) == {
        0.01
    }
    verdict = (out / "verdict.md").read_text()
    assert "](curve.png)" in verdict and "Majority-class baseline (test) | 68.8%" in verdict
    assert "mean over the 3 seeds' test splits" in verdict and "its own stratified split" in verdict


def test_a_missing_split_is_named(tmp_path: Path):
    write_split(tmp_path / "prepared" / "1", 15)
    write_cell(tmp_path / "eval" / "1.0-1", 1, 0.8, 0.7)
    write_cell(tmp_path / "eval" / "1.0-2", 2, 0.8, 0.7)
    with pytest.raises(DataError, match=r"prepared/2/manifest\.csv: missing"):
        write_study_report(
            study=StudyParams([1.0], [1, 2], 0, SETTINGS), data_dir=tmp_path / "prepared", results=tmp_path / "eval",
            summary_path=tmp_path / "s.json", verdict_path=tmp_path / "v.md", plot_path=tmp_path / "c.png",
            table_path=tmp_path / "c.csv", cells_path=tmp_path / "cells.csv",
        )  # fmt: skip
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "cells.csv").exists()


def test_the_study_baseline_is_the_mean_of_the_seeds_test_splits(tmp_path: Path):
    for seed, majority in ((1, 0.6), (2, 0.7)):
        write_cell(tmp_path / f"1.0-{seed}", seed, 0.8, 0.7)
        path = tmp_path / f"1.0-{seed}" / "comparison.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "majority_accuracy": majority}))
    assert split_baseline(tmp_path, read_cells(tmp_path, [1.0], [1, 2])) == Baseline(
        "functional", pytest.approx(0.65), 0.5
    )
    assert split_baseline(tmp_path, read_cells(tmp_path, [1.0], [1])) == Baseline("functional", 0.6, 0.5)
    path = tmp_path / "1.0-2" / "comparison.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "majority_class": "defective"}))
    with pytest.raises(DataError, match=r"1\.0-1 \(functional\), .*1\.0-2 \(defective\): .*majority classes differ"):
        split_baseline(tmp_path, read_cells(tmp_path, [1.0], [1, 2]))


# --- the pull-request comment ----------------------------------------------------------------


def entry(old, new) -> dict:
    """One metric of ``dvc metrics diff --all --json``."""
    diff = new - old if isinstance(old, int | float) and isinstance(new, int | float) else None
    return {"old": old, "new": new, "diff": diff}


# `dvc metrics diff main --all --json`, abridged: the new keys (arm CIs, majority class) only in this branch.
DIFF = {
    "metrics/comparison.json": {
        "accuracy": entry(0.0552, 0.0819), "balanced_accuracy": entry(0.0768, 0.095),
        "significance.accuracy_diff": entry(0.0552, 0.0819), "significance.accuracy_diff_ci_low": entry(0.0229, 0.049),
        "significance.accuracy_diff_ci_high": entry(0.0876, 0.114),
        "significance.mcnemar_p": entry(0.00091, 0.0123), "significance.confidence": entry(0.95, 0.95),
        "majority_accuracy": entry(None, 361 / 525), "train_seconds": entry(-39.28, 18.2),
    },
    "metrics/pretrained.json": {
        "accuracy": entry(0.861, 0.857), "accuracy_ci_low": entry(None, 0.824), "accuracy_ci_high": entry(None, 0.885),
        "balanced_accuracy": entry(0.812, 0.805), "train_seconds": entry(445.31, 246.7), "test_images": entry(525, 525),
    },
    "metrics/scratch.json": {"accuracy": entry(0.806, 0.775), "balanced_accuracy": entry(0.736, 0.71)},
    "study/metrics/summary.json": {"seeds": entry(3, 3), "100pct.accuracy_diff": entry(0.0654, 0.07)},
}  # fmt: skip


def test_pr_comment_leads_with_the_metrics_that_decide_the_verdict():
    text = pr_comment(base="main", metrics_diff=DIFF, verdicts={}, checks={})
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[:9] == [
        "| metric | `main` | this branch | change |",
        "| Accuracy, pretrained - scratch | +5.5 pp (95% CI 2.3 to 8.8) | +8.2 pp (95% CI 4.9 to 11.4) | +2.7 pp |",
        "| McNemar exact p | < 0.001 | 0.012 |  |",
        "| Accuracy, pretrained | 86.1% | 85.7% (95% CI 82.4 to 88.5) | -0.4 pp |",
        "| Accuracy, scratch | 80.6% | 77.5% | -3.1 pp |",
        "| Balanced accuracy, pretrained - scratch | +7.7 pp | +9.5 pp | +1.8 pp |",
        "| Balanced accuracy, pretrained | 81.2% | 80.5% | -0.7 pp |",
        "| Balanced accuracy, scratch | 73.6% | 71.0% | -2.6 pp |",
        "| Majority-class accuracy (baseline) | - | 68.8% |  |",
    ]
    # timings and the study's metrics come after, folded; unchanged ones and the table's own keys not at all
    assert "<details><summary>3 other metrics changed" in text and text.endswith("</details>\n")
    assert rows[9:] == [
        "| Path | Metric | `main` | this branch | Change |",
        "| metrics/comparison.json | train_seconds | -39.28 | 18.2 | 57.48 |",
        "| metrics/pretrained.json | train_seconds | 445.31 | 246.7 | -198.61 |",
        "| study/metrics/summary.json | 100pct.accuracy_diff | 0.0654 | 0.07 | 0.0046 |",
    ]


def test_pr_comment_leaves_out_rows_no_metrics_file_has():
    diff = {"metrics/scratch.json": {"accuracy": entry(0.8, 0.7)}}
    rows = pr_comment(base="main", metrics_diff=diff, verdicts={}, checks={}).splitlines()
    assert "| Accuracy, scratch | 80.0% | 70.0% | -10.0 pp |" in rows
    assert not any(row.startswith(("| Accuracy, pretrained", "| McNemar", "<details>")) for row in rows)


def test_pr_comment_holds_the_verdicts_and_the_checks():
    verdict = "# Verdict: fine-tune or train from scratch?\n\n**Fine-tune**: ...\n\n![curve](val_accuracy.png)\n"
    text = pr_comment(
        base="main", metrics_diff=DIFF, verdicts={"reports/verdict.md": verdict, "study/reports/verdict.md": None},
        checks={"tests": "success", "quick pipeline": "failure"},
        image_base_urls={"reports/verdict.md": "https://github.com/o/r/raw/abc123/reports"},
    )  # fmt: skip
    assert text.startswith(MARKER + "\n## transfer-vs-scratch: results of this pull request")
    assert "tests: **passed** · quick pipeline: **FAILED**" in text
    assert "### Metrics compared with `main`\n\n| metric | `main` | this branch | change |" in text
    assert "#### Verdict: fine-tune or train from scratch?" in text  # nested under the comment's headings
    assert "![curve](https://github.com/o/r/raw/abc123/reports/val_accuracy.png)" in text
    assert "`study/reports/verdict.md` is not in this branch" in text


def test_pr_comment_says_so_when_no_metric_changed():
    text = pr_comment(base="main", metrics_diff={}, verdicts={}, checks={})
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
    Path("diff.json").write_text(json.dumps(DIFF))
    main(["--base", "main", "--diff", "diff.json", "--verdict", "reports/verdict.md", "--check", "tests=success",
          "--image-base", "https://github.com/o/r/raw/abc", "--out", "comment.md"])  # fmt: skip
    text = Path("comment.md").read_text()
    assert "![p](https://github.com/o/r/raw/abc/reports/val_accuracy.png)" in text and "tests: **passed**" in text
    assert "| Accuracy, scratch | 80.6% | 77.5% | -3.1 pp |" in text
    Path("diff.json").write_text("")  # `dvc metrics diff` with nothing to compare
    main(["--base", "main", "--diff", "diff.json", "--out", "comment.md"])
    assert "No metric differs from `main`" in Path("comment.md").read_text()


EVIL_CLASS = "x` <img src=x onerror=alert(1)> @octocat `y"


def test_a_class_name_with_backticks_stays_text_in_the_verdict():
    """Issue 24 item 4: a class folder named with backticks broke out of verdict.md's code span."""
    text = pair_verdict(METRICS, {**comparison(0.082, 0.049, 0.114, 1e-5), "majority_class": EVIL_CLASS},
                        SETTINGS, 1706, 2, None)  # fmt: skip
    assert "<img" not in text and " @octocat" not in text and "`@octocat`" in text
    assert "“x\\` &lt;img src=x onerror=alert(1)&gt; `@octocat` \\`y”" in text


def test_tied_test_classes_make_the_baseline_one_over_k_and_name_no_class():
    tied = {**comparison(0.082, 0.049, 0.114, 1e-5), "majority_class": "one", "majority_tied": 1}
    text = pair_verdict(METRICS, tied, SETTINGS, 1706, 2, None)
    assert "classes are tied, so there is no majority class" in text and "1/k" in text
    assert "“one”" not in text and "always `one`" not in text

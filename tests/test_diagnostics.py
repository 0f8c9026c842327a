"""What the single pair's predictions say beyond accuracy (tvs.verdict.diagnostics) and the plot sources in
git that draw it (tvs.verdict.curves, .dvc/plots/*.json): calibration, ROC and PR, the disagreement
gallery, every class on the confusion axes, both arms named by colour."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tvs.errors import DataError
from tvs.io import write_csv
from tvs.verdict.curves import NO_PREDICTION, confusion_cells, curves_table, write_plot_sources
from tvs.verdict.diagnostics import (
    Scores,
    brier_score,
    calibration_bins,
    diagnose,
    disagreements,
    expected_calibration_error,
    highest_loss,
    positive_class,
    read_scores,
    thin,
    two_class_curves,
)

from .conftest import PROJECT

CLASSES = ["cats", "dogs"]


def scores(true: list[int], probs: list[list[float]], classes: list[str] = CLASSES) -> Scores:
    paths = np.array([f"{classes[t]}/{i}.png" for i, t in enumerate(true)])
    return Scores(list(classes), paths, np.array(true), np.array(probs, dtype=float))


def predictions_csv(path: Path, s: Scores) -> None:
    table = pd.DataFrame({"path": s.paths, "true": [s.classes[t] for t in s.true], "predicted": "x"})
    for i, name in enumerate(s.classes):
        table[f"p_{name}"] = s.probs[:, i]
    write_csv(table, path)


# --- calibration --------------------------------------------------------------------------------


def test_the_reliability_bins_and_ece_are_the_weighted_gap_between_confidence_and_accuracy():
    # bin 10: confidence 0.95, 3 images, the second wrong; bin 7: confidence 0.65, 1 image, right
    s = scores([0, 1, 1, 1], [[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.05, 0.95]])
    table = calibration_bins(s)
    assert table[["bin", "images"]].values.tolist() == [[7, 1], [10, 3]]
    assert table["accuracy"].tolist() == pytest.approx([1.0, 2 / 3])
    assert table["confidence"].tolist() == pytest.approx([0.65, 0.95])
    assert expected_calibration_error(table) == pytest.approx((1 * 0.35 + 3 * abs(2 / 3 - 0.95)) / 4)


def test_a_confidence_of_one_falls_in_the_last_bin_and_a_calibrated_model_has_no_gap():
    s = scores([0, 1], [[1.0, 0.0], [0.0, 1.0]])
    table = calibration_bins(s)
    assert table["bin"].tolist() == [10] and expected_calibration_error(table) == 0.0


def test_the_brier_score_is_zero_when_perfect_and_one_half_for_a_uniform_guess_between_two():
    assert brier_score(scores([0, 1], [[1.0, 0.0], [0.0, 1.0]])) == 0.0
    assert brier_score(scores([0, 1], [[0.5, 0.5], [0.5, 0.5]])) == pytest.approx(0.5)
    assert brier_score(scores([0, 1], [[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(2.0)


def test_images_without_finite_probabilities_are_left_out_of_the_scores_and_said_so():
    s = scores([0, 1, 1], [[0.9, 0.1], [np.nan, np.nan], [0.2, 0.8]])
    content, _ = diagnose({"pretrained": s, "scratch": s})
    assert content["arms"]["pretrained"]["scored_images"] == 2
    assert brier_score(s) == pytest.approx((0.01 + 0.01 + 0.04 + 0.04) / 2)
    assert brier_score(scores([0], [[np.inf, 0.0]])) is None


# --- ROC and PR -----------------------------------------------------------------------------------


def test_the_positive_class_is_the_rarer_one_and_the_second_on_a_tie():
    assert positive_class(np.array([1, 1, 1, 0]), 2) == 0
    assert positive_class(np.array([0, 0, 0, 1]), 2) == 1
    assert positive_class(np.array([0, 1]), 2) == 1


def test_roc_auc_and_average_precision_match_known_cases():
    separated = scores([0, 0, 1, 1], [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    roc, pr, auc, ap = two_class_curves(separated, positive=1)
    assert (auc, ap) == (1.0, 1.0)
    assert roc.iloc[0].tolist() == [0.0, 0.0] and roc.iloc[-1].tolist() == [1.0, 1.0]
    assert pr["recall"].is_monotonic_increasing  # drawn left to right
    reversed_ = scores([0, 0, 1, 1], [[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.9, 0.1]])
    assert two_class_curves(reversed_, positive=1)[2] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_and_average_precision_equal_scikit_learns_with_ties(seed: int):
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    rng = np.random.default_rng(seed)
    true = rng.integers(0, 2, 200)
    p = np.round(np.clip(0.5 + 0.3 * (true - 0.5) + rng.normal(0, 0.25, 200), 0, 1), 1)  # coarse: many ties
    s = scores(true.tolist(), np.c_[1 - p, p].tolist())
    roc, _, auc, ap = two_class_curves(s, positive=1)
    assert auc == pytest.approx(roc_auc_score(true, p)) and ap == pytest.approx(average_precision_score(true, p))
    fpr, tpr, _ = roc_curve(true, p, drop_intermediate=False)
    assert roc["false_positive_rate"].tolist() == pytest.approx(fpr.tolist())
    assert roc["true_positive_rate"].tolist() == pytest.approx(tpr.tolist())


def test_a_long_curve_is_thinned_keeping_both_ends():
    curve = pd.DataFrame({"x": np.arange(1000)})
    kept = thin(curve, 100)
    assert len(kept) == 100 and kept["x"].iloc[0] == 0 and kept["x"].iloc[-1] == 999


def test_more_than_two_classes_get_calibration_but_no_roc_or_pr():
    three = scores([0, 1, 2], [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]], ["a", "b", "c"])
    content, tables = diagnose({"pretrained": three, "scratch": three})
    assert set(tables) == {"calibration"} and content["positive_class"] is None
    assert "roc_auc" not in content["arms"]["scratch"]


# --- the disagreement gallery -------------------------------------------------------------------


def test_the_gallery_is_mcnemars_two_cells_the_most_confident_mistakes_first():
    true = [0, 0, 0, 1, 1]
    pre = scores(true, [[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.7, 0.3]])
    scr = scores(true, [[0.4, 0.6], [0.1, 0.9], [0.7, 0.3], [0.2, 0.8], [0.2, 0.8]])
    cells = disagreements({"pretrained": pre, "scratch": scr})
    right = cells["pretrained_right_scratch_wrong"]
    assert right["count"] == 2 and [i["path"] for i in right["images"]] == ["cats/1.png", "cats/0.png"]
    first = right["images"][0]
    assert first["true"] == "cats" and first["scratch"] == {"predicted": "dogs", "confidence": 0.9}
    assert first["pretrained"] == {"predicted": "cats", "confidence": 0.8}
    other = cells["scratch_right_pretrained_wrong"]
    assert other["count"] == 1 and other["images"][0]["path"] == "dogs/4.png"
    assert disagreements({"pretrained": pre, "scratch": scr}, limit=1)["pretrained_right_scratch_wrong"]["count"] == 2
    assert (
        len(disagreements({"pretrained": pre, "scratch": scr}, limit=1)["pretrained_right_scratch_wrong"]["images"])
        == 1
    )


def test_arms_scored_on_different_images_are_refused():
    a = scores([0, 1], [[0.9, 0.1], [0.1, 0.9]])
    b = Scores(CLASSES, np.array(["x.png", "y.png"]), a.true, a.probs)
    with pytest.raises(DataError, match="different test images"):
        disagreements({"pretrained": a, "scratch": b})


def test_the_highest_loss_images_come_first_an_image_without_prediction_before_all():
    s = scores([0, 0, 1], [[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan]])
    worst = highest_loss(s)
    assert [w["path"] for w in worst] == ["dogs/2.png", "cats/1.png", "cats/0.png"]
    assert worst[0]["loss"] is None and worst[0]["predicted"] is None
    assert worst[1]["loss"] == pytest.approx(-math.log(0.2)) and worst[1]["predicted"] == "dogs"


# --- the plot sources in git --------------------------------------------------------------------


def test_the_confusion_has_every_class_on_both_axes_with_counts_and_row_shares():
    s = scores([0, 0, 0, 1], [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]], ["cats", "dogs"])  # dogs never predicted
    cells = {(c["actual"], c["predicted"]): (c["count"], c["share"]) for c in confusion_cells(s)}
    assert cells == {("cats", "cats"): (3, 1.0), ("cats", "dogs"): (0, 0.0),
                     ("dogs", "cats"): (1, 1.0), ("dogs", "dogs"): (0, 0.0)}  # fmt: skip
    broken = scores([0, 1], [[np.nan, np.nan], [0.1, 0.9]])
    assert {c["predicted"] for c in confusion_cells(broken)} == {"cats", "dogs", NO_PREDICTION}


def test_the_curves_are_one_table_a_row_per_arm_and_whole_epoch():
    history = [{"epoch": e, "train_loss": 0.5, "train_accuracy": 0.5, "val_loss": 0.25, "val_accuracy": 0.75,
                "lr": 1e-3, "epoch_seconds": 2.0} for e in (1, 2)]  # fmt: skip
    table = curves_table({"pretrained": history, "scratch": history[:1]})
    assert list(table.columns) == ["arm", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                                   "epoch_seconds"]  # fmt: skip
    assert table[["arm", "epoch"]].values.tolist() == [["pretrained", 1], ["pretrained", 2], ["scratch", 1]]
    assert list(curves_table({"pretrained": [], "scratch": []}).columns)[:2] == ["arm", "epoch"]  # diverged at once


def test_the_no_prediction_column_is_named_as_evaluate_names_it():
    from tvs.evaluate.scoring import NO_PREDICTION_NAME

    assert NO_PREDICTION == NO_PREDICTION_NAME  # verdict cannot import evaluate's module (torch): one name, checked


def test_read_scores_names_the_file_and_round_trips_odd_names(tmp_path: Path):
    s = scores([0, 1], [[0.9, 0.1], [0.1, 0.9]], ["ca\rts", 'd,o"gs'])
    predictions_csv(tmp_path / "p.csv", s)
    back = read_scores(tmp_path / "p.csv")
    assert back.classes == s.classes and back.paths.tolist() == s.paths.tolist()
    (tmp_path / "bad.csv").write_text("path,label\na.png,cats\n")
    with pytest.raises(DataError, match=r"bad\.csv: no column true, p_<class>"):
        read_scores(tmp_path / "bad.csv")


def top_level_plots() -> list[dict]:
    return yaml.safe_load((PROJECT / "dvc.yaml").read_text())["plots"]


def plot_files() -> set[str]:
    files = set()
    for entry in top_level_plots():
        ((name, props),) = entry.items()
        files |= set(props["y"]) if isinstance(props.get("y"), dict) else {name}
    return files


@pytest.mark.parametrize("classes", [["cats", "dogs"], ["a", "b", "c"]])
def test_verdict_writes_every_file_the_top_level_plots_read_roc_and_pr_for_two_classes_only(
    tmp_path: Path, classes: list[str]
):
    k = len(classes)
    probs = np.eye(k)[[i % k for i in range(6)]] * 0.8 + 0.2 / k
    s = scores([i % k for i in range(6)], probs.tolist(), classes)
    history = [{"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.5, "val_loss": 0.25, "val_accuracy": 0.75,
                "lr": 1e-3, "epoch_seconds": 2.0}]  # fmt: skip
    plots = tmp_path / "reports" / "plots"
    plots.mkdir(parents=True)
    (plots / "roc.csv").write_text("stale\n")  # from an earlier two-class run
    for arm in ("pretrained", "scratch"):
        (tmp_path / "eval" / arm).mkdir(parents=True)
        predictions_csv(tmp_path / "eval" / arm / "predictions.csv", s)
    write_plot_sources(plots, {"pretrained": history, "scratch": history}, tmp_path / "eval")
    written = {p.relative_to(tmp_path).as_posix() for p in plots.glob("**/*") if p.is_file()}
    two_class_only = {"reports/plots/roc.csv", "reports/plots/pr.csv"}
    expected = plot_files() | {"reports/plots/diagnostics.json"}
    assert written == (expected if k == 2 else expected - two_class_only)
    content = json.loads((plots / "diagnostics.json").read_text())
    assert set(content["arms"]) == {"pretrained", "scratch"} and content["bins"] == 10


def test_every_plot_template_exists_colours_by_arm_and_fills_dvcs_anchors():
    templates = PROJECT / ".dvc" / "plots"
    used = {props["template"] for entry in top_level_plots() for props in entry.values()}
    used |= {
        out_props["template"]
        for stage in yaml.safe_load((PROJECT / "tune" / "dvc.yaml").read_text())["stages"].values()
        for plot in stage.get("plots", [])
        for out_props in plot.values()
        if isinstance(out_props, dict) and "template" in out_props
    }
    assert used == {"arms_by_epoch", "arms_xy", "arms_scatter", "confusion_cells"}
    for name in used:
        text = (templates / f"{name}.json").read_text()
        spec = json.loads(text)
        assert spec["data"] == {"values": "<DVC_METRIC_DATA>"} and "<DVC_METRIC_X>" in text
        if name.startswith("arms"):
            assert spec["encoding"]["color"]["field"] == "arm"
            assert spec["encoding"]["color"]["scale"]["domain"] == ["pretrained", "scratch"]
    assert json.loads((templates / "arms_by_epoch.json").read_text())["encoding"]["x"]["axis"]["tickMinStep"] == 1

"""The tuning pipeline's choice and verdict (src/tvs/tune/), on fabricated runs: fast, no training.

The choice reads validation numbers only (a test where the test split would pick another learning
rate), each arm gets the same trials, and the verdict says each outcome in words: pretrained wins,
scratch wins, inconclusive, scratch no longer significantly behind at k x the compute (cannot tell).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tvs.errors import ConfigError, DataError
from tvs.evaluate.stats import mean_ci
from tvs.tune.params import TuneParams, load_tune_params
from tvs.tune.report import Schedule, Scored, Tuned, catch_up, collect, frontier, headline, tune_summary, tuned_verdict
from tvs.tune.runs import Trial, select_lr

from .conftest import ENV, PROJECT

TUNE = TuneParams(lrs=[0.001, 0.01], epochs=8, scratch_epochs=[8, 16, 32], search_repeat=0, repeats=[1, 2, 3])


def trial(arm: str, lr: float, val: float, loss: float = 0.5, epochs: int = 8, seconds: float = 100.0) -> Trial:
    return Trial(arm, lr, epochs, val, loss, seconds, epochs * 10)


def write_search_run(models: Path, arm: str, lr: float, val: float, test: float, evals: Path) -> None:
    """A search cell as the pipeline leaves it: the checkpoint's meta.json and the test score beside it."""
    run = models / f"{arm}-{lr}"
    run.mkdir(parents=True)
    meta = {"arm": arm, "best_val_accuracy": val, "best_val_loss": 0.4, "train_seconds": 10.0, "train_images": 40,
            "history": [{"epoch": 1}], "params": {"lr": lr, "train": {"batch_size": 8}}}  # fmt: skip
    (run / "meta.json").write_text(json.dumps(meta))
    (evals / str(lr)).mkdir(parents=True, exist_ok=True)
    (evals / str(lr) / f"{arm}.json").write_text(json.dumps({"accuracy": test}))


@pytest.fixture
def stage_dir(tmp_path: Path) -> Path:
    """A folder laid out like tune/ with a dvc.yaml that declares `selected` as an output."""
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"select": {"cmd": "x", "outs": ["selected"]}}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**vars(TUNE), "report": {}}))
    return tmp_path


def run_select(cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(PROJECT / "src/stages/choose_lr.py"), "--params", "params.yaml",
           "--models", "models/search", "--out", "selected"]  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


def test_select_picks_validations_lr_where_the_test_split_would_pick_another(stage_dir: Path):
    models, evals = stage_dir / "models" / "search", stage_dir / "eval" / "search"
    for arm in ("pretrained", "scratch"):  # validation prefers 0.001 (pretrained) / 0.01 (scratch); test the other
        write_search_run(models, arm, 0.001, val=0.80 if arm == "pretrained" else 0.60, test=0.70, evals=evals)
        write_search_run(models, arm, 0.01, val=0.75 if arm == "pretrained" else 0.65, test=0.90, evals=evals)
    proc = run_select(stage_dir)
    assert proc.returncode == 0, proc.stderr
    assert (stage_dir / "selected" / "pretrained.set").read_text() == "lr=0.001\n"
    assert (stage_dir / "selected" / "scratch.set").read_text() == "lr=0.01\n"
    chosen = json.loads((stage_dir / "selected" / "selection.json").read_text())
    assert [len(chosen[arm]["trials"]) for arm in ("pretrained", "scratch")] == [2, 2]  # the same trials per arm
    assert "pretrained: lr 0.001 (validation accuracy 80.0%)" in proc.stdout


def test_select_names_the_missing_search_run(stage_dir: Path):
    write_search_run(stage_dir / "models" / "search", "pretrained", 0.001, 0.8, 0.7, stage_dir / "eval" / "search")
    proc = run_select(stage_dir)
    assert proc.returncode == 1 and not (stage_dir / "selected").exists()
    assert "models/search/pretrained-0.01/meta.json: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ties_go_to_the_lower_validation_loss_then_the_lower_lr():
    assert select_lr([trial("scratch", 0.01, 0.8, 0.3), trial("scratch", 0.001, 0.8, 0.4)]).lr == 0.01
    assert select_lr([trial("scratch", 0.01, 0.8), trial("scratch", 0.001, 0.8)]).lr == 0.001


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lrs": [0.001, 0.001]}, "lrs: must not repeat"),
        ({"scratch_epochs": [16, 32]}, "scratch_epochs: must include `epochs` (8)"),
        ({"repeats": []}, "repeats: must be a non-empty list"),
        ({"lrs": [0.001, "fast"]}, "lrs[1]: expected float"),
        ({"search_repeat": 2}, "search_repeat: must not be one of `repeats` [1, 2, 3]"),
    ],
)
def test_bad_tune_params_name_the_file_and_key(tmp_path: Path, change: dict, message: str):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**vars(TUNE), "report": {}, **change}))
    with pytest.raises(ConfigError, match=r"params\.yaml: ") as err:
        load_tune_params(path)
    assert message in str(err.value)


# --- the verdict's words for each outcome ---------------------------------------------------------


def schedule(arm: str, epochs: int, accuracies: list[float], seconds: float, diffs: list[float] = ()) -> Schedule:
    acc = mean_ci(accuracies, 0.95, (0, 1))
    return Schedule(arm, epochs, acc, acc, seconds, epochs * 10, mean_ci(diffs, 0.95, (-1, 1)) if diffs else None)


def tuned(pretrained: list[float], scratch: dict[int, list[float]], untuned_low: float = 0.02) -> Tuned:
    """A summary of these test accuracies, one per repeat (scratch per schedule), paired by repeat."""
    pre = schedule("pretrained", 8, pretrained, 100.0)
    scr = [schedule("scratch", e, acc, 100.0 * e / 8, [p - a for p, a in zip(pretrained, acc, strict=True)])
           for e, acc in sorted(scratch.items())]  # fmt: skip
    trials = {arm: [trial(arm, lr, 0.8 - lr) for lr in TUNE.lrs] for arm in ("pretrained", "scratch")}
    sig = {"accuracy_diff": 0.05, "accuracy_diff_ci_low": untuned_low, "accuracy_diff_ci_high": 0.09,
           "mcnemar_p": 0.001, "confidence": 0.95}  # fmt: skip
    return Tuned(
        trials=trials,
        chosen={"pretrained": trials["pretrained"][0], "scratch": trials["scratch"][1]},
        search_scores=[Scored(t, "search", 1, 0.8, 0.77, 0.83, 0.75) for ts in trials.values() for t in ts],
        final_scores=[],
        schedules=[pre, *scr],
        difference=scr[0].difference,
        significant_repeats=2,
        repeats=len(pretrained),
        catch_up=catch_up(scr),
        untuned={"significance": sig},
        untuned_lr=0.001,
        majority_accuracy=0.687,
        majority_class="functional",
        majority_balanced_accuracy=0.5,
    )


def test_verdict_pretrained_wins_and_scratch_does_not_catch_up_within_4x():
    t = tuned([0.87, 0.88, 0.86], {8: [0.79, 0.79, 0.79], 16: [0.81, 0.80, 0.80], 32: [0.82, 0.83, 0.82]})
    decision, text = headline(t, TUNE)
    assert decision == "pretrained"
    assert text.startswith("**Fine-tune**, tuned against tuned (pretrained lr 0.001, scratch lr 0.01, 8 epochs each)")
    assert "+8.0 pp test accuracy" in text and "over 3 repeats" in text
    assert "Scratch does **not catch up within 4x the epochs** (every schedule at scratch's lr chosen for 8" in text
    assert "its best, 32 epochs (400 s), scores 82.3%, still +4.7 pp behind" in text
    summary = tune_summary(t, TUNE)
    assert summary["catch_up_epochs"] is None and summary["untuned_survives"] is True
    assert summary["pretrained_trials"] == summary["scratch_trials"] == 2
    assert summary["scratch_32ep"]["accuracy_diff"] == pytest.approx(0.0467, abs=1e-3)


def test_scratch_no_longer_behind_at_2x_is_cannot_tell_never_catches_up():
    t = tuned([0.87, 0.88, 0.86], {8: [0.79, 0.80, 0.78], 16: [0.88, 0.86, 0.87], 32: [0.88, 0.88, 0.87]})
    _, text = headline(t, TUNE)
    assert "Scratch at 2x the epochs: **cannot tell** (every schedule at scratch's lr chosen for 8 epochs)" in text
    assert "catches up at" not in text  # no equivalence claim from a CI that merely reaches zero
    assert "with 16 epochs (200 s, 2.0x the pretrained arm's training seconds) it scores 87.0%" in text
    assert tune_summary(t, TUNE)["catch_up_epochs"] == 16


def test_verdict_scratch_wins():
    t = tuned([0.80, 0.81, 0.79], {8: [0.85, 0.87, 0.83], 16: [0.86] * 3, 32: [0.86] * 3})
    decision, text = headline(t, TUNE)
    assert decision == "scratch" and text.startswith("**Train from scratch**, tuned against tuned")
    assert "Scratch is ahead at the same budget" in text
    assert "Its verdict **does not survive** tuning (tuned: scratch)" in tuned_verdict(t, TUNE, "compute.png")


def test_verdict_inconclusive_when_the_ci_includes_zero():
    t = tuned([0.85, 0.84, 0.86], {8: [0.80, 0.88, 0.85], 16: [0.85] * 3, 32: [0.85] * 3})
    decision, text = headline(t, TUNE)
    assert decision == "inconclusive" and text.startswith("**Inconclusive** tuned against tuned")
    assert "the CI includes zero" in text
    assert "At the same budget: **cannot tell** (+0.7 pp, 95% CI" in text
    assert tune_summary(t, TUNE)["catch_up_epochs"] == 8


def test_one_repeat_says_the_catch_up_is_not_measurable():
    t = tuned([0.87], {8: [0.79], 16: [0.86], 32: [0.88]})
    decision, text = headline(t, TUNE)
    assert decision == "inconclusive" and "one repeat gives no confidence interval" in text
    assert "Catch-up: not measurable, one repeat gives no CI." in text


def test_the_verdict_shows_the_baseline_and_what_the_cis_cover():
    t = tuned([0.87, 0.88, 0.86], {8: [0.79, 0.80, 0.78], 16: [0.8] * 3, 32: [0.8] * 3})
    text = tuned_verdict(t, TUNE, "compute.png")
    assert "Baseline: predicting the majority class (“functional”) for every test image scores 68.7% accuracy" in text
    assert "| majority class (test) | 68.7% | 50.0% |" in text
    assert "cover both which images landed in the test split and the seed" in text
    assert "| pretrained | 2 | 0.001, 0.01 |" in text  # trials per arm, the grid
    assert "| 0.001 | 79.9% ✓ | 80.0% (±3.0 pp) | 79.9% | 80.0% (±3.0 pp) |" in text  # validation, then test ± CI


def test_the_frontier_runs_over_the_final_schedules_means_not_the_search_runs():
    import pandas as pd

    runs = pd.DataFrame({
        "phase": ["search", "final", "final", "final", "final"],
        "epochs": [8, 8, 8, 16, 32],
        "seconds": [100.0, 100.0, 110.0, 200.0, 400.0],
        "test_accuracy": [0.95, 0.70, 0.80, 0.72, 0.78],  # the lucky search run must not set the frontier
    })  # fmt: skip
    line = frontier(runs)
    assert line["epochs"].tolist() == [8, 16, 32] and line["test_accuracy"].tolist() == pytest.approx(
        [0.75, 0.72, 0.78]
    )
    assert line["best"].tolist() == pytest.approx([0.75, 0.75, 0.78])


# --- collect: the cells as tune/dvc.yaml names them -------------------------------------------------


def write_cells(root: Path, tune: TuneParams, val: dict, finals: dict, lr_ran: dict | None = None) -> None:
    """Fabricated cells: search runs with validation accuracies ``val[arm][lr]``; final test accuracies
    ``finals[(arm, epochs)]`` (one per repeat), each scored against pretrained in eval/final/<epochs>-<r>/."""

    def run(path: Path, arm: str, lr: float, epochs: int, v: float = 0.7) -> None:
        path.mkdir(parents=True)
        meta = {"arm": arm, "best_val_accuracy": v, "best_val_loss": 0.4, "train_seconds": 10.0 * epochs,
                "train_images": 40, "history": [{}] * epochs,
                "params": {"lr": lr, "train": {"batch_size": 8}}}  # fmt: skip
        (path / "meta.json").write_text(json.dumps(meta))

    def score(cell: Path, arm: str, acc: float) -> None:
        cell.mkdir(parents=True, exist_ok=True)
        (cell / f"{arm}.json").write_text(json.dumps(
            {"accuracy": acc, "accuracy_ci_low": acc - 0.03, "accuracy_ci_high": acc + 0.03, "balanced_accuracy": acc}
        ))  # fmt: skip

    def compare(cell: Path, diff: float) -> None:
        (cell / "comparison.json").write_text(json.dumps(
            {"accuracy": diff, "significance": {"mcnemar_p": 0.01, "accuracy_diff": diff, "confidence": 0.95,
             "accuracy_diff_ci_low": diff - 0.02, "accuracy_diff_ci_high": diff + 0.02},
             "majority_class": "functional", "majority_accuracy": 0.69, "majority_balanced_accuracy": 0.5}
        ))  # fmt: skip

    for lr in tune.lrs:
        for arm in ("pretrained", "scratch"):
            run(root / "models" / "search" / f"{arm}-{lr}", arm, lr, tune.epochs, val[arm][lr])
            score(root / "eval" / "search" / str(lr), arm, 0.5)  # the test split would pick nothing in particular
        compare(root / "eval" / "search" / str(lr), 0.0)
    chosen = {arm: max(val[arm], key=val[arm].get) for arm in val} | (lr_ran or {})
    for i, r in enumerate(tune.repeats):
        run(root / "models" / "final" / f"pretrained-{r}", "pretrained", chosen["pretrained"], tune.epochs)
        for e in tune.scratch_epochs:
            run(root / "models" / "final" / f"scratch-{e}-{r}", "scratch", chosen["scratch"], e)
            cell = root / "eval" / "final" / f"{e}-{r}"
            score(cell, "pretrained", finals[("pretrained", tune.epochs)][i])
            score(cell, "scratch", finals[("scratch", e)][i])
            compare(cell, finals[("pretrained", tune.epochs)][i] - finals[("scratch", e)][i])


SMALL = TuneParams(lrs=[0.001, 0.01], epochs=2, scratch_epochs=[2, 4], search_repeat=0, repeats=[1, 2, 3])
VAL = {"pretrained": {0.001: 0.9, 0.01: 0.8}, "scratch": {0.001: 0.6, 0.01: 0.7}}
FINALS = {("pretrained", 2): [0.90, 0.88, 0.89], ("scratch", 2): [0.80, 0.79, 0.81], ("scratch", 4): [0.88, 0.89, 0.87]}


def test_collect_pairs_each_schedule_with_pretrained_by_repeat(tmp_path: Path):
    write_cells(tmp_path, SMALL, VAL, FINALS)
    t = collect(SMALL, tmp_path, untuned_lr=0.001)
    assert (t.chosen["pretrained"].lr, t.chosen["scratch"].lr) == (0.001, 0.01)
    assert [(s.arm, s.epochs) for s in t.schedules] == [("pretrained", 2), ("scratch", 2), ("scratch", 4)]
    assert t.difference.mean == pytest.approx(0.09) and t.repeats == 3
    four = t.schedules[2]
    assert four.accuracy.mean == pytest.approx(0.88) and four.seconds == 40.0 and four.steps == 4 * 5
    assert four.difference.mean == pytest.approx(0.01) and t.catch_up is four  # within the CI at 2x
    assert len(t.final_scores) == 3 * 3 and t.untuned is not None


def test_collect_refuses_final_runs_trained_at_a_rate_the_search_no_longer_chooses(tmp_path: Path):
    write_cells(tmp_path, SMALL, VAL, FINALS, lr_ran={"scratch": 0.001})
    with pytest.raises(DataError, match=r"final/scratch-2-1/meta.json: trained with lr 0.001, but the search now"):
        collect(SMALL, tmp_path, untuned_lr=0.001)


def test_the_baseline_is_the_mean_of_the_repeats_test_splits_and_differing_classes_are_named(tmp_path: Path):
    write_cells(tmp_path, SMALL, VAL, FINALS)
    for r, majority in ((1, 0.68), (2, 0.69), (3, 0.73)):
        path = tmp_path / "eval" / "final" / f"2-{r}" / "comparison.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "majority_accuracy": majority}))
    assert collect(SMALL, tmp_path, untuned_lr=0.001).majority_accuracy == pytest.approx(0.70)
    path = tmp_path / "eval" / "final" / "2-3" / "comparison.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "majority_class": "defective"}))
    with pytest.raises(
        DataError, match=r"final/2-3 \(defective\): the test splits' majority classes differ; rerun `dvc"
    ):
        collect(SMALL, tmp_path, untuned_lr=0.001)


def test_a_diverged_pair_is_named_not_a_traceback(tmp_path: Path):
    write_cells(tmp_path, SMALL, VAL, FINALS)
    path = tmp_path / "eval" / "final" / "4-2" / "comparison.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy": None}))
    with pytest.raises(DataError, match=r"final/4-2/comparison.json: no comparison, an arm diverged"):
        collect(SMALL, tmp_path, untuned_lr=0.001)


def test_a_diverged_search_run_is_not_chosen_however_good_its_best_epoch():
    good_then_diverged = Trial("scratch", 0.01, 8, 0.9, 0.3, 100.0, 80, diverged=True)
    assert select_lr([good_then_diverged, trial("scratch", 0.001, 0.7)]).lr == 0.001


def test_the_committed_grid_runs_at_params_yamls_size_so_its_evidence_is_current():
    """The page names `dvc repro tune/dvc.yaml` as rung (a)'s next step: with tune/params.yaml at another
    image size or number of epochs than params.yaml, that command would make evidence the page calls stale."""
    from tvs.config import load_params

    tune, main = load_tune_params(PROJECT / "tune" / "params.yaml"), load_params(PROJECT / "params.yaml")
    assert (tune.image_size, tune.epochs) == (main.data.image_size, main.train.epochs)
    assert sorted(tune.scratch_epochs) == [main.train.epochs * k for k in (1, 2, 4)]  # 1x, 2x, 4x the compute


def test_the_tuning_cost_counts_longer_schedules_and_larger_images_as_more_runs():
    from tvs.ladder import training_cost
    from tvs.page import tune_work

    config = {"train.epochs": 8, "data.image_size": 128}
    grid = {"lrs": [1, 2, 3, 4], "repeats": [1, 2, 3], "epochs": 8, "scratch_epochs": [8, 16, 32], "image_size": 128}
    assert tune_work(grid, config) == (20, 32.0)  # 8 search + 3 x (8 + 8 + 16 + 32) / 8 epochs
    assert tune_work({**grid, "image_size": 64, "epochs": 4, "scratch_epochs": [4, 8, 16]}, config) == (20, 4.0)
    assert training_cost(20, 300.0, 32.0) == (
        "20 training runs (32 runs' worth at params.yaml's size), about 160 min here (300 s per run measured)"
    )
    assert training_cost(2, 300.0) == "2 training runs, about 10 min here (300 s per run measured)"

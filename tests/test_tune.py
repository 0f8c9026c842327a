"""The tuning pipeline's choice and verdict (src/tvs/tune/), on fabricated runs: fast, no training.

The choice reads validation numbers only (a test where the test split would pick another learning
rate), each arm gets the same trials, and the verdict says each outcome in words: pretrained wins,
scratch wins, inconclusive, scratch catches up at k x the compute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tvs.errors import ConfigError
from tvs.evaluate.stats import mean_ci
from tvs.tune.params import TuneParams, load_tune_params
from tvs.tune.report import Schedule, Scored, Tuned, catch_up, frontier, headline, tune_summary, tuned_verdict
from tvs.tune.runs import Trial, select_lr

from .conftest import ENV, PROJECT

TUNE = TuneParams(lrs=[0.001, 0.01], epochs=8, scratch_epochs=[8, 16, 32], search_repeat=1, repeats=[1, 2, 3])


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
    ],
)
def test_bad_tune_params_name_the_file_and_key(tmp_path: Path, change: dict, message: str):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**vars(TUNE), "report": {}, **change}))
    with pytest.raises(ConfigError, match=r"params\.yaml: ") as err:
        load_tune_params(path)
    assert message in str(err.value)


# --- the verdict's words for each outcome ---------------------------------------------------------


def schedule(arm: str, epochs: int, accuracies: list[float], seconds: float) -> Schedule:
    acc = mean_ci(accuracies, 0.95, (0, 1))
    return Schedule(arm, epochs, acc, acc, seconds, epochs * 10)


def tuned(diffs: list[float], pretrained: list[float], scratch: dict[int, list[float]], untuned_low=0.02) -> Tuned:
    """A summary with these per-repeat differences and accuracies (scratch per schedule)."""
    pre = schedule("pretrained", 8, pretrained, 100.0)
    scr = [schedule("scratch", e, acc, 100.0 * e / 8) for e, acc in sorted(scratch.items())]
    trials = {arm: [trial(arm, lr, 0.8 - lr) for lr in TUNE.lrs] for arm in ("pretrained", "scratch")}
    sig = {"accuracy_diff": 0.05, "accuracy_diff_ci_low": untuned_low, "accuracy_diff_ci_high": 0.09,
           "mcnemar_p": 0.001, "confidence": 0.95}  # fmt: skip
    return Tuned(
        trials=trials,
        chosen={"pretrained": trials["pretrained"][0], "scratch": trials["scratch"][1]},
        search_scores=[Scored(t, "search", 1, 0.8, 0.77, 0.83, 0.75) for ts in trials.values() for t in ts],
        final_scores=[],
        schedules=[pre, *scr],
        difference=mean_ci(diffs, 0.95, (-1, 1)),
        significant_repeats=2,
        repeats=len(diffs),
        catch_up=catch_up(pre, scr),
        untuned={"significance": sig},
        untuned_lr=0.001,
        majority_accuracy=0.687,
        majority_class="functional",
    )


def test_verdict_pretrained_wins_and_scratch_does_not_catch_up_within_4x():
    t = tuned([0.08, 0.09, 0.07], [0.87, 0.88, 0.86], {8: [0.79, 0.80, 0.78], 16: [0.81, 0.8, 0.8], 32: [0.82] * 3})
    decision, text = headline(t, TUNE)
    assert decision == "pretrained"
    assert text.startswith("**Fine-tune**, tuned against tuned (pretrained lr 0.001, scratch lr 0.01, 8 epochs each)")
    assert "+8.0 pp test accuracy" in text and "over 3 repeats" in text
    assert "Scratch does **not** come within the pretrained arm's 95% CI" in text and "within 4x the epochs" in text
    summary = tune_summary(t, TUNE)
    assert summary["catch_up_epochs"] is None and summary["untuned_survives"] is True
    assert summary["pretrained_trials"] == summary["scratch_trials"] == 2


def test_verdict_scratch_catches_up_at_2x_the_compute():
    t = tuned([0.08, 0.09, 0.07], [0.87, 0.88, 0.86], {8: [0.79, 0.80, 0.78], 16: [0.87, 0.86, 0.88], 32: [0.88] * 3})
    _, text = headline(t, TUNE)
    assert "Scratch **catches up at 2x the epochs**: with 16 epochs (200 s, 2.0x the pretrained arm's" in text
    assert tune_summary(t, TUNE)["catch_up_epochs"] == 16


def test_verdict_scratch_wins():
    t = tuned([-0.05, -0.06, -0.04], [0.80, 0.81, 0.79], {8: [0.85, 0.87, 0.83], 16: [0.86] * 3, 32: [0.86] * 3})
    decision, text = headline(t, TUNE)
    assert decision == "scratch" and text.startswith("**Train from scratch**, tuned against tuned")
    assert "Scratch is ahead at the same budget" in text
    assert "Its verdict **does not survive** tuning (tuned: scratch)" in tuned_verdict(t, TUNE, "compute.png")


def test_verdict_inconclusive_when_the_ci_includes_zero():
    t = tuned([0.05, -0.04, 0.01], [0.85, 0.84, 0.86], {8: [0.84, 0.85, 0.85], 16: [0.85] * 3, 32: [0.85] * 3})
    decision, text = headline(t, TUNE)
    assert decision == "inconclusive" and text.startswith("**Inconclusive** tuned against tuned")
    assert "the CI includes zero" in text
    assert "already lies within the pretrained arm's 95% CI at the same budget" in text


def test_the_verdict_shows_the_baseline_and_what_the_cis_cover():
    t = tuned([0.08, 0.09, 0.07], [0.87, 0.88, 0.86], {8: [0.79, 0.80, 0.78], 16: [0.8] * 3, 32: [0.8] * 3})
    text = tuned_verdict(t, TUNE, "compute.png")
    assert "Baseline: predicting the majority class (`functional`) scores 68.7%" in text
    assert "| majority class (test) | 68.7% |" in text
    assert "cover both which images landed in the test split and the seed" in text
    assert "| pretrained | 2 | 0.001, 0.01 |" in text  # trials per arm, the grid


def test_frontier_is_the_best_accuracy_so_far_by_seconds():
    import pandas as pd

    runs = pd.DataFrame({"seconds": [30.0, 10.0, 20.0], "test_accuracy": [0.7, 0.6, 0.5]})
    assert frontier(runs)["best"].tolist() == [0.6, 0.6, 0.7]

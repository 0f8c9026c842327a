"""The tuning pipeline's verdict: tuned against tuned, compute-matched, beside the baseline.

Reads the cells ``tune/dvc.yaml`` wrote (:mod:`tvs.tune.runs` names them): the search (each
arm's learning-rate grid on one split, chosen on validation) and the final runs (each arm at its
chosen rate, one run per repeat, every repeat its own split and seed; scratch also with longer
schedules). Writes the summary metrics, the verdict, and test accuracy against training seconds
(PNG and CSV). The shared rules and wording are in :mod:`tvs.verdict.rules`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from tvs.config import ARMS
from tvs.errors import DataError
from tvs.evaluate.stats import Estimate, mean_ci
from tvs.io import read_json, write_csv, write_json, write_text
from tvs.tune.params import TuneParams
from tvs.tune.runs import Trial, final_model, read_trial, search, selection
from tvs.verdict.plots import COLOURS, LABELS, draw_baseline, save_figure
from tvs.verdict.rules import (
    ARM_ACTION,
    INCONCLUSIVE,
    baseline_text,
    ci_pp,
    decide,
    epochs_text,
    estimate_text,
    half_width,
    markdown_table,
    mean_baseline,
    p_text,
    pct,
    pp,
    seconds_text,
)

TUNE_RULE = (
    "Rule: each arm's learning rate is the one with the best validation accuracy on the search split "
    "(ties: lower validation loss, then the lower rate); the test split never enters the choice. "
    "Tuned against tuned: recommend the arm whose mean test accuracy is higher when the {conf:.0%} CI of "
    "the per-repeat paired difference (Student t over repeats) excludes zero, otherwise *inconclusive*. "
    "Catch-up: the shortest scratch schedule whose paired difference (pretrained minus it, over repeats) has a "
    "{conf:.0%} CI that reaches zero, i.e. scratch is no longer significantly behind; the longer schedules keep "
    "the lr chosen at the search's budget."
)
SOURCES = (
    "Each repeat is its own stratified split (`prepare` with that seed) and its own seed (initialisation, "
    "data order), so the CIs over repeats cover both which images landed in the test split and the seed; "
    "a single run's accuracy carries the Wilson CI of its test split (±, half its width). The search runs on "
    "a split of its own (`search_repeat`, none of the repeats), so no final run repeats a search run and "
    "every final score is independent of the choice."
)


@dataclass(frozen=True)
class Scored:
    """One run with its test score (read only after the choice is made, for the tables and the plot)."""

    trial: Trial
    phase: str  # search | final
    repeat: int
    accuracy: float
    low: float
    high: float
    balanced_accuracy: float


@dataclass(frozen=True)
class Schedule:
    """One arm at one schedule, over the repeats."""

    arm: str
    epochs: int
    accuracy: Estimate
    balanced_accuracy: Estimate
    seconds: float  # mean over repeats
    steps: int
    difference: Estimate | None = None  # scratch only: pretrained minus this schedule, paired by repeat


@dataclass(frozen=True)
class Tuned:
    """Everything the verdict says, computed from the cells."""

    trials: dict[str, list[Trial]]  # the search, per arm
    chosen: dict[str, Trial]
    search_scores: list[Scored]
    final_scores: list[Scored]
    schedules: list[Schedule]  # pretrained at `epochs`, scratch at each of `scratch_epochs`
    difference: Estimate  # pretrained - scratch at the same budget, paired by repeat
    significant_repeats: int
    repeats: int
    catch_up: Schedule | None  # the first scratch schedule no longer significantly behind pretrained
    untuned: dict[str, Any] | None  # the search split's comparison at the main pipeline's lr
    untuned_lr: float
    majority_accuracy: float  # mean over the repeats' test splits
    majority_balanced_accuracy: float  # the same
    majority_class: str


def _scored(trial: Trial, phase: str, repeat: int, arm_json: Path) -> Scored:
    m = read_json(arm_json)
    low, high = m["accuracy_ci_low"], m["accuracy_ci_high"]
    return Scored(trial, phase, repeat, m["accuracy"], low, high, m["balanced_accuracy"])


def read_comparison(path: Path) -> dict[str, Any]:
    """An evaluation's ``comparison.json``; an error names it when an arm diverged (its differences are null)."""
    comparison = read_json(path)
    if comparison.get("accuracy") is None:
        raise DataError(f"{path}: no comparison, an arm diverged (see its `diverged` flags); lower that arm's lr "
                        "in the grid or rerun with another seed")  # fmt: skip
    return comparison


def schedule_of(
    scores: Sequence[Scored], arm: str, epochs: int, confidence: float, differences: Sequence[float] = ()
) -> Schedule:
    """``arm`` at ``epochs`` over the repeats; ``differences``: pretrained minus it, one per repeat."""
    runs = [s for s in scores if s.phase == "final" and s.trial.arm == arm and s.trial.epochs == epochs]
    return Schedule(
        arm,
        epochs,
        mean_ci([s.accuracy for s in runs], confidence, (0, 1)),
        mean_ci([s.balanced_accuracy for s in runs], confidence, (0, 1)),
        sum(s.trial.seconds for s in runs) / len(runs),
        round(sum(s.trial.steps for s in runs) / len(runs)),
        mean_ci(differences, confidence, (-1, 1)) if differences else None,
    )


def catch_up(scratch: Sequence[Schedule]) -> Schedule | None:
    """The shortest scratch schedule no longer significantly behind the pretrained arm: the CI of the paired
    difference (pretrained minus it, over repeats) reaches zero. ``None``: none is, or one repeat gives no CI."""
    reached = (s for s in sorted(scratch, key=lambda s: s.epochs) if s.difference and s.difference.low is not None)
    return next((s for s in reached if s.difference.low <= 0), None)


def collect(tune: TuneParams, root: Path, untuned_lr: float) -> Tuned:
    """Read every cell of ``tune``'s grid under ``root`` (the pipeline's folder) and summarise them."""
    root = Path(root)
    trials = search(root / "models" / "search", tune.lrs, tune.epochs)
    chosen = selection(trials)
    conf = tune.report.confidence
    search_scores = [
        _scored(t, "search", tune.search_repeat, root / "eval" / "search" / str(t.lr) / f"{arm}.json")
        for arm in ARMS
        for t in trials[arm]
    ]
    final_scores, comparisons = [], {}
    for r in tune.repeats:
        for arm, epochs in (("pretrained", tune.epochs), *(("scratch", e) for e in tune.scratch_epochs)):
            model = final_model(root / "models" / "final", arm, r, epochs)
            trial = read_trial(model, arm, chosen[arm].lr, epochs)
            ran = read_json(model / "meta.json")["params"]["lr"]
            if ran != chosen[arm].lr:
                raise DataError(f"{model}/meta.json: trained with lr {ran}, but the search now chooses "
                                f"{chosen[arm].lr} for {arm}; rerun `dvc repro tune/dvc.yaml`")  # fmt: skip
            cell = root / "eval" / "final" / f"{epochs}-{r}"  # scratch with `epochs` against pretrained
            final_scores.append(_scored(trial, "final", r, cell / f"{arm}.json"))
            if arm == "scratch":
                comparisons[(epochs, r)] = read_comparison(cell / "comparison.json")
    pretrained = schedule_of(final_scores, "pretrained", tune.epochs, conf)
    scratch = [schedule_of(final_scores, "scratch", e, conf, [comparisons[(e, r)]["accuracy"] for r in tune.repeats])
               for e in tune.scratch_epochs]  # fmt: skip
    same_budget = [comparisons[(tune.epochs, r)] for r in tune.repeats]
    untuned = None
    if untuned_lr in tune.lrs:
        as_written = tune.lrs[tune.lrs.index(untuned_lr)]  # the cell's folder is named as the grid writes it
        untuned = read_comparison(root / "eval" / "search" / str(as_written) / "comparison.json")
    cells = {str(root / "eval" / "final" / f"{tune.epochs}-{r}"): comparisons[(tune.epochs, r)] for r in tune.repeats}
    baseline = mean_baseline(cells, rerun="dvc repro tune/dvc.yaml")
    return Tuned(
        trials=trials,
        chosen=chosen,
        search_scores=search_scores,
        final_scores=final_scores,
        schedules=[pretrained, *scratch],
        difference=next(s.difference for s in scratch if s.epochs == tune.epochs),
        significant_repeats=sum(c["significance"]["mcnemar_p"] < tune.report.alpha for c in same_budget),
        repeats=len(same_budget),
        catch_up=catch_up(scratch),
        untuned=untuned,
        untuned_lr=untuned_lr,
        majority_accuracy=baseline.accuracy,
        majority_balanced_accuracy=baseline.balanced_accuracy,
        majority_class=baseline.majority_class,
    )


# --- the verdict --------------------------------------------------------------------------------


def _schedule(tuned: Tuned, arm: str, epochs: int) -> Schedule:
    return next(s for s in tuned.schedules if s.arm == arm and s.epochs == epochs)


def headline(tuned: Tuned, tune: TuneParams) -> tuple[str, str]:
    """The decision and its first paragraph: tuned against tuned, then the catch-up."""
    conf = tune.report.confidence
    diff = tuned.difference
    decision = decide(diff.low, diff.high)
    lrs = ", ".join(f"{arm} lr {tuned.chosen[arm].lr:g}" for arm in ARMS)
    evidence = (
        f"{pp(diff.mean)} test accuracy, pretrained minus scratch ({ci_pp(diff.low, diff.high, conf)} over "
        f"{tuned.repeats} repeat{'s' if tuned.repeats != 1 else ''}); McNemar p < {tune.report.alpha:g} in "
        f"{tuned.significant_repeats} of {tuned.repeats}"
    )
    if decision == INCONCLUSIVE:
        why = "one repeat gives no confidence interval" if diff.low is None else "the CI includes zero"
        lead = f"**Inconclusive** tuned against tuned ({lrs}, {epochs_text(tune.epochs)} each): {why}; {evidence}."
    else:
        lead = f"**{ARM_ACTION[decision]}**, tuned against tuned ({lrs}, {epochs_text(tune.epochs)} each): {evidence}."
    return decision, f"{lead} {catch_up_text(tuned, tune, decision)}"


def catch_up_text(tuned: Tuned, tune: TuneParams, decision: str) -> str:
    """Whether, and at what compute, scratch stops being significantly behind the pretrained arm: "cannot
    tell" then, never "catches up" (equivalence needs a margin; :func:`tvs.ladder.catch_up` has it)."""
    conf = tune.report.confidence
    pretrained = _schedule(tuned, "pretrained", tune.epochs)
    longest = max(tune.scratch_epochs)
    same_lr = f"(every schedule at scratch's lr chosen for {epochs_text(tune.epochs)})"
    if decision == "scratch":
        return "Scratch is ahead at the same budget, so there is nothing to catch up."
    if tuned.difference.low is None:
        return "Catch-up: not measurable, one repeat gives no CI."
    hit = tuned.catch_up
    if hit is None:
        best = max((s for s in tuned.schedules if s.arm == "scratch"), key=lambda s: s.accuracy.mean)
        assert best.difference is not None
        return (
            f"Scratch does **not catch up within {longest / tune.epochs:g}x the epochs** {same_lr}: its best, "
            f"{epochs_text(best.epochs)} ({seconds_text(best.seconds)}), scores {pct(best.accuracy.mean)}, still "
            f"{pp(best.difference.mean)} behind ({ci_pp(best.difference.low, best.difference.high, conf)})."
        )
    assert hit.difference is not None
    gap = f"{pp(hit.difference.mean)}, {ci_pp(hit.difference.low, hit.difference.high, conf)}"
    equal = "not significantly behind is not equal: the answer page says whether it catches up (inside its margin)"
    if hit.epochs == tune.epochs:
        return f"At the same budget: **cannot tell** ({gap}); {equal}."
    return (
        f"Scratch at {hit.epochs / tune.epochs:g}x the epochs: **cannot tell** {same_lr}: with "
        f"{epochs_text(hit.epochs)} ({seconds_text(hit.seconds)}, {hit.seconds / pretrained.seconds:.1f}x the "
        f"pretrained arm's training seconds) it scores {pct(hit.accuracy.mean)} and is no longer significantly "
        f"behind ({gap}); {equal}."
    )


def untuned_text(tuned: Tuned, tune: TuneParams, decision: str) -> str:
    """Whether the verdict of the untuned recipe (one lr for both arms) survives tuning."""
    if tuned.untuned is None:
        return (f"The untuned recipe (lr {tuned.untuned_lr:g} for both arms, `params.yaml`) is not in the grid "
                f"{tune.lrs}, so whether its verdict survives tuning is not measured.")  # fmt: skip
    sig = tuned.untuned["significance"]
    before = decide(sig["accuracy_diff_ci_low"], sig["accuracy_diff_ci_high"], sig["mcnemar_p"], tune.report.alpha)
    survives = "**survives** tuning" if before == decision else f"**does not survive** tuning (tuned: {decision})"
    return (
        f"The untuned recipe (lr {tuned.untuned_lr:g} for both arms, as in `params.yaml`) at this pipeline's size, "
        f"one pair of runs on the search split: {before}, {pp(sig['accuracy_diff'])} "
        f"({ci_pp(sig['accuracy_diff_ci_low'], sig['accuracy_diff_ci_high'], sig['confidence'])} over its test "
        f"images, McNemar {p_text(sig['mcnemar_p'])}). Its verdict {survives}; the evidence differs in kind (one "
        "pair against the repeats), the direction is what is compared."
    )


def tuned_verdict(tuned: Tuned, tune: TuneParams, plot_link: str) -> str:
    """``reports/verdict.md`` of the tuning pipeline."""
    conf = tune.report.confidence
    decision, lead = headline(tuned, tune)
    budget = [("arm", "trials", "learning rates", "training seconds", "chosen lr (validation accuracy)", "epochs")]
    for arm in ARMS:
        chosen = tuned.chosen[arm]
        epochs = str(tune.epochs) if arm == "pretrained" else ", ".join(map(str, tune.scratch_epochs))
        budget.append((arm, str(len(tuned.trials[arm])), ", ".join(f"{lr:g}" for lr in tune.lrs),
                       seconds_text(sum(t.seconds for t in tuned.trials[arm])),
                       f"{chosen.lr:g} ({pct(chosen.val_accuracy)})", epochs))  # fmt: skip
    scores = {(s.trial.arm, s.trial.lr): s for s in tuned.search_scores}
    grid = [("lr", *(f"{arm} {what}" for arm in ARMS for what in ("validation", "test (one run)")))]
    for lr in tune.lrs:
        row = [f"{lr:g}"]
        for arm in ARMS:
            s = scores[(arm, lr)]
            mark = " ✓" if tuned.chosen[arm].lr == lr else ""
            row += [f"{pct(s.trial.val_accuracy)}{mark}", f"{pct(s.accuracy)} ({half_width(s.low, s.high)})"]
        grid.append(tuple(row))
    final = [("arm, schedule", "test accuracy", "balanced accuracy", "pretrained minus it", "training seconds",
              "optimizer steps")]  # fmt: skip
    for s in tuned.schedules:
        x = f" ({s.epochs / tune.epochs:g}x)" if s.arm == "scratch" else ""
        d = s.difference
        gap = "" if d is None else f"{pp(d.mean)} ({ci_pp(d.low, d.high, conf)})"
        final.append((f"{s.arm}, {epochs_text(s.epochs)}{x}", estimate_text(s.accuracy, conf),
                      estimate_text(s.balanced_accuracy, conf), gap, seconds_text(s.seconds),
                      f"{s.steps:,}"))  # fmt: skip
    baseline = ("majority class (test)", pct(tuned.majority_accuracy), pct(tuned.majority_balanced_accuracy))
    final.append((*baseline, "", "", ""))
    return "\n".join([
        "# Verdict of the tuning pipeline",
        "",
        lead,
        "",
        untuned_text(tuned, tune, decision),
        "",
        f"Baseline: {baseline_text(tuned.majority_class, tuned.majority_accuracy, tuned.majority_balanced_accuracy)} "
        "(mean over the repeats' test splits); every accuracy here is read against that.",
        "",
        "## Tuning budget: the same trials per arm",
        "",
        markdown_table(budget),
        "",
        f"## The search (split and seed {tune.search_repeat}, {epochs_text(tune.epochs)}; chosen on validation, ✓)",
        "",
        markdown_table(grid),
        "",
        f"## Final scoring: each arm at its chosen lr, {tuned.repeats} repeats",
        "",
        markdown_table(final),
        "",
        f"![Test accuracy against training seconds, every run, with each arm's best-so-far frontier]({plot_link})",
        "",
        TUNE_RULE.format(conf=conf),
        "",
        SOURCES,
        "",
    ])  # fmt: skip


def tune_summary(tuned: Tuned, tune: TuneParams) -> dict[str, Any]:
    """``metrics/summary.json`` of the tuning pipeline."""
    decision, _ = headline(tuned, tune)
    out: dict[str, Any] = {"recommendation": decision, "repeats": tuned.repeats}
    if tuned.untuned is not None:
        sig = tuned.untuned["significance"]
        before = decide(sig["accuracy_diff_ci_low"], sig["accuracy_diff_ci_high"], sig["mcnemar_p"], tune.report.alpha)
        out |= {"untuned_recommendation": before, "untuned_survives": before == decision}
    d = tuned.difference
    out |= {"accuracy_diff": d.mean, "accuracy_diff_ci_low": d.low, "accuracy_diff_ci_high": d.high}
    out["significant_repeats"] = tuned.significant_repeats
    for arm in ARMS:
        out[f"{arm}_lr"] = tuned.chosen[arm].lr
        out[f"{arm}_trials"] = len(tuned.trials[arm])
        out[f"{arm}_tuning_seconds"] = sum(t.seconds for t in tuned.trials[arm])
    for s in tuned.schedules:
        key = f"{s.arm}_{s.epochs}ep"
        out[key] = {"accuracy": s.accuracy.mean, "accuracy_ci_low": s.accuracy.low,
                    "accuracy_ci_high": s.accuracy.high, "balanced_accuracy": s.balanced_accuracy.mean,
                    "seconds": s.seconds, "steps": s.steps}  # fmt: skip
        if s.difference is not None:
            out[key] |= {"accuracy_diff": s.difference.mean, "accuracy_diff_ci_low": s.difference.low,
                         "accuracy_diff_ci_high": s.difference.high}  # fmt: skip
    out["catch_up_epochs"] = None if tuned.catch_up is None else tuned.catch_up.epochs
    out["majority_accuracy"] = tuned.majority_accuracy
    out["majority_balanced_accuracy"] = tuned.majority_balanced_accuracy
    return out


def compute_table(tuned: Tuned) -> pd.DataFrame:
    """Every run: its arm, lr, epochs, seconds, steps, validation and test accuracy, and whether it was chosen."""
    rows = []
    for s in (*tuned.search_scores, *tuned.final_scores):
        t = s.trial
        rows.append({"phase": s.phase, "arm": t.arm, "lr": t.lr, "epochs": t.epochs, "repeat": s.repeat,
                     "seconds": round(t.seconds, 2), "steps": t.steps, "val_accuracy": t.val_accuracy,
                     "test_accuracy": s.accuracy, "test_ci_low": s.low, "test_ci_high": s.high,
                     "chosen": s.phase == "final" or tuned.chosen[t.arm].lr == t.lr,
                     "majority": tuned.majority_accuracy})  # fmt: skip
    return pd.DataFrame(rows)


def frontier(runs: pd.DataFrame) -> pd.DataFrame:
    """One arm's final schedules (mean over repeats of seconds and test accuracy), by seconds, with the best mean
    test accuracy reached at or below each. The search runs are left out: picking among them by test accuracy
    would choose on the test split."""
    final = runs[runs["phase"] == "final"].groupby("epochs")[["seconds", "test_accuracy"]].mean()
    ordered = final.sort_values("seconds").reset_index()
    return ordered.assign(best=ordered["test_accuracy"].cummax())[["epochs", "seconds", "test_accuracy", "best"]]


def plot_compute(table: pd.DataFrame, baseline: float, path: str | Path) -> None:
    """Test accuracy against training seconds for every run of both arms, with each arm's best-so-far frontier."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for arm in ARMS:
        runs = table[table["arm"] == arm]
        for phase, marker in (("search", "o"), ("final", "s")):
            part = runs[runs["phase"] == phase]
            ax.scatter(part["seconds"], part["test_accuracy"], marker=marker, color=COLOURS[arm], alpha=0.7,
                       facecolors="none" if phase == "search" else COLOURS[arm],
                       label=f"{LABELS[arm]}, {phase}")  # fmt: skip
        line = frontier(runs)
        ax.plot(line["seconds"], line["test_accuracy"], "D", color=COLOURS[arm], markersize=7,
                markeredgecolor="black", label=f"{LABELS[arm]}, mean over repeats")  # fmt: skip
        ax.step(line["seconds"], line["best"], where="post", color=COLOURS[arm], linewidth=1)
    draw_baseline(ax, baseline)
    ax.set_xscale("log")
    ax.set_xlabel("training seconds (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Every run; diamonds: each schedule's mean over repeats; lines: best so far", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_tune_report(
    *, tune: TuneParams, root: Path, untuned_lr: float, summary_path: Path, verdict_path: Path,
    plot_path: Path, table_path: Path,
) -> dict[str, Any]:  # fmt: skip
    """Summarise the pipeline's cells under ``root`` and write the summary, verdict, plot and table."""
    tuned = collect(tune, root, untuned_lr)
    table = compute_table(tuned)
    plot_compute(table, tuned.majority_accuracy, plot_path)
    write_csv(table, table_path)
    summary = tune_summary(tuned, tune)
    write_json(summary_path, summary)
    link = Path(os.path.relpath(plot_path, Path(verdict_path).parent)).as_posix()
    write_text(verdict_path, tuned_verdict(tuned, tune, link))
    return summary

"""``reports/verdict.md`` of the main pipeline: one pair of runs, its recommendation, and its plot.

Every number comes from the metrics ``evaluate`` wrote and the checkpoints' sidecars (the curves);
nothing here trains or scores anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tvs.config import EvaluateConfig
from tvs.evaluate.stats import target_accuracy
from tvs.io import read_json, write_text
from tvs.verdict.curves import write_plot_sources
from tvs.verdict.plots import plot_val_curves
from tvs.verdict.rules import (
    ARM_ACTION,
    INCONCLUSIVE,
    accuracy_text,
    baseline_text,
    ci_pp,
    class_name,
    decide,
    epochs_text,
    fine_pct,
    half_width,
    markdown_table,
    p_text,
    pct,
    pp,
    seconds_text,
    speed_clause,
)

PAIR_RULE = (
    "Rule: recommend the arm with the higher test accuracy when the {conf:.0%} paired-bootstrap CI of the "
    "accuracy difference excludes zero **and** McNemar's exact test on the same test images gives "
    "p < {alpha:g}; otherwise the verdict is *inconclusive*. Speed: wall seconds of training (validation "
    "included) until the validation accuracy first reaches {target:.0%} of the better arm's best."
)


def pair_recommendation(comparison: Mapping[str, Any], settings: EvaluateConfig) -> tuple[str, str]:
    """The decision and the one-line recommendation for one pair of runs on the same test images."""
    sig, tta = comparison["significance"], comparison["time_to_accuracy"]
    decision = decide(sig["accuracy_diff_ci_low"], sig["accuracy_diff_ci_high"], sig["mcnemar_p"], settings.alpha)
    arms = ("pretrained", "scratch")
    seconds = {arm: tta[f"{arm}_seconds"] for arm in arms}
    epochs = {arm: tta[f"{arm}_epochs_trained"] for arm in arms}
    chance = tta.get("chance_val_accuracy")  # absent from comparison files of earlier versions
    ci = ci_pp(sig["accuracy_diff_ci_low"], sig["accuracy_diff_ci_high"], sig["confidence"])
    mcnemar = f"McNemar {p_text(sig['mcnemar_p'])}"
    if decision == INCONCLUSIVE:
        speed = speed_clause(seconds, epochs, tta["target_val_accuracy"], chance=chance)
        line = (
            f"**Inconclusive**: the test accuracy difference, {pp(sig['accuracy_diff'])} for fine-tuning ({ci}, "
            f"{mcnemar}), could be noise on these {sig['test_images']} test images; {speed}. "
            "Run the study (`study/`) with several seeds before choosing."
        )
        return decision, line
    diff = sig["accuracy_diff"] if decision == "pretrained" else -sig["accuracy_diff"]
    low, high = sig["accuracy_diff_ci_low"], sig["accuracy_diff_ci_high"]
    if decision == "scratch":
        ci = ci_pp(-high, -low, sig["confidence"])
    speed = speed_clause(seconds, epochs, tta["target_val_accuracy"], decision, chance)
    return decision, f"**{ARM_ACTION[decision]}**: {pp(diff)} test accuracy ({ci}, {mcnemar}); {speed}."


def arm_accuracy(metrics: Mapping[str, Any], confidence: float) -> str:
    """One arm's test accuracy with its Wilson CI over the test images."""
    return accuracy_text(metrics["accuracy"], metrics["accuracy_ci_low"], metrics["accuracy_ci_high"], confidence)


def baseline_paragraph(metrics: Mapping[str, Mapping[str, Any]], comparison: Mapping[str, Any]) -> str:
    """What an accuracy is read against: the majority-class baseline, and how precise one run's accuracy is."""
    floor = comparison["majority_accuracy"]
    test_images = next(iter(metrics.values()))["test_images"]
    widths = " and ".join(
        f"{half_width(m['accuracy_ci_low'], m['accuracy_ci_high'])} ({arm})" for arm, m in metrics.items()
    )
    floor_text = baseline_text(
        comparison["majority_class"],
        floor,
        comparison["majority_balanced_accuracy"],
        bool(comparison.get("majority_tied")),
    )
    text = (
        f"Baseline: {floor_text}; "
        f"every accuracy here is read against that. One run's accuracy on these {test_images} test images is "
        f"known to {widths}: the Wilson intervals in the table."
    )
    near = [arm for arm, m in metrics.items() if m["accuracy_ci_low"] <= floor]
    if near:
        which = " and ".join(f"the {arm} arm" for arm in near)
        its = "its CI reaches" if len(near) == 1 else "their CIs reach"
        text += f" **{which[0].upper()}{which[1:]} cannot be told from the baseline**: {its} down to it."
    return text


def baseline_row(metrics: Mapping[str, Mapping[str, Any]], comparison: Mapping[str, Any]) -> tuple[str, ...]:
    """The table row of the majority-class baseline, with each arm's margin over it."""
    floor = comparison["majority_accuracy"]
    margins = ", ".join(f"{arm} {pp(m['accuracy'] - floor)}" for arm, m in metrics.items())
    same = ["the same"] * (len(metrics) - 1)
    always = (
        "1/k: the classes are tied"
        if comparison.get("majority_tied")
        else f"always {class_name(comparison['majority_class'])}"
    )
    return ("Majority-class baseline (test)", f"{pct(floor)}: {always}", *same, f"above it: {margins}")


def pair_verdict(
    metrics: Mapping[str, Mapping[str, Any]],
    comparison: Mapping[str, Any],
    settings: EvaluateConfig,
    train_images: int,
    classes: int,
    curve_png: str | None,
) -> str:
    """The main pipeline's ``verdict.md``: the measured table, the recommendation, its rule, the plot."""
    if comparison.get("significance") is None:  # an arm diverged: evaluation voided the comparison
        return diverged_verdict(metrics, comparison, settings.confidence, curve_png)
    sig, tta = comparison["significance"], comparison["time_to_accuracy"]
    pre, scr = metrics["pretrained"], metrics["scratch"]
    _, line = pair_recommendation(comparison, settings)
    target = tta["target_val_accuracy"]
    conf = sig["confidence"]

    def reached(arm: str) -> str:
        if tta[f"{arm}_seconds"] is None:
            return f"not reached in {epochs_text(tta[f'{arm}_epochs_trained'])}"
        return f"{seconds_text(tta[f'{arm}_seconds'])} (epoch {tta[f'{arm}_epoch']})"

    speed = "" if tta["pretrained_speedup"] is None else f"fine-tuning {tta['pretrained_speedup']:.1f}x as fast"
    rows = [
        ("", "pretrained", "scratch", "evidence"),
        (
            f"Best accuracy (test, {sig['test_images']} images)",
            arm_accuracy(pre, conf),
            arm_accuracy(scr, conf),
            f"{pp(sig['accuracy_diff'])} ({ci_pp(sig['accuracy_diff_ci_low'], sig['accuracy_diff_ci_high'], conf)});"
            f" McNemar exact {p_text(sig['mcnemar_p'])} ({sig['only_pretrained_correct']} images only pretrained"
            f" got right, {sig['only_scratch_correct']} only scratch)",
        ),
        baseline_row(metrics, comparison),
        ("Balanced accuracy (test)", pct(pre["balanced_accuracy"]), pct(scr["balanced_accuracy"]),
         f"{pp(pre['balanced_accuracy'] - scr['balanced_accuracy'])}; the baseline scores "
         f"{pct(comparison['majority_balanced_accuracy'])}"),
        ("Training time (whole budget)", f"{seconds_text(pre['train_seconds'])}, best epoch {pre['best_epoch']}",
         f"{seconds_text(scr['train_seconds'])}, best epoch {scr['best_epoch']}", "same epochs, same data order"),
        (f"Time to {fine_pct(target)} val accuracy ({tta['target_fraction_of_best']:.0%} of the best)",
         reached("pretrained"), reached("scratch"), speed),
        ("Data requirement", f"{train_images:,} training images ({train_images / classes:,.0f} per class)",
         "the same", "how few suffice: the study (`study/`)"),
        ("Performance on small data", "not measured by one run", "not measured by one run",
         "the study trains both arms on nested subsets"),
    ]  # fmt: skip
    parts = [
        "# Verdict: fine-tune or train from scratch?",
        line,
        baseline_paragraph(metrics, comparison),
        markdown_table(rows),
        PAIR_RULE.format(conf=conf, alpha=settings.alpha, target=tta["target_fraction_of_best"]),
        "One run per arm: the CI and the test cover the sampling of test images, not the spread between "
        "seeds; the data-efficiency study (`study/`) repeats both arms over seeds and training sizes.",
    ]
    if curve_png:
        parts.append(f"![Validation accuracy against wall seconds of training, both arms]({curve_png})")
    return "\n\n".join(parts) + "\n"


def diverged_verdict(
    metrics: Mapping[str, Mapping[str, Any]], comparison: Mapping[str, Any], confidence: float, curve_png: str | None
) -> str:
    """The verdict page when an arm diverged: what diverged, when, and what each arm still scored."""
    diverged = [arm for arm, m in metrics.items() if m.get("diverged")]
    which = " and ".join(f"the {arm} arm" for arm in diverged)
    verb = "diverge" if len(diverged) > 1 else "diverges"
    rows = [("", *metrics), ("Outcome", *(_outcome(m) for m in metrics.values()))]
    rows.append(("Test accuracy of the weights kept", *(arm_accuracy(m, confidence) for m in metrics.values())))
    rows.append(baseline_row(metrics, comparison)[:-1])  # no evidence column here: no margins
    parts = [
        "# Verdict: fine-tune or train from scratch?",
        f"**No verdict**: {which} diverged (the training loss became NaN, infinite or exploded), so the "
        "numbers are not a fair comparison and `metrics/comparison.json` holds no differences. Lower `lr` "
        f"(or the arm's `lr_mult`) until neither arm {verb}, and rerun.",
        baseline_paragraph(metrics, comparison),
        markdown_table(rows),
    ]
    if curve_png:
        parts.append(f"![Validation accuracy against wall seconds of training, both arms]({curve_png})")
    return "\n\n".join(parts) + "\n"


def _outcome(metrics: Mapping[str, Any]) -> str:
    if not metrics.get("diverged"):
        return f"finished, best epoch {metrics['best_epoch']}"
    kept = f"epoch {metrics['best_epoch']}'s weights" if metrics["best_epoch"] else "its initial weights"
    if not metrics["diverged_epoch"]:  # training finished, but evaluate got NaN or infinite outputs from it
        return f"broken: no finite prediction for {metrics.get('nonfinite_outputs')} test images; scored with {kept}"
    return f"diverged in epoch {metrics['diverged_epoch']}; scored with {kept}"


def write_pair_report(
    *,
    verdict_path: Path,
    curve_path: Path | None,
    metrics: Mapping[str, Mapping[str, Any]],
    comparison: Mapping[str, Any],
    histories: Mapping[str, Any],
    settings: EvaluateConfig,
    train_images: int,
    classes: int,
) -> None:
    """Draw the time-to-accuracy plot and write the verdict that embeds it (by a relative link)."""
    link = None
    if curve_path is not None:
        has_epochs = any(histories.values())
        target = target_accuracy(histories, settings.target_fraction) if has_epochs else None
        plot_val_curves(histories, target, curve_path, baseline=comparison["majority_accuracy"])
        link = Path(os.path.relpath(curve_path, Path(verdict_path).parent)).as_posix()
    write_text(verdict_path, pair_verdict(metrics, comparison, settings, train_images, classes, link))


def write_verdict(
    *,
    metrics_dir: Path,
    sidecars: Mapping[str, Path],
    settings: EvaluateConfig,
    verdict_path: Path,
    curve_path: Path | None,
    plots_dir: Path | None = None,
    eval_dir: Path | None = None,
) -> None:
    """The stage's worker: read what ``evaluate`` wrote and the arms' checkpoint sidecars, write the verdict.

    With ``plots_dir`` it also writes the plot sources kept in git (:mod:`~tvs.verdict.curves`), the
    confusion from ``eval_dir``'s per-image predictions.
    """
    if plots_dir is not None and eval_dir is None:
        raise ValueError("plot sources need evaluate's predictions: give eval_dir with plots_dir")
    metrics = {arm: read_json(Path(metrics_dir) / f"{arm}.json") for arm in sidecars}
    comparison = read_json(Path(metrics_dir) / "comparison.json")
    metas = {arm: read_json(path) for arm, path in sidecars.items()}
    histories = {arm: meta["history"] for arm, meta in metas.items()}
    write_pair_report(
        verdict_path=verdict_path, curve_path=curve_path, metrics=metrics, comparison=comparison,
        histories=histories, settings=settings,
        train_images=metas["pretrained"]["train_images"], classes=len(metas["pretrained"]["classes"]),
    )  # fmt: skip
    if plots_dir is not None:
        write_plot_sources(plots_dir, histories, eval_dir)

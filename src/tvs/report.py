"""``reports/verdict.md``: the measured answer, a one-line recommendation by a stated rule, and the plots.

Two verdicts share the rule and the wording: :func:`pair_verdict` for one pair of runs (the main
pipeline's ``evaluate``) and :func:`study_verdict` for the data-efficiency study (seeds x sizes).
Every number in them comes from the metrics files; nothing here trains or scores anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tvs.io import write_text
from tvs.plots import plot_val_curves
from tvs.stats import Estimate, EvidenceSettings, target_accuracy

ARM_ACTION = {"pretrained": "Fine-tune", "scratch": "Train from scratch"}
INCONCLUSIVE = "inconclusive"

PAIR_RULE = (
    "Rule: recommend the arm with the higher test accuracy when the {conf:.0%} paired-bootstrap CI of the "
    "accuracy difference excludes zero **and** McNemar's exact test on the same test images gives "
    "p < {alpha:g}; otherwise the verdict is *inconclusive*. Speed: wall seconds of training (validation "
    "included) until the validation accuracy first reaches {target:.0%} of the better arm's best."
)
STUDY_RULE = (
    "Rule: at the largest training size, recommend the arm whose mean test accuracy is higher when the "
    "{conf:.0%} CI of the per-seed paired difference (Student t over seeds) excludes zero. If it does not, "
    "and the difference at the smallest size does, recommend that arm *for small data*; otherwise the "
    "verdict is *inconclusive*. Break-even: the smallest size from which on scratch's mean test accuracy "
    "stays within (or above) pretrained's {conf:.0%} CI. Data requirement: the smallest size at which an "
    "arm's mean test accuracy reaches {target:.0%} of the best mean at any size. Speed: mean wall seconds "
    "until the validation accuracy first reaches {target:.0%} of the better arm's best, at the largest size."
)


# --- formatting -------------------------------------------------------------------------------


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def pp(x: float) -> str:
    """A difference of proportions in percentage points, signed."""
    return f"{100 * x:+.1f} pp"


def ci_pp(low: float | None, high: float | None, confidence: float) -> str:
    if low is None or high is None:
        return "no CI from one value"
    return f"{confidence:.0%} CI {100 * low:.1f} to {100 * high:.1f}"


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def estimate_text(est: Estimate, confidence: float) -> str:
    """``86.1% (95% CI 85.0 to 87.2)``: an accuracy over seeds."""
    if est.low is None:
        return pct(est.mean)
    return f"{pct(est.mean)} ({ci_pp(est.low, est.high, confidence)})"


def seconds_text(s: float | None) -> str:
    return "n/a" if s is None else f"{s:,.0f} s"


def epochs_text(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


# --- the rules --------------------------------------------------------------------------------


def decide(low: float | None, high: float | None, p_value: float | None = None, alpha: float = 0.05) -> str:
    """``pretrained``, ``scratch`` or ``inconclusive`` from a CI of pretrained - scratch (and a p-value)."""
    if low is None or high is None:
        return INCONCLUSIVE
    significant = p_value is None or p_value < alpha
    if low > 0 and significant:
        return "pretrained"
    if high < 0 and significant:
        return "scratch"
    return INCONCLUSIVE


def speed_clause(
    seconds: Mapping[str, float | None], epochs: Mapping[str, int], target: float, subject: str | None = None
) -> str:
    """How much faster ``subject`` (default: whichever was faster) reached the target val accuracy."""
    to = f"{pct(target)} validation accuracy"
    reached = [arm for arm in seconds if seconds[arm] is not None]
    if not reached:
        return f"neither arm reached {to} in {epochs_text(max(epochs.values()))}"
    arm = subject or min(reached, key=lambda a: seconds[a])
    other = next(a for a in seconds if a != arm)
    mine, theirs = seconds[arm], seconds[other]
    named = "" if subject else f"{arm} was "
    if mine is None:
        return f"but only {other} reached {to} (in {seconds_text(theirs)})"
    if theirs is None:
        if not subject:
            return f"only {arm} reached {to} (in {seconds_text(mine)}; {other} not in {epochs_text(epochs[other])})"
        return f"{other} never reached {to} in {epochs_text(epochs[other])}"
    ratio = theirs / mine
    if ratio >= 1:
        return f"{named}{ratio:.1f}x faster to {to}"
    return f"but {1 / ratio:.1f}x slower to {to}"


# --- one pair of runs (main pipeline) ---------------------------------------------------------


def pair_recommendation(comparison: Mapping[str, Any], settings: EvidenceSettings) -> tuple[str, str]:
    """The decision and the one-line recommendation for one pair of runs on the same test images."""
    sig, tta = comparison["significance"], comparison["time_to_accuracy"]
    decision = decide(sig["accuracy_diff_ci_low"], sig["accuracy_diff_ci_high"], sig["mcnemar_p"], settings.alpha)
    arms = ("pretrained", "scratch")
    seconds = {arm: tta[f"{arm}_seconds"] for arm in arms}
    epochs = {arm: tta[f"{arm}_epochs_trained"] for arm in arms}
    ci = ci_pp(sig["accuracy_diff_ci_low"], sig["accuracy_diff_ci_high"], sig["confidence"])
    mcnemar = f"McNemar {p_text(sig['mcnemar_p'])}"
    if decision == INCONCLUSIVE:
        speed = speed_clause(seconds, epochs, tta["target_val_accuracy"])
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
    speed = speed_clause(seconds, epochs, tta["target_val_accuracy"], subject=decision)
    return decision, f"**{ARM_ACTION[decision]}**: {pp(diff)} test accuracy ({ci}, {mcnemar}); {speed}."


def pair_verdict(
    metrics: Mapping[str, Mapping[str, Any]],
    comparison: Mapping[str, Any],
    settings: EvidenceSettings,
    train_images: int,
    classes: int,
    curve_png: str | None,
) -> str:
    """The main pipeline's ``verdict.md``: the measured table, the recommendation, its rule, the plot."""
    if comparison.get("significance") is None:  # an arm diverged: evaluation voided the comparison
        diverged = ", ".join(arm for arm, m in metrics.items() if m.get("diverged")) or "an"
        return (
            "# Verdict: fine-tune or train from scratch?\n\n"
            f"**No verdict**: the {diverged} arm diverged (its loss became NaN or infinite), so its numbers "
            "are not a fair comparison. Lower `lr` (or that arm's `lr_mult`) and rerun.\n"
        )
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
            pct(pre["accuracy"]),
            pct(scr["accuracy"]),
            f"{pp(sig['accuracy_diff'])} ({ci_pp(sig['accuracy_diff_ci_low'], sig['accuracy_diff_ci_high'], conf)});"
            f" McNemar exact {p_text(sig['mcnemar_p'])} ({sig['only_pretrained_correct']} images only pretrained"
            f" got right, {sig['only_scratch_correct']} only scratch)",
        ),
        ("Balanced accuracy (test)", pct(pre["balanced_accuracy"]), pct(scr["balanced_accuracy"]),
         pp(pre["balanced_accuracy"] - scr["balanced_accuracy"])),
        ("Training time (whole budget)", f"{seconds_text(pre['train_seconds'])}, best epoch {pre['best_epoch']}",
         f"{seconds_text(scr['train_seconds'])}, best epoch {scr['best_epoch']}", "same epochs, same data order"),
        (f"Time to {pct(target)} val accuracy ({tta['target_fraction_of_best']:.0%} of the best)",
         reached("pretrained"), reached("scratch"), speed),
        ("Data requirement", f"{train_images:,} training images ({train_images / classes:,.0f} per class)",
         "the same", "how few suffice: the study (`study/`)"),
        ("Performance on small data", "not measured by one run", "not measured by one run",
         "the study trains both arms on nested subsets"),
    ]  # fmt: skip
    parts = [
        "# Verdict: fine-tune or train from scratch?",
        line,
        markdown_table(rows),
        PAIR_RULE.format(conf=conf, alpha=settings.alpha, target=tta["target_fraction_of_best"]),
        "One run per arm: the CI and the test cover the sampling of test images, not the spread between "
        "seeds; the data-efficiency study (`study/`) repeats both arms over seeds and training sizes.",
    ]
    if curve_png:
        parts.append(f"![Validation accuracy against wall seconds of training, both arms]({curve_png})")
    return "\n\n".join(parts) + "\n"


def markdown_table(rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def write_pair_report(
    *,
    verdict_path: Path,
    curve_path: Path | None,
    metrics: Mapping[str, Mapping[str, Any]],
    comparison: Mapping[str, Any],
    histories: Mapping[str, Any],
    settings: EvidenceSettings,
    train_images: int,
    classes: int,
) -> None:
    """Draw the time-to-accuracy plot and write the verdict that embeds it (by a relative link)."""
    link = None
    if curve_path is not None:
        plot_val_curves(histories, target_accuracy(histories, settings.target_fraction), curve_path)
        link = Path(os.path.relpath(curve_path, Path(verdict_path).parent)).as_posix()
    write_text(verdict_path, pair_verdict(metrics, comparison, settings, train_images, classes, link))

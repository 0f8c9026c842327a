"""What every verdict shares: the decision rule, the wording of numbers, and the majority-class
baseline averaged over several test splits.

The main pipeline's verdict (:mod:`tvs.verdict.pair`), the study's (:mod:`tvs.study.report`) and
the tuning pipeline's (:mod:`tvs.tune.report`) decide and write with these, so they read alike.
Nothing here touches files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tvs.errors import DataError
from tvs.evaluate.stats import Estimate
from tvs.markup import md_text, truncate

NAME_LIMIT = 60  # characters of a class name in a report
ARM_ACTION = {"pretrained": "Fine-tune", "scratch": "Train from scratch"}
INCONCLUSIVE = "inconclusive"

# --- formatting -------------------------------------------------------------------------------


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def fine_pct(x: float) -> str:
    """``pct``, but two significant digits below 0.1% (1 in 2,000 classes is 0.05%, not 0.0%)."""
    return f"{100 * x:.2g}%" if 0 < x < 0.001 else pct(x)


def pp(x: float) -> str:
    """A difference of proportions in percentage points, signed."""
    return f"{100 * x:+.1f} pp"


def ci_pp(low: float | None, high: float | None, confidence: float) -> str:
    if low is None or high is None:
        return "no CI from one value"
    return f"{confidence:.0%} CI {100 * low:.1f} to {100 * high:.1f}"


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def accuracy_text(accuracy: float, low: float, high: float, confidence: float) -> str:
    """``86.1% (95% CI 82.9 to 88.8)``: one run's accuracy with its CI over the test images."""
    return f"{pct(accuracy)} ({ci_pp(low, high, confidence)})"


def half_width(low: float, high: float) -> str:
    """``+-3.0 pp``: half the width of a CI, the precision of an accuracy in one number."""
    return f"±{50 * (high - low):.1f} pp"


def class_name(name: str) -> str:
    """A class name from the user's folders, as Markdown text in quotes: never a code span (a backtick in
    the name would close it), never markup, a mention or a line break."""
    return f"“{md_text(truncate(str(name), NAME_LIMIT))}”"


def baseline_text(majority_class: str, accuracy: float, balanced_accuracy: float, tied: bool = False) -> str:
    """What predicting the majority class for every test image scores: the floor of every accuracy.

    ``tied``: the test classes have equal counts, so there is no majority class; the floor is 1/k."""
    if tied:
        return (
            f"the test split's classes are tied, so there is no majority class: always answering any one class "
            f"scores {pct(accuracy)} (1/k) accuracy and {pct(balanced_accuracy)} balanced accuracy"
        )
    return (
        f"predicting the majority class ({class_name(majority_class)}) for every test image scores "
        f"{pct(accuracy)} accuracy and {pct(balanced_accuracy)} balanced accuracy"
    )


@dataclass(frozen=True)
class Baseline:
    """Predicting the test split's majority class for every image: the floor of every accuracy."""

    majority_class: str
    accuracy: float
    balanced_accuracy: float


def mean_baseline(comparisons: Mapping[str, Mapping[str, Any]], rerun: str) -> Baseline:
    """The majority-class baseline over several test splits, averaged: each split's ``comparison.json``
    (keyed by where it was read) holds its own. Stratified splits of one dataset share one majority
    class; if they do not, the error names the files and the command (``rerun``) that redraws them."""
    classes = {c["majority_class"]: where for where, c in comparisons.items()}
    if len(classes) != 1:
        named = ", ".join(f"{where} ({name})" for name, where in classes.items())
        raise DataError(f"{named}: the test splits' majority classes differ; rerun `{rerun}`")
    return Baseline(
        majority_class=next(iter(classes)),
        accuracy=sum(c["majority_accuracy"] for c in comparisons.values()) / len(comparisons),
        balanced_accuracy=sum(c["majority_balanced_accuracy"] for c in comparisons.values()) / len(comparisons),
    )


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
    seconds: Mapping[str, float | None],
    epochs: Mapping[str, int],
    target: float,
    subject: str | None = None,
    chance: float | None = None,
) -> str:
    """How much faster ``subject`` (default: whichever was faster) reached the target val accuracy.

    A target at or below ``chance`` (a uniform guess's accuracy) times nothing: guessing meets it.
    """
    to = f"{fine_pct(target)} validation accuracy"
    if chance and target <= chance:
        guess = f"{fine_pct(chance)}, a uniform guess among {round(1 / chance):,} classes"
        return f"no speed to compare: the target, {to}, is not above chance ({guess})"
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


def markdown_table(rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines)

"""The one rule that answers "fine-tune or train from scratch?" from all the evidence there is.

Evidence comes in three rungs, strongest first:

(a) *tuned against tuned over repeated splits*: each arm at its own best learning rate (``tune/``),
    scored on several splits, each with its own test images;
(b) *the same recipe over repeated splits*: both arms at ``params.yaml``'s settings on several
    splits (``study/``, its full-size cells);
(c) *the single pair*: one split, one run per arm (the main pipeline).

The strongest rung that is measured, current (computed from today's data and params, see
:mod:`tvs.evidence`) and powered (at least ``MIN_REPEATS`` repeats: fewer cannot estimate a spread)
governs the headline. The others are shown, never mixed into it. Each rung says one of:

* an arm wins: its CI of pretrained - scratch excludes zero (the single pair also needs McNemar's
  p < alpha on the same test images);
* *equivalent within the margin*: the whole CI lies inside +-``margin`` points (an equivalence test:
  two one-sided tests at the same confidence; ``evaluate.equivalence_margin``);
* *cannot tell*: neither. A CI that merely includes zero is not evidence that the arms are alike.

The single pair's CI is over the test images only (a paired bootstrap): it does not cover another
split or another seed, which is what repeats add. Nothing here reads files; :mod:`tvs.page` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from tvs.evaluate.stats import Estimate, mean_ci

MIN_REPEATS = 3  # below this a sample SD, and so a t interval, is not an estimate worth printing
ARMS = ("pretrained", "scratch")
PRETRAINED, SCRATCH, EQUIVALENT, CANNOT_TELL = "pretrained", "scratch", "equivalent", "cannot tell"


@dataclass(frozen=True)
class Baseline:
    """What always answering one class scores on the test split(s): the floor every accuracy is read against.

    ``tied``: the test classes have equal counts, so there is no majority class and the floor is 1/k.
    """

    accuracy: float
    classes: int
    majority_class: str | None = None
    tied: bool = False

    def describe(self) -> str:
        if self.tied or self.majority_class is None:
            return f"{pct(self.accuracy)} (1/{self.classes}: the test split's {self.classes} classes are tied)"
        return f"{pct(self.accuracy)} (always answering the majority class, “{self.majority_class}”)"


def baseline_from_counts(counts: Mapping[str, int]) -> Baseline:
    """The majority-class baseline of a test split from its class counts (ties: 1/k, no class named)."""
    total, top = sum(counts.values()), max(counts.values())
    leaders = [name for name, n in counts.items() if n == top]
    if len(leaders) > 1:
        return Baseline(1 / len(counts) if len(set(counts.values())) == 1 else top / total, len(counts), None, True)
    return Baseline(top / total, len(counts), leaders[0], False)


@dataclass(frozen=True)
class Pair:
    """Rung (c): one run per arm on one split's test images."""

    pretrained: float
    scratch: float
    low: float  # paired-bootstrap CI of pretrained - scratch over the test images
    high: float
    p_value: float  # McNemar's exact test on the same images
    test_images: int
    confidence: float
    diverged: tuple[str, ...] = ()


@dataclass(frozen=True)
class Repeats:
    """Rungs (a) and (b): each arm's test accuracy on repeat r's split, paired by repeat."""

    pretrained: tuple[float, ...]
    scratch: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.pretrained)

    def difference(self, confidence: float) -> Estimate:
        diffs = [p - s for p, s in zip(self.pretrained, self.scratch, strict=True)]
        return mean_ci(diffs, confidence, bounds=(-1.0, 1.0))


@dataclass(frozen=True)
class Rung:
    """One rung of the ladder as the page shows it."""

    key: str  # "a", "b", "c"
    title: str
    status: str  # "measured", "not run", "stale", "too few repeats", "diverged"
    result: str  # what it found, in words ("" when not run)
    decision: str | None  # PRETRAINED, SCRATCH, EQUIVALENT, CANNOT_TELL; None when it cannot decide
    next_step: str  # the command that adds it (or more of it) and what that costs
    reasons: tuple[str, ...] = ()  # why it is stale
    accuracy: tuple[float, float] | None = None  # (pretrained, scratch): the means it compares

    @property
    def governs_ok(self) -> bool:
        return self.status == "measured" and self.decision is not None


@dataclass(frozen=True)
class Answer:
    """The headline and the ladder it comes from."""

    decision: str | None
    headline: str  # one paragraph; Markdown-free text (the page adds the bold)
    governing: str | None  # the rung's key
    rungs: tuple[Rung, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)  # warnings beneath the headline


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def pp(x: float) -> str:
    return f"{100 * x:+.1f} pp"


def ci_text(low: float, high: float, confidence: float) -> str:
    return f"{confidence:.0%} CI {100 * low:+.1f} to {100 * high:+.1f} pp"


def judge(low: float, high: float, margin: float, significant: bool = True) -> str:
    """PRETRAINED or SCRATCH when the CI excludes zero (and the test agrees), EQUIVALENT when the CI lies
    inside +-margin, else CANNOT_TELL. ``margin`` is a proportion (0.02 = 2 points)."""
    if significant and low > 0:
        return PRETRAINED
    if significant and high < 0:
        return SCRATCH
    if -margin <= low and high <= margin:
        return EQUIVALENT
    return CANNOT_TELL


def decision_words(decision: str, margin: float) -> str:
    return {
        PRETRAINED: "Fine-tune",
        SCRATCH: "Train from scratch",
        EQUIVALENT: f"Either: the arms are equivalent within ±{100 * margin:.1f} pp",
        CANNOT_TELL: "Cannot tell",
    }[decision]


def pair_rung(pair: Pair | None, alpha: float, margin: float, next_step: str, reasons: Sequence[str] = ()) -> Rung:
    """Rung (c) from the single pair (``None``: the main pipeline has not run)."""
    title = "(c) one split, one run per arm"
    if pair is None:
        return Rung("c", title, "not run", "", None, next_step)
    if pair.diverged:
        arms = " and ".join(pair.diverged)
        return Rung("c", title, "diverged", f"{arms} diverged: no comparison", None, next_step, tuple(reasons))
    significant = pair.p_value < alpha
    decision = judge(pair.low, pair.high, margin, significant)
    p = "p < 0.001" if pair.p_value < 0.001 else f"p = {pair.p_value:.3f}"
    result = (
        f"pretrained {pct(pair.pretrained)}, scratch {pct(pair.scratch)}: "
        f"{pp(pair.pretrained - pair.scratch)} ({ci_text(pair.low, pair.high, pair.confidence)} over "
        f"{pair.test_images} test images; McNemar {p})"
    )
    status = "stale" if reasons else "measured"
    return Rung("c", title, status, result, decision, next_step, tuple(reasons), (pair.pretrained, pair.scratch))


def repeats_rung(
    key: str,
    title: str,
    repeats: Repeats | None,
    confidence: float,
    margin: float,
    next_step: str,
    reasons: Sequence[str] = (),
) -> Rung:
    """Rung (a) or (b) from paired accuracies over repeats; fewer than ``MIN_REPEATS`` decide nothing."""
    if repeats is None or repeats.n == 0:
        return Rung(key, title, "not run", "", None, next_step, tuple(reasons))
    mean_p, mean_s = sum(repeats.pretrained) / repeats.n, sum(repeats.scratch) / repeats.n
    means = f"pretrained {pct(mean_p)}, scratch {pct(mean_s)} (means over {repeats.n} repeats)"
    if repeats.n < MIN_REPEATS:
        result = (
            f"{means}: {pp(mean_p - mean_s)}; {repeats.n} repeat{'s' if repeats.n != 1 else ''}: "
            f"too few to estimate the spread"
        )
        return Rung(key, title, "stale" if reasons else "too few repeats", result, None, next_step, tuple(reasons))
    est = repeats.difference(confidence)
    assert est.low is not None and est.high is not None  # n >= 3
    decision = judge(est.low, est.high, margin)
    result = f"{means}: {pp(est.mean)} ({ci_text(est.low, est.high, confidence)}, Student t over the repeats)"
    status = "stale" if reasons else "measured"
    return Rung(key, title, status, result, decision, next_step, tuple(reasons), (mean_p, mean_s))


def decide_ladder(rungs: Sequence[Rung], margin: float, baseline: Baseline | None) -> Answer:
    """The headline from the strongest rung that is measured, current and powered; the rest beneath it."""
    governing = next((rung for rung in sorted(rungs, key=lambda r: r.key) if rung.governs_ok), None)
    notes = []
    weaker = [r for r in rungs if r.status in ("too few repeats",)]
    for rung in weaker:
        notes.append(f"Rung {rung.key} ran with too few repeats to count; {rung.next_step}")
    if governing is None:
        headline = "No answer yet: no rung of evidence is measured and current. " + (
            next((r.next_step for r in sorted(rungs, key=lambda r: r.key, reverse=True)), "")
        )
        return Answer(None, headline, None, tuple(rungs), tuple(notes))
    assert governing.decision is not None
    floor = baseline.accuracy if baseline is not None else None
    if governing.decision == EQUIVALENT and floor is not None and governing.accuracy is not None:
        failed = [arm for arm, acc in zip(ARMS, governing.accuracy, strict=True) if acc <= floor + 1e-12]
        if failed:  # alike only in failing: no equivalence claim at the baseline
            arms = " and ".join(failed)
            notes.append(
                f"The arms' difference lies inside the margin, but {arms} {'is' if len(failed) == 1 else 'are'} "
                f"not above the baseline ({pct(floor)}): alike only in learning nothing, so no equivalence is claimed."
            )
            governing = replace(governing, decision=CANNOT_TELL)
            rungs = [governing if r.key == governing.key else r for r in rungs]
    words = decision_words(governing.decision, margin)
    strength = {
        "a": "the strongest rung: tuned against tuned over repeated splits",
        "b": "the same recipe over repeated splits",
        "c": "one split and one run per arm, the weakest rung: it does not cover another split or seed",
    }[governing.key]
    headline = f"{words}. Governed by rung {governing.key} ({strength}): {governing.result}."
    stronger = [r for r in rungs if r.key < governing.key]
    if stronger:
        headline += " Stronger evidence: " + "; ".join(f"rung {r.key} {r.status}" for r in stronger) + "."
    if baseline is not None:
        notes.insert(0, f"Baseline: {baseline.describe()}.")
    return Answer(governing.decision, headline, governing.key, tuple(rungs), tuple(notes))


def break_even(
    sizes: Mapping[float, Repeats],
    baseline: float,
    confidence: float,
    margin: float,
) -> str:
    """From how many training images per class scratch matches fine-tuning, in words, or why that cannot be said.

    A break-even is a claim of equivalence: the paired difference's CI inside +-margin, with scratch's mean
    above the baseline (at chance, "equal" only means both failed), at that size and every larger one tried.
    """
    if not sizes:
        return "Not measured: the study has not run."
    counted = {size: r for size, r in sizes.items() if r.n >= MIN_REPEATS}
    if not counted:
        n = min(r.n for r in sizes.values())
        return f"{n} repeat{'s' if n != 1 else ''} per size: too few to estimate the spread; cannot tell."
    verdicts = {}
    for size, r in sorted(counted.items()):
        est = r.difference(confidence)
        scratch_mean = sum(r.scratch) / r.n
        if scratch_mean <= baseline:
            verdicts[size] = "at the baseline"
        else:
            assert est.low is not None and est.high is not None
            verdicts[size] = judge(est.low, est.high, margin)
    equivalent_from = None
    for size in sorted(verdicts, reverse=True):
        if verdicts[size] != EQUIVALENT:
            break
        equivalent_from = size
    shown = ", ".join(f"{size:g}: {verdicts[size]}" for size in sorted(verdicts))
    if equivalent_from is not None:
        return (
            f"Break-even at {equivalent_from:g} images per class: from there on the arms are equivalent within "
            f"±{100 * margin:.1f} pp ({shown})."
        )
    return f"No break-even shown at the sizes tried ({shown}; images per class: verdict)."


def catch_up(schedules: Mapping[int, Repeats], confidence: float, margin: float, base_epochs: int) -> str:
    """Whether scratch trained longer (``schedules``: its epochs -> paired with pretrained at ``base_epochs``)
    closes the gap, in words: "catches up" only as equivalence within the margin (or scratch ahead)."""
    if not schedules:
        return "Not measured: the tuning pipeline has not run."
    parts = []
    for epochs, r in sorted(schedules.items()):
        if r.n < MIN_REPEATS:
            parts.append(f"{epochs} epochs: {r.n} repeats, too few to estimate the spread")
            continue
        est = r.difference(confidence)
        assert est.low is not None and est.high is not None
        decision = judge(est.low, est.high, margin)
        words = {
            PRETRAINED: "pretrained still ahead",
            SCRATCH: "scratch ahead",
            EQUIVALENT: f"scratch catches up (within ±{100 * margin:.1f} pp)",
            CANNOT_TELL: "cannot tell",
        }[decision]
        parts.append(f"{epochs} epochs ({epochs / base_epochs:g}x compute): {pp(est.mean)}, {words}")
    return "; ".join(parts) + "."


def training_cost(runs: int, seconds_per_run: float | None, size: float | None = None) -> str:
    """``12 training runs, about 40 min here`` from a count and the seconds one run took on this machine.

    ``size``: the runs' total work in runs of the measured size (more epochs, more pixels), where it is
    not one such run each; the time is then that many runs' worth.
    """
    if runs <= 0:
        return "its params file lists no runs"
    size = runs if size is None or size <= 0 else size
    worth = "" if math.isclose(size, runs) else f" ({size:.0f} runs' worth at params.yaml's size)"
    if seconds_per_run is None or not math.isfinite(seconds_per_run):
        return f"{runs} training runs{worth}"
    total = size * seconds_per_run
    span = f"{total / 60:.0f} min" if total >= 90 else f"{total:.0f} s"
    return f"{runs} training runs{worth}, about {span} here ({seconds_per_run:.0f} s per run measured)"

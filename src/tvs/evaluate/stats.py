"""The statistics of the comparison: seed summaries, paired tests on the same test images, and
time-to-accuracy from the per-epoch histories. scipy does the maths; nothing here touches files.

- One accuracy on the test split: the Wilson score interval of a binomial proportion
  (:func:`accuracy_ci`), how far one run's accuracy could move on another draw of test images.
- Over seeds: mean, sample SD and a Student-t confidence interval (:func:`mean_ci`).
- On one pair of runs scored on the same test images: McNemar's exact test on the per-image
  correctness (:func:`mcnemar_exact`) and a paired bootstrap CI of the accuracy difference
  (:func:`paired_bootstrap_ci`).
- Speed: the wall seconds and epochs each arm needs to reach a target validation accuracy
  (:func:`time_to_accuracy`); the default target is 95% of the better arm's best.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tvs.config import EvaluateConfig

# scipy is imported where it is used, so that a stage's `--help` stays quick.

BOOTSTRAP_SEED = 0  # of the paired bootstrap's random generator, so that a report is reproducible


@dataclass(frozen=True)
class Estimate:
    """A mean with its sample SD and confidence interval; ``None`` where one value cannot give them."""

    mean: float
    sd: float | None
    low: float | None
    high: float | None
    n: int


def mean_ci(
    values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] = (-math.inf, math.inf)
) -> Estimate:
    """Mean, sample standard deviation (ddof 1) and Student-t CI of ``values`` (e.g. over seeds).

    ``bounds`` clip the CI to where the quantity can lie (an accuracy in [0, 1]): with few seeds
    the t interval can reach past them.
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_ci: no values")
    mean = float(x.mean())
    if x.size == 1:
        return Estimate(mean, None, None, None, 1)
    if np.all(x == x[0]):  # no spread (and no rounding noise from the mean)
        return Estimate(float(x[0]), 0.0, float(x[0]), float(x[0]), int(x.size))
    sd = float(x.std(ddof=1))
    low, high = stats.t.interval(confidence, df=x.size - 1, loc=mean, scale=sd / math.sqrt(x.size))
    return Estimate(mean, sd, max(float(low), bounds[0]), min(float(high), bounds[1]), int(x.size))


def accuracy_ci(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of an accuracy of ``correct`` out of ``total`` test images.

    The test images are a sample: at 525 images an accuracy near 86% is known to about +-3 points.
    Wilson rather than the normal approximation, which leaves [0, 1] near 0% and 100%.
    """
    from scipy import stats

    if not 0 <= correct <= total or total < 1:
        raise ValueError(f"accuracy_ci: need 0 <= correct <= total and total >= 1, got {correct} of {total}")
    ci = stats.binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _paired(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired correctness must be two 1-D arrays of the same length, got {a.shape}, {b.shape}")
    return a, b


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test: only the discordant images carry information."""

    only_a: int  # images arm A classified correctly and arm B did not
    only_b: int  # the reverse
    p_value: float


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    """Two-sided exact McNemar test on per-image correctness of two classifiers on the same images.

    Under the null hypothesis (equal accuracy) each discordant image is equally likely to favour
    either arm, so ``only_a`` is Binomial(only_a + only_b, 1/2): an exact binomial test.
    """
    from scipy import stats

    a, b = _paired(correct_a, correct_b)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return McNemar(0, 0, 1.0)
    return McNemar(only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue))


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return a.mean(axis=axis) - b.mean(axis=axis)


def paired_bootstrap_ci(
    correct_a: Sequence[bool],
    correct_b: Sequence[bool],
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> Estimate:
    """Accuracy of A minus accuracy of B, with a paired bootstrap (BCa) CI over the test images.

    Images are resampled with replacement as pairs, so the CI accounts for both arms being scored
    on the same images. When every image gives the same difference there is nothing to resample
    and the CI is the point itself.
    """
    from scipy import stats

    a, b = _paired(correct_a, correct_b)
    a, b = a.astype(float), b.astype(float)
    diff = float(a.mean() - b.mean())
    if np.all(a - b == (a - b)[0]):
        return Estimate(diff, 0.0, diff, diff, int(a.size))
    result = stats.bootstrap(
        (a, b),
        _mean_difference,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=confidence,
        method="BCa",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return Estimate(diff, float(result.standard_error), float(ci.low), float(ci.high), int(a.size))


@dataclass(frozen=True)
class TimeToAccuracy:
    """When a run first reached the target validation accuracy (``None``: never, within its epochs)."""

    epoch: int | None
    seconds: float | None
    epochs_trained: int


def time_to_accuracy(history: Sequence[Mapping[str, float]], target: float) -> TimeToAccuracy:
    """The first epoch whose validation accuracy reaches ``target``, and the wall seconds until then.

    ``history`` is the checkpoint sidecar's per-epoch list (``epoch``, ``val_accuracy``,
    ``elapsed_seconds``: wall time since training started, validation included).
    """
    for row in history:
        if row["val_accuracy"] >= target - 1e-12:
            return TimeToAccuracy(int(row["epoch"]), float(row["elapsed_seconds"]), len(history))
    return TimeToAccuracy(None, None, len(history))


def target_accuracy(histories: Mapping[str, Sequence[Mapping[str, float]]], fraction: float) -> float:
    """``fraction`` of the best validation accuracy any of the runs reached."""
    values = [row["val_accuracy"] for history in histories.values() for row in history]
    best = max((v for v in values if math.isfinite(v)), default=None)
    if best is None:
        raise ValueError("no per-epoch history to take a target accuracy from")
    return fraction * best


def pair_evidence(
    correct: Mapping[str, Sequence[bool]],
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    settings: EvaluateConfig,
    chance: float = 0.0,
) -> dict[str, Any]:
    """The paired evidence for ``comparison.json``: significance and time-to-accuracy, pretrained vs scratch.

    ``chance`` is the validation accuracy of a uniform guess (1 / classes). A target at or below it
    (2,000 classes and a best of 0.03%) is met by guessing, so no arm is timed to it: both stay
    "not reached", and ``chance_val_accuracy`` lets the verdict say why.
    """
    mc = mcnemar_exact(correct["pretrained"], correct["scratch"])
    boot = paired_bootstrap_ci(
        correct["pretrained"], correct["scratch"], settings.confidence, settings.resamples, BOOTSTRAP_SEED
    )
    target = target_accuracy(histories, settings.target_fraction)
    timed = target > chance
    reached = {
        arm: time_to_accuracy(histories[arm], target) if timed else TimeToAccuracy(None, None, len(histories[arm]))
        for arm in ("pretrained", "scratch")
    }
    pre, scr = reached["pretrained"].seconds, reached["scratch"].seconds
    return {
        "significance": {
            "test_images": boot.n,
            "only_pretrained_correct": mc.only_a,
            "only_scratch_correct": mc.only_b,
            "mcnemar_p": mc.p_value,
            "accuracy_diff": boot.mean,
            "accuracy_diff_ci_low": boot.low,
            "accuracy_diff_ci_high": boot.high,
            "confidence": settings.confidence,
            "bootstrap_resamples": settings.resamples,
        },
        "time_to_accuracy": {
            "target_val_accuracy": target,
            "target_fraction_of_best": settings.target_fraction,
            "chance_val_accuracy": chance,
            **{f"{arm}_{key}": value for arm, t in reached.items() for key, value in asdict(t).items()},
            # > 1: fine-tuning got there faster; None when either arm never got there.
            "pretrained_speedup": scr / pre if pre and scr else None,
        },
    }

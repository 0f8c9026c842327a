"""The statistics against textbook values: Student's sleep data, Fagerland's, Agresti's and Newcombe's tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tvs.config import ConfigError, EvaluateConfig
from tvs.evaluate.stats import (
    accuracy_ci,
    mcnemar_exact,
    mean_ci,
    pair_evidence,
    paired_bootstrap_ci,
    target_accuracy,
    time_to_accuracy,
)

# Student (1908) / Cushny & Peebles: extra hours of sleep, drug 2 minus drug 1, for 10 patients.
# R: t.test(extra ~ group, data = sleep, paired = TRUE) -> mean 1.58, 95% CI 0.7001142 to 2.4598858.
SLEEP_DIFFERENCES = [1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4]


def pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-item correctness of two classifiers from the four cells of a paired 2x2 table."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


def test_mean_ci_matches_the_paired_t_interval_of_students_sleep_data():
    est = mean_ci(SLEEP_DIFFERENCES, confidence=0.95)
    assert est.mean == pytest.approx(1.58)
    assert est.sd == pytest.approx(1.229995, abs=1e-6)
    assert (est.low, est.high) == (pytest.approx(0.7001142, abs=1e-6), pytest.approx(2.4598858, abs=1e-6))
    assert est.n == 10


def test_mean_ci_is_clipped_to_the_bounds_of_the_quantity():
    wide = mean_ci([0.9, 0.99], confidence=0.95)  # two seeds: t with 1 df reaches past 1
    assert wide.high > 1
    clipped = mean_ci([0.9, 0.99], confidence=0.95, bounds=(0, 1))
    assert (clipped.low, clipped.high) == (wide.low, 1)


def test_mean_ci_of_one_value_has_no_sd_or_ci_and_of_equal_values_a_zero_width_ci():
    one = mean_ci([0.8])
    assert (one.mean, one.sd, one.low, one.high) == (0.8, None, None, None)
    same = mean_ci([0.8, 0.8, 0.8])
    assert (same.sd, same.low, same.high) == (0.0, 0.8, 0.8)
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])


def test_mcnemar_exact_matches_fagerland_2013_example():
    # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91: b = 1, c = 7 discordant pairs,
    # exact conditional p = 0.070 (= 2 * 9 / 256).
    a, b = pairs(both=59, only_a=1, only_b=7, neither=21)
    result = mcnemar_exact(a, b)
    assert (result.only_a, result.only_b) == (1, 7)
    assert result.p_value == pytest.approx(18 / 256, abs=1e-12)
    assert mcnemar_exact(b, a).p_value == pytest.approx(result.p_value)  # two-sided: symmetric


def test_mcnemar_exact_agrees_with_statsmodels_and_is_one_without_discordant_images():
    contingency = pytest.importorskip("statsmodels.stats.contingency_tables")
    for both, only_a, only_b, neither in [(794, 150, 86, 570), (10, 3, 12, 5), (4, 0, 5, 1)]:
        a, b = pairs(both, only_a, only_b, neither)
        expected = contingency.mcnemar([[both, only_a], [only_b, neither]], exact=True).pvalue
        assert mcnemar_exact(a, b).p_value == pytest.approx(expected, rel=1e-9)
    same = np.array([True, False, True])
    assert mcnemar_exact(same, same).p_value == 1.0


def test_paired_bootstrap_ci_matches_agrestis_presidential_approval_interval():
    # Agresti, An Introduction to Categorical Data Analysis, presidential approval of 1,600 people
    # at two surveys: 794 / 150 / 86 / 570. Difference 0.04; 95% Wald CI for paired proportions
    # 0.04 +- 1.96 * sqrt(236 - 64^2/1600) / 1600 = (0.021, 0.059).
    a, b = pairs(794, 150, 86, 570)
    est = paired_bootstrap_ci(a, b, confidence=0.95, resamples=10_000, seed=0)
    se = math.sqrt(236 - 64**2 / 1600) / 1600
    assert est.mean == pytest.approx(0.04)
    assert est.sd == pytest.approx(se, rel=0.05)  # the bootstrap standard error
    assert est.low == pytest.approx(0.04 - 1.959964 * se, abs=0.002)
    assert est.high == pytest.approx(0.04 + 1.959964 * se, abs=0.002)
    assert paired_bootstrap_ci(a, b, seed=0) == est  # seeded: reproducible reports


def test_paired_bootstrap_ci_of_identical_differences_is_the_point_and_shapes_must_match():
    a = np.array([True, True, False])
    assert paired_bootstrap_ci(a, a).low == paired_bootstrap_ci(a, a).high == 0.0
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap_ci(a, a[:2])


HISTORY = [
    {"epoch": 1, "val_accuracy": 0.70, "elapsed_seconds": 10.0},
    {"epoch": 2, "val_accuracy": 0.84, "elapsed_seconds": 21.0},
    {"epoch": 3, "val_accuracy": 0.90, "elapsed_seconds": 33.0},
]


def test_time_to_accuracy_is_the_first_epoch_reaching_the_target_or_none():
    assert time_to_accuracy(HISTORY, 0.84).epoch == 2
    assert time_to_accuracy(HISTORY, 0.84).seconds == 21.0
    never = time_to_accuracy(HISTORY, 0.95)
    assert (never.epoch, never.seconds, never.epochs_trained) == (None, None, 3)


def test_target_accuracy_is_a_share_of_the_best_finite_val_accuracy():
    nan_run = [{"epoch": 1, "val_accuracy": float("nan"), "elapsed_seconds": 1.0}]
    assert target_accuracy({"a": HISTORY, "b": nan_run}, 0.95) == pytest.approx(0.855)


def test_pair_evidence_holds_significance_and_time_to_accuracy_for_comparison_json():
    a, b = pairs(40, 9, 1, 10)
    slow = [{"epoch": e, "val_accuracy": 0.6 + 0.1 * e, "elapsed_seconds": 30.0 * e} for e in (1, 2, 3)]
    evidence = pair_evidence({"pretrained": a, "scratch": b}, {"pretrained": HISTORY, "scratch": slow},
                             EvaluateConfig(resamples=1000))  # fmt: skip
    sig, tta = evidence["significance"], evidence["time_to_accuracy"]
    assert (sig["only_pretrained_correct"], sig["only_scratch_correct"], sig["test_images"]) == (9, 1, 60)
    assert sig["accuracy_diff"] == pytest.approx(8 / 60)
    assert sig["accuracy_diff_ci_low"] < sig["accuracy_diff"] < sig["accuracy_diff_ci_high"]
    assert sig["mcnemar_p"] == pytest.approx(0.021484375)  # 2 * P(X <= 1), X ~ Bin(10, 1/2)
    assert tta["target_val_accuracy"] == pytest.approx(0.95 * 0.90)
    assert (tta["pretrained_epoch"], tta["scratch_epoch"]) == (3, 3)
    assert tta["pretrained_speedup"] == pytest.approx(90.0 / 33.0)


@pytest.mark.parametrize("section", ["evaluate", "report"])
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"confidence": 0.3}, "confidence: must be in [0.5, 1)"),
        ({"resamples": 10}, "resamples: must be between 100 and 100,000"),
        ({"target_fraction": 0}, "target_fraction: must be in (0, 1]"),
        ({"equivalence_margin": 0}, "equivalence_margin: must be in (0, 50) points"),
    ],
)
def test_evidence_settings_reject_out_of_range_values_under_the_section_of_the_file(settings, message, section):
    # params.yaml calls the section `evaluate`, the study's and the tuning pipeline's params `report`.
    with pytest.raises(ConfigError) as err:
        EvaluateConfig(**settings).validate(section)
    assert str(err.value).startswith(f"{section}.{message}")


def test_evidence_settings_alpha_matches_the_confidence_level():
    assert EvaluateConfig().alpha == pytest.approx(0.05)
    assert EvaluateConfig(confidence=0.9).alpha == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("correct", "total", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_accuracy_ci_is_the_wilson_interval_of_newcombes_table(correct: int, total: int, low: float, high: float):
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3.
    assert accuracy_ci(correct, total) == pytest.approx((low, high), abs=5e-5)


def test_accuracy_ci_at_the_default_test_split_is_about_three_points_and_narrows_with_confidence():
    low, high = accuracy_ci(452, 525)  # 86.1% of 525 test images
    assert (high - low) / 2 == pytest.approx(0.0296, abs=1e-4)
    low90, high90 = accuracy_ci(452, 525, confidence=0.9)
    assert low < low90 < 452 / 525 < high90 < high
    with pytest.raises(ValueError, match="need 0 <= correct <= total"):
        accuracy_ci(6, 5)

"""Metrics against hand-computed cases, and the numpy scores against scikit-learn's."""

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from tvs.compute.scores import balanced_accuracy, confusion_counts, log_loss, macro_f1
from tvs.evaluate.metrics import (
    METRIC_KEYS,
    arm_metrics,
    baseline,
    classification_metrics,
    compare,
    confusion,
    majority_baseline,
)


def test_metrics_of_a_hand_made_case():
    # 6 images, classes 0/1/2; predictions: 0 0 1 | 1 2 | 2  (true: 0 0 0 | 1 1 | 2)
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = [0, 0, 1, 1, 2, 2]
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), predicted] = 0.8
    m = classification_metrics(probs, labels)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recalls: 2/3, 1/2, 1/1
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # F1 per class: c0 p=1 r=2/3 -> 0.8; c1 p=1/2 r=1/2 -> 0.5; c2 p=1/2 r=1 -> 2/3
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # log loss: 4 images at p=0.8 for the true class, 2 at 0.1
    assert m["log_loss"] == pytest.approx(-(4 * math.log(0.8) + 2 * math.log(0.1)) / 6)
    assert confusion(probs, labels).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_a_class_never_predicted_counts_as_zero_f1_without_warnings():
    # Class 0 is never predicted; class 2 (a class of the model) is neither predicted nor in this
    # test split, so its F1 is 0/0, on which scikit-learn warns unless told what to do.
    labels = np.array([0, 1, 1, 1])
    probs = np.array([[0.1, 0.8, 0.1]] * 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = classification_metrics(probs, labels)
    assert [str(w.message) for w in caught] == []
    assert m["accuracy"] == 0.75
    assert m["balanced_accuracy"] == 0.5
    assert m["macro_f1"] == pytest.approx((0 + 2 * 0.75 / 1.75 + 0) / 3)


def test_arm_files_share_keys_and_the_comparison_is_pretrained_minus_scratch():
    labels = np.array([0, 1])
    good = arm_metrics(np.array([[0.9, 0.1], [0.2, 0.8]]), labels, {"train_seconds": 10.0, "best_epoch": 3})
    bad = arm_metrics(np.array([[0.4, 0.6], [0.2, 0.8]]), labels, {"train_seconds": 12.5, "best_epoch": 5})
    assert set(METRIC_KEYS) <= good.keys() and good.keys() == bad.keys()
    diff = compare(good, bad)
    assert set(diff) == set(METRIC_KEYS)
    assert diff["accuracy"] == pytest.approx(0.5)
    assert diff["train_seconds"] == pytest.approx(-2.5)
    assert diff["best_epoch"] == -2


def test_majority_baseline_is_the_most_frequent_class_and_its_share():
    assert majority_baseline(np.array([0, 0, 1, 0, 2])) == (0, 0.6)
    assert majority_baseline(np.array([1, 1, 1, 0])) == (1, 0.75)
    assert majority_baseline(np.array([2])) == (2, 1.0)


def test_the_baseline_of_the_default_elpv_test_split_and_its_balanced_accuracy_of_one_over_classes():
    labels = np.array([1] * 361 + [0] * 164)  # classes sorted: defective, functional
    assert baseline(labels, ["defective", "functional"]) == {
        "majority_class": "functional",
        "majority_accuracy": pytest.approx(0.6876, abs=1e-4),
        "majority_balanced_accuracy": 0.5,
        "majority_tied": 0,
    }
    three = baseline(np.array([0, 0, 0, 1, 2, 2]), ["a", "b", "c"])
    assert three["majority_accuracy"] == 0.5 and three["majority_balanced_accuracy"] == pytest.approx(1 / 3)


def test_an_arm_file_holds_its_accuracys_wilson_ci_and_the_majority_baseline():
    labels = np.array([0] * 15 + [1] * 5)
    probs = np.tile([0.9, 0.1], (20, 1))
    probs[15:17] = [0.2, 0.8]  # 17 of 20 right: 15 of class 0, 2 of 5 of class 1
    m = arm_metrics(probs, labels, {"train_seconds": 1.0, "best_epoch": 1}, confidence=0.95)
    assert m["accuracy"] == 0.85 and m["majority_accuracy"] == 0.75 and m["test_images"] == 20
    assert (m["accuracy_ci_low"], m["accuracy_ci_high"]) == pytest.approx((0.6396, 0.9476), abs=1e-4)


def test_tied_test_classes_are_flagged_so_no_class_is_named_as_the_majority():
    tied = baseline(np.array([0, 0, 1, 1, 2, 2]), ["one", "two", "three"])
    assert tied["majority_tied"] == 1 and tied["majority_accuracy"] == pytest.approx(1 / 3)
    assert baseline(np.array([0, 0, 1]), ["one", "two"])["majority_tied"] == 0


@pytest.mark.parametrize("seed", range(6))
def test_the_numpy_scores_equal_scikit_learns_on_random_predictions(seed: int):
    from sklearn import metrics as sk

    rng = np.random.default_rng(seed)
    classes, n = int(rng.integers(2, 6)), int(rng.integers(1, 40))
    labels = rng.integers(0, classes - int(seed % 2), n)  # odd seeds: the last class absent from the split
    logits = rng.normal(size=(n, classes)) * 3
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32 if seed < 3 else np.float64)
    probs[0, :] = np.nan if seed in (2, 5) else probs[0, :]  # a row without a prediction
    predicted = np.where(np.isfinite(probs).all(1), np.nan_to_num(probs).argmax(1), -1)
    every = np.arange(classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "balanced": sk.balanced_accuracy_score(labels, predicted),
            "f1": sk.f1_score(labels, predicted, labels=every, average="macro", zero_division=0),
            "confusion": sk.confusion_matrix(labels, predicted, labels=every).tolist(),
        }
    assert balanced_accuracy(labels, predicted, classes) == pytest.approx(expected["balanced"])
    assert macro_f1(labels, predicted, classes) == pytest.approx(expected["f1"])
    assert confusion_counts(labels, predicted, classes).tolist() == expected["confusion"]
    finite = np.where(np.isfinite(probs).all(1, keepdims=True), probs, 1 / classes)
    assert log_loss(labels, finite) == pytest.approx(sk.log_loss(labels, finite, labels=every), rel=1e-5)


def test_a_stage_process_loads_neither_scikit_learn_nor_scipy_to_score():
    # The scores are numpy (above): training and evaluate do not pay ~1.5 s a process to import them.
    code = "import sys, tvs.train.loop, tvs.evaluate.metrics; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'torch'" in loaded and "'sklearn'" not in loaded and "'scipy'" not in loaded

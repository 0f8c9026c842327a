"""Test-set metrics of one arm and the comparison of the two (the formulas: :mod:`~tvs.compute.scores`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tvs.compute.scores import balanced_accuracy, confusion_counts, log_loss, macro_f1
from tvs.evaluate.stats import accuracy_ci

# The keys every arm's metrics file has; comparison.json has the same keys, holding differences,
# so that `dvc metrics show` lines the three files up in the same columns.
METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "train_seconds", "best_epoch")


# The predicted class of an image whose probabilities are NaN or infinite (a diverged or broken
# model): it matches no class, so the image counts as misclassified.
NO_PREDICTION = -1


def predicted_classes(probs: np.ndarray) -> np.ndarray:
    """Each image's most probable class; :data:`NO_PREDICTION` where its probabilities are not all finite."""
    return np.where(np.isfinite(probs).all(1), probs.argmax(1), NO_PREDICTION)


def nonfinite_rows(probs: np.ndarray) -> int:
    """How many images got NaN or infinite probabilities."""
    return int((~np.isfinite(probs).all(1)).sum())


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 and log loss of ``probs`` (N, C) against ``labels``.

    An image without finite probabilities is misclassified, and scored as a uniform guess
    (``ln C``) in the log loss: it said nothing about its class.
    """
    classes = probs.shape[1]
    predicted = predicted_classes(probs)
    finite = np.where(np.isfinite(probs).all(1, keepdims=True), probs, 1 / classes)
    return {
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": balanced_accuracy(labels, predicted, classes),
        "macro_f1": macro_f1(labels, predicted, classes),
        "log_loss": log_loss(labels, finite),
    }


def confusion(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Confusion matrix: rows are true classes, columns predicted (images without a prediction left out)."""
    return confusion_counts(labels, predicted_classes(probs), probs.shape[1])


def majority_baseline(labels: np.ndarray) -> tuple[int, float]:
    """The most frequent class of ``labels`` and the accuracy of predicting it for every image.

    The floor an accuracy is read against: 68.8% on the default ELPV test split (361 of its 525
    cells are functional), what a model that never finds a defect scores. Its balanced accuracy is
    1 / classes.
    """
    counts = np.bincount(np.asarray(labels, dtype=int))
    if counts.sum() == 0:
        raise ValueError("majority_baseline: no labels")
    return int(counts.argmax()), float(counts.max() / counts.sum())


def arm_metrics(
    probs: np.ndarray, labels: np.ndarray, meta: dict[str, Any], confidence: float = 0.95
) -> dict[str, Any]:
    """One arm's metrics file: test metrics with the accuracy's CI over test images, the majority-class
    baseline, and the training time and best epoch from its sidecar."""
    metrics = classification_metrics(probs, labels)
    low, high = accuracy_ci(int((predicted_classes(probs) == labels).sum()), len(labels), confidence)
    metrics |= {"accuracy_ci_low": low, "accuracy_ci_high": high, "majority_accuracy": majority_baseline(labels)[1]}
    metrics["train_seconds"] = round(float(meta["train_seconds"]), 2)
    metrics["best_epoch"] = int(meta["best_epoch"])
    metrics["test_images"] = len(labels)
    metrics["nonfinite_outputs"] = nonfinite_rows(probs)  # > 0: a broken model, reported as diverged
    return metrics


def baseline(labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """``comparison.json``'s baseline keys: the test split's majority class, and the accuracy and
    balanced accuracy of predicting it for every image."""
    index, accuracy = majority_baseline(labels)
    balanced = balanced_accuracy(labels, np.full_like(labels, index), len(classes))
    counts = np.bincount(np.asarray(labels, dtype=int))
    tied = int((counts == counts.max()).sum() > 1)  # no majority class: the verdict says 1/k, names none
    return {"majority_class": classes[index], "majority_accuracy": accuracy, "majority_balanced_accuracy": balanced,
            "majority_tied": tied}  # fmt: skip


def compare(pretrained: dict[str, Any], scratch: dict[str, Any]) -> dict[str, float]:
    """``pretrained - scratch`` for each metric key (positive accuracy: fine-tuning wins)."""
    return {key: pretrained[key] - scratch[key] for key in METRIC_KEYS}

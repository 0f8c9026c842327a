"""Classification scores of predicted classes and probabilities, for training's validation and for
evaluate: scikit-learn's definitions in numpy.

``tests/test_metrics.py`` holds each equal to scikit-learn's on random predictions. Written out because
every training and evaluate process would otherwise load scikit-learn (and scipy with it) for four
formulas: 1.2 to 1.8 s of a tiny stage's ~8 s on the 2-core reference CPU. Nothing here reads files.
"""

from __future__ import annotations

import numpy as np


def confusion_counts(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts, rows true and columns predicted, predictions outside ``range(classes)``
    (an image without a prediction) left out: scikit-learn's ``confusion_matrix(labels=range(classes))``."""
    labels, predicted = np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)
    kept = (predicted >= 0) & (predicted < classes)
    cells = labels[kept] * classes + predicted[kept]
    return np.bincount(cells, minlength=classes * classes).reshape(classes, classes)


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Mean recall over the classes present in ``labels`` (scikit-learn's ``balanced_accuracy_score``)."""
    right = confusion_counts(labels, predicted, classes).diagonal()
    support = np.bincount(np.asarray(labels, dtype=int), minlength=classes)  # images without a prediction too
    present = support > 0
    return float((right[present] / support[present]).mean())


def macro_f1(labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Unweighted mean F1 over ``range(classes)``, 0 for a class never true nor predicted
    (scikit-learn's ``f1_score(average="macro", zero_division=0)``)."""
    counts = confusion_counts(labels, predicted, classes)
    true_positive = counts.diagonal()
    # false negatives include the images of the class without a prediction (left out of ``counts``)
    support = np.bincount(np.asarray(labels, dtype=int), minlength=classes)
    denominator = counts.sum(0) + support  # 2 tp + fp + fn
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros(classes), where=denominator > 0)
    return float(f1.mean())


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean cross-entropy of ``probs`` (N, C) at the true classes, clipped to ``[eps, 1 - eps]`` of their
    dtype (scikit-learn's ``log_loss``)."""
    probs = np.asarray(probs)
    if not np.issubdtype(probs.dtype, np.floating):
        probs = probs.astype(np.float64)
    eps = np.finfo(probs.dtype).eps
    picked = probs[np.arange(len(probs)), np.asarray(labels, dtype=int)]
    return float(-np.log(np.clip(picked, eps, 1 - eps)).mean())

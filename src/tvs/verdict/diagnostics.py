"""What the single pair's per-image predictions say beyond accuracy: calibration, ROC and PR, disagreements.

Read from ``evaluate``'s ``eval/<arm>/predictions.csv`` (one row per test image: path, true and
predicted class, one ``p_<class>`` column per class) and written by the ``verdict`` stage into
``reports/plots/`` (in git), where ``dvc plots`` and the answer page (:mod:`tvs.page`) read them:

- ``calibration.csv``: the reliability diagram, one row per arm and confidence bin;
- ``roc.csv`` and ``pr.csv``: both arms' ROC and precision-recall curves (two-class tasks only);
- ``diagnostics.json``: each arm's ECE, Brier score (and ROC AUC, average precision), the disagreement
  gallery (McNemar's two cells: one arm right, the other wrong) and each arm's highest-loss images.

An image whose probabilities are not finite (a broken model) is wrong in the gallery and left out of
the scores that need a probability, which say how many images they rest on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tvs.errors import DataError
from tvs.io import read_csv, write_csv, write_json

BINS = 10  # equal-width confidence bins of the reliability diagram and the ECE
GALLERY = 8  # images shown per disagreement cell (the most confident mistakes first)
HIGHEST_LOSS = 6  # images shown per arm
CURVE_POINTS = 400  # at most this many points per ROC or PR curve kept in git
PREFIX = "p_"  # predictions.csv's probability columns: p_<class>, in the checkpoint's class order


@dataclass(frozen=True)
class Scores:
    """One arm's test predictions: the class names, each image's path, true class index and probabilities."""

    classes: list[str]
    paths: np.ndarray  # (N,) str
    true: np.ndarray  # (N,) int
    probs: np.ndarray  # (N, C) float; a row with NaN or inf: the model gave no prediction

    @property
    def finite(self) -> np.ndarray:
        return np.isfinite(self.probs).all(1)

    @property
    def predicted(self) -> np.ndarray:
        """Each image's most probable class, -1 where its probabilities are not finite."""
        return np.where(self.finite, np.nan_to_num(self.probs, nan=-1.0).argmax(1), -1)


def read_scores(path: str | Path) -> Scores:
    """An arm's ``predictions.csv`` as :class:`Scores`; a file that is not one names itself and what it lacks."""
    table = read_csv(path, text=("path", "true", "predicted"))
    columns = [c for c in table.columns if c.startswith(PREFIX)]
    missing = [c for c in ("path", "true") if c not in table.columns] + ([] if columns else ["p_<class>"])
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing)}; rerun `evaluate`")
    classes = [c[len(PREFIX) :] for c in columns]
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(table["true"]) - index.keys())
    if unknown:
        raise DataError(f"{path}: true class {unknown[0]!r} has no {PREFIX}<class> column; rerun `evaluate`")
    probs = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    true = table["true"].map(index).to_numpy(dtype=int)
    return Scores(classes, table["path"].to_numpy(dtype=str), true, probs)


def calibration_bins(scores: Scores, bins: int = BINS) -> pd.DataFrame:
    """The reliability diagram: per equal-width bin of top-class confidence, its mean confidence, its
    accuracy and its number of images (empty bins left out; images without a prediction too)."""
    probs, true = scores.probs[scores.finite], scores.true[scores.finite]
    confidence = probs.max(1)
    correct = probs.argmax(1) == true
    which = np.clip((confidence * bins).astype(int), 0, bins - 1)  # confidence 1.0 falls in the last bin
    rows = [
        {"bin": b + 1, "confidence": float(confidence[hit].mean()), "accuracy": float(correct[hit].mean()),
         "images": int(hit.sum())}
        for b in range(bins)
        if (hit := which == b).any()
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["bin", "confidence", "accuracy", "images"])


def expected_calibration_error(table: pd.DataFrame) -> float | None:
    """ECE: the image-weighted mean gap between a bin's accuracy and its confidence (0: calibrated)."""
    images = table["images"].sum()
    if not images:
        return None
    return float((table["images"] * (table["accuracy"] - table["confidence"]).abs()).sum() / images)


def brier_score(scores: Scores) -> float | None:
    """Multi-class Brier score: the mean over images of the squared distance between the probabilities
    and the one-hot truth (0 is perfect, 2 the worst; a uniform guess over two classes scores 0.5)."""
    probs, true = scores.probs[scores.finite], scores.true[scores.finite]
    if not len(probs):
        return None
    onehot = np.eye(probs.shape[1])[true]
    return float(((probs - onehot) ** 2).sum(1).mean())


def positive_class(true: np.ndarray, classes: int) -> int:
    """The class a two-class ROC and PR curve detects: the rarer one in the test split (a defect, a
    disease), the second when both are as common."""
    counts = np.bincount(true, minlength=classes)
    return int(counts.argmin()) if counts.min() < counts.max() else classes - 1


def thin(points: pd.DataFrame, limit: int = CURVE_POINTS) -> pd.DataFrame:
    """At most ``limit`` rows of a curve, first and last kept, evenly spaced in between."""
    if len(points) <= limit:
        return points
    keep = np.unique(np.linspace(0, len(points) - 1, limit).round().astype(int))
    return points.iloc[keep]


def ranked_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives above each distinct threshold of ``p``, highest first (ties move together)."""
    order = np.argsort(-p, kind="stable")
    y, p = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]  # the last image at each distinct score
    tp = np.cumsum(y)[last]
    return tp, (last + 1) - tp


def two_class_curves(scores: Scores, positive: int) -> tuple[pd.DataFrame, pd.DataFrame, float, float]:
    """ROC and PR curves of ``positive``'s probability, with ROC AUC (trapezoids) and average precision
    (the precision at each threshold weighted by the recall it adds), as scikit-learn defines them; numpy
    only, so that the ``verdict`` stage does not load scikit-learn for it."""
    y = (scores.true[scores.finite] == positive).astype(int)
    p = scores.probs[scores.finite][:, positive]
    tp, fp = ranked_counts(y, p)
    positives, negatives = int(y.sum()), len(y) - int(y.sum())
    fpr = np.r_[0.0, fp / negatives] if negatives else np.r_[0.0, np.zeros(len(fp))]
    tpr = np.r_[0.0, tp / positives] if positives else np.r_[0.0, np.zeros(len(tp))]
    recall = tp / positives if positives else np.zeros(len(tp))
    precision = tp / (tp + fp)
    roc = thin(pd.DataFrame({"false_positive_rate": fpr, "true_positive_rate": tpr}))
    pr = thin(pd.DataFrame({"recall": np.r_[0.0, recall], "precision": np.r_[1.0, precision]}))
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return roc, pr, auc, ap


def _call(scores: Scores, i: int) -> dict[str, Any]:
    """One arm's prediction for image ``i``: the class (None: no prediction) and its probability."""
    k = int(scores.predicted[i])
    return {
        "predicted": scores.classes[k] if k >= 0 else None,
        "confidence": float(scores.probs[i, k]) if k >= 0 else None,
    }


def disagreements(arms: Mapping[str, Scores], limit: int = GALLERY) -> dict[str, Any]:
    """McNemar's two cells as a gallery: for each arm, the images it got right and the other got wrong,
    the other arm's most confident mistakes first, at most ``limit`` of each (with the full count)."""
    (a, sa), (b, sb) = arms.items()
    if not np.array_equal(sa.paths, sb.paths) or sa.classes != sb.classes:
        raise DataError(f"{a} and {b} were scored on different test images or classes; rerun `evaluate`")
    right = {a: sa.predicted == sa.true, b: sb.predicted == sb.true}
    out = {}
    for winner, loser, scores in ((a, b, sb), (b, a, sa)):
        hit = np.flatnonzero(right[winner] & ~right[loser])
        wrong_confidence = np.array([_call(scores, i)["confidence"] or 0.0 for i in hit])
        order = hit[np.argsort(-wrong_confidence, kind="stable")][:limit]
        out[f"{winner}_right_{loser}_wrong"] = {
            "count": int(len(hit)),
            "images": [
                {"path": str(sa.paths[i]), "true": sa.classes[sa.true[i]], a: _call(sa, i), b: _call(sb, i)}
                for i in order
            ],
        }
    return out


def highest_loss(scores: Scores, limit: int = HIGHEST_LOSS) -> list[dict[str, Any]]:
    """The images with the highest cross-entropy (-ln of the true class's probability), highest first;
    an image without a prediction counts as infinitely wrong."""
    p_true = scores.probs[np.arange(len(scores.true)), scores.true]
    loss = np.where(scores.finite, -np.log(np.clip(p_true, 1e-12, 1.0)), np.inf)
    order = np.argsort(-loss, kind="stable")[:limit]
    return [
        {"path": str(scores.paths[i]), "true": scores.classes[scores.true[i]], **_call(scores, i),
         "loss": float(loss[i]) if np.isfinite(loss[i]) else None}
        for i in order
    ]  # fmt: skip


def arm_column(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The arms' tables stacked, each row named by its arm (``arm``) and numbered within it (``point``: the
    order a plot joins the points in, which sorting by x would break where a curve rises vertically)."""
    stacked = [t.assign(arm=arm, point=range(len(t)))[["arm", "point", *t.columns]] for arm, t in tables.items()]
    return pd.concat(stacked, ignore_index=True)


def diagnose(arms: Mapping[str, Scores]) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """``diagnostics.json``'s content and the plot tables (calibration; ROC and PR for two classes)."""
    summary: dict[str, Any] = {}
    calibration, roc, pr = {}, {}, {}
    first = next(iter(arms.values()))
    positive = positive_class(first.true, len(first.classes)) if len(first.classes) == 2 else None
    for arm, scores in arms.items():
        calibration[arm] = calibration_bins(scores)
        summary[arm] = {
            "scored_images": int(scores.finite.sum()),
            "ece": expected_calibration_error(calibration[arm]),
            "brier": brier_score(scores),
        }
        if positive is not None and scores.finite.any() and len(np.unique(scores.true[scores.finite])) == 2:
            roc[arm], pr[arm], auc, ap = two_class_curves(scores, positive)
            summary[arm] |= {"roc_auc": auc, "average_precision": ap}
    content = {
        "bins": BINS,
        "positive_class": first.classes[positive] if positive is not None else None,
        "arms": summary,
        "disagreements": disagreements(arms) if len(arms) == 2 else {},
        "highest_loss": {arm: highest_loss(scores) for arm, scores in arms.items()},
    }
    tables = {"calibration": arm_column(calibration)}
    if roc:
        tables |= {"roc": arm_column(roc), "pr": arm_column(pr)}
    return content, tables


def write_diagnostics(plots_dir: Path, arms: Mapping[str, Scores]) -> None:
    """Write the files this module's docstring lists under ``plots_dir`` from each arm's scores (ROC and
    PR: removed when the task is not two-class)."""
    content, tables = diagnose(arms)
    for name in ("calibration", "roc", "pr"):
        path = Path(plots_dir) / f"{name}.csv"
        if name in tables:
            write_csv(tables[name], path)
        else:
            path.unlink(missing_ok=True)
    write_json(Path(plots_dir) / "diagnostics.json", content)

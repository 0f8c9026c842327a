"""The plot sources kept in git: both arms' per-epoch curves and each arm's test confusion, for `dvc plots`.

DVCLive's curves (``dvclive/<arm>``) and the per-image predictions (``eval/<arm>``) live in cached
outputs, which a fresh clone without a remote does not have; these small copies are written by the
``verdict`` stage as plain ``cache: false`` outputs (in git), so ``dvc plots show`` and
``dvc plots diff main`` work in any clone. They come from the checkpoints' sidecars (the history)
and ``evaluate``'s per-image predictions, not from DVCLive's files, so that ``verdict`` reads only
what it declares.

The curves are one long table (``curves.csv``: a row per arm and epoch), so that a plot colours and
names each arm by the column ``arm`` (``.dvc/plots/arms_by_epoch.json``); a confusion matrix is one
row per (actual, predicted) cell of every class, so that a class never predicted still has its column
(``.dvc/plots/confusion_cells.json``). The rest of the predictions' story (calibration, ROC and PR,
the disagreement gallery) is :mod:`tvs.verdict.diagnostics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tvs.io import write_csv, write_json
from tvs.verdict.diagnostics import Scores, read_scores, write_diagnostics

# The history keys drawn per epoch (dvc.yaml's top-level `plots:` draws each from curves.csv).
CURVES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds")
CURVES_FILE = "curves.csv"
CONFUSION = "confusion.json"
PREDICTIONS = "predictions.csv"  # evaluate's per-image predictions, under <eval-dir>/<arm>/
NO_PREDICTION = "(no prediction)"  # the column of images whose probabilities were not finite


def curves_table(histories: Mapping[str, Sequence[Mapping[str, float]]]) -> pd.DataFrame:
    """Every arm's training history as one table: ``arm``, ``epoch`` (1-based, as in the metrics), the keys."""
    rows = [{"arm": arm, "epoch": row["epoch"], **{key: row[key] for key in CURVES}} for arm, h in histories.items()
            for row in h]  # fmt: skip
    return pd.DataFrame(rows, columns=["arm", "epoch", *CURVES])


def confusion_cells(scores: Scores) -> list[dict[str, Any]]:
    """One row per (actual, predicted) cell over every class, zeros included: ``count`` and ``share``
    (of the actual class's images, 0 for a class with no test image); a column ``(no prediction)`` is
    added only if some image got no finite probabilities."""
    k = len(scores.classes)
    predicted = np.where(scores.predicted < 0, k, scores.predicted)
    counts = np.zeros((k, k + 1), dtype=int)
    np.add.at(counts, (scores.true, predicted), 1)
    columns = [*scores.classes, NO_PREDICTION] if counts[:, k].any() else list(scores.classes)
    rows = []
    for i, actual in enumerate(scores.classes):
        total = counts[i].sum()
        for j, name in enumerate(columns):
            n = int(counts[i, j])
            rows.append({"actual": actual, "predicted": name, "count": n, "share": n / total if total else 0.0})
    return rows


def write_plot_sources(plots_dir: Path, histories: Mapping[str, Sequence[Mapping[str, float]]], eval_dir: Path) -> None:
    """Write ``<plots_dir>/curves.csv``, ``<plots_dir>/<arm>/confusion.json`` and the diagnostics, each arm's
    predictions read once."""
    write_csv(curves_table(histories), Path(plots_dir) / CURVES_FILE)
    scores = {arm: read_scores(Path(eval_dir) / arm / PREDICTIONS) for arm in histories}
    for arm, arm_scores in scores.items():
        write_json(Path(plots_dir) / arm / CONFUSION, confusion_cells(arm_scores))
    write_diagnostics(Path(plots_dir), scores)

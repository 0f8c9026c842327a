"""The plot sources kept in git: each arm's per-epoch curves and test confusion, for `dvc plots`.

DVCLive's curves (``dvclive/<arm>``) and the confusion data (``eval/<arm>``) live in cached
outputs, which a fresh clone without a remote does not have; these small copies are written by the
``verdict`` stage as plain ``cache: false`` outputs (in git), so ``dvc plots show`` and
``dvc plots diff main`` work in any clone. They come from the checkpoints' sidecars (the history)
and ``evaluate``'s per-image predictions, not from DVCLive's files, so that ``verdict`` reads only
what it declares.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from tvs.errors import DataError
from tvs.io import write_json, write_text

# The history keys drawn per epoch (dvc.yaml's top-level `plots:` names one file per arm and key).
CURVES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds")
CONFUSION = "confusion.json"
PREDICTIONS = "predictions.csv"  # evaluate's per-image predictions, under <eval-dir>/<arm>/


def curve_tsv(history: Sequence[Mapping[str, float]], key: str) -> str:
    """One curve of a training history as a TSV of ``epoch`` (1-based, as in the metrics) and ``key``."""
    lines = [f"epoch\t{key}", *(f"{row['epoch']}\t{row[key]!r}" for row in history)]
    return "\n".join(lines) + "\n"


def confusion_rows(true: Sequence[str], predicted: Sequence[str]) -> list[dict[str, str]]:
    """One ``{actual, predicted}`` row per test image: the rows DVC's ``confusion`` template counts."""
    if len(true) != len(predicted):
        raise ValueError(f"{len(true)} true labels but {len(predicted)} predictions")
    return [{"actual": t, "predicted": p} for t, p in zip(true, predicted, strict=True)]


def read_predictions(path: str | Path) -> tuple[list[str], list[str]]:
    """The true and predicted class of each test image in ``evaluate``'s ``predictions.csv``."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file; run `evaluate` first") from None
    if rows and not {"true", "predicted"} <= rows[0].keys():
        raise DataError(f"{path}: needs the columns `true` and `predicted`; rerun `evaluate`")
    return [row["true"] for row in rows], [row["predicted"] for row in rows]


def write_plot_sources(plots_dir: Path, histories: Mapping[str, Sequence[Mapping[str, float]]], eval_dir: Path) -> None:
    """Write ``<plots_dir>/<arm>/<curve>.tsv`` for each curve and ``<plots_dir>/<arm>/confusion.json``."""
    for arm, history in histories.items():
        for key in CURVES:
            write_text(Path(plots_dir) / arm / f"{key}.tsv", curve_tsv(history, key))
        true, predicted = read_predictions(Path(eval_dir) / arm / PREDICTIONS)
        write_json(Path(plots_dir) / arm / CONFUSION, confusion_rows(true, predicted))

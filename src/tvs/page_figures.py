"""The answer page's pictures: both arms' curves by whole epochs, calibration with ROC and PR, thumbnails.

Drawn by :mod:`tvs.page` from the plot sources the ``verdict`` stage keeps in git (``reports/plots/``),
with matplotlib's object API; each arm has one colour, named in the legend, on every figure. The
thumbnails of the disagreement gallery come from ``prepare``'s cache (``data/prepared``): the pixels
the models saw, not the user's original files.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tvs.verdict.plots import COLOURS, LABELS, save_figure

EPOCH_PANELS = (
    ("val_accuracy", "validation accuracy"),
    ("val_loss", "validation loss"),
    ("train_loss", "training loss"),
)
THUMBNAIL = 112  # pixels a side


def draw_epochs(curves: pd.DataFrame, path: Path) -> None:
    """Validation accuracy, validation loss and training loss against whole epochs, one line per arm."""
    fig = Figure(figsize=(10.5, 3.4), layout="constrained")
    for ax, (key, label) in zip(fig.subplots(1, len(EPOCH_PANELS)), EPOCH_PANELS, strict=True):
        for arm, rows in curves.groupby("arm", sort=False):
            ax.plot(rows["epoch"], rows[key], marker="o", color=COLOURS.get(str(arm)), label=LABELS.get(str(arm), arm))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def draw_scores(tables: Mapping[str, pd.DataFrame], positive: str | None, path: Path) -> None:
    """The reliability diagram, and for two classes the ROC and PR curves of ``positive``, one line per arm."""
    panels = ["calibration", *(["roc", "pr"] if {"roc", "pr"} <= tables.keys() else [])]
    fig = Figure(figsize=(3.6 * len(panels), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    axis = {"calibration": ("confidence", "accuracy"), "roc": ("false_positive_rate", "true_positive_rate"),
            "pr": ("recall", "precision")}  # fmt: skip
    titles = {"calibration": "Reliability (test split)", "roc": f"ROC, positive: {positive}",
              "pr": f"Precision-recall, positive: {positive}"}  # fmt: skip
    for ax, name in zip(axes, panels, strict=True):
        x, y = axis[name]
        for arm, rows in tables[name].groupby("arm", sort=False):
            rows = rows.sort_values("point")
            ax.plot(rows[x], rows[y], marker="o" if name == "calibration" else None, markersize=4,
                    color=COLOURS.get(str(arm)), label=LABELS.get(str(arm), arm))  # fmt: skip
        if name in ("calibration", "roc"):
            ax.plot(
                [0, 1],
                [0, 1],
                color="grey",
                linestyle=":",
                linewidth=1,
                label="calibrated" if name == "calibration" else "chance",
            )
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=x.replace("_", " "), ylabel=y.replace("_", " "))
        ax.set_title(titles[name], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def thumbnails(prepared: Path, paths: Sequence[str], size: int = THUMBNAIL) -> dict[str, bytes]:
    """JPEG thumbnails (small enough to inline dozens in one HTML file) of the test images ``paths``
    (manifest paths), from ``prepare``'s cache: an empty dict when the cache is not in this clone (it is a
    DVC output), a path it does not list left out."""
    from PIL import Image

    from tvs.data.prepared import load_prepared

    if not (prepared / "manifest.csv").is_file():
        return {}
    data = load_prepared(prepared)
    row = {path: i for i, path in enumerate(data.manifest["path"])}
    out = {}
    for path in dict.fromkeys(paths):
        if path in row:
            image = Image.fromarray(np.ascontiguousarray(data.images[row[path]].transpose(1, 2, 0)))
            buffer = io.BytesIO()
            image.resize((size, size), Image.Resampling.BILINEAR).save(buffer, format="JPEG", quality=85)
            out[path] = buffer.getvalue()
    return out

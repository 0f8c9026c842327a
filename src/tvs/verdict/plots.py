"""The verdicts' figures, drawn with matplotlib's object API (no pyplot state, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tvs.io import atomic_path

COLOURS = {"pretrained": "tab:blue", "scratch": "tab:orange"}
LABELS = {"pretrained": "pretrained (fine-tuned)", "scratch": "scratch"}


def save_figure(fig: Figure, path: str | Path) -> None:
    """Write ``fig`` as a PNG, atomically."""
    # No "Software" stamp: the same numbers give the same bytes, whatever the matplotlib version.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})


def draw_baseline(ax: Axes, accuracy: float | None) -> None:
    """The majority-class baseline as a labelled horizontal line: what predicting one class scores."""
    if accuracy is not None:
        ax.axhline(accuracy, color="black", linestyle=":", linewidth=1, label=f"majority class (test) {accuracy:.1%}")


def plot_val_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    target: float | None,
    path: str | Path,
    baseline: float | None = None,
) -> None:
    """Validation accuracy against wall seconds of training, both arms, with the target (if any) and the
    majority-class baseline of the test split (if given) as lines.

    An arm with no completed epoch (it diverged in the first) is named in the legend with no points.
    """
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for arm, history in histories.items():
        seconds = [row["elapsed_seconds"] for row in history]
        accuracy = [row["val_accuracy"] for row in history]
        ax.plot(seconds, accuracy, marker="o", color=COLOURS.get(arm), label=LABELS.get(arm, arm))
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.1%}")
    draw_baseline(ax, baseline)
    ax.set_xlabel("wall seconds of training (one marker per epoch)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Time to accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)

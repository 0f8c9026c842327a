"""The verdicts' figures, drawn with matplotlib's object API (no pyplot state, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from tvs.io import atomic_path
from tvs.study import SizeSummary

COLOURS = {"pretrained": "tab:blue", "scratch": "tab:orange"}
LABELS = {"pretrained": "pretrained (fine-tuned)", "scratch": "scratch"}


def _save(fig: Figure, path: str | Path) -> None:
    # No "Software" stamp: the same numbers give the same bytes, whatever the matplotlib version.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})


def plot_val_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], target: float, path: str | Path) -> None:
    """Validation accuracy against wall seconds of training, both arms, with the target as a line."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for arm, history in histories.items():
        seconds = [row["elapsed_seconds"] for row in history]
        accuracy = [row["val_accuracy"] for row in history]
        ax.plot(seconds, accuracy, marker="o", color=COLOURS.get(arm), label=LABELS.get(arm, arm))
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.1%}")
    ax.set_xlabel("wall seconds of training (one marker per epoch)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Time to accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_data_efficiency(
    sizes: Sequence[SizeSummary], break_even: SizeSummary | None, path: str | Path, confidence: float = 0.95
) -> None:
    """Test accuracy (mean and CI band over seeds) against training images per class, log-x, both arms."""
    sizes = sorted(sizes, key=lambda s: s.fraction)
    x = [s.images_per_class for s in sizes]
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for arm in ("pretrained", "scratch"):
        est = [s.accuracy[arm] for s in sizes]
        ax.plot(x, [e.mean for e in est], marker="o", color=COLOURS[arm], label=LABELS[arm])
        if all(e.low is not None for e in est):
            ax.fill_between(x, [e.low for e in est], [e.high for e in est], color=COLOURS[arm], alpha=0.2)
    if break_even is not None:
        ax.axvline(break_even.images_per_class, color="grey", linestyle=":", label="break-even")
        title = f"Break-even at {break_even.images_per_class:.0f} images per class"
    else:
        title = "Break-even not reached within this data"
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:.0f}" for v in x])
    ax.minorticks_off()
    ax.set_xlabel("training images per class (log scale)")
    ax.set_ylabel("test accuracy")
    seeds = max(s.seeds for s in sizes)
    ax.set_title(f"{title}\nmean of {seeds} seed{'s' if seeds != 1 else ''}, band: {confidence:.0%} CI", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)

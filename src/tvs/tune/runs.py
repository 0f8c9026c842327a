"""The tuning pipeline's runs as read from its cells, and the choice of each arm's learning rate.

Folders are named as ``tune/dvc.yaml`` names its cells: the search's checkpoints
``models/search/<arm>-<lr>`` and their test scores ``eval/search/<lr>/``; the final runs
``models/final/pretrained-<repeat>``, ``models/final/scratch-<epochs>-<repeat>`` and their scores
``eval/final/<epochs>-<repeat>/`` (pretrained against scratch with ``<epochs>``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tvs.config import ARMS
from tvs.errors import DataError
from tvs.io import read_json, write_json, write_text


@dataclass(frozen=True)
class Trial:
    """One training run as its checkpoint's ``meta.json`` describes it (validation only: no test score)."""

    arm: str
    lr: float
    epochs: int  # its schedule, as the cell names it (a diverged run stops early)
    val_accuracy: float  # at the best epoch, the one the checkpoint keeps
    val_loss: float
    seconds: float
    steps: int  # optimizer steps it made: epochs run x batches per epoch
    diverged: bool = False


def search_model(models: Path, arm: str, lr: float) -> Path:
    return Path(models) / f"{arm}-{lr}"


def final_model(models: Path, arm: str, repeat: int, epochs: int | None = None) -> Path:
    return Path(models) / (f"{arm}-{repeat}" if arm == "pretrained" else f"{arm}-{epochs}-{repeat}")


def read_trial(model_dir: Path, arm: str, lr: float, epochs: int) -> Trial:
    """The run in ``model_dir`` (its ``meta.json``), scheduled for ``epochs``; errors name the file."""
    path = Path(model_dir) / "meta.json"
    meta = read_json(path)
    if meta.get("arm") != arm:
        raise DataError(f"{path}: a run of the {meta.get('arm')!r} arm where {arm!r} was expected")
    try:
        batches = math.ceil(meta["train_images"] / meta["params"]["train"]["batch_size"])
        return Trial(arm, lr, epochs, meta["best_val_accuracy"], meta["best_val_loss"], meta["train_seconds"],
                     len(meta["history"]) * batches, bool(meta.get("diverged")))  # fmt: skip
    except (KeyError, TypeError) as err:
        raise DataError(f"{path}: not a finished training run (no {err})") from None


def select_lr(trials: Sequence[Trial]) -> Trial:
    """The trial with the best validation accuracy; ties go to the lower validation loss, then the lower lr.

    Only validation numbers enter: a :class:`Trial` holds no test score, so the test split cannot
    leak into the choice. A run that diverged is not chosen, whatever its best epoch scored, unless
    every run diverged.
    """
    if not trials:
        raise ValueError("select_lr: no trials")
    stable = [t for t in trials if not t.diverged] or list(trials)
    return min(stable, key=lambda t: (-t.val_accuracy, t.val_loss, t.lr))


def search(models: Path, lrs: Sequence[float], epochs: int) -> dict[str, list[Trial]]:
    """Every search run (``epochs`` each), per arm, in the order of the grid."""
    return {arm: [read_trial(search_model(models, arm, lr), arm, lr, epochs) for lr in lrs] for arm in ARMS}


def selection(trials: Mapping[str, Sequence[Trial]]) -> dict[str, Trial]:
    """Each arm's chosen trial."""
    return {arm: select_lr(trials[arm]) for arm in ARMS}


def write_selection(trials: Mapping[str, Sequence[Trial]], out: Path) -> dict[str, Trial]:
    """The choose_lr stage: ``<arm>.set`` (``lr=<chosen>``, read by the final runs' ``--set``), ``selection.json``."""
    chosen = selection(trials)
    for arm in ARMS:
        write_text(Path(out) / f"{arm}.set", f"lr={chosen[arm].lr!r}\n")
    write_json(Path(out) / "selection.json", {
        arm: {"lr": chosen[arm].lr, "val_accuracy": chosen[arm].val_accuracy,
              "trials": [{"lr": t.lr, "val_accuracy": t.val_accuracy, "val_loss": t.val_loss, "diverged": t.diverged}
                         for t in trials[arm]]}
        for arm in ARMS
    })  # fmt: skip
    return chosen

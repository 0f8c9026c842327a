"""Everything a training run records beside the loop: history, best checkpoint, DVCLive curves, resume.

:class:`Bookkeeping` is what :func:`tvs.train.loop.fit` calls at the start, at the end of each
epoch and at the end; the loop itself only trains and validates. Only rank 0 writes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tvs.models.checkpoint import cpu_state, save_state, update_meta
from tvs.train import resume as resumption
from tvs.train.resume import ResumeSpec

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """The outcome of a fit: per-epoch history and the best epoch (by val accuracy)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = -1.0
    best_val_loss: float = math.inf
    train_seconds: float = 0.0
    diverged_epoch: int = 0  # the epoch whose loss became non-finite; 0: training did not diverge


class Bookkeeping:
    """Checkpoint, curves and resume state of one run.

    Args:
        out_dir: the checkpoint folder (the stage's DVC output).
        meta: builds the checkpoint's sidecar from the current :class:`FitResult`.
        is_main: whether this process writes (rank 0).
        live: a DVCLive ``Live`` for the per-epoch curves, or ``None``.
        resume: where to keep the state after each epoch, or ``None`` for no resuming.
    """

    def __init__(
        self,
        out_dir: str | Path,
        meta: Callable[[FitResult], dict[str, Any]],
        is_main: bool = True,
        live: Any | None = None,
        resume: ResumeSpec | None = None,
    ):
        self.out_dir, self.meta, self.is_main, self.live, self.resume = Path(out_dir), meta, is_main, live, resume
        self.result = FitResult()
        self.best: dict[str, torch.Tensor] | None = None
        self.initial: dict[str, torch.Tensor] | None = None
        self.clock = 0.0

    def start(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        generator: torch.Generator,
    ) -> int:
        """The first epoch to run: 1, or the one after the last epoch an interrupted run completed."""
        self.best = self.initial = cpu_state(model)  # what the checkpoint holds if epoch 1 diverges
        start = 1
        if self.resume is not None and (saved := resumption.load_state(self.resume)) is not None:
            resumption.restore(saved, model, optimizer, scheduler, generator)
            self.result, self.best, start = FitResult(**saved["result"]), saved["best"], saved["epoch"] + 1
            for row in self.result.history:  # DVC deleted the DVCLive folder and the checkpoint too
                self._log_curves(row)
            if self.is_main:
                save_state(self.out_dir, self.best, self.meta(self.result))
        self.clock = time.perf_counter() - self.result.train_seconds
        return start

    def end_epoch(self, row: dict[str, float], model: nn.Module) -> None:
        """Record an epoch; if its validation accuracy is the best so far, write the checkpoint."""
        row = {**row, "elapsed_seconds": time.perf_counter() - self.clock}
        result = self.result
        result.history.append(row)
        self._log_curves(row)
        if (row["val_accuracy"], -row["val_loss"]) > (result.best_val_accuracy, -result.best_val_loss):
            result.best_epoch, result.best_val_accuracy, result.best_val_loss = (
                row["epoch"], row["val_accuracy"], row["val_loss"],
            )  # fmt: skip
            self.best = cpu_state(model)
            if self.is_main:
                save_state(self.out_dir, self.best, self.meta(result))
        result.train_seconds = time.perf_counter() - self.clock

    def save_for_resume(
        self,
        epoch: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        generator: torch.Generator,
    ) -> None:
        """Keep what the epochs after ``epoch`` depend on, so a killed run can continue."""
        if self.resume is not None and self.is_main:
            state = resumption.snapshot(epoch, model, optimizer, scheduler, generator, self.best, asdict(self.result))
            resumption.save_state(self.resume, state)

    def diverged(self, epoch: int, err: Exception) -> None:
        """The loss blew up in ``epoch``: stop, keeping the best epoch so far (or the initial weights)."""
        self.result.diverged_epoch = epoch
        kept = f"epoch {self.result.best_epoch}'s weights" if self.result.best_epoch else "the initial weights"
        log.warning("%s. Stopping this arm; its checkpoint keeps %s.", err, kept)

    def finish(self) -> FitResult:
        """Write the final sidecar (full history, time) and forget the resume state."""
        self.result.train_seconds = time.perf_counter() - self.clock
        if self.is_main:
            if self.best is self.initial:  # diverged in the first epoch: evaluate still gets a model, flagged
                save_state(self.out_dir, self.initial, self.meta(self.result))
            else:  # the weights on disk are the best epoch's; the sidecar gains the full history and time
                update_meta(self.out_dir, self.meta(self.result))
            if self.resume is not None:
                resumption.clear_state(self.resume)
        return self.result

    def _log_curves(self, row: dict[str, float]) -> None:
        if self.live is None or not self.is_main:
            return
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            split, metric = key.split("_", 1)
            self.live.log_metric(f"{split}/{metric}", row[key])
        self.live.log_metric("lr", row["lr"])
        self.live.log_metric("epoch_seconds", row["epoch_seconds"])
        self.live.next_step()

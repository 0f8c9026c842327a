"""The training loop, both arms: one epoch, validation, the schedule, and ``fit`` reading top to bottom.

The arms differ only in :func:`tvs.models.weights.init_model` (how the weights start) and in
their config section (learning-rate multiplier, frozen epochs). Everything else, the data order
and augmentation included, is shared. Checkpoints, resume state and DVCLive logging are kept
beside the loop by :class:`tvs.train.bookkeeping.Bookkeeping`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from tvs.compute.batches import batch_bounds, images_on_device, iterate_batches, predict_proba, to_model_input
from tvs.compute.runtime import Runtime, wrap_model
from tvs.compute.scores import log_loss
from tvs.config import Params, TrainConfig
from tvs.data.prepared import PreparedData
from tvs.models.archs import set_backbone_trainable
from tvs.models.weights import Initial, init_model
from tvs.train.augment import augment
from tvs.train.bookkeeping import Bookkeeping, FitResult

log = logging.getLogger(__name__)

# An epoch whose mean training loss exceeds this many times a uniform guess's (ln of the class
# count) has diverged even though the loss is finite: with AdamW and BatchNorm a far too high lr
# (`dvc exp run -S lr=10`) gives losses in the thousands rather than NaN. Healthy runs stay within
# a few times ln C, so 25 leaves a wide margin.
EXPLODED = 25.0


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or exploded past :data:`EXPLODED` times a uniform guess's."""

    def __init__(self, epoch: int, what: str):
        super().__init__(f"{what}: training diverged (try a lower lr)")
        self.epoch = epoch


@dataclass
class EpochStats:
    """What one epoch measured."""

    loss: float
    accuracy: float
    seconds: float


def train_one_epoch(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    prepare_input: Callable[[torch.Tensor], torch.Tensor],
    runtime: Runtime,
    label_smoothing: float,
    epoch: int,
) -> EpochStats:
    """One pass over the training batches; raises :class:`TrainingDiverged` on a non-finite or exploded loss."""
    model.train()
    start = time.perf_counter()
    total_loss = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.long)
    seen = 0
    for step, (x, y) in enumerate(batches):
        with runtime.autocast():
            logits = model(prepare_input(x))
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if step % 20 == 0 and not torch.isfinite(loss).item():  # a sync every 20 steps, not every step
            raise TrainingDiverged(epoch, f"loss is {loss.item()} at epoch {epoch}, step {step}")
    totals = torch.stack([total_loss, correct.to(total_loss.dtype), torch.tensor(float(seen), device=runtime.device)])
    if runtime.distributed:  # every rank sees the whole epoch's figures, and stops on divergence alike
        torch.distributed.all_reduce(totals)
    total, right, seen = totals.tolist()
    mean_loss = total / max(seen, 1)
    limit = EXPLODED * math.log(max(2, logits.shape[1]))
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(epoch, f"mean training loss of epoch {epoch} is {mean_loss}")
    if mean_loss > limit:
        raise TrainingDiverged(
            epoch, f"mean training loss of epoch {epoch} is {mean_loss:.4g}, over {limit:.4g} ({EXPLODED:g} x ln C)"
        )
    return EpochStats(mean_loss, right / max(seen, 1), time.perf_counter() - start)


def loss_accuracy(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy (:func:`~tvs.compute.scores.log_loss`) and accuracy of predicted probabilities."""
    if not np.isfinite(probs).all():
        return math.nan, math.nan
    loss = log_loss(labels, probs)
    return float(loss), float((probs.argmax(1) == labels).mean())


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up over ``warmup_steps``, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_optimizer(model: nn.Module, lr: float, cfg: TrainConfig, steps_per_epoch: int):
    """``train.optimizer`` (AdamW, or SGD with momentum) with a linear warm-up and cosine decay, stepped per batch."""
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    schedule = warmup_cosine(steps_per_epoch * cfg.epochs, round(steps_per_epoch * cfg.warmup_epochs))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def fit(
    params: Params,
    arm_name: str,
    data: PreparedData,
    runtime: Runtime,
    books: Bookkeeping,
    generator: torch.Generator | None = None,
    initial: Initial | None = None,
) -> FitResult:
    """Train arm ``arm_name`` on ``data``'s train split; keep the best epoch by validation accuracy.

    ``books`` writes the best checkpoint each time it improves, the DVCLive curves and the resume
    state, and continues a run interrupted earlier. If the loss becomes non-finite the arm
    stops: the checkpoint keeps the best epoch so far (or the initial weights), flagged as diverged.
    ``initial`` is the arm's initial network when the caller built it already (:func:`init_model`).
    ``params`` are the run's as its sidecar records them (the global ``train.batch_size``); each
    step here takes this process's share, ``runtime.batch_size`` (:func:`~tvs.compute.runtime.make_runtime`).
    """
    arm, cfg = params.arm(arm_name), params.train
    train_rows, train_y = map(torch.from_numpy, data.split("train"))
    val_rows, val_y = map(torch.from_numpy, data.split("val"))
    generator = generator or torch.Generator().manual_seed(params.seed)

    initial = initial or init_model(params, arm, len(data.classes))
    model = initial.model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = wrap_model(model, runtime, compile=cfg.compile)
    mean = torch.tensor(initial.mean, device=runtime.device).view(1, 3, 1, 1)
    std = torch.tensor(initial.std, device=runtime.device).view(1, 3, 1, 1)
    images = images_on_device(runtime, data.images)

    def train_input(x: torch.Tensor) -> torch.Tensor:
        return to_model_input(augment(x, cfg.augment, generator), mean, std, runtime)

    def eval_input(x: torch.Tensor) -> torch.Tensor:
        return to_model_input(x, mean, std, runtime)

    lr = params.lr * arm.lr_mult
    shard_size = len(runtime.shard(torch.arange(len(train_rows))))  # this rank's images per epoch
    batch_size = runtime.batch_size or cfg.batch_size  # this rank's share (a hand-built Runtime: one process)
    steps_per_epoch = len(batch_bounds(shard_size, batch_size, fold_single=True))
    optimizer, scheduler = make_optimizer(model, lr, cfg, steps_per_epoch)
    start_epoch = books.start(model, optimizer, scheduler, generator)
    log.info(
        "%s: %s, %d train / %d val images, %d classes, %s lr %.3g, %s, %s",
        arm_name, params.model.arch, len(train_rows), len(val_rows), len(data.classes), cfg.optimizer, lr,
        runtime.device, runtime.amp_dtype or "fp32",
    )  # fmt: skip
    quiet = None if runtime.is_main else True  # None: bars only on a terminal, one log line per epoch elsewhere
    for epoch in tqdm(range(start_epoch, cfg.epochs + 1), desc=f"{arm_name}: epochs", unit="epoch", disable=quiet):
        set_backbone_trainable(model, trainable=epoch > arm.freeze_epochs)
        lr_now = optimizer.param_groups[0]["lr"]
        order = runtime.shard(torch.randperm(len(train_rows), generator=generator))
        batches = iterate_batches(images, train_rows[order], train_y[order], batch_size, runtime, fold_single=True)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch}", unit="batch", leave=False, disable=quiet)
        try:
            stats = train_one_epoch(net, bar, optimizer, scheduler, train_input, runtime, cfg.label_smoothing, epoch)
            val_batches = iterate_batches(images, val_rows, val_y, 2 * batch_size, runtime)
            val_loss, val_acc = loss_accuracy(*predict_proba(net, val_batches, eval_input, runtime))
            if not math.isfinite(val_loss):  # NaN weights from the epoch's last step
                raise TrainingDiverged(epoch, f"validation loss is {val_loss} at epoch {epoch}")
        except TrainingDiverged as err:
            books.diverged(epoch, err)
            break
        row = {
            "epoch": epoch,
            "train_loss": stats.loss,
            "train_accuracy": stats.accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": lr_now,
            "epoch_seconds": stats.seconds,
        }
        books.end_epoch(row, model)
        log.info(
            "%s epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.2e | %.1fs",
            arm_name, epoch, cfg.epochs, stats.loss, stats.accuracy, val_loss, val_acc, lr_now, stats.seconds,
        )  # fmt: skip
        if epoch < cfg.epochs:
            books.save_for_resume(epoch, model, optimizer, scheduler, generator)
    return books.finish()

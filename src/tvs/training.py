"""One training code path for both arms: batches, one epoch, evaluation, and the fit loop.

The arms differ only in :func:`init_model` (how the weights start) and in their config section
(learning-rate multiplier, frozen epochs). Everything else, the data order included, is shared.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from tvs.checkpoint import cpu_state, save_state, update_meta
from tvs.config import ArmConfig, ConfigError, Params, to_dict
from tvs.data import MANIFEST, PreparedData, load_prepared
from tvs.models import arch_spec, build_model, set_backbone_trainable, transfer_weights
from tvs.resume import ResumeSpec, clear_state, default_resume_dir, fingerprint, load_state, restore, snapshot
from tvs.resume import save_state as save_resume_state
from tvs.runtime import Runtime, make_runtime, seed_everything
from tvs.weights import load_pretrained_state

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


@dataclass
class FitResult:
    """The outcome of :func:`fit`: per-epoch history and the best epoch (by val accuracy)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = -1.0
    best_val_loss: float = math.inf
    train_seconds: float = 0.0
    diverged_epoch: int = 0  # the epoch whose loss became non-finite; 0: training did not diverge


# --- model initialisation: the one place where the arms differ ------------------------------


def init_model(params: Params, arm: ArmConfig, num_classes: int) -> nn.Module:
    """Build ``model.arch`` for ``num_classes``; load ``model.weights`` if the arm is pretrained."""
    model = build_model(params.model.arch, num_classes)
    if arm.init == "pretrained":
        state = load_pretrained_state(params.model.arch, params.model.weights)
        reset = transfer_weights(model, params.model.arch, state)
        log.info("loaded %s weights into %s; fresh head: %s", params.model.weights, params.model.arch, reset or "none")
    return model


# --- batches ----------------------------------------------------------------------------------


def iterate_batches(
    images: np.ndarray | torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, batch_size: int, runtime: Runtime
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(uint8 images, labels)`` on the device, ``batch_size`` at a time, in the given order.

    ``rows`` are cache rows and ``labels`` their classes, aligned. ``images`` is either the
    memory-mapped cache (rows gathered per batch, so memory stays flat) or a tensor already on
    the device (the GPU fast path).
    """
    cuda = runtime.device.type == "cuda"
    on_device = isinstance(images, torch.Tensor)
    if on_device:  # one copy up front: a pageable copy per batch would wait for the GPU each time
        rows, labels = rows.to(images.device), labels.to(runtime.device)
    for start in range(0, len(rows), batch_size):
        idx, y = rows[start : start + batch_size], labels[start : start + batch_size]
        if on_device:
            yield images[idx], y
            continue
        x = torch.from_numpy(images[idx.numpy()])
        x = x.pin_memory().to(runtime.device, non_blocking=True) if cuda else x
        yield x, y.to(runtime.device, non_blocking=cuda)


def to_model_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` to normalised float, in the memory layout the model runs fastest."""
    x = (x.float().div_(255.0) - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if runtime.channels_last else x


def random_flips(x: torch.Tensor, generator: torch.Generator, transpose: bool = False) -> torch.Tensor:
    """Flip each image horizontally and vertically with probability 1/2 each, batched.

    With ``transpose`` each image is also transposed with probability 1/2, which makes all
    eight symmetries of the square (90-degree rotations included) equally likely.
    """
    masks = (
        torch.rand(3, x.shape[0], generator=generator).lt(0.5).to(x.device, non_blocking=True)[:, :, None, None, None]
    )
    x = torch.where(masks[0], x.flip(-1), x)
    x = torch.where(masks[1], x.flip(-2), x)
    return torch.where(masks[2], x.transpose(-1, -2), x) if transpose else x


# --- one epoch, evaluation --------------------------------------------------------------------


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
    mean_loss = total_loss.item() / max(seen, 1)
    limit = EXPLODED * math.log(max(2, logits.shape[1]))
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(epoch, f"mean training loss of epoch {epoch} is {mean_loss}")
    if mean_loss > limit:
        raise TrainingDiverged(
            epoch, f"mean training loss of epoch {epoch} is {mean_loss:.4g}, over {limit:.4g} ({EXPLODED:g} x ln C)"
        )
    return EpochStats(mean_loss, correct.item() / max(seen, 1), time.perf_counter() - start)


@torch.inference_mode()
def predict_proba(
    model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], prepare_input: Callable, runtime: Runtime
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (float64) and the true labels, for every batch."""
    model.eval()
    probs, labels = [], []
    for x, y in batches:
        with runtime.autocast():
            logits = model(prepare_input(x))
        probs.append(logits.float().softmax(1).cpu())
        labels.append(y.cpu())
    probs = torch.cat(probs).double()
    return (probs / probs.sum(1, keepdim=True)).numpy(), torch.cat(labels).numpy()  # exact sums in float64


def evaluate_loss_accuracy(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of predicted probabilities."""
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(-np.log(picked).mean()), float((probs.argmax(1) == labels).mean())


# --- the fit loop -----------------------------------------------------------------------------


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up over ``warmup_steps``, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def fit(
    params: Params,
    arm_name: str,
    data: PreparedData,
    runtime: Runtime,
    out_dir: str | Path,
    live: Any | None = None,
    generator: torch.Generator | None = None,
    resume: ResumeSpec | None = None,
) -> FitResult:
    """Train arm ``arm_name`` on ``data``'s train split; keep the best epoch by validation accuracy.

    Writes the best checkpoint to ``out_dir`` (atomically, each time it improves) and logs
    per-epoch curves to ``live`` (a DVCLive ``Live``) when given. With ``resume``, the state
    after each epoch is saved there and a run interrupted earlier continues where it stopped.
    If the loss becomes non-finite the arm stops: the checkpoint keeps the best epoch so far (or
    the initial weights) and its sidecar says ``"diverged": true``.
    """
    arm, cfg = params.arm(arm_name), params.train
    spec = arch_spec(params.model.arch)
    train_rows, train_labels = data.split("train")
    val_rows, val_labels = data.split("val")
    check_batch_size(cfg.batch_size, len(train_rows))
    generator = generator or torch.Generator().manual_seed(params.seed)

    model = init_model(params, arm, len(data.classes)).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = _wrap(model, runtime, compile=cfg.compile)

    mean = torch.tensor(spec.mean, device=runtime.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=runtime.device).view(1, 3, 1, 1)
    images = _images_for(runtime, data.images)
    train_rows, train_y = torch.from_numpy(train_rows), torch.from_numpy(train_labels)
    val_rows, val_y = torch.from_numpy(val_rows), torch.from_numpy(val_labels)

    def train_input(x: torch.Tensor) -> torch.Tensor:
        if cfg.augment != "none":
            x = random_flips(x, generator, transpose=cfg.augment == "dihedral")
        return to_model_input(x, mean, std, runtime)

    def eval_input(x: torch.Tensor) -> torch.Tensor:
        return to_model_input(x, mean, std, runtime)

    lr = params.lr * arm.lr_mult
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(runtime.shard(torch.arange(len(train_rows)))) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps_per_epoch * cfg.epochs, round(steps_per_epoch * cfg.warmup_epochs))
    )
    result, start_epoch = FitResult(), 1
    best = initial = cpu_state(model)  # what the checkpoint holds if the very first epoch diverges
    if resume is not None and (saved := load_state(resume)) is not None:
        restore(saved, model, optimizer, scheduler, generator)
        result, start_epoch, best = FitResult(**saved["result"]), saved["epoch"] + 1, saved["best"]
        _replay(result, live, runtime)
    log.info(
        "%s: %s, %d train / %d val images, %d classes, lr %.3g, %s, %s",
        arm_name, params.model.arch, len(train_rows), len(val_rows), len(data.classes), lr,
        runtime.device, runtime.amp_dtype or "fp32",
    )  # fmt: skip
    fit_start = time.perf_counter() - result.train_seconds
    if runtime.is_main and start_epoch > 1:  # DVC deleted the output before rerunning the stage
        save_state(out_dir, best, _meta(params, arm_name, data, result))
    for epoch in tqdm(
        range(start_epoch, cfg.epochs + 1), desc=f"{arm_name}: epochs", unit="epoch", disable=not runtime.is_main
    ):
        set_backbone_trainable(model, params.model.arch, trainable=epoch > arm.freeze_epochs)
        lr_now = optimizer.param_groups[0]["lr"]
        order = runtime.shard(torch.randperm(len(train_rows), generator=generator))
        batches = iterate_batches(images, train_rows[order], train_y[order], cfg.batch_size, runtime)
        bar = tqdm(
            batches,
            total=steps_per_epoch,
            desc=f"epoch {epoch}",
            unit="batch",
            leave=False,
            disable=not runtime.is_main,
        )
        try:
            stats = train_one_epoch(net, bar, optimizer, scheduler, train_input, runtime, cfg.label_smoothing, epoch)
            val_batches = iterate_batches(images, val_rows, val_y, 2 * cfg.batch_size, runtime)
            val_probs, val_true = predict_proba(net, val_batches, eval_input, runtime)
            val_loss, val_acc = evaluate_loss_accuracy(val_probs, val_true)
            if not math.isfinite(val_loss):  # NaN weights from the epoch's last step
                raise TrainingDiverged(epoch, f"validation loss is {val_loss} at epoch {epoch}")
        except TrainingDiverged as err:
            result.diverged_epoch = epoch
            kept = f"epoch {result.best_epoch}'s weights" if result.best_epoch else "the initial weights"
            log.warning("%s: %s. Stopping this arm; its checkpoint keeps %s.", arm_name, err, kept)
            break
        row = {
            "epoch": epoch,
            "train_loss": stats.loss,
            "train_accuracy": stats.accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": lr_now,
            "epoch_seconds": stats.seconds,
            "elapsed_seconds": time.perf_counter() - fit_start,
        }
        result.history.append(row)
        log.info(
            "%s epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.2e | %.1fs",
            arm_name, epoch, cfg.epochs, stats.loss, stats.accuracy, val_loss, val_acc, lr_now, stats.seconds,
        )  # fmt: skip
        if live is not None and runtime.is_main:
            _log_epoch(live, row)
        if (val_acc, -val_loss) > (result.best_val_accuracy, -result.best_val_loss):
            result.best_epoch, result.best_val_accuracy, result.best_val_loss = epoch, val_acc, val_loss
            best = cpu_state(model)
            if runtime.is_main:
                save_state(out_dir, best, _meta(params, arm_name, data, result))
        result.train_seconds = time.perf_counter() - fit_start
        if resume is not None and runtime.is_main and epoch < cfg.epochs:
            save_resume_state(resume, snapshot(epoch, model, optimizer, scheduler, generator, best, asdict(result)))
    result.train_seconds = time.perf_counter() - fit_start
    if runtime.is_main:
        if best is initial:  # diverged in the first epoch: evaluate still gets a model, flagged
            save_state(out_dir, initial, _meta(params, arm_name, data, result))
        else:  # the weights on disk are the best epoch's; the sidecar gains the full history and time
            update_meta(out_dir, _meta(params, arm_name, data, result))
        if resume is not None:
            clear_state(resume)
    return result


def check_batch_size(batch_size: int, train_images: int) -> None:
    """A batch cannot be larger than the training split: say so before any work starts."""
    if batch_size > train_images:
        raise ConfigError(
            f"train.batch_size: {batch_size} exceeds the {train_images} training images; lower it "
            "(the split fractions and data.train_fraction set the training split's size)"
        )


def _replay(result: FitResult, live: Any | None, runtime: Runtime) -> None:
    """Log the epochs done before an interruption again: DVC deleted the DVCLive folder too."""
    if live is not None and runtime.is_main:
        for row in result.history:
            _log_epoch(live, row)


def _meta(params: Params, arm_name: str, data: PreparedData, result: FitResult) -> dict[str, Any]:
    spec = arch_spec(params.model.arch)
    return {
        "arm": arm_name,
        "arch": params.model.arch,
        "init": params.arm(arm_name).init,
        "weights": params.model.weights if params.arm(arm_name).init == "pretrained" else None,
        "classes": data.classes,
        "image_size": int(data.images.shape[-1]),
        "mean": list(spec.mean),
        "std": list(spec.std),
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "best_val_loss": result.best_val_loss,
        "train_seconds": result.train_seconds,
        "diverged": result.diverged_epoch > 0,
        "diverged_epoch": result.diverged_epoch or None,
        "history": result.history,
        "params": to_dict(params),
    }


def _log_epoch(live: Any, row: dict[str, float]) -> None:
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        split, metric = key.split("_", 1)
        live.log_metric(f"{split}/{metric}", row[key])
    live.log_metric("lr", row["lr"])
    live.log_metric("epoch_seconds", row["epoch_seconds"])
    live.next_step()


def _images_for(runtime: Runtime, images: np.ndarray) -> np.ndarray | torch.Tensor:
    """On CUDA, the whole uint8 cache goes to the GPU once if it takes under a quarter of its
    free memory (no host copies per batch); otherwise batches are gathered from the memory map."""
    if runtime.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(runtime.device)
        if images.nbytes < free // 4:
            return torch.from_numpy(np.array(images)).to(runtime.device)
    return images


def _wrap(model: nn.Module, runtime: Runtime, compile: bool) -> nn.Module:
    """DDP under torchrun, then ``torch.compile`` if asked; the unwrapped model is what we save."""
    net = model
    if runtime.world_size > 1:
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    return torch.compile(net) if compile else net


# --- the stage's worker ---------------------------------------------------------------------


def train_arm(
    *, arm: str, data_dir: Path, out: Path, params: Params, live_dir: Path | None = None, min_steps: int = 0
) -> dict[str, Any]:
    """Train one arm and write its checkpoint; per-epoch curves go to DVCLive in ``live_dir``.

    It trains on the nested subset of the training split for ``data.train_fraction`` and ``seed``
    (what ``prepare`` kept, or a study cell's own subset), for at least ``min_steps`` steps.

    An interrupted run resumes from its last epoch: the state is kept beside ``out`` (see
    :mod:`tvs.resume`), and used again only with the same params, data and code.
    """
    from tvs.study import cell_setup  # the subset and step-budget rule live with the data-efficiency study

    data, params = cell_setup(load_prepared(data_dir), params, min_steps)
    check_batch_size(params.train.batch_size, len(data.split("train")[0]))  # before any work starts
    runtime = make_runtime(params.train)
    generator = seed_everything(params.seed)
    resume = ResumeSpec(default_resume_dir(out), fingerprint(params, arm, Path(data_dir) / MANIFEST))
    with _live(live_dir, runtime) as live:
        result = fit(params, arm, data, runtime, out, live=live, generator=generator, resume=resume)
    if result.diverged_epoch:
        log.warning("%s: diverged at epoch %d; evaluate will report it as diverged", arm, result.diverged_epoch)
    if result.best_epoch:
        log.info(
            "%s: best val accuracy %.4f at epoch %d, %.1fs",
            arm,
            result.best_val_accuracy,
            result.best_epoch,
            result.train_seconds,
        )
    return {"best_epoch": result.best_epoch, "train_seconds": result.train_seconds, "diverged": result.diverged_epoch}


def _live(live_dir: Path | None, runtime: Runtime):
    """A DVCLive logger writing only plots/metrics files (DVC itself tracks the stage)."""
    import contextlib

    from dvclive import Live

    if live_dir is None or not runtime.is_main:
        return contextlib.nullcontext(None)
    return Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)

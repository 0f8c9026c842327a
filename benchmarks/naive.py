"""The seed's training loop against the package's ``fit``, at equal epochs, on the same images.

The naive loop is what the project replaced: torchvision ``ImageFolder`` decoding every PNG
every epoch, ``Resize`` + ``ToTensor`` (+ flips and ``Normalize``, so both sides train on the same
augmentation and scale), fp32, contiguous layout, a default ``DataLoader``. Both sides start from
the same weights (``init_model``), use the same optimizer and schedule (``make_optimizer``), label
smoothing and epoch count, keep the epoch with the best validation accuracy, and are scored on the
same test images, so the accuracy difference is tested pairwise (``mcnemar_exact``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from benchmarks.common import fit_and_score, precision_name, summarize
from tvs.compute.batches import predict_proba
from tvs.compute.runtime import Runtime, configure_threads, seed_everything
from tvs.config import Params
from tvs.data.prepared import PreparedData, load_prepared
from tvs.evaluate.stats import mcnemar_exact
from tvs.models.archs import arch_spec
from tvs.models.weights import init_model
from tvs.train.loop import loss_accuracy, make_optimizer

log = logging.getLogger(__name__)


def naive_datasets(raw: Path, data: PreparedData, image_size: int, mean, std) -> dict[str, Subset]:
    """Train/val/test ``Subset``s of ``ImageFolder(raw)`` holding exactly the manifest's splits, in its order."""
    from torchvision import datasets, transforms

    base = [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    tail = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    flips = [transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip()]
    out = {}
    for split, tf in (("train", base + flips + tail), ("val", base + tail), ("test", base + tail)):
        folder = datasets.ImageFolder(str(raw), transform=transforms.Compose(tf))
        if folder.classes != data.classes:
            raise ValueError(f"{raw}: ImageFolder classes {folder.classes} differ from the prepared {data.classes}")
        index = {Path(p).relative_to(raw).as_posix(): i for i, (p, _) in enumerate(folder.samples)}
        paths = data.manifest.loc[data.manifest["split"] == split, "path"]
        out[split] = Subset(folder, [index[p] for p in paths])
    return out


def naive_epoch(model: nn.Module, loader: DataLoader, optimizer, scheduler, label_smoothing: float) -> float:
    """One epoch of the seed's loop; returns its seconds (data loading included)."""
    model.train()
    start = time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return time.perf_counter() - start


def run_naive(params: Params, raw: Path, prepared: Path, arm: str, batch: int) -> dict[str, Any]:
    """Train ``params.train.epochs`` epochs the seed's way; score the best-val epoch on the test split."""
    data, spec, cfg = load_prepared(prepared), arch_spec(params.model.arch), params.train
    sets = naive_datasets(raw, data, params.data.image_size, spec.mean, spec.std)
    configure_threads(cfg.num_threads)
    generator = seed_everything(params.seed)
    model = init_model(params, params.arm(arm), len(data.classes))
    train = DataLoader(sets["train"], batch_size=batch, shuffle=True, generator=generator)
    val, test = (DataLoader(sets[s], batch_size=batch) for s in ("val", "test"))
    lr = params.lr * params.arm(arm).lr_mult
    optimizer, scheduler = make_optimizer(model, lr, cfg, math.ceil(len(sets["train"]) / batch))
    runtime = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)  # fp32, contiguous

    def predict(loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:  # already model input: no preparation
        return predict_proba(model, iter(loader), lambda x: x, runtime)

    seconds, best, best_key = [], None, (-1.0, -math.inf)
    for epoch in range(1, cfg.epochs + 1):
        seconds.append(naive_epoch(model, train, optimizer, scheduler, cfg.label_smoothing))
        val_loss, val_acc = loss_accuracy(*predict(val))
        log.info("naive epoch %d: %.1fs, val acc %.4f", epoch, seconds[-1], val_acc)
        if (val_acc, -val_loss) > best_key:
            best_key, best = (val_acc, -val_loss), copy.deepcopy(model.state_dict())
    model.load_state_dict(best)
    probs, labels = predict(test)
    return _summary("naive", seconds, len(sets["train"]), probs.argmax(1) == labels, best_key[0])


def run_fast(params: Params, prepared: Path, arm: str) -> dict[str, Any]:
    """Train with the package's ``fit`` on the cache; score its checkpoint as the evaluate stage does."""
    result, runtime, correct = fit_and_score(params, arm, prepared)
    precision = precision_name(runtime.amp_dtype)
    seconds, n_train = [row["epoch_seconds"] for row in result.history], len(load_prepared(prepared).split("train")[0])
    summary = _summary(f"fast ({precision})", seconds, n_train, correct, result.best_val_accuracy)
    return summary | {
        "precision": precision,
        "channels_last": runtime.channels_last,
        "diverged_epoch": result.diverged_epoch,
    }


def _summary(name: str, seconds: list[float], n_train: int, correct: np.ndarray, best_val: float) -> dict[str, Any]:
    epoch = summarize(seconds)
    return {
        "name": name,
        "epoch_seconds": epoch,
        "train_images": n_train,
        "img_s": n_train / epoch["median"],
        "best_val_accuracy": best_val,
        "test_accuracy": float(correct.mean()),
        "test_images": len(correct),
        "correct": correct.tolist(),
    }


def paired_comparison(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Accuracy difference ``a - b`` on the same test images, with the exact McNemar p-value."""
    test = mcnemar_exact(a["correct"], b["correct"])
    return {
        "accuracy_delta": a["test_accuracy"] - b["test_accuracy"],
        "only_first_correct": test.only_a,
        "only_second_correct": test.only_b,
        "mcnemar_p": test.p_value,
        "equal_at_5pct": test.p_value >= 0.05,
    }


def equal_epochs(params: Params, raw: Path, prepared: Path, arm: str, naive_batch: int) -> dict[str, Any]:
    """Naive loop, fast path in fp32 and fast path at ``train.precision`` (auto), equal epochs each.

    Speed-up: median naive epoch over median fast epoch. Accuracy: each pair on the same test
    images. fast-fp32 vs fast-auto is the accuracy check of the precision default.
    """
    fp32 = dataclasses.replace(params, train=dataclasses.replace(params.train, precision="fp32"))
    runs = {
        "naive": run_naive(fp32, raw, prepared, arm, naive_batch),
        "fast_fp32": run_fast(fp32, prepared, arm),
        "fast_auto": run_fast(params, prepared, arm),
    }
    naive_s = runs["naive"]["epoch_seconds"]["median"]
    return {
        "epochs": params.train.epochs,
        "arm_init": arm,
        "runs": runs,
        "speedup_vs_naive": naive_s / runs["fast_auto"]["epoch_seconds"]["median"],
        "speedup_fp32_vs_naive": naive_s / runs["fast_fp32"]["epoch_seconds"]["median"],
        "accuracy_fast_vs_naive": paired_comparison(runs["fast_auto"], runs["naive"]),
        "accuracy_auto_vs_fp32": paired_comparison(runs["fast_auto"], runs["fast_fp32"]),
    }

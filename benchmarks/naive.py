"""The seed's training loop against the project's fast path, at equal epochs, on the same images.

The naive loop is what the project replaced: torchvision ``ImageFolder`` decoding every PNG
every epoch, ``Resize`` + ``ToTensor`` (+ flips and ``Normalize``, so both sides train on the same
augmentation and scale), fp32, contiguous layout, batch 32, a default ``DataLoader``. Both sides
start from the same weights, use the same optimizer, schedule, label smoothing and epoch count,
keep the epoch with the best validation accuracy, and are scored on the same test images, so
the accuracy difference can be tested pairwise (exact McNemar test).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import binomtest
from torch import nn
from torch.utils.data import DataLoader, Subset

from benchmarks.common import summarize
from benchmarks.throughput import precision_name
from tvs.config import Params
from tvs.data import load_prepared
from tvs.evaluation import predict_arm
from tvs.models import arch_spec
from tvs.runtime import configure_threads, make_runtime, seed_everything
from tvs.training import evaluate_loss_accuracy, fit, init_model, warmup_cosine

log = logging.getLogger(__name__)


def naive_datasets(raw: Path, manifest: pd.DataFrame, classes: list[str], image_size: int, mean, std) -> dict:
    """Train/val/test ``Subset``s of ``ImageFolder(raw)`` holding exactly the manifest's splits, in its order."""
    from torchvision import datasets, transforms

    base = [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    tail = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    flips = [transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip()]
    train_tf, eval_tf = transforms.Compose(base + flips + tail), transforms.Compose(base + tail)
    out = {}
    for split, tf in (("train", train_tf), ("val", eval_tf), ("test", eval_tf)):
        folder = datasets.ImageFolder(str(raw), transform=tf)
        if folder.classes != classes:
            raise ValueError(f"{raw}: ImageFolder classes {folder.classes} differ from the prepared {classes}")
        index = {Path(p).relative_to(raw).as_posix(): i for i, (p, _) in enumerate(folder.samples)}
        paths = manifest.loc[manifest["split"] == split, "path"]
        out[split] = Subset(folder, [index[p] for p in paths])
    return out


def naive_epoch(model: nn.Module, loader: DataLoader, optimizer, scheduler, label_smoothing: float) -> float:
    """One epoch of the seed's loop; returns its seconds (data loading included)."""
    model.train()
    start = time.perf_counter()
    running = 0.0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        running += loss.item()
    return time.perf_counter() - start


@torch.no_grad()
def naive_predict(model: nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels over ``loader`` (fp32, eval mode)."""
    model.eval()
    probs, labels = [], []
    for x, y in loader:
        probs.append(model(x).softmax(1).double())
        labels.append(y)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def run_naive(params: Params, raw: Path, prepared: Path, arm: str, batch: int, workers: int) -> dict[str, Any]:
    """Train ``params.train.epochs`` epochs the seed's way; score the best-val epoch on the test split."""
    data = load_prepared(prepared)
    spec, cfg = arch_spec(params.model.arch), params.train
    sets = naive_datasets(raw, data.manifest, data.classes, params.data.image_size, spec.mean, spec.std)
    configure_threads(cfg.num_threads)
    generator = seed_everything(params.seed)
    model = init_model(params, params.arm(arm), len(data.classes))
    train = DataLoader(sets["train"], batch_size=batch, shuffle=True, num_workers=workers, generator=generator)
    val, test = (DataLoader(sets[s], batch_size=batch, num_workers=workers) for s in ("val", "test"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=cfg.weight_decay)
    steps = math.ceil(len(sets["train"]) / batch)
    schedule = warmup_cosine(steps * cfg.epochs, round(steps * cfg.warmup_epochs))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    seconds, best, best_key = [], None, (-1.0, -math.inf)
    for epoch in range(1, cfg.epochs + 1):
        seconds.append(naive_epoch(model, train, optimizer, scheduler, cfg.label_smoothing))
        val_loss, val_acc = evaluate_loss_accuracy(*naive_predict(model, val))
        log.info("naive epoch %d: %.1fs, val acc %.4f", epoch, seconds[-1], val_acc)
        if (val_acc, -val_loss) > best_key:
            best_key, best = (val_acc, -val_loss), copy.deepcopy(model.state_dict())
    model.load_state_dict(best)
    probs, labels = naive_predict(model, test)
    return _summary("naive", seconds, len(sets["train"]), probs, labels, best_key[0])


def run_fast(params: Params, prepared: Path, arm: str) -> dict[str, Any]:
    """Train with the project's own ``fit`` on the cache; score its checkpoint with ``predict_arm``."""
    data = load_prepared(prepared)
    runtime = make_runtime(params.train)
    with tempfile.TemporaryDirectory() as out:
        result = fit(params, arm, data, runtime, out, generator=seed_everything(params.seed))
        probs, labels, _ = predict_arm(Path(out), prepared, split="test")
    seconds = [row["epoch_seconds"] for row in result.history]
    precision = precision_name(runtime.amp_dtype)
    n_train = len(data.split("train")[0])
    summary = _summary(f"fast ({precision})", seconds, n_train, probs, labels, result.best_val_accuracy)
    summary["precision"], summary["channels_last"] = precision, runtime.channels_last
    summary["diverged_epoch"] = getattr(result, "diverged_epoch", 0)
    return summary


def _summary(name: str, seconds: list[float], n_train: int, probs, labels, best_val: float) -> dict[str, Any]:
    epoch = summarize(seconds)
    return {
        "name": name,
        "epoch_seconds": epoch,
        "train_images": n_train,
        "img_s": n_train / epoch["median"],
        "best_val_accuracy": best_val,
        "test_accuracy": float((probs.argmax(1) == labels).mean()),
        "test_images": len(labels),
        "correct": (probs.argmax(1) == labels).tolist(),
    }


def paired_comparison(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Accuracy difference ``a - b`` on the same test images, with the exact McNemar p-value."""
    ca, cb = np.asarray(a["correct"], bool), np.asarray(b["correct"], bool)
    only_a, only_b = int((ca & ~cb).sum()), int((~ca & cb).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {
        "accuracy_delta": a["test_accuracy"] - b["test_accuracy"],
        "only_first_correct": only_a,
        "only_second_correct": only_b,
        "mcnemar_p": float(p),
        "equal_at_5pct": bool(p >= 0.05),
    }


def equal_epochs(params: Params, raw: Path, prepared: Path, arm: str, naive_batch: int, workers: int) -> dict[str, Any]:
    """Naive loop, fast path in fp32 and fast path at ``train.precision`` (auto), equal epochs each.

    Speed-up: median naive epoch over median fast epoch. Accuracy: each pair on the same test
    images. fast-fp32 vs fast-auto is the accuracy check of the precision default.
    """
    fp32 = dataclasses.replace(params, train=dataclasses.replace(params.train, precision="fp32"))
    runs = {
        "naive": run_naive(fp32, raw, prepared, arm, naive_batch, workers),
        "fast_fp32": run_fast(fp32, prepared, arm),
        "fast_auto": run_fast(params, prepared, arm),
    }
    return {
        "epochs": params.train.epochs,
        "arm_init": arm,
        "runs": runs,
        "speedup_vs_naive": runs["naive"]["epoch_seconds"]["median"] / runs["fast_auto"]["epoch_seconds"]["median"],
        "speedup_fp32_vs_naive": runs["naive"]["epoch_seconds"]["median"]
        / runs["fast_fp32"]["epoch_seconds"]["median"],
        "accuracy_fast_vs_naive": paired_comparison(runs["fast_auto"], runs["naive"]),
        "accuracy_auto_vs_fp32": paired_comparison(runs["fast_auto"], runs["fast_fp32"]),
    }

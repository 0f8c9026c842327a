"""Training throughput on any device: the real data path against the pure compute ceiling.

Both sides run the project's own ``train_one_epoch`` on the same model, optimizer, batch size,
precision and memory layout. The *pipeline* feeds it the real batches: rows gathered from the
uint8 cache by ``iterate_batches``, flipped by ``random_flips`` and converted by
``to_model_input``, exactly as ``fit`` does. The *ceiling* feeds it one random batch that is
already a normalised float tensor on the device, so everything but the model's step is free.
Their ratio is the share of the hardware the data path leaves to the model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.common import summarize
from tvs.config import TrainConfig
from tvs.models import arch_spec, build_model
from tvs.runtime import Runtime, make_runtime
from tvs.training import _images_for, _wrap, iterate_batches, random_flips, to_model_input, train_one_epoch

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Trainer:
    """A model ready to step, with everything ``train_one_epoch`` needs."""

    runtime: Runtime
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    mean: torch.Tensor
    std: torch.Tensor
    batch_size: int
    num_classes: int
    generator: torch.Generator


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """``fp32``, ``bf16`` or ``fp16``: the ``train.precision`` name of an autocast dtype."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]


def runtime_for(device: str, precision: str, channels_last: bool, threads: int = 0) -> Runtime:
    """The project's own decision function, for one precision and layout (``threads`` 0: every core)."""
    config = TrainConfig(precision=precision, channels_last=channels_last, device=device, num_threads=threads)
    return make_runtime(config)


def make_trainer(
    arch: str, num_classes: int, runtime: Runtime, batch_size: int, compile: bool = False, seed: int = 0
) -> Trainer:
    """Build ``arch`` (random weights) as ``fit`` does: device, layout, then ``torch.compile``."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    spec = arch_spec(arch)
    # A small constant lr: these steps measure speed, they must only keep the weights finite.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return Trainer(
        runtime=runtime,
        net=_wrap(model, runtime, compile=compile),
        optimizer=optimizer,
        scheduler=scheduler,
        mean=torch.tensor(spec.mean, device=runtime.device).view(1, 3, 1, 1),
        std=torch.tensor(spec.std, device=runtime.device).view(1, 3, 1, 1),
        batch_size=batch_size,
        num_classes=num_classes,
        generator=torch.Generator().manual_seed(seed),
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_epoch(trainer: Trainer, batches: Batches, prepare_input: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Seconds for ``train_one_epoch`` over ``batches``, the device drained before and after."""
    sync(trainer.runtime.device)
    start = time.perf_counter()
    train_one_epoch(trainer.net, batches, trainer.optimizer, trainer.scheduler, prepare_input, trainer.runtime, 0.1, 1)
    sync(trainer.runtime.device)
    return time.perf_counter() - start


def epoch_order(rows: torch.Tensor, images: int, generator: torch.Generator) -> torch.Tensor:
    """A random order of ``images`` positions into ``rows``, cycling when there are fewer rows."""
    cycles = math.ceil(images / len(rows))
    return torch.cat([torch.randperm(len(rows), generator=generator) for _ in range(cycles)])[:images]


def pipeline_seconds(
    trainer: Trainer, images: np.ndarray | torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, n_images: int
) -> float:
    """One pass of the real data path (gather, flips, normalise, layout) over ``n_images`` images."""
    order = epoch_order(rows, n_images, trainer.generator)
    batches = iterate_batches(images, rows[order], labels[order], trainer.batch_size, trainer.runtime)

    def train_input(x: torch.Tensor) -> torch.Tensor:
        return to_model_input(random_flips(x, trainer.generator), trainer.mean, trainer.std, trainer.runtime)

    return timed_epoch(trainer, batches, train_input)


def ceiling_seconds(trainer: Trainer, image_size: int, n_batches: int) -> float:
    """``n_batches`` steps on one random batch that is already model input on the device."""
    rt, bs = trainer.runtime, trainer.batch_size
    raw = torch.randint(0, 256, (bs, 3, image_size, image_size), dtype=torch.uint8, generator=trainer.generator)
    x = to_model_input(raw.to(rt.device), trainer.mean, trainer.std, rt)
    y = torch.randint(0, trainer.num_classes, (bs,), generator=trainer.generator).to(rt.device)
    return timed_epoch(trainer, ((x, y) for _ in range(n_batches)), lambda t: t)


def pipeline_vs_ceiling(
    trainer: Trainer,
    cache: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray,
    n_batches: int,
    reps: int,
    on_device: bool = True,
) -> dict[str, Any]:
    """Images/s of the pipeline and of the ceiling, interleaved ``reps`` times, and their ratio.

    ``cache`` is the prepared uint8 cache (memory-mapped). On CUDA it goes to the device first,
    as ``fit`` does when it fits; ``on_device=False`` keeps it on the host, which is ``fit``'s
    path for a cache too large for the GPU (pinned, non-blocking copies per batch).
    """
    images = _images_for(trainer.runtime, cache) if on_device else cache
    rows_t, labels_t = torch.from_numpy(np.asarray(rows)), torch.from_numpy(np.asarray(labels))
    size, n = int(cache.shape[-1]), n_batches * trainer.batch_size
    pipeline_seconds(trainer, images, rows_t, labels_t, 2 * trainer.batch_size)  # warm-up: kernels, allocator
    ceiling_seconds(trainer, size, 2)
    pipe, ceil = [], []
    for rep in range(reps):  # alternate which goes first, so drift (heat, other load) hits both alike
        first_pipe = rep % 2 == 0
        if first_pipe:
            pipe.append(n / pipeline_seconds(trainer, images, rows_t, labels_t, n))
        ceil.append(n / ceiling_seconds(trainer, size, n_batches))
        if not first_pipe:
            pipe.append(n / pipeline_seconds(trainer, images, rows_t, labels_t, n))
    p, c = summarize(pipe), summarize(ceil)
    return {
        "images_per_pass": n,
        "pipeline_img_s": p,
        "ceiling_img_s": c,
        "ratio": p["median"] / c["median"],
        "paired_ratio": summarize([a / b for a, b in zip(pipe, ceil, strict=True)]),
    }


def precision_grid(
    combos: list[dict[str, Any]],
    arch: str,
    device: str,
    image_size: int,
    batch_size: int,
    n_batches: int,
    reps: int,
    threads: int = 0,
) -> list[dict[str, Any]]:
    """Ceiling images/s of each ``{"precision", "channels_last", "compile"}`` combination of ``arch``.

    All models are built first and then stepped round-robin, ``reps`` times, so that every
    combination sees the same machine state; speed-ups are relative to the first combination.
    """
    trainers = []
    for combo in combos:
        rt = runtime_for(device, combo["precision"], combo["channels_last"], threads)
        trainer = make_trainer(arch, 2, rt, batch_size, compile=combo.get("compile", False))
        ceiling_seconds(trainer, image_size, 2)  # warm-up (and compilation)
        trainers.append(trainer)
    speeds: list[list[float]] = [[] for _ in combos]
    for _ in range(reps):
        for i, trainer in enumerate(trainers):
            speeds[i].append(n_batches * batch_size / ceiling_seconds(trainer, image_size, n_batches))
    rows = []
    for combo, trainer, values in zip(combos, trainers, speeds, strict=True):
        summary = summarize(values)
        rows.append(
            {
                "arch": arch,
                "image_size": image_size,
                "batch_size": batch_size,
                **combo,
                "amp_dtype": precision_name(trainer.runtime.amp_dtype),
                "ceiling_img_s": summary,
                "speedup": summary["median"] / summarize(speeds[0])["median"],
            }
        )
    return rows


CPU_COMBOS = [
    {"precision": "fp32", "channels_last": False},
    {"precision": "fp32", "channels_last": True},
    {"precision": "bf16", "channels_last": False},
    {"precision": "bf16", "channels_last": True},
]


def fastest(rows: list[dict[str, Any]], arch: str) -> dict[str, Any]:
    """The grid row of ``arch`` with the highest median ceiling."""
    return max((r for r in rows if r["arch"] == arch), key=lambda r: r["ceiling_img_s"]["median"])

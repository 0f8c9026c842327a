"""Training throughput on any device: the real data path against the pure compute ceiling.

Both sides run the package's own ``train_one_epoch`` on the same model, optimizer, batch size,
precision and memory layout. The *pipeline* feeds it as ``fit`` does: rows gathered from the
uint8 cache by ``iterate_batches``, flipped by ``random_flips``, converted by ``to_model_input``.
The *ceiling* feeds it one random batch that is already normalised model input on the device, so
everything but the model's step is free. Their ratio is the share of the hardware the data path
leaves to the model.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.common import PROJECT, precision_name, summarize
from tvs.compute.batches import images_on_device, iterate_batches, to_model_input
from tvs.compute.runtime import Runtime, make_runtime, wrap_model
from tvs.config import TrainConfig
from tvs.models.archs import arch_spec, build_model
from tvs.train.augment import random_flips
from tvs.train.loop import train_one_epoch

CPU_COMBOS = [{"precision": p, "channels_last": layout} for p in ("fp32", "bf16") for layout in (False, True)]


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
    generator: torch.Generator


def make_trainer(arch: str, config: TrainConfig) -> Trainer:
    """``make_runtime`` decides device, precision and layout from ``config``; ``arch`` (random weights)
    is built as ``fit`` builds it. ``config`` also gives the batch size and whether to compile."""
    runtime = make_runtime(config)
    torch.manual_seed(0)
    model = build_model(arch, 2).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    spec = arch_spec(arch)
    # A small constant lr: these steps measure speed, they must only keep the weights finite.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    mean, std = (torch.tensor(v, device=runtime.device).view(1, 3, 1, 1) for v in (spec.mean, spec.std))
    net = wrap_model(model, runtime, compile=config.compile)
    return Trainer(runtime, net, optimizer, scheduler, mean, std, config.batch_size, torch.Generator().manual_seed(0))


def timed_epoch(trainer: Trainer, batches: Iterator, prepare_input: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Seconds for ``train_one_epoch`` over ``batches``, the device drained before and after."""
    cuda = trainer.runtime.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(trainer.runtime.device)
    start = time.perf_counter()
    train_one_epoch(trainer.net, batches, trainer.optimizer, trainer.scheduler, prepare_input, trainer.runtime, 0.1, 1)
    if cuda:
        torch.cuda.synchronize(trainer.runtime.device)
    return time.perf_counter() - start


def pipeline_seconds(trainer: Trainer, images, rows: torch.Tensor, labels: torch.Tensor, n_images: int) -> float:
    """One pass of the real data path (gather, flips, normalise, layout) over ``n_images`` images."""
    cycles = math.ceil(n_images / len(rows))  # a random order, cycling when there are fewer rows
    order = torch.cat([torch.randperm(len(rows), generator=trainer.generator) for _ in range(cycles)])[:n_images]
    batches = iterate_batches(images, rows[order], labels[order], trainer.batch_size, trainer.runtime)

    def train_input(x: torch.Tensor) -> torch.Tensor:
        return to_model_input(random_flips(x, trainer.generator), trainer.mean, trainer.std, trainer.runtime)

    return timed_epoch(trainer, batches, train_input)


def ceiling_seconds(trainer: Trainer, image_size: int, n_batches: int) -> float:
    """``n_batches`` steps on one random batch that is already model input on the device."""
    rt, bs, gen = trainer.runtime, trainer.batch_size, trainer.generator
    raw = torch.randint(0, 256, (bs, 3, image_size, image_size), dtype=torch.uint8, generator=gen)
    x = to_model_input(raw.to(rt.device), trainer.mean, trainer.std, rt)
    y = torch.randint(0, 2, (bs,), generator=gen).to(rt.device)
    return timed_epoch(trainer, ((x, y) for _ in range(n_batches)), lambda t: t)


def pipeline_vs_ceiling(
    trainer: Trainer, cache: np.ndarray, rows: np.ndarray, labels: np.ndarray, n_batches: int, reps: int, on_device=True
) -> dict[str, Any]:
    """Images/s of the pipeline and of the ceiling, interleaved ``reps`` times, and their ratio.

    ``cache`` is the prepared uint8 cache; ``images_on_device`` puts it on the GPU when it fits, as
    ``fit`` does. ``on_device=False`` keeps it on the host (pinned, non-blocking copies per batch).
    """
    images = images_on_device(trainer.runtime, cache) if on_device else cache
    rows_t, labels_t = torch.from_numpy(np.asarray(rows)), torch.from_numpy(np.asarray(labels))
    size, n = int(cache.shape[-1]), n_batches * trainer.batch_size
    pipeline_seconds(trainer, images, rows_t, labels_t, 2 * trainer.batch_size)  # warm-up: kernels, allocator
    ceiling_seconds(trainer, size, 2)
    pipe, ceil = [], []
    for rep in range(reps):  # alternate which goes first, so drift (heat, other load) hits both alike
        if rep % 2 == 0:
            pipe.append(n / pipeline_seconds(trainer, images, rows_t, labels_t, n))
        ceil.append(n / ceiling_seconds(trainer, size, n_batches))
        if rep % 2 == 1:
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
    combos: list[dict[str, Any]], arch: str, image_size: int, batch_size: int, n_batches: int, reps: int, threads: int
) -> list[dict[str, Any]]:
    """CPU ceiling images/s of each ``{"precision", "channels_last"}`` combination of ``arch``.

    All models are built first and then stepped round-robin, ``reps`` times, so that every
    combination sees the same machine state; speed-ups are relative to the first combination.
    """
    trainers = []
    for combo in combos:
        config = TrainConfig(**combo, batch_size=batch_size, device="cpu", num_threads=threads)
        trainers.append(make_trainer(arch, config))
        ceiling_seconds(trainers[-1], image_size, 2)  # warm-up: oneDNN builds its kernels
    speeds: list[list[float]] = [[] for _ in combos]
    for _ in range(reps):
        for i, trainer in enumerate(trainers):
            speeds[i].append(n_batches * batch_size / ceiling_seconds(trainer, image_size, n_batches))
    base = summarize(speeds[0])["median"]
    rows = []
    for combo, trainer, values in zip(combos, trainers, speeds, strict=True):
        row = {"arch": arch, "image_size": image_size, "batch_size": batch_size, **combo}
        row["amp_dtype"] = precision_name(trainer.runtime.amp_dtype)
        summary = summarize(values)
        rows.append(row | {"ceiling_img_s": summary, "speedup": summary["median"] / base})
    return rows


def grid_under_isa(isa: str, **grid: Any) -> list[dict[str, Any]]:
    """:func:`precision_grid` in a fresh interpreter whose oneDNN is held to instruction set ``isa``.

    oneDNN reads ``ONEDNN_MAX_CPU_ISA`` once, when it starts, hence the separate process. It
    stands in for CPUs we do not have: without bf16 instructions oneDNN emulates bf16.
    """
    code = "import json, sys; from benchmarks.throughput import precision_grid as g; "
    code += "print(json.dumps(g(**json.loads(sys.argv[1]))))"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(grid)], cwd=PROJECT, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"precision grid under {isa} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.splitlines()[-1])

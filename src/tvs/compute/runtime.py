"""Where and how training runs: device, precision, threads, seeding and data sharding.

Each is decided in exactly one function here and passed down as a :class:`Runtime`, never looked
up in the middle of a loop. Under ``torchrun`` (``WORLD_SIZE`` set, one process or several) the
process group is set up here (NCCL on CUDA, gloo on the CPU), so that a one-GPU torchrun runs the
code path of eight; each rank takes its own shard of every batch order and ``train.batch_size / WORLD_SIZE``
images of every global batch (:func:`per_process_batch`), so that one step of N processes is one
step of one process on the same ``train.batch_size`` images (DDP averages the gradients).
:mod:`tvs.train.launch` starts the processes when the stage was not started under ``torchrun``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tvs.config import TrainConfig
from tvs.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """The decisions every training and evaluation function receives."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None: full fp32
    channels_last: bool
    rank: int = 0
    world_size: int = 1
    distributed: bool = False  # a process group is set up: DDP and the all-reduces run, one process or several
    batch_size: int | None = None  # this process's share of train.batch_size (per_process_batch); None: no training

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and logs metrics."""
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass, or nothing for fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's share of a permutation (equal-length shards, as DistributedSampler).

        Strided, so that batch k of every rank, ``per_process_batch`` images each, together hold
        exactly the images of batch k of one process: positions ``k*B`` to ``(k+1)*B - 1`` of ``order``.
        The last ``len(order) % world_size`` images of the order are left out of this epoch.
        """
        if self.world_size == 1:
            return order
        usable = len(order) - len(order) % self.world_size
        return order[self.rank : usable : self.world_size]


def per_process_batch(batch_size: int, processes: int) -> int:
    """Each process's share of the global ``train.batch_size``; it must divide evenly, into at least 2 images.

    On the CPU each process's BatchNorm normalises its own share (no SyncBatchNorm there), and
    BatchNorm cannot train on a batch of one image (:func:`tvs.compute.batches.batch_bounds`).
    """
    if batch_size % processes:
        raise ConfigError(
            f"train.batch_size: {batch_size} does not split evenly over {processes} processes (train.nproc, or "
            f"torchrun's process count); each process takes an equal share of every batch: use a multiple "
            f"of {processes}"
        )
    if processes > 1 and batch_size // processes < 2:
        raise ConfigError(
            f"train.batch_size: {batch_size} over {processes} processes leaves each a batch of one image, which "
            f"BatchNorm cannot train on; use at least {2 * processes}"
        )
    return batch_size // processes


def check_processes(device: torch.device, processes: int) -> None:
    """``processes`` on this machine need one GPU each on CUDA, and DDP needs them to be different GPUs."""
    if processes == 1 or device.type != "cuda":
        return
    if processes > torch.cuda.device_count():
        raise ConfigError(
            f"train.nproc: {processes} processes on this machine but only {torch.cuda.device_count()} GPU(s) "
            "are visible; each process needs its own GPU"
        )
    if device.index is not None and "LOCAL_RANK" not in os.environ:  # an explicit cuda:N, outside torchrun
        raise ConfigError(
            f"train.device: cuda:{device.index} names one GPU, but train.nproc: {processes} processes need one "
            "each; use 'cuda' or 'auto'"
        )


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present (this rank's GPU under torchrun), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: {name!r} is not a device; use 'auto', 'cpu' or 'cuda[:N]'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available; use 'auto' or 'cpu'")
    if device.type == "cuda" and device.index is None:  # plain "cuda": this rank's GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device: {name} requested but only {torch.cuda.device_count()} GPU(s) are visible")
    return device


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision``; ``auto`` is what the device was measured to run fastest.

    On the CPU, bf16 only with native bf16 instructions (AVX512-BF16 or AMX), else fp32. On
    CUDA, fp32 (cuDNN runs its convolutions in TF32 on Ampere and later): on an H200 the
    default EfficientNet-Lite0 at 128 px trained 1.5x faster in fp32 than with bf16 autocast and
    ResNet18 at 224 px 1.1x faster, both at equal accuracy (docs/performance.md); models this
    small are bound by kernel launches, which autocast's casts multiply.
    """
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name == "fp16":
        return torch.float16
    if device.type == "cuda":
        return None
    return torch.bfloat16 if _cpu_has_fast_bf16() else None


def _cpu_has_fast_bf16() -> bool:
    """True where the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX).

    Without them oneDNN emulates bf16, and training got slower than fp32, not faster: with
    oneDNN held to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``), EfficientNet-Lite0 trained ~14x slower in
    bf16 than in fp32, and ~2.3x slower with AVX-512 but no BF16 (the instruction-set rows of
    docs/performance.md). Merely having oneDNN, the old rule, picked bf16 on every x86 CPU.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def configure_threads(num_threads: int, processes: int = 1) -> int:
    """Use ``num_threads`` intra-op threads (0: this process's share of the cores, ``processes`` on this machine)."""
    n = num_threads or max(1, len(os.sched_getaffinity(0)) // processes)
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for the data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_runtime(config: TrainConfig) -> Runtime:
    """Decide device, precision, layout, process group and this process's share of every batch.

    The share is resolved here, once, before anything is read or written: a ``train.batch_size`` that
    does not split evenly over the processes stops the run with one line (:func:`per_process_batch`).
    """
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    batch_size = per_process_batch(config.batch_size, world_size)
    rank = int(os.environ.get("RANK", 0))
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))  # torchrun's processes on this machine
    device = resolve_device(config.device)
    check_processes(device, local_processes)
    if "WORLD_SIZE" in os.environ and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        log.info("process group: rank %d of %d, backend %s", rank, world_size, torch.distributed.get_backend())
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    else:
        configure_threads(config.num_threads, local_processes)
    return Runtime(
        device=device,
        amp_dtype=resolve_precision(config.precision, device),
        channels_last=config.channels_last,
        rank=rank,
        world_size=world_size,
        distributed=torch.distributed.is_initialized(),
        batch_size=batch_size,
    )


def wrap_model(model: nn.Module, runtime: Runtime, compile: bool) -> nn.Module:
    """DDP under torchrun, then ``torch.compile`` if asked; the unwrapped model is what gets saved.

    On CUDA, BatchNorm becomes SyncBatchNorm (in place: ``model`` keeps its keys), so that batch
    statistics are those of the whole global batch, as in one process. torch has no SyncBatchNorm
    on the CPU: there each rank normalises by the statistics of its own share of the batch, so N
    processes on the CPU match one process closely, not exactly (tests/test_distributed.py).
    """
    net = model
    if runtime.distributed:
        ids = None
        if runtime.device.type == "cuda":
            ids = [runtime.device.index]
            sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    return torch.compile(net) if compile else net


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """``model``, its BatchNorm layers replaced in place by SyncBatchNorm sharing their parameters and buffers.

    timm's converter, not torch's: torch's turns timm's ``BatchNormAct2d`` (BatchNorm with its
    activation inside) into a plain SyncBatchNorm and so drops the activation.
    """
    from timm.layers import convert_sync_batchnorm  # heavy; only where DDP runs on CUDA

    return convert_sync_batchnorm(model)

"""Where and how training runs: device, precision, threads, seeding and data sharding.

Each is decided in exactly one function here and passed down as a :class:`Runtime`, never looked
up in the middle of a loop. Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is set up
here and each rank takes its own shard of every batch order.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from tvs.config import TrainConfig


@dataclass(frozen=True)
class Runtime:
    """The decisions every training and evaluation function receives."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None: full fp32
    channels_last: bool
    rank: int = 0
    world_size: int = 1

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
        """This rank's share of a permutation (equal-length shards, as DistributedSampler)."""
        if self.world_size == 1:
            return order
        usable = len(order) - len(order) % self.world_size
        return order[self.rank : usable : self.world_size]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present (this rank's GPU under torchrun), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device: {name} requested but CUDA is not available; use 'auto' or 'cpu'")
    return device


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision``; ``auto`` is bf16 where the device runs it natively.

    On the CPU, bf16 autocast with channels-last measured faster than fp32 on this project's
    reference machine (see docs); on CUDA, bf16 where the GPU supports it, else fp16.
    """
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_fast_bf16() else None


def _cpu_has_fast_bf16() -> bool:
    """AVX-512/AMX hosts run bf16 natively; on older AVX2 CPUs oneDNN emulates it (still faster
    than fp32 for the memory-bound depthwise convs of EfficientNet, as measured)."""
    return torch.backends.mkldnn.is_available()


def configure_threads(num_threads: int) -> int:
    """Use ``num_threads`` intra-op threads (0: one per core available to this process)."""
    n = num_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for the data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_runtime(config: TrainConfig) -> Runtime:
    """Decide device, precision, layout and process group for this process."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    device = resolve_device(config.device)
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    else:
        configure_threads(config.num_threads)
    return Runtime(
        device=device,
        amp_dtype=resolve_precision(config.precision, device),
        channels_last=config.channels_last,
        rank=rank,
        world_size=world_size,
    )

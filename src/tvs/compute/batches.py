"""Batches from the uint8 cache to the model, and inference: what training and evaluation share.

Images stay uint8 until they reach the device; :func:`to_model_input` normalises them there with
the weights' own mean and std, in the memory layout the model runs fastest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from tvs.compute.runtime import Runtime


def batch_bounds(count: int, batch_size: int, fold_single: bool = False) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch over ``count`` rows, ``batch_size`` at a time.

    With ``fold_single`` (training), a last batch of one image joins the batch before it, which
    becomes one image larger. BatchNorm cannot train on a batch of one where a feature map has
    shrunk to 1x1 (``Expected more than 1 value per channel when training``: 36 images in batches
    of 5 at 32 px), and its statistics from one image are noise at any size. Folded, not dropped,
    so that every image is trained on in every epoch. Both arms run this same code on the same
    order, so they still see the same batches; under torchrun every rank's shard has the same
    length, so every rank folds alike and all take the same number of steps.
    """
    starts = list(range(0, count, batch_size))
    if fold_single and len(starts) > 1 and count - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, [*starts[1:], count], strict=True))


def iterate_batches(
    images: np.ndarray | torch.Tensor,
    rows: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    runtime: Runtime,
    fold_single: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(uint8 images, labels)`` on the device, ``batch_size`` at a time, in the given order.

    ``rows`` are cache rows and ``labels`` their classes, aligned. ``images`` is either the
    memory-mapped cache (rows gathered per batch, so memory stays flat) or a tensor already on
    the device (the GPU fast path). ``fold_single``: see :func:`batch_bounds` (training sets it).
    """
    cuda = runtime.device.type == "cuda"
    on_device = isinstance(images, torch.Tensor)
    if on_device:  # one copy up front: a pageable copy per batch would wait for the GPU each time
        rows, labels = rows.to(images.device), labels.to(runtime.device)
    for start, stop in batch_bounds(len(rows), batch_size, fold_single):
        idx, y = rows[start:stop], labels[start:stop]
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


def images_on_device(runtime: Runtime, images: np.ndarray) -> np.ndarray | torch.Tensor:
    """On CUDA, the whole uint8 cache goes to the GPU once if it takes under a quarter of its
    free memory (no host copies per batch); otherwise batches are gathered from the memory map."""
    if runtime.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(runtime.device)
        if images.nbytes < free // 4:
            return torch.from_numpy(np.array(images)).to(runtime.device)
    return images


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

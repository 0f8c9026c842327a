"""Checkpoints that describe themselves: ``model.safetensors`` plus a ``meta.json`` sidecar.

safetensors holds tensors only, so loading a checkpoint never runs code; the sidecar holds what
is needed to rebuild the model (arch, classes, image size, normalisation) and how it was trained
(history, best epoch, and whether training diverged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from tvs.io import read_json, write_bytes, write_json
from tvs.models.archs import build_model

WEIGHTS = "model.safetensors"
META = "meta.json"


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model``'s state dict, contiguous (safetensors wants that;
    channels-last weights are not)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_state(folder: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write the weights ``state``, then the sidecar, each atomically.

    The weights are serialised in memory and written by :func:`tvs.io.write_bytes`, so a full disk
    is one error naming the file. No safetensors metadata: its keys are written in hash order,
    which changes from one call to the next, so identical weights would give different bytes (and
    DVC hashes); ``meta.json`` describes the weights instead.
    """
    folder = Path(folder)
    write_bytes(folder / WEIGHTS, save(state))
    write_json(folder / META, meta)


def save_checkpoint(folder: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write ``model``'s weights, then the sidecar, each atomically."""
    save_state(folder, cpu_state(model), meta)


def update_meta(folder: str | Path, meta: dict[str, Any]) -> None:
    """Replace the sidecar (e.g. with the final history) without touching the weights."""
    write_json(Path(folder) / META, meta)


def load_checkpoint(folder: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint folder describes and load its weights, strictly."""
    folder = Path(folder)
    meta = read_json(folder / META)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing; rerun the training stage")
    model = build_model(meta["arch"], len(meta["classes"]))
    model.load_state_dict(load_file(str(weights), device=str(device)), strict=True)
    return model.to(device), meta

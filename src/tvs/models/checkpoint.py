"""Checkpoints that describe themselves: ``model.safetensors`` plus a ``meta.json`` sidecar.

safetensors holds tensors only, so loading a checkpoint never runs code; the sidecar holds what
is needed to rebuild the model (arch, classes, image size, normalisation) and how it was trained
(history, best epoch, and whether training diverged).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from tvs.errors import ConfigError, WeightsError
from tvs.io import read_json, write_bytes, write_json
from tvs.models.archs import arch_spec, build_model, head_prefix

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


class CheckpointError(WeightsError):
    """A checkpoint's ``meta.json`` is malformed or does not describe its weights."""


RERUN = "restore the meta.json training wrote, or rerun the training stage"


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _rgb(x: Any) -> bool:
    return isinstance(x, list) and len(x) == 3 and all(map(_number, x))


def _class_names(x: Any) -> bool:
    return isinstance(x, list) and bool(x) and all(isinstance(c, str) for c in x) and len(set(x)) == len(x)


def _history_row(row: Any) -> bool:
    return isinstance(row, dict) and all(_number(row.get(k)) for k in ("epoch", "val_accuracy", "elapsed_seconds"))


# What scoring a checkpoint reads from its sidecar, each with the shape it must have.
META_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "arch": ("a model.arch name", lambda v: isinstance(v, str) and bool(v)),
    "classes": ("a list of distinct class names", _class_names),
    "mean": ("3 finite numbers (one per RGB channel)", _rgb),
    "std": ("3 positive numbers (one per RGB channel)", lambda v: _rgb(v) and min(v) > 0),
    "best_epoch": ("an epoch number (0: none finished)", _count),
    "train_seconds": ("a number of seconds", lambda v: _number(v) and v >= 0),
    "history": (
        "a list of per-epoch objects with epoch, val_accuracy and elapsed_seconds",
        lambda v: isinstance(v, list) and all(map(_history_row, v)),
    ),
    "diverged": ("true or false", lambda v: v is None or isinstance(v, bool)),
    "diverged_epoch": ("an epoch number or null", lambda v: v is None or _count(v)),
}
OPTIONAL = {"diverged", "diverged_epoch"}  # sidecars written before divergence was recorded lack them


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's sidecar, each field it is read for checked; one line naming the file and field if not."""
    path = Path(path)
    try:
        meta = read_json(path)
    except ValueError as err:  # malformed JSON (a missing file stays a FileNotFoundError, one line too)
        raise CheckpointError(f"{err}; {RERUN}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, not {type(meta).__name__}; {RERUN}")
    for field, (expected, valid) in META_FIELDS.items():
        if field not in meta and field not in OPTIONAL:
            raise CheckpointError(f"{path}: {field}: missing (expected {expected}); {RERUN}")
        if not valid(meta.get(field)):
            raise CheckpointError(f"{path}: {field}: expected {expected}, got {_preview(meta[field])}; {RERUN}")
    try:
        arch_spec(meta["arch"])
    except ConfigError:
        raise CheckpointError(f"{path}: arch: {meta['arch']!r} is not a timm or torchvision model; {RERUN}") from None
    return meta


def _preview(value: Any, limit: int = 60) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_fits(model: nn.Module, state: dict[str, torch.Tensor], meta_path: Path, arch: str) -> None:
    """The weights on disk are those of the model the sidecar describes: its arch, and one output per class."""
    target, prefix = model.state_dict(), head_prefix(model)
    differ = sorted(set(target) ^ set(state)) + sorted(
        k for k in target.keys() & state.keys() if target[k].shape != state[k].shape and not k.startswith(prefix)
    )
    if differ:
        raise CheckpointError(
            f"{meta_path}: arch: the weights beside it are not a {arch} ({len(differ)} keys or shapes differ, "
            f"first: {differ[0]}); {RERUN}"
        )
    head = [k for k in target if k.startswith(prefix) and target[k].shape != state[k].shape]
    if head:
        outputs = state[head[0]].shape[0]
        raise CheckpointError(
            f"{meta_path}: classes: {target[head[0]].shape[0]} names, but the weights' classifier has "
            f"{outputs} outputs; {RERUN}"
        )


def load_checkpoint(folder: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint folder describes and load its weights, strictly.

    The sidecar is checked first (:func:`read_meta`), then that the weights fit the model it
    describes, so that a hand-edited ``meta.json`` is one line naming the file and the field.
    """
    folder = Path(folder)
    meta = read_meta(folder / META)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing; rerun the training stage")
    model = build_model(meta["arch"], len(meta["classes"]))
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as err:  # safetensors raises its own SafetensorError (or OSError) for a damaged file
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err}); rerun the training stage") from None
    check_fits(model, state, folder / META, meta["arch"])
    model.load_state_dict(state, strict=True)
    return model.to(device), meta

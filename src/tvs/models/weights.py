"""Pretrained weights into a network, the normalisation both arms share, and the arms' one branch: :func:`init_model`.

Weights are read by :mod:`~tvs.models.sources` and checked by :mod:`~tvs.models.checks`; this module
refuses a pair of ``model.arch`` and ``model.weights`` that cannot fit before any training, copies
the weights in, and is what the training stages import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from tvs.config import ArmConfig, ModelConfig, Params
from tvs.errors import WeightsError
from tvs.models.archs import arch_spec, build_model
from tvs.models.checks import check_fit, check_forward, check_values
from tvs.models.lite0 import check_lite0_arch
from tvs.models.sources import (
    Pretrained,
    check_hub_arch,
    hub_config,
    load_file,
    load_source,
    source_kind,
    torchvision_weights,
)

log = logging.getLogger(__name__)


def normalisation(model: ModelConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std both arms use: the chosen weights' own config where they carry one, else the arch's default."""
    spec = arch_spec(model.arch)
    kind = source_kind(model.weights)
    if kind == "hf-hub" and spec.library == "timm":
        cfg = hub_config(model.weights)
        return tuple(cfg["mean"]), tuple(cfg["std"])
    if kind == "torchvision" and spec.library == "torchvision":
        transforms = torchvision_weights(spec, model.weights).transforms()
        return tuple(transforms.mean), tuple(transforms.std)
    return spec.mean, spec.std


def load_pretrained(arch: str, source: str) -> Pretrained:
    """The weights named by ``model.weights`` in ``arch``'s key layout (ImageNet head included), values checked.

    Args:
        arch: ``model.arch``.
        source: ``model.weights``: the Lite0 package, ``hf-hub:...``, a torchvision weights name or a file.
    """
    pretrained = load_source(arch, source)
    check_values(pretrained.state, source)
    return pretrained


@torch.no_grad()
def transfer_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], arch: str = "") -> list[str]:
    """Copy ``state_dict`` into ``model``; every backbone key and shape must match.

    The classifier is copied only when its shape matches (same number of classes); otherwise it
    keeps its fresh initialisation, as timm's ``load_pretrained`` does. ``arch`` names the model in
    errors. Returns the keys left at their initial values.
    """
    kept = check_fit(model, state_dict, arch)
    loadable = {k: v for k, v in state_dict.items() if k not in kept}
    model.load_state_dict({**model.state_dict(), **loadable}, strict=True)
    return kept


def check_weights_fit(model: ModelConfig) -> None:
    """Refuse ``model.weights`` that cannot fit ``model.arch``, from names and shapes, before any training.

    The training stage calls it first in both arms, so that a wrong pair stops the scratch arm too
    rather than after its training. No tensor data is read: a ``.safetensors`` file's header gives
    names and shapes, checked by :func:`~tvs.models.checks.check_fit` on the arch built on the meta
    device; the Hub's ``config.json`` names its architecture; torchvision's weights enum and the Lite0
    package are checked by name. A ``.pt``/``.pth``/``.bin`` file is read whole (its shapes are in the
    pickle). The errors are worded as loading words them; a file that does not fit is also named.
    """
    spec, source = arch_spec(model.arch), model.weights
    kind = source_kind(source)
    if kind == "package":
        check_lite0_arch(spec, model.arch)
    elif kind == "hf-hub":
        check_hub_arch(spec, source)
    elif kind == "torchvision":
        torchvision_weights(spec, source)
    else:
        state = file_shapes(source)
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            network = build_model(model.arch, num_classes=2)  # the head is not compared
        try:
            check_fit(network, state, model.arch)
        except WeightsError as err:
            raise WeightsError(
                f"model.weights: {source}: {err}; use weights of {model.arch}, or set model.arch to theirs"
            ) from None


def file_shapes(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file as empty tensors on the meta device: from a ``.safetensors`` header alone."""
    try:
        with safe_open(path, framework="pt") as file:
            return {k: torch.empty(file.get_slice(k).get_shape(), device="meta") for k in file.keys()}  # noqa: SIM118 (not iterable)
    except Exception:  # not safetensors, damaged or missing: load_file reads it or words the error
        return {k: v.to("meta") for k, v in load_file(path).items()}


@dataclass
class Initial:
    """An arm's initial network, the normalisation both arms share, and the pretrained weights' source."""

    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: dict[str, Any] | None  # None for an arm trained from scratch


def init_model(params: Params, arm: ArmConfig, num_classes: int) -> Initial:
    """Build ``model.arch`` for ``num_classes``; load ``model.weights`` if the arm is pretrained.

    This is the one branch between the arms: everything after it is shared.
    """
    model = build_model(params.model.arch, num_classes)
    mean, std = normalisation(params.model)
    source = None
    if arm.init == "pretrained":
        pretrained = load_pretrained(params.model.arch, params.model.weights)
        reset = transfer_weights(model, pretrained.state, params.model.arch)
        check_forward(model, params.data.image_size, params.model.weights)
        source = pretrained.source
        log.info("loaded %s weights into %s; fresh head: %s", params.model.weights, params.model.arch, reset or "none")
        if source["kind"] == "hf-hub" and source["revision"] == "main":
            log.warning(
                "%s is not pinned to a revision: pin it (@<commit>) so that DVC sees new weights", params.model.weights
            )
    return Initial(model, mean, std, source)

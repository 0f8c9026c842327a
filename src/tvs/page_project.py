"""What the answer page reads, parsed: params, the records of now and of each result, metrics, evidence.

A sub-pipeline that ran in this clone has its own ``dvc.lock`` (git-ignored: its cells live in DVC's
cache); :func:`snapshot` copies its results and their record (:mod:`tvs.evidence`) to
``evidence/<pipeline>/``, in git, before :func:`read_project` reads everything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from ruamel.yaml import YAMLError

from tvs.config import parse_yaml
from tvs.errors import UserError
from tvs.evidence import Record, current_record, record_from_lock
from tvs.io import read_csv, write_bytes, write_json

TUNE_AXES = ("lr",)  # tuned per arm
TUNE_VARIED = ("final_scratch",)  # scratch's longer schedules: the catch-up question, not the recipe


def read_yaml_file(path: Path) -> Any:
    """A YAML file read as DVC reads it (YAML 1.2: ``1e-3`` is a number), or None when it is missing."""
    try:
        return parse_yaml(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def read_csv_file(path: Path, columns: Sequence[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    table = read_csv(path)  # a table that is not one: one line naming it (DataError)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"{path}: no column {', '.join(missing)}; rerun the pipeline that writes it")
    return table


EVIDENCE = "evidence"  # where the sub-pipelines' results and records are kept, in git
RESULTS = {"study": "reports/cells.csv", "tune": "reports/compute.csv"}


def snapshot(root: Path, pipeline: str, axes: Sequence[str] = (), varied: Sequence[str] = ()) -> None:
    """Copy a sub-pipeline's results and its record to ``evidence/<pipeline>/`` when it ran in this clone.

    Its ``dvc.lock`` is git-ignored (its cells live in DVC's cache, not in git), so the record of what the
    results were computed from is taken from it here, and kept with them.
    """
    lock, results = root / pipeline / "dvc.lock", root / pipeline / RESULTS[pipeline]
    parsed = read_yaml_file(lock)
    if parsed is None or not results.is_file():
        return
    record = record_from_lock(parsed, str(lock), axes, varied)
    kept = root / EVIDENCE / pipeline
    write_bytes(kept / Path(RESULTS[pipeline]).name, results.read_bytes())
    write_json(kept / "record.json", record.to_json())


def kept_record(root: Path, pipeline: str) -> Record | None:
    path = root / EVIDENCE / pipeline / "record.json"
    raw = read_json_file(path)
    return None if raw is None else Record.from_json(raw, str(path))


@dataclass(frozen=True)
class Project:
    """Everything the page reads, parsed."""

    params: Mapping[str, Any]
    now: Record
    main: Record | None
    comparison: Mapping[str, Any] | None
    metrics: Mapping[str, Mapping[str, Any]]
    confusion: Mapping[str, list[Mapping[str, Any]]]
    study_cells: pd.DataFrame | None
    study_record: Record | None
    study_params: Mapping[str, Any]
    tune_runs: pd.DataFrame | None
    tune_record: Record | None
    tune_params: Mapping[str, Any]
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    plot_tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)  # curves, calibration, roc, pr


PLOT_TABLES = {  # reports/plots/<name>.csv, written by `verdict` (tvs.verdict.curves, tvs.verdict.diagnostics)
    "curves": ("arm", "epoch", "val_accuracy", "val_loss", "train_loss"),
    "calibration": ("arm", "point", "confidence", "accuracy", "images"),
    "roc": ("arm", "point", "false_positive_rate", "true_positive_rate"),
    "pr": ("arm", "point", "recall", "precision"),
}


def read_project(root: Path) -> Project:
    snapshot(root, "study")
    snapshot(root, "tune", TUNE_AXES, TUNE_VARIED)
    params = read_yaml_file(root / "params.yaml")
    if not isinstance(params, dict):
        raise UserError(f"{root / 'params.yaml'}: no params (run from the project's root)")
    pins = [p for p in (read_yaml_file(root / "data/raw.dvc"), read_yaml_file(root / "data/dvc.lock")) if p]
    lock = read_yaml_file(root / "dvc.lock")
    main = record_from_lock(lock, str(root / "dvc.lock")) if lock else None
    metrics = {arm: m for arm in ("pretrained", "scratch") if (m := read_json_file(root / f"metrics/{arm}.json"))}
    confusion = {
        arm: rows
        for arm in ("pretrained", "scratch")
        if (rows := read_json_file(root / f"reports/plots/{arm}/confusion.json"))
    }
    study_columns = [
        "train_fraction",
        "seed",
        "images_per_class",
        "pretrained_accuracy",
        "scratch_accuracy",
        "majority",
    ]
    tune_columns = ["phase", "arm", "epochs", "repeat", "seconds", "test_accuracy", "chosen"]
    return Project(
        params=params,
        now=current_record(params, pins),
        main=main,
        comparison=read_json_file(root / "metrics/comparison.json"),
        metrics=metrics,
        confusion=confusion,
        study_cells=read_csv_file(root / EVIDENCE / "study/cells.csv", study_columns),
        study_record=kept_record(root, "study"),
        study_params=read_yaml_file(root / "study/params.yaml") or {},
        tune_runs=read_csv_file(root / EVIDENCE / "tune/compute.csv", tune_columns),
        tune_record=kept_record(root, "tune"),
        tune_params=read_yaml_file(root / "tune/params.yaml") or {},
        diagnostics=read_json_file(root / "reports/plots/diagnostics.json") or {},
        plot_tables={
            name: table
            for name, columns in PLOT_TABLES.items()
            if (table := read_csv_file(root / f"reports/plots/{name}.csv", columns)) is not None
        },
    )

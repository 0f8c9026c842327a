"""The one page: the answer, the ladder of evidence it rests on, and the main pair's details, in two forms.

``python -m tvs.page`` (the last step of ``make repro``) reads every result there is in the project,
decides with :mod:`tvs.ladder` which evidence governs, and writes ``reports/answer.md`` (renders on
GitHub and in a pull-request comment) and ``reports/answer.html`` (one self-contained file: styles and
images inline, no script, no network), both from one list of blocks, then prints the headline.

It is a viewer, like ``dvc plots show``: DVC does not track what it writes, so it can read the study's
and the tuning pipeline's results without making the main pipeline depend on (and so run) them.
What it reads, all optional except ``params.yaml``::

    params.yaml, data/raw.dvc, data/dvc.lock      the record of now (tvs.evidence)
    dvc.lock, metrics/*.json, reports/plots/      rung c: the single pair
    evidence/study/{cells.csv,record.json}        rung b and the data-efficiency question
    evidence/tune/{compute.csv,record.json}       rung a and the catch-up question

A sub-pipeline that ran in this clone has its own ``dvc.lock`` (git-ignored: its cells live in DVC's
cache); the page copies its results and their record to ``evidence/<pipeline>/``, in git. Every string from the
user's files (class names, paths) is escaped for Markdown and for HTML.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from ruamel.yaml import YAMLError

from tvs.config import parse_yaml
from tvs.errors import UserError
from tvs.evidence import Record, current_record, differences, flatten, record_from_lock
from tvs.io import read_csv, write_bytes, write_json, write_text
from tvs.ladder import (
    Answer,
    Baseline,
    Pair,
    Repeats,
    baseline_from_counts,
    break_even,
    catch_up,
    decide_ladder,
    pair_rung,
    pct,
    repeats_rung,
    training_cost,
)
from tvs.markup import html_text, md_text, terminal_text, truncate
from tvs.verdict.curves import NO_PREDICTION

PAGE_MD, PAGE_HTML = "reports/answer.md", "reports/answer.html"
DEFAULT_MARGIN = 2.0  # points; params.yaml's evaluate.equivalence_margin overrides it
NAME_LIMIT = 60  # characters of a class name in a table
TUNE_AXES = ("lr",)  # tuned per arm
TUNE_VARIED = ("final_scratch",)  # scratch's longer schedules: the catch-up question, not the recipe


# --- reading ---------------------------------------------------------------------------------


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


# --- from files to evidence ------------------------------------------------------------------


def defaults() -> dict[str, Any]:
    """The code's defaults, flattened: a key a record lacks counts as its default."""
    from tvs.config import Params, to_dict

    return flatten(to_dict(Params()))


def settings(params: Mapping[str, Any]) -> tuple[float, float]:
    """(confidence, margin as a proportion) from params.yaml's evaluate section."""
    section = params.get("evaluate") or {}
    return float(section.get("confidence", 0.95)), float(section.get("equivalence_margin", DEFAULT_MARGIN)) / 100


def pair_of(comparison: Mapping[str, Any] | None, metrics: Mapping[str, Mapping[str, Any]]) -> Pair | None:
    if not comparison or set(metrics) != {"pretrained", "scratch"}:
        return None
    diverged = tuple(arm for arm in ("pretrained", "scratch") if metrics[arm].get("diverged"))
    sig = comparison.get("significance") or {}
    if diverged or sig.get("accuracy_diff_ci_low") is None:
        return Pair(0, 0, 0, 0, 1, 0, 0.95, diverged or ("an arm",))
    return Pair(
        pretrained=float(metrics["pretrained"]["accuracy"]),
        scratch=float(metrics["scratch"]["accuracy"]),
        low=float(sig["accuracy_diff_ci_low"]),
        high=float(sig["accuracy_diff_ci_high"]),
        p_value=float(sig["mcnemar_p"]),
        test_images=int(sig["test_images"]),
        confidence=float(sig["confidence"]),
    )


def cell_count(row: Mapping[str, Any]) -> int:
    """A confusion row's images: its ``count`` (one row per cell, ``verdict`` today), else 1 (one row per image)."""
    count = row.get("count", 1)
    return int(count) if isinstance(count, int | float) else 0


def class_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Test images per actual class (classes with none left out)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row.get("actual"))] = counts.get(str(row.get("actual")), 0) + cell_count(row)
    return {name: n for name, n in counts.items() if n}


def study_sizes(cells: pd.DataFrame | None) -> dict[float, Repeats]:
    """Images per class -> both arms' accuracies paired by seed."""
    if cells is None:
        return {}
    return {
        float(size): Repeats(tuple(group["pretrained_accuracy"]), tuple(group["scratch_accuracy"]))
        for size, group in cells.sort_values("seed").groupby("images_per_class")
    }


def study_full(cells: pd.DataFrame | None) -> Repeats | None:
    """Rung b: the study's full-size cells (train_fraction 1.0), paired by seed."""
    if cells is None:
        return None
    full = cells[cells["train_fraction"] == 1.0].sort_values("seed")
    return Repeats(tuple(full["pretrained_accuracy"]), tuple(full["scratch_accuracy"])) if len(full) else None


def tune_finals(runs: pd.DataFrame | None) -> tuple[Repeats | None, dict[int, Repeats], int]:
    """Rung a (each arm at its chosen lr, same epochs) and scratch's longer schedules, paired by repeat."""
    if runs is None:
        return None, {}, 0
    final = runs[runs["phase"] == "final"]
    pre = final[final["arm"] == "pretrained"].set_index("repeat")["test_accuracy"].sort_index()
    if pre.empty:
        return None, {}, 0
    base = int(final[final["arm"] == "pretrained"]["epochs"].iloc[0])
    scratch = final[final["arm"] == "scratch"]
    schedules = {}
    for epochs, group in scratch.groupby("epochs"):
        s = group.set_index("repeat")["test_accuracy"].reindex(pre.index)
        if s.notna().all():
            schedules[int(epochs)] = Repeats(tuple(pre), tuple(s))
    return schedules.get(base), {e: r for e, r in schedules.items() if e != base}, base


def seconds_per_run(metrics: Mapping[str, Mapping[str, Any]]) -> float | None:
    seconds = [m.get("train_seconds") for m in metrics.values()]
    numbers = [float(s) for s in seconds if isinstance(s, int | float)]
    return sum(numbers) / len(numbers) if numbers else None


def list_of(raw: Any) -> list:
    return raw if isinstance(raw, list) else []


def tune_work(tune: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[int, float]:
    """The tuning grid's training runs, and their work in runs of ``config``'s size (params.yaml's epochs
    and image size, flattened): a scratch run at 4x the epochs is four runs' worth."""
    lrs, repeats = list_of(tune.get("lrs")), list_of(tune.get("repeats"))
    schedules = [e for e in list_of(tune.get("scratch_epochs")) if isinstance(e, int | float)]
    runs = 2 * len(lrs) + len(repeats) * (1 + len(schedules))
    sizes = (tune.get("epochs"), tune.get("image_size"), config.get("train.epochs"), config.get("data.image_size"))
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and x > 0 for x in sizes):
        return runs, runs
    epochs, image_size, main_epochs, main_size = sizes
    epoch_count = 2 * len(lrs) * epochs + len(repeats) * (epochs + sum(schedules))
    return runs, epoch_count / main_epochs * (image_size / main_size) ** 2


def answer_for(project: Project) -> tuple[Answer, dict[str, str]]:
    """The answer and the two questions beneath it (data efficiency, catch-up), from everything read."""
    confidence, margin = settings(project.params)
    alpha, known = 1 - confidence, defaults()
    per_run = seconds_per_run(project.metrics)
    seeds, fractions = list_of(project.study_params.get("seeds")), list_of(project.study_params.get("fractions"))
    study_cost = training_cost(2 * max(len(seeds), 3) * max(len(fractions), 1), per_run)
    tune_runs, tune_size = tune_work(project.tune_params, {**known, **project.now.config})
    tune_cost = training_cost(tune_runs, per_run, tune_size)

    main_reasons = differences(project.main, project.now, defaults=known) if project.main else []
    rung_c = pair_rung(
        pair_of(project.comparison, project.metrics), alpha, margin, "`make repro` (2 training runs)", main_reasons
    )
    stale_b = differences(project.study_record, project.now, defaults=known) if project.study_record else []
    if project.study_cells is not None and project.study_record is None:
        stale_b = ["no record of what it was computed from"]
    rung_b = repeats_rung(
        "b", "(b) the same recipe over repeated splits", study_full(project.study_cells), confidence, margin,
        f"`dvc repro study/dvc.yaml` with at least 3 `seeds` in study/params.yaml ({study_cost})", stale_b,
    )  # fmt: skip
    stale_a = differences(project.tune_record, project.now, TUNE_AXES, known) if project.tune_record else []
    if project.tune_runs is not None and project.tune_record is None:
        stale_a = ["no record of what it was computed from"]
    tuned, schedules, base = tune_finals(project.tune_runs)
    rung_a = repeats_rung(
        "a", "(a) tuned against tuned over repeated splits", tuned, confidence, margin,
        f"`dvc repro tune/dvc.yaml` with at least 3 `repeats` in tune/params.yaml ({tune_cost})", stale_a,
    )  # fmt: skip
    baseline = baseline_of(project)
    answer = decide_ladder([rung_a, rung_b, rung_c], margin, baseline)
    floor = baseline.accuracy if baseline else 0.0
    questions = {
        "How much data does scratch need?": (
            break_even(study_sizes(project.study_cells), floor, confidence, margin)
            if not stale_b
            else "Not current: the study's evidence is stale (see the ladder)."
        ),
        "Does more compute close the gap?": (
            catch_up(schedules, confidence, margin, base)
            if not stale_a
            else "Not current: the tuning evidence is stale (see the ladder)."
        ),
    }
    return answer, questions


def baseline_of(project: Project) -> Baseline | None:
    rows = next(iter(project.confusion.values()), None)
    if rows:
        return baseline_from_counts({plain(name): n for name, n in class_counts(rows).items()})
    comparison = project.comparison or {}
    if isinstance(comparison.get("majority_accuracy"), int | float):
        return Baseline(float(comparison["majority_accuracy"]), 0, plain(comparison.get("majority_class")), False)
    return None


# --- one source, two forms -------------------------------------------------------------------

# A block is ("h1" | "h2" | "p" | "table" | "img" | "list", content). Text is plain: each renderer
# escapes it; ``**bold**`` is the one markup a paragraph may carry, split out before escaping.
Block = tuple[str, Any]


def confusion_matrix(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[int]]]:
    """Every class on both axes (one never predicted included: ``verdict`` writes a row for every cell),
    in the order the rows name them, and the counts."""
    classes = list(dict.fromkeys([str(r.get("actual")) for r in rows] + [str(r.get("predicted")) for r in rows]))
    index = {name: i for i, name in enumerate(classes)}
    counts = [[0] * len(classes) for _ in classes]
    for r in rows:
        counts[index[str(r.get("actual"))]][index[str(r.get("predicted"))]] += cell_count(r)
    return classes, counts


def per_class(classes: Sequence[str], counts: Sequence[Sequence[int]]) -> list[tuple[str, str, str, str, str]]:
    """Precision, recall and F1 of each class, with its number of test images."""
    out = []
    for i, name in enumerate(classes):
        tp, actual, predicted = counts[i][i], sum(counts[i]), sum(row[i] for row in counts)
        precision = tp / predicted if predicted else None
        recall = tp / actual if actual else None
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if actual else None)
        show = [("n/a" if v is None else f"{v:.2f}") for v in (precision, recall, f1)]
        out.append((plain(truncate(name, NAME_LIMIT)), *show, str(actual)))
    return out


def blocks_for(
    project: Project,
    answer: Answer,
    questions: Mapping[str, str],
    images: Mapping[str, Path],
    thumbs: Mapping[str, bytes] | None = None,
) -> list[Block]:
    head = {None: "No answer yet", "pretrained": "Fine-tune", "scratch": "Train from scratch"}
    word = head.get(answer.decision, "Cannot tell" if answer.decision == "cannot tell" else "Either arm")
    blocks: list[Block] = [
        ("h1", "Fine-tune or train from scratch?"),
        ("p", f"**{word}.** {answer.headline.split('. ', 1)[-1] if answer.decision else answer.headline}"),
    ]
    blocks += [("p", note) for note in answer.notes]
    rows = [("Rung", "Status", "Result", "Next step")]
    for rung in answer.rungs:
        status = rung.status + (f": {'; '.join(rung.reasons)}" if rung.reasons else "")
        status += " (governs)" if rung.key == answer.governing else ""
        rows.append((rung.title, status, rung.result or "-", rung.next_step))
    blocks += [("h2", "The evidence ladder"), ("table", rows)]
    blocks += [("h2", "Beneath the answer")]
    blocks += [("list", [f"**{q}** {a}" for q, a in questions.items()])]
    blocks += pair_details(project, images)
    blocks += score_blocks(project.diagnostics)
    blocks += gallery_blocks(project.diagnostics, thumbs or {})
    return blocks


def pair_details(project: Project, images: Mapping[str, Path]) -> list[Block]:
    """Rung c's details: the table with the baseline, the curves, confusion matrices, per-class scores."""
    blocks: list[Block] = [("h2", "The single pair (rung c)")]
    if set(project.metrics) != {"pretrained", "scratch"}:
        return [*blocks, ("p", "Not run: `make repro` runs it.")]
    rows = [("Arm", "Test accuracy", "Balanced accuracy", "Macro F1", "Training seconds")]
    for arm, m in project.metrics.items():
        rows.append((arm, *(_num(m.get(k), pct) for k in ("accuracy", "balanced_accuracy", "macro_f1")),
                     _num(m.get("train_seconds"), lambda s: f"{s:,.0f}")))  # fmt: skip
    baseline = baseline_of(project)
    if baseline:
        rows.append(("baseline", pct(baseline.accuracy), "-", "-", "-"))
    blocks.append(("table", rows))
    for name, path in images.items():
        blocks.append(("img", (name, path)))
    for arm, confusion in project.confusion.items():
        classes, counts = confusion_matrix(confusion)
        header = (f"{arm}: actual (rows), predicted (columns)", *(plain(truncate(c, NAME_LIMIT)) for c in classes))
        table = [header]
        for name, row in zip(classes, counts, strict=True):
            if name == NO_PREDICTION and not sum(row):  # a column only: no image's true class
                continue
            total = sum(row)
            table.append(
                (plain(truncate(name, NAME_LIMIT)), *(f"{n} ({n / total:.0%})" if total else "0" for n in row))
            )
        blocks += [("h2", f"Confusion matrix, {arm} (counts and share of each actual class)"), ("table", table)]
        blocks += [("table", [("Class", "Precision", "Recall", "F1", "Test images"), *per_class(classes, counts)])]
    return blocks


def score_blocks(diagnostics: Mapping[str, Any]) -> list[Block]:
    """Calibration (ECE, Brier) and, for two classes, ROC AUC and average precision, per arm."""
    arms = diagnostics.get("arms") or {}
    if not isinstance(arms, Mapping) or not arms:
        return []
    positive = diagnostics.get("positive_class")
    header = ("Arm", "ECE", "Brier score", *(("ROC AUC", "Average precision") if positive else ()), "Images scored")
    rows = [header]
    for arm, d in arms.items():
        keys = ("ece", "brier", *(("roc_auc", "average_precision") if positive else ()))
        rows.append(
            (plain(arm), *(_num(d.get(k), lambda v: f"{v:.3f}") for k in keys), str(d.get("scored_images", "n/a")))
        )
    text = (
        f"ECE: the image-weighted gap between confidence and accuracy over {diagnostics.get('bins', 10)} equal "
        "confidence bins (0: calibrated). Brier score: the mean squared error of the probabilities (0 is perfect, "
        "a uniform guess between two classes scores 0.5). Lower is better for both."
    )
    if positive:
        text += (
            f" ROC and PR take “{plain(truncate(str(positive), NAME_LIMIT))}” (the rarer class) as the positive class."
        )
    return [("h2", "Calibration and ranking (test split)"), ("p", text), ("table", rows)]


def _call(call: Any) -> str:
    if not isinstance(call, Mapping) or call.get("predicted") is None:
        return "no prediction"
    confidence = call.get("confidence")
    shown = plain(truncate(str(call["predicted"]), NAME_LIMIT))
    return f"{shown} ({confidence:.0%})" if isinstance(confidence, int | float) else shown


def gallery_blocks(diagnostics: Mapping[str, Any], thumbs: Mapping[str, bytes]) -> list[Block]:
    """McNemar's two cells as images (one arm right, the other wrong), then each arm's highest-loss images.

    A ``gallery`` block is a table whose rows may carry a thumbnail: the HTML shows it in a first column,
    the Markdown (no images in a pull-request comment) lists the rows only.
    """
    cells = diagnostics.get("disagreements") or {}
    losses = diagnostics.get("highest_loss") or {}
    if not cells and not losses:
        return []
    blocks: list[Block] = [("h2", "Where the arms disagree (test split)")]
    where = "" if thumbs else " Thumbnails appear in the HTML page when `data/prepared` is in this clone and current."
    blocks.append(("p", "Each image with its true class and both arms' predictions with their confidence; the "
                        "wrong arm's most confident mistakes first." + where))  # fmt: skip
    for key, cell in cells.items():
        if not isinstance(cell, Mapping):
            continue
        winner, loser = key.split("_right_")[0], key.split("_right_")[-1].removesuffix("_wrong")
        images = list_of(cell.get("images"))
        title = f"{winner} right, {loser} wrong: {cell.get('count', len(images))} images"
        title += f" (the first {len(images)} shown)" if len(images) < int(cell.get("count") or 0) else ""
        rows = [(item.get("path"), (plain(truncate(str(item.get("path")), NAME_LIMIT)),
                 plain(truncate(str(item.get("true")), NAME_LIMIT)), _call(item.get(winner)), _call(item.get(loser))))
                for item in images if isinstance(item, Mapping)]  # fmt: skip
        blocks += [("p", f"**{title}**"), ("gallery", (("Image file", "True class", winner, loser), rows, thumbs))]
    for arm, items in losses.items():
        rows = [(item.get("path"), (plain(truncate(str(item.get("path")), NAME_LIMIT)),
                 plain(truncate(str(item.get("true")), NAME_LIMIT)), _call(item),
                 _num(item.get("loss"), lambda v: f"{v:.2f}") if item.get("loss") is not None else "inf"))
                for item in list_of(items) if isinstance(item, Mapping)]  # fmt: skip
        header = ("Image file", "True class", f"{arm} predicted", "Loss")
        blocks += [("p", f"**{arm}: its highest-loss test images**"), ("gallery", (header, rows, thumbs))]
    return blocks


def _num(value: Any, show: Any) -> str:
    return show(float(value)) if isinstance(value, int | float) else "n/a"


# Text from the user's files enters a block through :func:`plain`, which hides the two characters the
# blocks' own markup uses (``**bold**`` and ```code```) so that a class named `x` or **x** stays text.
_HIDDEN = {"`": "\ue000", "*": "\ue001"}


def plain(text: str) -> str:
    """User text for a block: its backticks and asterisks are data, never the blocks' markup."""
    return "".join(_HIDDEN.get(char, char) for char in str(text))


def _unhide(text: str) -> str:
    for char, mark in _HIDDEN.items():
        text = text.replace(mark, char)
    return text


def _spans(text: str) -> list[tuple[str, str]]:
    """``a **b** `c` d`` -> [("a ", ""), ("b", "b"), (" ", ""), ("c", "code"), (" d", "")]; user text is unhidden."""
    out, style, i = [], "", 0
    for j, token in [(m.start(), m.group()) for m in re.finditer(r"\*\*|`", text)] + [(len(text), "")]:
        if j > i:
            out.append((_unhide(text[i:j]), style))
        if token == "**" and style != "code":
            style = "" if style == "b" else "b"
        elif token == "`" and style != "b":
            style = "" if style == "code" else "code"
        elif token:
            out.append((token, style))
        i = j + len(token)
    return out


def md_inline(text: str) -> str:
    def one(piece: str, style: str) -> str:
        if style == "code":  # program text only (commands, keys): no backtick inside
            return f"`{piece}`"
        # Quotes need no entity in Markdown text (no tag can open: < and > are entities already).
        text = md_text(piece).replace("&#x27;", "'").replace("&quot;", '"')
        return f"**{text}**" if style == "b" else text

    return "".join(one(piece, style) for piece, style in _spans(text))


def html_inline(text: str) -> str:
    tags = {"b": ("<b>", "</b>"), "code": ("<code>", "</code>"), "": ("", "")}
    return "".join(tags[style][0] + html_text(piece) + tags[style][1] for piece, style in _spans(text))


def to_markdown(blocks: Sequence[Block]) -> str:
    inline = md_inline

    out = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            out.append(f"{'#' if kind == 'h1' else '##'} {inline(content)}")
        elif kind == "p":
            out.append(inline(content))
        elif kind == "list":
            out.append("\n".join(f"- {inline(item)}" for item in content))
        elif kind == "table":
            lines = ["| " + " | ".join(inline(c) for c in content[0]) + " |", "|" + "---|" * len(content[0])]
            lines += ["| " + " | ".join(inline(c) for c in row) + " |" for row in content[1:]]
            out.append("\n".join(lines))
        elif kind == "img":
            name, path = content
            out.append(f"![{md_inline(name)}]({path.name})")
        elif kind == "gallery":
            header, rows, _ = content
            out.append(to_markdown([("table", [header, *(cells for _, cells in rows)])]).rstrip("\n"))
    return "\n\n".join(out) + "\n"


CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # nothing loads from anywhere
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
    "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #bbb;padding:.3rem .5rem;text-align:left}"
    "img{max-width:100%}img.thumb{width:112px;height:112px;image-rendering:auto}"
)


def to_html(blocks: Sequence[Block]) -> str:
    inline = html_inline

    body = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{inline(content)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{inline(content)}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in content) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{inline(c)}</th>" for c in content[0])
            rows = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in content[1:])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif kind == "img":
            name, path = content
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{html_text(_unhide(name))}" src="data:image/png;base64,{data}"></figure>')
        elif kind == "gallery":
            header, rows, thumbs = content
            head = "".join(f"<th>{inline(c)}</th>" for c in (*(("Image",) if thumbs else ()), *header))
            lines = []
            for path, cells in rows:
                first = f"<td>{thumb_html(str(path), thumbs.get(path))}</td>" if thumbs else ""
                lines.append("<tr>" + first + "".join(f"<td>{inline(c)}</td>" for c in cells) + "</tr>")
            body.append(f"<table><tr>{head}</tr>{''.join(lines)}</table>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>Fine-tune or train from scratch?</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def thumb_html(path: str, thumb: bytes | None) -> str:
    """A gallery thumbnail inline (JPEG), its file name as the alternative text; empty without one."""
    if thumb is None:
        return ""
    data = base64.b64encode(thumb).decode("ascii")
    return f'<img class="thumb" alt="{html_text(path)}" src="data:image/jpeg;base64,{data}">'


WIDTH = 99  # characters a line of the terminal answer may take


def terminal_answer(answer: Answer, project: Project, where: str) -> str:
    """What ``make repro`` ends with: the headline, the single pair's accuracies, one line a rung, and where
    the page is; lines of at most ``WIDTH`` characters, anything a terminal would act on shown escaped."""

    def wrap(text: str) -> list[str]:
        shown = terminal_text(_unhide(text).replace("`", "") if "`" in text else _unhide(text))
        return textwrap.wrap(shown, WIDTH, subsequent_indent="  ") or [""]

    lines = wrap(answer.headline)
    pair = pair_of(project.comparison, project.metrics)
    if pair is not None and not pair.diverged:
        lines += wrap(f"Single pair: pretrained {pct(pair.pretrained)}, scratch {pct(pair.scratch)}.")
    for note in answer.notes:
        lines += wrap(note)
    for rung in answer.rungs:
        reasons = f" ({'; '.join(rung.reasons)})" if rung.reasons else ""
        lines += wrap(f"rung {rung.key}: {rung.status}{reasons}{' <- governs' if rung.key == answer.governing else ''}")
    lines += wrap(f"The page: {where}")
    return "\n".join(lines) + "\n"


def write_page(root: Path) -> tuple[Answer, Project]:
    """Read the project under ``root``, write both forms of the page, and return the answer and what it read."""
    project = read_project(root)
    answer, questions = answer_for(project)
    images = {"Validation accuracy by seconds of training, both arms": root / "reports/val_accuracy.png"}
    images |= draw_figures(root, project)
    images = {name: path for name, path in images.items() if path.is_file()}
    blocks = blocks_for(project, answer, questions, images, gallery_thumbnails(root, project))
    write_text(root / PAGE_MD, to_markdown(blocks))
    write_text(root / PAGE_HTML, to_html(blocks))
    return answer, project


FIGURES = {"epochs": "reports/answer_epochs.png", "scores": "reports/answer_scores.png"}


def draw_figures(root: Path, project: Project) -> dict[str, Path]:
    """The page's own figures from the plot sources in git; a figure whose source is gone is removed."""
    from tvs.page_figures import draw_epochs, draw_scores

    tables, drawn = project.plot_tables, {}
    for relative in FIGURES.values():
        (root / relative).unlink(missing_ok=True)
    if "curves" in tables and len(tables["curves"]):
        draw_epochs(tables["curves"], root / FIGURES["epochs"])
        drawn["Validation accuracy, validation loss and training loss by epoch, both arms"] = root / FIGURES["epochs"]
    if "calibration" in tables and len(tables["calibration"]):
        draw_scores(tables, project.diagnostics.get("positive_class"), root / FIGURES["scores"])
        drawn["Reliability diagram (and ROC and PR curves for two classes), both arms"] = root / FIGURES["scores"]
    return drawn


def gallery_thumbnails(root: Path, project: Project) -> dict[str, bytes]:
    """Thumbnails of the gallery's images, only while the single pair is current (else the prepared cache
    may hold other images under the same names)."""
    from tvs.page_figures import thumbnails

    if project.main is None or differences(project.main, project.now, defaults=defaults()):
        return {}
    cells = project.diagnostics.get("disagreements") or {}
    paths = [
        item.get("path") for cell in cells.values() if isinstance(cell, Mapping) for item in list_of(cell.get("images"))
    ]
    paths += [
        item.get("path")
        for items in (project.diagnostics.get("highest_loss") or {}).values()
        for item in list_of(items)
    ]
    try:
        return thumbnails(root / "data/prepared", [str(p) for p in paths if isinstance(p, str)])
    except (OSError, ValueError):  # DataError is a ValueError
        return {}  # a tampered or half-checked-out cache: the gallery is listed without pictures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="the project's root (default: the current folder)")
    args = parser.parse_args(argv)
    try:
        answer, project = write_page(Path(args.root))
    except UserError as err:
        print(f"page: error: {terminal_text(str(err))}", file=sys.stderr)
        sys.exit(1)
    sys.stdout.write(terminal_answer(answer, project, f"{PAGE_MD} (and {PAGE_HTML}, one file to open offline)"))


if __name__ == "__main__":
    main()

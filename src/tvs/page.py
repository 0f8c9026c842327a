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
import dataclasses
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tvs.errors import UserError
from tvs.evidence import differences, flatten
from tvs.io import write_text
from tvs.ladder import (
    Answer,
    Baseline,
    Pair,
    Repeats,
    Rung,
    baseline_from_counts,
    break_even,
    catch_up,
    decide_ladder,
    pair_rung,
    pct,
    repeats_rung,
    training_cost,
)
from tvs.markup import terminal_text, truncate
from tvs.page_project import TUNE_AXES, Project, read_project
from tvs.page_render import Block, plain, to_html, to_markdown, unhide
from tvs.verdict.curves import NO_PREDICTION

PAGE_MD, PAGE_HTML = "reports/answer.md", "reports/answer.html"
DEFAULT_MARGIN = 2.0  # points; params.yaml's evaluate.equivalence_margin overrides it
NAME_LIMIT = 60  # characters of a class name in a table


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
    config = {**known, **project.now.config}  # the current params, every key (defaults where unset)
    tune_runs, tune_size = tune_work(project.tune_params, config)
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
    # Measured, the commands above would run nothing: the next step is more of the rung, one repeat more.
    one_repeat, one_size = tune_work({**project.tune_params, "lrs": [], "repeats": [0]}, config)
    rung_a = more_of(
        rung_a, "tune/params.yaml's `repeats`", "tune/dvc.yaml", training_cost(one_repeat, per_run, one_size)
    )
    rung_b = more_of(
        rung_b, "study/params.yaml's `seeds`", "study/dvc.yaml", training_cost(2 * len(fractions), per_run)
    )
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


def more_of(rung: Rung, grid: str, pipeline: str, cost: str) -> Rung:
    """A measured rung's next step: one more repeat in ``grid``, and what DVC then runs (the new cells only)."""
    if rung.status != "measured":
        return rung
    return dataclasses.replace(rung, next_step=f"one more entry in {grid}, then `dvc repro {pipeline}` ({cost})")


def baseline_of(project: Project) -> Baseline | None:
    rows = next(iter(project.confusion.values()), None)
    if rows:
        return baseline_from_counts({plain(name): n for name, n in class_counts(rows).items()})
    comparison = project.comparison or {}
    if isinstance(comparison.get("majority_accuracy"), int | float):
        return Baseline(float(comparison["majority_accuracy"]), 0, plain(comparison.get("majority_class")), False)
    return None


# --- one source, two forms (rendered by tvs.page_render) ----------------------------------


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


WIDTH = 99  # characters a line of the terminal answer may take


def terminal_answer(answer: Answer, project: Project, where: str) -> str:
    """What ``make repro`` ends with: the headline, the single pair's accuracies, one line a rung, and where
    the page is; lines of at most ``WIDTH`` characters, anything a terminal would act on shown escaped."""

    def wrap(text: str) -> list[str]:
        shown = terminal_text(unhide(text).replace("`", "") if "`" in text else unhide(text))
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

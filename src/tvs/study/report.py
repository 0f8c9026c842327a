"""The data-efficiency study's outputs: its summary metrics, the curve (PNG and CSV), every cell's
numbers (CSV) and its verdict.

Reads the ``evaluate`` cells the study's ``dvc.yaml`` wrote (one folder per size and seed), so a
cell's numbers are the same files ``dvc metrics`` would show; the shared rules and wording are in
:mod:`tvs.verdict.rules`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from tvs.config import ARMS, EvaluateConfig
from tvs.data.prepared import load_prepared
from tvs.data.split import training_sizes
from tvs.io import write_csv, write_json, write_text
from tvs.study.params import StudyParams
from tvs.study.summary import Cell, SizeSummary, break_even, read_cells, split_baseline, summarise_size
from tvs.verdict.plots import COLOURS, LABELS, draw_baseline, save_figure
from tvs.verdict.rules import (
    ARM_ACTION,
    INCONCLUSIVE,
    Baseline,
    baseline_text,
    ci_pp,
    class_name,
    decide,
    epochs_text,
    estimate_text,
    markdown_table,
    pct,
    pp,
    seconds_text,
    speed_clause,
)

STUDY_RULE = (
    "Rule: at the largest training size, recommend the arm whose mean test accuracy is higher when the "
    "{conf:.0%} CI of the per-seed paired difference (Student t over seeds) excludes zero. If it does not, "
    "and the difference at the smallest size does, recommend that arm *for small data*; otherwise the "
    "verdict is *inconclusive*. Break-even: the smallest size from which on scratch's mean test accuracy "
    "stays within (or above) pretrained's {conf:.0%} CI. Data requirement: the smallest size at which an "
    "arm's mean test accuracy reaches {target:.0%} of the best mean at any size. Speed: mean wall seconds "
    "until the validation accuracy first reaches {target:.0%} of the better arm's best, at the largest size."
)


def size_key(fraction: float) -> str:
    """``0.05`` -> ``"5pct"``: a metrics key without dots (DVC flattens nested keys with dots)."""
    return f"{100 * fraction:g}pct".replace(".", "_")


def mean_training_size(manifests: Sequence[pd.DataFrame], fraction: float) -> tuple[int, float]:
    """Training images at ``fraction`` and their number per class, averaged over the seeds' splits
    (stratified splits of one dataset: equal, or one image apart where copies keep a group together)."""
    sizes = [training_sizes(manifest, fraction) for manifest in manifests]
    return round(sum(n for n, _ in sizes) / len(sizes)), sum(per_class for _, per_class in sizes) / len(sizes)


def data_requirement(sizes: Sequence[SizeSummary], arm: str, target: float) -> SizeSummary | None:
    """The smallest size at which ``arm``'s mean test accuracy reaches ``target`` (``None``: never)."""
    return next((s for s in sorted(sizes, key=lambda s: s.fraction) if s.accuracy[arm].mean >= target), None)


def _lead(size: SizeSummary, arm: str) -> tuple[float, float | None, float | None]:
    """``arm`` minus the other arm at ``size``: mean and CI bounds."""
    d = size.difference
    if arm == "pretrained":
        return d.mean, d.low, d.high
    return -d.mean, None if d.high is None else -d.high, None if d.low is None else -d.low


def study_recommendation(sizes: Sequence[SizeSummary], settings: EvaluateConfig) -> tuple[str, str]:
    """The decision and the one-line recommendation of the study (rule: :data:`tvs.report.STUDY_RULE`)."""
    ordered = sorted(sizes, key=lambda s: s.fraction)
    small, large = ordered[0], ordered[-1]
    conf = settings.confidence

    def lead(size: SizeSummary, arm: str) -> str:
        mean, low, high = _lead(size, arm)
        return f"{pp(mean)} test accuracy with {size.images_per_class:,.0f} images per class ({ci_pp(low, high, conf)})"

    seeds = f"{large.seeds} seed{'s' if large.seeds != 1 else ''}"
    if large.seeds < 2:
        return INCONCLUSIVE, (
            f"**Inconclusive**: one seed gives no confidence interval ({pp(large.difference.mean)} for fine-tuning "
            f"with {large.images_per_class:,.0f} images per class); add seeds to `study/params.yaml`."
        )
    even = break_even(sizes)
    even_text = (
        "break-even not reached within this data"
        if even is None
        else f"scratch is within pretrained's CI from {even.images_per_class:,.0f} images per class on"
    )
    at_large = decide(large.difference.low, large.difference.high)
    at_small = decide(small.difference.low, small.difference.high)
    if at_large != INCONCLUSIVE:
        also = ""
        if small is not large:
            also = f", {pp(_lead(small, at_large)[0])} with {small.images_per_class:,.0f} per class"
        speed = _speed(large, settings, subject=at_large)
        return at_large, f"**{ARM_ACTION[at_large]}**: {lead(large, at_large)}, {seeds}{also}; {even_text}; {speed}."
    if at_small != INCONCLUSIVE:
        return f"{at_small} for small data", (
            f"**{ARM_ACTION[at_small]} for small data**: {lead(small, at_small)}, {seeds}; with "
            f"{large.images_per_class:,.0f} images per class the arms are indistinguishable "
            f"({pp(large.difference.mean)}, {ci_pp(large.difference.low, large.difference.high, conf)}); {even_text}."
        )
    return INCONCLUSIVE, (
        f"**Inconclusive**: at no training size does the {conf:.0%} CI of the difference exclude zero "
        f"(with {large.images_per_class:,.0f} images per class: {pp(large.difference.mean)}, "
        f"{ci_pp(large.difference.low, large.difference.high, conf)}, {seeds}); more seeds narrow the CIs."
    )


def _speed(size: SizeSummary, settings: EvaluateConfig, subject: str | None = None) -> str:
    """Speed clause from the mean seconds to target of the seeds; an arm must reach it in every seed."""
    seconds = {arm: (t.mean if t and size.reached_target[arm] == size.seeds else None)
               for arm, t in size.seconds_to_target.items()}  # fmt: skip
    clause = speed_clause(seconds, {arm: size.epochs for arm in ARMS}, size.target_val_accuracy, subject)
    return clause.replace("validation accuracy", f"validation accuracy ({settings.target_fraction:.0%} of the best)")


def study_verdict(
    sizes: Sequence[SizeSummary], settings: EvaluateConfig, plot_png: str | None, baseline: Baseline
) -> str:
    """The study's ``verdict.md``: recommendation, the table of measured rows, the curve and its table."""
    ordered = sorted(sizes, key=lambda s: s.fraction)
    small, large = ordered[0], ordered[-1]
    conf = settings.confidence
    _, line = study_recommendation(sizes, settings)
    best = max(s.accuracy[arm].mean for s in sizes for arm in ARMS)
    target = settings.target_fraction * best

    def requirement(arm: str) -> str:
        found = data_requirement(sizes, arm, target)
        return "not reached within this data" if found is None else f"{found.images_per_class:,.0f} images per class"

    def to_target(arm: str) -> str:
        t, k = large.seconds_to_target[arm], large.reached_target[arm]
        if t is None:
            return f"not reached in {epochs_text(large.epochs)} (any seed)"
        return f"{seconds_text(t.mean)} ({k} of {large.seeds} seeds reached it)"

    def acc(size: SizeSummary, arm: str) -> str:
        return estimate_text(size.accuracy[arm], conf)

    def above(size: SizeSummary) -> str:
        return ", ".join(f"{arm} {pp(size.accuracy[arm].mean - baseline.accuracy)}" for arm in ARMS)

    def diff(size: SizeSummary) -> str:
        d = size.difference
        tests = f"McNemar p < {settings.alpha:g} in {size.significant_seeds} of {size.seeds} seeds"
        return f"{pp(d.mean)} ({ci_pp(d.low, d.high, conf)}); {tests}"

    even = break_even(sizes)
    rows = [
        ("", "pretrained", "scratch", "evidence (pretrained - scratch)"),
        (f"Best accuracy (test, {large.images_per_class:,.0f} images per class)", acc(large, "pretrained"),
         acc(large, "scratch"), diff(large)),
        (f"Performance on small data ({small.images_per_class:,.0f} images per class)", acc(small, "pretrained"),
         acc(small, "scratch"), diff(small)),
        ("Majority-class baseline (test)", f"{pct(baseline.accuracy)}: always {class_name(baseline.majority_class)}",
         "the same", f"above it: {above(large)} ({large.images_per_class:,.0f} per class); {above(small)} "
         f"({small.images_per_class:,.0f} per class)"),
        (f"Balanced accuracy (test, {large.images_per_class:,.0f} images per class)",
         estimate_text(large.balanced_accuracy["pretrained"], conf),
         estimate_text(large.balanced_accuracy["scratch"], conf),
         f"the baseline scores {pct(baseline.balanced_accuracy)}"),
        (f"Data requirement (to reach {pct(target)}, {settings.target_fraction:.0%} of the best mean)",
         requirement("pretrained"), requirement("scratch"),
         "break-even: " + ("not reached within this data" if even is None
                           else f"{even.images_per_class:,.0f} images per class")),
        (f"Training time to {pct(large.target_val_accuracy)} val accuracy ({large.images_per_class:,.0f} per class)",
         to_target("pretrained"), to_target("scratch"), _speed(large, settings)),
    ]  # fmt: skip
    curve = [("train fraction", "training images (per class)", "epochs", "pretrained", "scratch", "difference")]
    curve += [(f"{s.fraction:.0%}", f"{s.train_images:,} ({s.images_per_class:,.0f})", str(s.epochs),
               acc(s, "pretrained"), acc(s, "scratch"), diff(s)) for s in ordered]  # fmt: skip
    floor = (
        f"Baseline: {baseline_text(baseline.majority_class, baseline.accuracy, baseline.balanced_accuracy)} "
        f"({_splits(large.seeds)}); every accuracy here is read against that."
    )
    parts = ["# Verdict of the data-efficiency study", line, floor, markdown_table(rows)]
    if plot_png:
        parts.append(f"![Test accuracy against training images per class, both arms, {conf:.0%} CI bands]({plot_png})")
    parts += [
        "## Every training size",
        markdown_table(curve),
        STUDY_RULE.format(conf=conf, target=settings.target_fraction),
        f"Each size ran {large.seeds} seeds per arm: a seed draws its own stratified split (and so its own test "
        "images), nested training subset, initialisation and data order, and both arms of a seed share all of "
        "them. The CIs over seeds therefore cover which images land in the test set as well as the training's "
        "randomness. Budget: both arms of a size get the same epochs (`train.epochs`, raised where needed to "
        "reach `min_steps` optimizer steps).",
    ]
    return "\n\n".join(parts) + "\n"


def _splits(seeds: int) -> str:
    return "one test split" if seeds == 1 else f"mean over the {seeds} seeds' test splits"


def study_summary(sizes: Sequence[SizeSummary], settings: EvaluateConfig, baseline: Baseline) -> dict[str, Any]:
    """``metrics/summary.json``: the decision, the break-even point, the baseline and each size's numbers."""
    decision, _ = study_recommendation(sizes, settings)
    even = break_even(sizes)
    out: dict[str, Any] = {
        "recommendation": decision,
        "break_even_images_per_class": None if even is None else even.images_per_class,
        "seeds": max(s.seeds for s in sizes),
        "majority_class": baseline.majority_class,
        "majority_accuracy": baseline.accuracy,
        "majority_balanced_accuracy": baseline.balanced_accuracy,
    }
    for s in sorted(sizes, key=lambda s: s.fraction):  # mean, SD and CI over seeds; the CSV has the rest
        row: dict[str, Any] = {"images_per_class": s.images_per_class}
        for name, est in (*((arm, s.accuracy[arm]) for arm in ARMS), ("accuracy_diff", s.difference)):
            key = f"{name}_accuracy" if name in ARMS else name
            row |= {key: est.mean, f"{key}_sd": est.sd, f"{key}_ci_low": est.low, f"{key}_ci_high": est.high}
        row |= {f"{arm}_balanced_accuracy": s.balanced_accuracy[arm].mean for arm in ARMS}
        row["significant_seeds"] = s.significant_seeds
        out[size_key(s.fraction)] = row
    return out


def curve_table(sizes: Sequence[SizeSummary], baseline: Baseline) -> pd.DataFrame:
    """The curve as a table (one row per size) for ``dvc plots``, with the majority-class baseline as a column."""
    rows = []
    for s in sorted(sizes, key=lambda s: s.fraction):
        row = {"train_fraction": s.fraction, "train_images": s.train_images, "images_per_class": s.images_per_class}
        row |= {"epochs": s.epochs, "seeds": s.seeds}
        for name, est in (*((arm, s.accuracy[arm]) for arm in ARMS), ("difference", s.difference)):
            row |= {name: est.mean, f"{name}_sd": est.sd, f"{name}_ci_low": est.low, f"{name}_ci_high": est.high}
        row |= {f"{arm}_balanced_accuracy": s.balanced_accuracy[arm].mean for arm in ARMS}
        row["majority"] = baseline.accuracy
        rows.append(row)
    return pd.DataFrame(rows)


def cell_table(cells: Mapping[tuple[float, int], Cell], manifests: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Every cell on a row of its own (size, seed): what each arm scored on that seed's test split, the
    paired evidence of the two, and the training time. The per-seed numbers behind every mean, kept in
    git (the cells' own files are in DVC's cache), so a reader can check any summary against them."""
    rows = []
    for (fraction, seed), cell in sorted(cells.items()):
        evidence = cell["comparison"]["significance"]
        row: dict[str, Any] = {"train_fraction": fraction, "seed": seed}
        row["train_images"], row["images_per_class"] = training_sizes(manifests[seed], fraction)
        row |= {"test_images": evidence["test_images"], "majority": cell["comparison"]["majority_accuracy"]}
        for key in ("accuracy", "balanced_accuracy", "train_seconds", "best_epoch"):
            row |= {f"{arm}_{key}": cell[arm][key] for arm in ARMS}
        row |= {key: evidence[key] for key in ("accuracy_diff", "accuracy_diff_ci_low", "accuracy_diff_ci_high")}
        row |= {key: evidence[key] for key in ("only_pretrained_correct", "only_scratch_correct", "mcnemar_p")}
        rows.append(row)
    return pd.DataFrame(rows)


def write_study_report(
    *, study: StudyParams, data_dir: Path, results: Path, summary_path: Path, verdict_path: Path,
    plot_path: Path, table_path: Path, cells_path: Path,
) -> dict[str, Any]:  # fmt: skip
    """Summarise every cell of the grid in ``study`` and write the summary, curve, tables and verdict."""
    manifests = {seed: load_prepared(Path(data_dir) / str(seed)).manifest for seed in study.seeds}
    cells = read_cells(results, study.fractions, study.seeds)
    settings = study.report
    sizes = [summarise_size([cells[(f, s)] for s in study.seeds], f, mean_training_size(list(manifests.values()), f),
                            settings) for f in study.fractions]  # fmt: skip
    baseline = split_baseline(results, cells)
    per_cell = cell_table(cells, manifests)  # before anything is written: a bad cell leaves no half report
    plot_data_efficiency(sizes, break_even(sizes), plot_path, settings.confidence, baseline.accuracy)
    write_csv(curve_table(sizes, baseline), table_path)
    write_csv(per_cell, cells_path)
    summary = study_summary(sizes, settings, baseline)
    write_json(summary_path, summary)
    link = Path(os.path.relpath(plot_path, Path(verdict_path).parent)).as_posix()
    write_text(verdict_path, study_verdict(sizes, settings, link, baseline))
    return summary


def plot_data_efficiency(
    sizes: Sequence[SizeSummary],
    break_even: SizeSummary | None,
    path: str | Path,
    confidence: float = 0.95,
    baseline: float | None = None,
) -> None:
    """Test accuracy (mean and CI band over seeds) against training images per class, log-x, both arms,
    with the majority-class baseline of the test split (if given) as a line."""
    sizes = sorted(sizes, key=lambda s: s.fraction)
    x = [s.images_per_class for s in sizes]
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for arm in ("pretrained", "scratch"):
        est = [s.accuracy[arm] for s in sizes]
        ax.plot(x, [e.mean for e in est], marker="o", color=COLOURS[arm], label=LABELS[arm])
        if all(e.low is not None for e in est):
            ax.fill_between(x, [e.low for e in est], [e.high for e in est], color=COLOURS[arm], alpha=0.2)
    draw_baseline(ax, baseline)
    if break_even is not None:
        ax.axvline(break_even.images_per_class, color="grey", linestyle=":", label="break-even")
        title = f"Break-even at {break_even.images_per_class:.0f} images per class"
    else:
        title = "Break-even not reached within this data"
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:.0f}" for v in x])
    ax.minorticks_off()
    ax.set_xlabel("training images per class (log scale)")
    ax.set_ylabel("test accuracy")
    seeds = max(s.seeds for s in sizes)
    ax.set_title(f"{title}\nmean of {seeds} seed{'s' if seeds != 1 else ''}, band: {confidence:.0%} CI", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)

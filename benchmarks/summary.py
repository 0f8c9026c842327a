"""The headline figures of a benchmark run, the goals of issue 4 they are held to, and the table
formatting shared by the terminal summary and the Markdown report."""

from __future__ import annotations

import math
from typing import Any

# (measure, goal text, predicate on the value)
GOALS = {
    "pipeline_ratio": ("pipeline / compute ceiling", ">= 0.90", lambda v: v >= 0.9),
    "speedup_vs_naive": ("per-epoch speed-up over the naive loop", ">= 3x", lambda v: v >= 3.0),
    "fast_vs_naive_equal": ("test accuracy, fast vs naive (McNemar p)", "p >= 0.05", lambda v: v >= 0.05),
    "auto_vs_fp32_equal": ("test accuracy, auto precision vs fp32 (McNemar p)", "p >= 0.05", lambda v: v >= 0.05),
    "dvc_repro_noop_s": ("no-op `dvc repro` (s)", "< 3", lambda v: v < 3.0),
    "scaling_r2": ("epoch time vs train size, linear fit R^2", ">= 0.98", lambda v: v >= 0.98),
    "mmap_anon_growth": ("heap growth / cache growth, memory-mapped", "<= 0.05", lambda v: v <= 0.05),
}


def _get(result: dict[str, Any], *keys: str) -> Any:
    node: Any = result
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def headline(result: dict[str, Any]) -> dict[str, float | None]:
    """The value of each goal's measure in ``result`` (None where that section did not run)."""
    growth = _get(result, "memory", "growth", "memory-mapped")
    mmap_ratio = None
    if growth and growth["cache_growth_mb"] > 0:
        mmap_ratio = max(growth["anon_peak_growth_mb"], 0.0) / growth["cache_growth_mb"]
    return {
        "pipeline_ratio": _get(result, "pipeline", "ratio"),
        "speedup_vs_naive": _get(result, "naive", "speedup_vs_naive"),
        "fast_vs_naive_equal": _get(result, "naive", "accuracy_fast_vs_naive", "mcnemar_p"),
        "auto_vs_fp32_equal": _get(result, "naive", "accuracy_auto_vs_fp32", "mcnemar_p"),
        "dvc_repro_noop_s": _get(result, "overhead", "dvc", "dvc_repro_noop_s", "median"),
        "scaling_r2": _get(result, "scaling", "fit", "r2"),
        "mmap_anon_growth": mmap_ratio,
    }


def goal_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per goal: measure, value, goal and whether it is met (None: not measured)."""
    rows = []
    for key, value in headline(result).items():
        name, target, ok = GOALS[key]
        measured = value is not None and not (isinstance(value, float) and math.isnan(value))
        rows.append(
            {"key": key, "measure": name, "value": value, "goal": target, "met": ok(value) if measured else None}
        )
    return rows


def fmt(value: Any, digits: int = 2) -> str:
    """Numbers for tables: fixed digits, ``-`` for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10 ** (-digits) or value == 0 else f"{value:.2g}"
    return str(value)


def spread(summary: dict[str, Any] | None, digits: int = 1) -> str:
    """``median [min-max]`` of a summary (``-`` if absent)."""
    if not summary:
        return "-"
    return f"{fmt(summary['median'], digits)} [{fmt(summary['min'], digits)}-{fmt(summary['max'], digits)}]"


def text_table(rows: list[list[str]], header: list[str]) -> str:
    """A plain fixed-width table for the terminal."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def print_summary(result: dict[str, Any]) -> str:
    """The run's goals as a terminal table."""
    rows = [[r["measure"], fmt(r["value"], 3), r["goal"], fmt(r["met"])] for r in goal_rows(result)]
    return text_table(rows, ["measure", "value", "goal", "met"])


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table, as lines (a blank line after it)."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def section_machine(run: dict[str, Any]) -> list[str]:
    """Where, when and how a run was measured, as Markdown lines."""
    m = run["machine"]
    hw = m.get("gpu") or m["host_cpu"]
    lines = [f"Machine: **{hw}**" + (f" (host {m['host_cpu']})" if m.get("gpu") else "")]
    lines.append(
        f"{m['cores']} cores, {m['memory_gb']} GB RAM, CPU features {', '.join(m['cpu_flags']) or '-'} "
        f"(torch kernels: {m['torch_cpu_capability']}); Python {m['python']}, torch {m['torch']}"
        + (f", CUDA {m['cuda']}" if m.get("cuda") else "")
    )
    lines.append(f"Date {m['date']}, commit `{m.get('git_commit')}`, command `{m['command']}`")
    if "dataset" in run:
        d = run["dataset"]
        lines.append(
            f"Data: {d['images']} images ({d['train_images']} train) at {d['image_size']} px from `{d['raw']}`"
        )
    return ["", *[line + "  " for line in lines], ""]

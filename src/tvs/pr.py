"""The pull-request comment: the metrics that decide the verdict, the verdict(s) and the checks' outcomes.

The workflow in ``.github/workflows/pull-request.yml`` runs::

    dvc metrics diff origin/main --all --json > diff.json
    python -m tvs.pr --base main --diff diff.json --verdict reports/verdict.md \\
        --verdict study/reports/verdict.md --check tests=success --out comment.md

and posts ``comment.md`` with the GitHub CLI (``gh pr comment --edit-last --create-if-none``). The comment
leads with the few numbers the verdict rests on (the accuracy difference with its CI and McNemar p, each
arm's accuracy and balanced accuracy); every other metric that changed (timings, counts, the study's
summary) follows, folded away. This module imports only the standard library: the comment job installs
nothing but DVC.

What a metrics file names or holds (its path, a metric's key, a value that is not a number) is data, not
markup: :func:`tvs.markup.md_cell` escapes it, so no pipe splits a cell, no newline or ``</details>`` ends the
folded section, no HTML tag gets through and no ``@mention`` notifies anyone. Sizes are capped well under
GitHub's maximum of 65,536 characters for a comment: a cell at ``CELL_LIMIT`` = 100 characters, the folded
table at ``TABLE_LIMIT`` = 24,000, one verdict at ``VERDICT_LIMIT`` = 8,000 and the whole comment at
``COMMENT_LIMIT`` = 50,000; the comment says so wherever something was cut. The verdicts are the project's
own Markdown and are included as they are, cut at a paragraph when they do not fit.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tvs.markup import md_cell, truncate_markdown

MARKER = "<!-- tvs: pull-request report -->"
OUTCOMES = {"success": "passed", "failure": "FAILED", "cancelled": "cancelled", "skipped": "skipped"}

# `dvc metrics diff --json`: metrics file -> flattened key -> {"old": ..., "new": ..., "diff": ...}
MetricsDiff = Mapping[str, Mapping[str, Mapping[str, object]]]
COMPARISON, PRETRAINED, SCRATCH = "metrics/comparison.json", "metrics/pretrained.json", "metrics/scratch.json"

# In characters. The margin under GitHub's 65,536 leaves room for characters it counts twice (outside the BMP).
CELL_LIMIT = 100  # a path, key or value in one cell of the folded table (the pipelines' longest key has 42)
TABLE_LIMIT = 24_000  # the folded table (all 184 metrics of the three pipelines take about 15,000)
VERDICT_LIMIT = 8_000  # one verdict (the project's take 2,000 to 4,000)
COMMENT_LIMIT = 50_000  # the whole comment


@dataclass(frozen=True)
class Row:
    """One line of the decisive table: where its value is, and how to show it."""

    label: str
    path: str
    key: str
    kind: str  # "difference" (points), "accuracy" (percent) or "p"
    ci: tuple[str, str] | None = None  # the keys of its CI, in the same file


DECISIVE = (
    Row("Accuracy, pretrained - scratch", COMPARISON, "accuracy", "difference",
        ("significance.accuracy_diff_ci_low", "significance.accuracy_diff_ci_high")),
    Row("McNemar exact p", COMPARISON, "significance.mcnemar_p", "p"),
    Row("Accuracy, pretrained", PRETRAINED, "accuracy", "accuracy", ("accuracy_ci_low", "accuracy_ci_high")),
    Row("Accuracy, scratch", SCRATCH, "accuracy", "accuracy", ("accuracy_ci_low", "accuracy_ci_high")),
    Row("Balanced accuracy, pretrained - scratch", COMPARISON, "balanced_accuracy", "difference"),
    Row("Balanced accuracy, pretrained", PRETRAINED, "balanced_accuracy", "accuracy"),
    Row("Balanced accuracy, scratch", SCRATCH, "balanced_accuracy", "accuracy"),
    Row("Majority-class accuracy (baseline)", COMPARISON, "majority_accuracy", "accuracy"),
)  # fmt: skip
# Restated in the table above (comparison.json's `accuracy` is the same difference) or used to label it.
SHOWN_ELSEWHERE = {(COMPARISON, "significance.accuracy_diff"), (COMPARISON, "significance.confidence")}


def as_number(value: object) -> float | None:
    """``value`` as a float if it is a JSON number (not a bool), else ``None``."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _points(value: float, signed: bool) -> str:
    return f"{100 * value:+.1f} pp" if signed else f"{100 * value:.1f}"


def _shown(row: Row, values: Mapping[str, object], confidence: float | None) -> str:
    """A value of ``row`` on one side of the diff, with its CI when the metrics file has one."""
    value = as_number(values.get(row.key))
    if value is None:
        return "-"
    if row.kind == "p":
        return "< 0.001" if value < 0.001 else f"{value:.3f}"
    text = _points(value, signed=True) if row.kind == "difference" else f"{100 * value:.1f}%"
    low, high = (as_number(values.get(key)) for key in row.ci) if row.ci else (None, None)
    if low is not None and high is not None:
        level = f"{100 * confidence:.0f}% CI" if confidence else "CI"
        text += f" ({level} {_points(low, False)} to {_points(high, False)})"
    return text


def _change(row: Row, old: Mapping[str, object], new: Mapping[str, object]) -> str:
    before, after = as_number(old.get(row.key)), as_number(new.get(row.key))
    if row.kind == "p" or before is None or after is None:
        return ""
    return _points(after - before, signed=True)


def _side(diff: MetricsDiff, path: str, side: str) -> dict[str, object]:
    return {key: entry.get(side) for key, entry in diff.get(path, {}).items()}


def decisive_table(diff: MetricsDiff, base: str) -> list[str]:
    """The rows the verdict rests on, base against this branch; a row no metrics file has is left out."""
    sides = {side: {path: _side(diff, path, side) for path in (COMPARISON, PRETRAINED, SCRATCH)}
             for side in ("old", "new")}  # fmt: skip
    confidence = {side: as_number(sides[side][COMPARISON].get("significance.confidence")) for side in sides}
    lines = [f"| metric | `{base}` | this branch | change |", "|---|---|---|---|"]
    for row in DECISIVE:
        old, new = sides["old"][row.path], sides["new"][row.path]
        if row.key not in old and row.key not in new:
            continue
        cells = (_shown(row, old, confidence["old"]), _shown(row, new, confidence["new"]), _change(row, old, new))
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def _raw(value: object) -> str:
    number = as_number(value)
    return "-" if value is None else f"{number:.5g}" if number is not None else str(value)


def other_changes(diff: MetricsDiff) -> list[tuple[str, ...]]:
    """Every metric that changed and is not in the decisive table, as ``dvc metrics diff`` shows it: path, key,
    base, this branch and change, as plain text (not yet Markdown)."""
    shown = {(row.path, key) for row in DECISIVE for key in (row.key, *(row.ci or ()))} | SHOWN_ELSEWHERE
    rows = []
    for path, metrics in sorted(diff.items()):  # the main pipeline's metrics/ before study/
        for key, entry in sorted(metrics.items()):
            if (path, key) in shown or entry.get("old") == entry.get("new"):
                continue
            rows.append((path, key, _raw(entry.get("old")), _raw(entry.get("new")), _raw(entry.get("diff"))))
    return rows


def table_rows(rows: Sequence[Sequence[str]], limit: int = TABLE_LIMIT) -> list[str]:
    """``rows`` as Markdown table rows, each cell escaped and cut to ``CELL_LIMIT``: as many as fit in ``limit``."""
    lines, size = [], 0
    for row in rows:
        line = "| " + " | ".join(md_cell(cell, CELL_LIMIT) for cell in row) + " |"
        size += len(line) + 1
        if size > limit:
            break
        lines.append(line)
    return lines


def cut_note(rows: Sequence[Sequence[str]], shown: int, base: str) -> list[str]:
    """What the folded table leaves out of ``rows`` when it shows the first ``shown``, and why; none if nothing."""
    notes = []
    if any(len(cell) > CELL_LIMIT for row in rows[:shown] for cell in row):
        notes.append(f"a cell shows at most {CELL_LIMIT} characters of a name or value (… marks the cut)")
    if shown < len(rows):
        notes.append(f"{len(rows) - shown} more changed metrics are left out (this table holds at most "
                     f"{TABLE_LIMIT:,} characters); `dvc metrics diff {base} --all` lists them all")  # fmt: skip
    return ["", "Cut to fit: " + "; ".join(notes) + "."] if notes else []


def metrics_section(diff: MetricsDiff, base: str) -> list[str]:
    """The comment's metrics: the decisive table first, every other change folded under it."""
    decisive, others = decisive_table(diff, base), other_changes(diff)
    if not decisive and not others:
        return [f"No metric differs from `{base}` (committed metrics files, `dvc metrics diff`)."]
    lines = decisive or [f"The main pipeline's metrics files are in neither `{base}` nor this branch."]
    if others:
        rows = table_rows(others)
        lines += ["", f"<details><summary>{len(others)} other metrics changed (timings, counts, the study)</summary>",
                  "", f"| Path | Metric | `{base}` | this branch | Change |", "|---|---|---|---|---|", *rows,
                  *cut_note(others, len(rows), base), "", "</details>"]  # fmt: skip
    return lines


def demote_headings(markdown: str, levels: int = 2) -> str:
    """``# Title`` -> ``### Title``, so an embedded report nests under the comment's own headings."""
    return re.sub(r"^(#{1,6}) ", lambda m: "#" * min(6, len(m.group(1)) + levels) + " ", markdown, flags=re.M)


def absolute_images(markdown: str, base_url: str | None) -> str:
    """Rewrite relative image links (``![x](plot.png)``) onto ``base_url``; a comment has no folder."""
    if not base_url:
        return markdown
    base = base_url.rstrip("/") + "/"
    return re.sub(
        r"!\[([^\]]*)\]\((?!https?://)([^)\s]+)\)", lambda m: f"![{m.group(1)}]({base}{m.group(2)})", markdown
    )


def _verdict_heading(path: str) -> list[str]:
    return ["", f"### Verdict (`{path}`)", ""]


def _verdict_cut(path: str, shown: int, whole: int) -> str:
    return (f"Cut to fit: the verdict stops here, after {shown:,} of its {whole:,} characters (a verdict takes at "
            f"most {VERDICT_LIMIT:,} characters of this comment, the comment {COMMENT_LIMIT:,}); the whole of it is "
            f"`{path}` in this branch.")  # fmt: skip


def _verdict_overhead(path: str) -> int:
    """The most characters a verdict adds besides its own text: its heading, a blank line and a note."""
    return len("\n".join(_verdict_heading(path))) + len(_verdict_cut(path, COMMENT_LIMIT, 10**12)) + 8


def verdict_budget(used: int, paths: Sequence[str]) -> int:
    """Characters the first of ``paths`` may take when the comment so far has ``used``: an equal share of what
    is left under ``COMMENT_LIMIT`` once every heading and note is counted, and at most ``VERDICT_LIMIT``."""
    room = COMMENT_LIMIT - used - sum(map(_verdict_overhead, paths)) - 1  # the final newline
    return max(0, min(VERDICT_LIMIT, room // max(len(paths), 1)))


def pr_comment(
    *,
    base: str,
    metrics_diff: MetricsDiff,
    verdicts: Mapping[str, str | None],
    checks: Mapping[str, str],
    image_base_urls: Mapping[str, str] | None = None,
) -> str:
    """The comment's Markdown.

    Args:
        base: the branch the pull request goes into.
        metrics_diff: the parsed output of ``dvc metrics diff <base> --all --json``.
        verdicts: verdict path -> its Markdown (``None``: not in this branch).
        checks: check name -> GitHub step outcome (``success``, ``failure``, ...).
        image_base_urls: verdict path -> URL of its folder, for the plots it embeds.
    """
    lines = [MARKER, "## transfer-vs-scratch: results of this pull request", ""]
    if checks:
        lines.append(" · ".join(f"{name}: **{OUTCOMES.get(outcome, outcome)}**" for name, outcome in checks.items()))
        lines.append("")
    lines += [f"### Metrics compared with `{base}`", "", *metrics_section(metrics_diff, base)]
    paths = list(verdicts)
    for i, path in enumerate(paths):
        budget = verdict_budget(len("\n".join(lines)), paths[i:])
        lines += _verdict_heading(path)
        verdict = verdicts[path]
        if verdict is None or not verdict.strip():
            lines.append(f"`{path}` is not in this branch: run the pipeline and commit its outputs.")
            continue
        body = demote_headings(absolute_images(verdict.strip(), (image_base_urls or {}).get(path)), levels=3)
        shown = truncate_markdown(body, budget)
        lines += [shown] if shown == body else [shown, "", _verdict_cut(path, len(shown), len(body))]
    return "\n".join(lines) + "\n"


def _read_optional(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def read_diff(path: Path) -> dict:
    """``dvc metrics diff --json``'s output; an absent or empty file is no difference."""
    text = (_read_optional(path) or "").strip()
    return json.loads(text) if text else {}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the branch the pull request goes into")
    parser.add_argument("--diff", type=Path, required=True, help="file holding `dvc metrics diff <base> --all --json`")
    parser.add_argument("--verdict", type=Path, action="append", default=[], help="a verdict.md (repeatable)")
    parser.add_argument("--check", action="append", default=[], metavar="NAME=OUTCOME", help="a check's outcome")
    parser.add_argument("--image-base", default=None, help="URL of the repository tree at this commit, for plots")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    checks = dict(item.split("=", 1) for item in args.check)
    urls = {}
    if args.image_base:
        urls = {str(v): f"{args.image_base.rstrip('/')}/{v.parent.as_posix()}" for v in args.verdict}
    text = pr_comment(
        base=args.base,
        metrics_diff=read_diff(args.diff),
        verdicts={str(v): _read_optional(v) for v in args.verdict},
        checks=checks,
        image_base_urls=urls,
    )
    args.out.write_text(text)


if __name__ == "__main__":
    main()

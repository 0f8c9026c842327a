"""The answer ``make repro`` ends with: the verdict's headline, each arm's test accuracy and their difference,
and where the whole page and the plots are.

``dvc metrics show`` prints every metric of every pipeline, a table thousands of characters wide whose first
columns are the study's; this prints a dozen lines at most, under 100 characters wide::

    python -m tvs.answer   # reads reports/verdict.md and metrics/{pretrained,scratch,comparison}.json

It writes to a terminal, not to Markdown, so nothing is escaped for Markdown; a control character (an ESC
sequence, a newline in a class name) is shown escaped (:func:`tvs.markup.terminal_text`). A missing or
malformed file is one line naming it on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvs.errors import UserError
from tvs.markup import terminal_text, truncate
from tvs.pr import COMPARISON, PRETRAINED, SCRATCH, as_number

VERDICT = "reports/verdict.md"
WIDTH = 99  # characters a line may take
HEADLINE_LINES = 5  # of the verdict's title and recommendation, wrapped; the rest is on the page
NAME_LIMIT = 40  # characters of a class name


@dataclass(frozen=True)
class Files:
    """Where each input is, named in the answer and in its errors."""

    verdict: str = VERDICT
    pretrained: str = PRETRAINED
    scratch: str = SCRATCH
    comparison: str = COMPARISON


def headline(verdict: str, path: str) -> list[str]:
    """The verdict's first paragraphs, through the one that starts in bold (the title and the recommendation),
    each joined onto one line, without Markdown's ``#`` and ``**``."""
    lines = verdict.splitlines()
    bold = next((i for i, line in enumerate(lines) if line.lstrip().startswith("**")), None)
    if bold is None:
        raise UserError(f"{path}: no recommendation (a line starting with **) in it; rerun `dvc repro`")
    end = next((i for i in range(bold, len(lines)) if not lines[i].strip()), len(lines))
    paragraphs = re.split(r"\n\s*\n", "\n".join(lines[:end]))
    return [" ".join(p.lstrip("#").replace("**", "").split()) for p in paragraphs if p.strip()]


def accuracy(metrics: Mapping[str, Any], path: str) -> float:
    """``metrics["accuracy"]``, which must be a number."""
    value = as_number(metrics.get("accuracy"))
    if value is None:
        raise UserError(f"{path}: no number under `accuracy`; rerun `dvc repro`")
    return value


def difference(comparison: Mapping[str, Any], path: str) -> str:
    """Pretrained minus scratch in points, or why there is none (an arm diverged: the file holds null)."""
    value = as_number(comparison.get("accuracy"))
    if value is not None:
        return f"{100 * value:+.1f} pp"
    if comparison.get("diverged") and "accuracy" in comparison:
        return "none, an arm diverged (read the verdict)"
    raise UserError(f"{path}: no number under `accuracy`; rerun `dvc repro`")


def baseline(comparison: Mapping[str, Any]) -> str | None:
    """The majority-class baseline that every accuracy is read against, if the comparison has it."""
    floor, name = as_number(comparison.get("majority_accuracy")), comparison.get("majority_class")
    if floor is None or not isinstance(name, str):
        return None
    shown = truncate(terminal_text(name), NAME_LIMIT)  # escaped first: an escape takes up to 10 characters
    return f"Baseline: {100 * floor:.1f}% by always answering the majority class, `{shown}`."


def _wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(terminal_text(text), WIDTH, subsequent_indent=indent)


def answer(
    *,
    verdict: str,
    pretrained: Mapping[str, Any],
    scratch: Mapping[str, Any],
    comparison: Mapping[str, Any],
    files: Files | None = None,
) -> str:
    """The answer as lines of at most ``WIDTH`` characters, ending in a newline."""
    files = files or Files()
    head = [line for paragraph in headline(verdict, files.verdict) for line in _wrap(paragraph, "  ")]
    if len(head) > HEADLINE_LINES:
        head = [*head[: HEADLINE_LINES - 1], truncate(head[HEADLINE_LINES - 1] + " …", WIDTH)]
    arms = (f"Test accuracy: pretrained {100 * accuracy(pretrained, files.pretrained):.1f}%, scratch "
            f"{100 * accuracy(scratch, files.scratch):.1f}%; pretrained - scratch: "
            f"{difference(comparison, files.comparison)}.")  # fmt: skip
    floor = baseline(comparison)
    where = f"Full page: {files.verdict}; plots: `dvc plots show` (writes dvc_plots/index.html)."
    body = [*_wrap(arms, "  "), *(_wrap(floor, "  ") if floor else []), *_wrap(where, "  ")]
    return "\n".join([*head, "", *body]) + "\n"


def read_text(path: str) -> str:
    """A file's text; one line naming it when it is missing or unreadable."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; run `make repro` (or `dvc repro`) first") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; rerun `dvc repro`") from None
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror or err})") from None


def read_metrics(path: str) -> dict[str, Any]:
    """A metrics file: a JSON object; one line naming it when it is not one."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err}); rerun `dvc repro`") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object; rerun `dvc repro`")
    return data


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Files()
    for name in ("verdict", "pretrained", "scratch", "comparison"):
        parser.add_argument(f"--{name}", default=getattr(defaults, name), help=f"default: {getattr(defaults, name)}")
    args = parser.parse_args(argv)
    files = Files(args.verdict, args.pretrained, args.scratch, args.comparison)
    try:
        text = answer(
            verdict=read_text(files.verdict),
            pretrained=read_metrics(files.pretrained),
            scratch=read_metrics(files.scratch),
            comparison=read_metrics(files.comparison),
            files=files,
        )
    except UserError as err:
        print(f"answer: error: {terminal_text(str(err))}", file=sys.stderr)
        sys.exit(1)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()

"""The pull-request comment: `dvc metrics diff <base> --md`, the verdict(s) and the checks' outcomes.

The workflow in ``.github/workflows/pull-request.yml`` runs::

    python -m tvs.pr --base main --diff diff.md --verdict reports/verdict.md \\
        --verdict study/reports/verdict.md --check tests=success --out comment.md

and posts ``comment.md`` with the GitHub CLI (``gh pr comment --edit-last --create-if-none``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

MARKER = "<!-- tvs: pull-request report -->"
OUTCOMES = {"success": "passed", "failure": "FAILED", "cancelled": "cancelled", "skipped": "skipped"}


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


def pr_comment(
    *,
    base: str,
    metrics_diff: str,
    verdicts: Mapping[str, str | None],
    checks: Mapping[str, str],
    image_base_urls: Mapping[str, str] | None = None,
) -> str:
    """The comment's Markdown.

    Args:
        base: the branch the pull request goes into.
        metrics_diff: the output of ``dvc metrics diff <base> --md`` (empty: nothing changed).
        verdicts: verdict path -> its Markdown (``None``: not in this branch).
        checks: check name -> GitHub step outcome (``success``, ``failure``, ...).
        image_base_urls: verdict path -> URL of its folder, for the plots it embeds.
    """
    lines = [MARKER, "## transfer-vs-scratch: results of this pull request", ""]
    if checks:
        lines.append(" · ".join(f"{name}: **{OUTCOMES.get(outcome, outcome)}**" for name, outcome in checks.items()))
        lines.append("")
    lines += [f"### Metrics compared with `{base}`", ""]
    diff = metrics_diff.strip()
    lines.append(diff if diff else f"No metric differs from `{base}` (committed metrics files, `dvc metrics diff`).")
    for path, verdict in verdicts.items():
        lines += ["", f"### Verdict (`{path}`)", ""]
        if verdict is None or not verdict.strip():
            lines.append(f"`{path}` is not in this branch: run the pipeline and commit its outputs.")
            continue
        body = absolute_images(verdict.strip(), (image_base_urls or {}).get(path))
        lines.append(demote_headings(body, levels=3))
    return "\n".join(lines) + "\n"


def _read_optional(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the branch the pull request goes into")
    parser.add_argument("--diff", type=Path, required=True, help="file holding `dvc metrics diff <base> --md`")
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
        metrics_diff=_read_optional(args.diff) or "",
        verdicts={str(v): _read_optional(v) for v in args.verdict},
        checks=checks,
        image_base_urls=urls,
    )
    args.out.write_text(text)


if __name__ == "__main__":
    main()

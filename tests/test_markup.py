"""Text from metrics files is data, not markup: escaped and capped in the pull-request comment (tvs.markup,
tvs.pr), each reported attack checked through the functions, ``pr_comment`` and ``python -m tvs.pr``."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tvs import pr
from tvs.deps import import_closure
from tvs.markup import md_cell, md_text, one_line, terminal_text, truncate, truncate_markdown
from tvs.pr import CELL_LIMIT, COMMENT_LIMIT, TABLE_LIMIT, VERDICT_LIMIT, pr_comment

from .conftest import PROJECT

# The reported attacks, exactly as reported (a real newline in the first).
BREAKOUT = "k|</details>\n# FAKE: all tests passed"
SCRIPT = "<script>alert(1)</script>"
MENTION = "@octocat"
MEGABYTE = "9" * 1_000_000

# What GitHub links as a mention (html-pipeline's MentionFilter): @name after a non-word character.
LINKED_MENTION = re.compile(r"(?:^|\W)@[a-z0-9][a-z0-9-]*", re.I)
FOLDED_HEADER = "| Path | Metric | `main` | this branch | Change |"
GFM = MarkdownIt("commonmark").enable(["table", "strikethrough"])  # CommonMark + GitHub's tables, raw HTML on


def entry(old: object, new: object) -> dict:
    return {"old": old, "new": new, "diff": None}


def attack_diff() -> dict:
    """`dvc metrics diff --json` whose paths, keys and values are each attack, beside one honest metric."""
    return {
        "metrics/pretrained.json": {"train_seconds": entry(1.0, 2.0), BREAKOUT: entry(SCRIPT, MENTION)},
        BREAKOUT: {SCRIPT: entry(0, 1), MENTION: entry(MEGABYTE, BREAKOUT)},
        f"study/{MENTION}.json": {f"cc {MENTION}, {SCRIPT}": entry(MENTION, SCRIPT)},
    }


def cells(row: str) -> list[str]:
    """A GFM table row's cells: split at every pipe no backslash escapes."""
    found, current, chars = [], "", iter(row.strip().removeprefix("|").removesuffix("|"))
    for char in chars:
        if char == "\\":
            current += char + next(chars, "")
        elif char == "|":
            found, current = [*found, current], ""
        else:
            current += char
    return [*found, current]


def folded_rows(comment: str) -> list[str]:
    """The rows of the folded table, from its header to the blank line that ends it."""
    start = comment.index(FOLDED_HEADER)
    return comment[start:].split("\n\n")[0].splitlines()


def linked_mentions(markdown: str) -> list[str]:
    """The mentions GitHub would link: outside code spans (escaped backticks do not open one)."""
    outside_code = re.sub(r"`[^`\n]*`", "", markdown.replace("\\`", ""))
    return [m.strip() for m in LINKED_MENTION.findall(outside_code)]


class Elements(HTMLParser):
    """The elements of rendered HTML, in order, and the cell count of each table row."""

    def __init__(self, markup: str):
        super().__init__()
        self.tags: list[str] = []
        self.row_cells: list[int] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.row_cells.append(0)
        elif tag in ("td", "th"):
            self.row_cells[-1] += 1

    def handle_endtag(self, tag: str) -> None:
        self.tags.append("/" + tag)


def assert_safe(comment: str) -> None:
    """The attacks stay data: one folded section, closed after its table; five cells a row; no HTML; no ping."""
    assert comment.count("<details>") == 1 and comment.count("</details>") == 1
    rows = folded_rows(comment)
    assert all(len(cells(row)) == 5 for row in rows), [row for row in rows if len(cells(row)) != 5]
    after = comment[comment.index(FOLDED_HEADER) :].split("\n\n")[1:3]  # the blocks after the table
    assert after[0].startswith("</details>") or after[0].startswith("Cut to fit") and after[1].startswith("</details>")
    assert not re.search(r"^\s*#+ FAKE", comment, re.M)
    assert "<script" not in comment.lower()
    assert linked_mentions(comment) == []
    assert len(comment) <= COMMENT_LIMIT

    rendered = Elements(GFM.render(comment))  # the same, as a CommonMark + tables renderer draws it
    assert rendered.tags.count("details") == 1 and rendered.tags.count("/details") == 1
    assert "script" not in rendered.tags and "h1" not in rendered.tags
    inside = rendered.tags[rendered.tags.index("details") : rendered.tags.index("/details")]
    assert inside.count("tr") == len(rows) - 1  # every row of the folded table, and nothing more, inside it
    assert 5 in rendered.row_cells and set(rendered.row_cells) <= {4, 5}  # the decisive table has four columns


# --- tvs.markup -------------------------------------------------------------------------------


def test_a_cell_holding_the_details_breakout_stays_one_cell_on_one_line():
    cell = md_cell(BREAKOUT, CELL_LIMIT)
    assert cell == "k\\|&lt;/details&gt; # FAKE: all tests passed"
    assert "\n" not in cell and "</details>" not in cell and len(cells(f"| {cell} |")) == 1


def test_html_in_text_becomes_character_references():
    assert md_text(SCRIPT) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert md_text('a & "b"') == "a &amp; &quot;b&quot;"


@pytest.mark.parametrize(
    ("text", "markdown"),
    [(MENTION, "`@octocat`"), (f"cc {MENTION}!", "cc `@octocat`!"), ("@org/team-a", "`@org/team-a`"),
     ("user@example.com", "user`@example`.com"), (f"`{MENTION}`", "\\``@octocat`\\`")],
)  # fmt: skip
def test_a_mention_is_put_in_a_code_span_which_github_does_not_link(text: str, markdown: str):
    assert md_text(text) == markdown and linked_mentions(markdown) == []
    assert "@" not in re.sub(r"<code>[^<]*</code>", "", GFM.render(markdown))


@pytest.mark.parametrize(
    ("text", "markdown"),
    [("train_seconds", "train_seconds"), ("100pct.accuracy_diff", "100pct.accuracy_diff"), ("_x_", "\\_x\\_"),
     ("a*b*", "a\\*b\\*"), ("# h", "\\# h"), ("a #1", "a #1"), ("[a](b)", "\\[a\\](b)"), ("![i](x)", "!\\[i\\](x)"),
     ("~~s~~", "\\~\\~s\\~\\~"), ("$x$", "\\$x\\$"), ("a\\|b", "a\\\\\\|b"), ("-39.28", "-39.28"), ("", "")],
)  # fmt: skip
def test_markdown_punctuation_is_escaped_and_words_with_underscores_are_left_alone(text: str, markdown: str):
    assert md_text(text) == markdown


@pytest.mark.parametrize(
    "text",
    [BREAKOUT, SCRIPT, MENTION, f"`{MENTION}`", "_x_ *y* `z` ~~s~~ [l](http://e) ![i](p.png) $m$ a\\b \\|",
     "<!-- c -->", "&amp; &#64;octocat", "a\tb\x00c\x1bd", "train_seconds", "# heading"],
)  # fmt: skip
def test_escaped_text_renders_as_itself_in_a_table_cell(text: str):
    markup = GFM.render(f"| h |\n|---|\n| {md_text(text)} |\n")
    cell = re.search(r"<td>(.*)</td>", markup, re.S).group(1)
    assert html.unescape(re.sub(r"</?code>", "", cell)) == one_line(text).strip()


def test_truncate_keeps_the_limit_and_marks_the_cut():
    assert truncate("abc", 3) == "abc" and truncate("abcd", 3) == "ab…" and truncate(MEGABYTE, 100) == "9" * 99 + "…"
    cell = md_cell("<" * 1000, 10)  # cut before escaping: no character reference is cut in half
    assert cell == "&lt;" * 9 + "…"


def test_truncate_markdown_cuts_at_a_paragraph_and_closes_an_open_fence():
    text = "one\n\ntwo\n\n```\ncode\n\nmore code\n```\n\nthree"
    assert truncate_markdown(text, 1000) == text
    assert truncate_markdown(text, 9) == "one"
    cut = truncate_markdown(text, 30)
    assert cut == "one\n\ntwo\n\n```\ncode\n```" and len(cut) <= 30
    assert len(truncate_markdown("x" * 100, 50)) <= 50


def test_terminal_text_shows_control_and_direction_characters_escaped():
    assert terminal_text("a\x1b[31mred\x07\nb\u202ec") == "a\\x1b[31mred\\x07\\nb\\u202ec"
    assert terminal_text("défaut 🙂") == "défaut 🙂"


# --- the comment: pr_comment and python -m tvs.pr -----------------------------------------------


def test_no_metric_path_key_or_value_can_break_the_comment():
    comment = pr_comment(base="main", metrics_diff=attack_diff(), verdicts={}, checks={"tests": "success"})
    assert_safe(comment)
    assert "| metrics/pretrained.json | train_seconds | 1 | 2 | - |" in comment  # honest rows unchanged
    assert "k\\|&lt;/details&gt; # FAKE: all tests passed | &lt;script&gt;alert(1)&lt;/script&gt; | `@octocat` |" in (
        comment
    )


def test_a_megabyte_value_is_cut_to_the_cell_limit_and_the_comment_says_so():
    comment = pr_comment(base="main", metrics_diff=attack_diff(), verdicts={}, checks={})
    assert len(comment) < 5_000
    assert f"| {'9' * (CELL_LIMIT - 1)}… |" in comment
    assert f"Cut to fit: a cell shows at most {CELL_LIMIT} characters of a name or value (… marks the cut)." in (
        comment
    )
    assert "Cut to fit" not in pr_comment(base="main", metrics_diff={"m.json": {"a": entry(1, 2)}}, verdicts={},
                                          checks={})  # fmt: skip


def test_a_long_table_keeps_its_first_rows_and_says_how_many_it_leaves_out():
    diff = {f"metrics/{i:05d}_{SCRIPT}.json": {f"{MENTION}{'k' * 200}": entry(i, i + 1)} for i in range(5_000)}
    comment = pr_comment(base="main", metrics_diff=diff, verdicts={}, checks={})
    assert_safe(comment)
    rows = folded_rows(comment)[2:]
    assert TABLE_LIMIT - 2 * len(rows[0]) < sum(len(row) + 1 for row in rows) <= TABLE_LIMIT
    assert f"{5_000 - len(rows)} more changed metrics are left out (this table holds at most {TABLE_LIMIT:,}" in (
        comment
    )
    assert "<summary>5000 other metrics changed" in comment


def test_verdicts_are_cut_at_a_paragraph_so_that_the_comment_stays_under_its_limit():
    paragraphs = "\n\n".join(f"Paragraph {i}: " + "word " * 40 for i in range(5_000))  # ~1 MB
    verdicts = {f"v{i}/verdict.md": f"# Verdict {i}\n\n**Fine-tune**: yes.\n\n{paragraphs}" for i in range(5)}
    verdicts["one/verdict.md"] = "x" * 1_000_000  # one paragraph, one line
    big = {f"metrics/{i}.json": {"k" * 90: entry("v" * 90, i)} for i in range(2_000)}
    comment = pr_comment(base="main", metrics_diff=big, verdicts=verdicts, checks={})
    assert_safe(comment)
    for path in verdicts:
        assert f"the whole of it is `{path}` in this branch." in comment
    assert "#### Verdict 4" in comment and "**Fine-tune**: yes." in comment
    assert re.search(r"word\n\nCut to fit: the verdict stops here, after [\d,]+ of its [\d,]+ characters", comment)
    small = pr_comment(base="main", metrics_diff={}, verdicts={"v.md": "# V\n\n" + "word " * 1000}, checks={})
    assert "Cut to fit" not in small  # 5,000 characters: under VERDICT_LIMIT
    cut = pr_comment(base="main", metrics_diff={}, verdicts={"v.md": "# V\n\n" + "word " * 2_000}, checks={})
    assert f"a verdict takes at most {VERDICT_LIMIT:,} characters of this comment" in cut


def test_the_limits_are_stated_in_the_module_and_leave_a_margin_under_githubs():
    assert CELL_LIMIT < TABLE_LIMIT and VERDICT_LIMIT < COMMENT_LIMIT <= 0.8 * 65_536
    for name in ("CELL_LIMIT", "TABLE_LIMIT", "VERDICT_LIMIT", "COMMENT_LIMIT"):
        assert f"``{name}`` = {getattr(pr, name):,}" in pr.__doc__


def test_the_command_escapes_and_caps_what_it_reads(tmp_path: Path):
    (tmp_path / "diff.json").write_text(json.dumps(attack_diff()))
    (tmp_path / "verdict.md").write_text("# Verdict\n\n**Fine-tune**: yes.\n\n" + "many words " * 100_000)
    proc = subprocess.run(
        [sys.executable, "-m", "tvs.pr", "--base", "main", "--diff", "diff.json", "--verdict", "verdict.md",
         "--check", "tests=success", "--out", "comment.md"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(PROJECT / "src")}, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    comment = (tmp_path / "comment.md").read_text()
    assert_safe(comment)
    assert "Cut to fit: a cell shows at most" in comment and "Cut to fit: the verdict stops here" in comment


def test_no_stage_imports_the_comment_or_the_page_code():
    scripts = sorted((PROJECT / "src" / "stages").glob("*.py"))
    assert scripts
    reached = import_closure(scripts, PROJECT / "src")
    # markup.py is the stages' too (the verdict escapes class names with it): standard library only
    assert not {PROJECT / "src" / "tvs" / name for name in ("pr.py", "page.py", "ladder.py", "evidence.py")} & reached

"""Text from the user's files written as data, never as markup: for GitHub Markdown, HTML and a terminal.

A metric's name or value, a file or class name can hold anything. Written raw into a pull-request comment,
``a|b`` splits a table cell, ``</details>`` and a newline end a folded section early, ``<script>`` is markup
and ``@octocat`` notifies a GitHub user. These functions turn such text into text that renders as itself,
on one line, capped in size. They are pure and need only the standard library (``tvs.pr`` runs where
nothing but DVC is installed).
"""

from __future__ import annotations

import html
import re
import unicodedata

ELLIPSIS = "…"

# Backslash-escaped wherever they are: code (`), emphasis (*), strikethrough (~), links and images ([ ]),
# table cells (|), math ($, which GitHub renders), and the backslash itself. `<`, `>` and `&` become
# entities instead (html_text); `_` is escaped only where it can start or end emphasis (see md_text).
MD_ESCAPED = frozenset("\\`*~[]|$")
# What GitHub links as a mention (a user or an organisation's team); its filter skips code spans.
MENTION = re.compile(r"@[A-Za-z0-9][A-Za-z0-9-]*(?:/[A-Za-z0-9][A-Za-z0-9-]*)?")
# Control characters (newlines, tabs, ESC, NUL), format characters (bidirectional overrides, zero-width
# characters) and the Unicode line and paragraph separators: what a terminal acts on rather than shows.
NOT_SHOWN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def truncate(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its first ``limit - 1`` and ``…``."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + ELLIPSIS


def one_line(text: str) -> str:
    """``text`` with every control character (newlines and tabs included) replaced by a space."""
    return "".join(" " if unicodedata.category(char) == "Cc" else char for char in text)


def html_text(text: str) -> str:
    """``text`` for HTML: ``<``, ``>``, ``&`` and both quotes as character references."""
    return html.escape(text, quote=True)


def _intraword(text: str, i: int) -> bool:
    """Whether ``text[i]`` sits between two letters or digits, where GFM never reads ``_`` as emphasis."""
    return 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()


def md_text(text: str) -> str:
    """``text`` as GitHub Markdown that renders as the text itself, on one line of a paragraph or a table cell.

    Newlines and other control characters become spaces; ``<``, ``>``, ``&`` and quotes become entities,
    so no HTML tag (``<script>``, ``</details>``) survives; Markdown's punctuation is backslash-escaped,
    ``_`` only outside a word (``train_seconds`` stays as it is); a leading ``#`` is escaped; and a
    mention (``@octocat``) is wrapped in a code span, which GitHub does not link or notify. The result is
    for inline use: a table cell or part of a line, not a block on a line of its own.
    """
    text = html_text(one_line(text))
    escaped = "".join(
        "\\" + char if char in MD_ESCAPED or (char == "_" and not _intraword(text, i)) else char
        for i, char in enumerate(text)
    )
    if escaped.startswith("#"):
        escaped = "\\" + escaped
    return MENTION.sub(lambda m: f"`{m.group(0)}`", escaped)


def md_cell(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (before escaping, so no escape is cut in half), for a table cell."""
    return md_text(truncate(text, limit))


def _whole_paragraphs(markdown: str, limit: int) -> str:
    """The longest start of ``markdown`` within ``limit`` characters that ends at a paragraph, else at a line."""
    head = markdown[: max(limit, 0)]
    if len(head) < len(markdown):
        for boundary in ("\n\n", "\n"):
            if boundary in head:
                return head[: head.rindex(boundary)].rstrip()
    return head.rstrip()


def truncate_markdown(markdown: str, limit: int) -> str:
    """The longest run of ``markdown``'s whole paragraphs within ``limit`` characters, a code fence the cut
    leaves open closed again; a single paragraph longer than ``limit`` is cut at a line, then at a character."""
    room = limit
    while True:
        head = _whole_paragraphs(markdown, room)
        fences = re.findall(r"^ {0,3}(`{3,}|~{3,})", head, re.M)
        closing = "\n" + fences[-1] if len(fences) % 2 else ""  # else the rest of the page would be code
        if len(head) + len(closing) <= limit:
            return head + closing
        room = min(room - 1, limit - len(closing))


def terminal_text(text: str) -> str:
    """``text`` for a terminal: a control, format or line-separator character is shown escaped (``\\x1b``),
    so an ESC sequence cannot recolour or move the cursor and a bidirectional override cannot reorder."""
    return "".join(
        char.encode("unicode_escape").decode("ascii") if unicodedata.category(char) in NOT_SHOWN else char
        for char in text
    )

"""The answer page's blocks rendered twice: Markdown (GitHub, the pull-request comment) and one HTML file.

The HTML is self-contained: styles and images inline, no script, a Content-Security-Policy that
loads nothing. Text from the user's files reaches a block through :func:`plain` and is escaped
by each renderer (:mod:`tvs.markup`), so a class named with backticks or ``<script>`` stays text.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any

from tvs.markup import html_text, md_text

# A block is ("h1" | "h2" | "p" | "table" | "img" | "list", content). Text is plain: each renderer
# escapes it; ``**bold**`` is the one markup a paragraph may carry, split out before escaping.
Block = tuple[str, Any]


# Text from the user's files enters a block through :func:`plain`, which hides the two characters the
# blocks' own markup uses (``**bold**`` and ```code```) so that a class named `x` or **x** stays text.
_HIDDEN = {"`": "\ue000", "*": "\ue001"}


def plain(text: str) -> str:
    """User text for a block: its backticks and asterisks are data, never the blocks' markup."""
    return "".join(_HIDDEN.get(char, char) for char in str(text))


def unhide(text: str) -> str:
    for char, mark in _HIDDEN.items():
        text = text.replace(mark, char)
    return text


def _spans(text: str) -> list[tuple[str, str]]:
    """``a **b** `c` d`` -> [("a ", ""), ("b", "b"), (" ", ""), ("c", "code"), (" d", "")]; user text is unhidden."""
    out, style, i = [], "", 0
    for j, token in [(m.start(), m.group()) for m in re.finditer(r"\*\*|`", text)] + [(len(text), "")]:
        if j > i:
            out.append((unhide(text[i:j]), style))
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
            body.append(f'<figure><img alt="{html_text(unhide(name))}" src="data:image/png;base64,{data}"></figure>')
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

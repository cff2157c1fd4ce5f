"""The markdown our reports write, as HTML (for rl/experiments/results_page.py).

Headings, paragraphs, lists, pipe tables, code spans and blocks, bold and images; local
links keep their text only (they do not survive the move into one file). Images are
rendered by a callback, so the page can embed each PNG as a data URI (``png_data_uri``).
Pure Python.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from pathlib import Path

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def png_data_uri(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def inline_html(text: str, image: Callable[[str, str], str]) -> str:
    """One line of markdown (code spans, bold, images, links) as escaped HTML."""
    pieces: list[str] = []
    last = 0
    for match in _CODE.finditer(text):  # code spans are literal: split around them first
        pieces.append(_inline_plain(text[last : match.start()], image))
        pieces.append(f"<code>{html.escape(match.group(1))}</code>")
        last = match.end()
    pieces.append(_inline_plain(text[last:], image))
    return "".join(pieces)


def _inline_plain(text: str, image: Callable[[str, str], str]) -> str:
    out: list[str] = []
    last = 0
    for match in _IMAGE.finditer(text):
        out.append(_escape_with_bold(text[last : match.start()]))
        out.append(image(match.group(1), match.group(2)))
        last = match.end()
    out.append(_escape_with_bold(text[last:]))
    return "".join(out)


def _escape_with_bold(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)
    return _LINK.sub(lambda m: m.group(1), escaped)  # local links do not survive the move


def _split_row(line: str, columns: int | None = None) -> list[str]:
    """The cells of a pipe-table row (``\\|`` is a literal pipe). A row with more cells
    than the header had an unescaped ``|`` in a cell: the surplus is joined back into the
    first cell, where names such as "P(skip | previous skip)" sit."""
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    cells = [cell.strip().replace("\x00", "|") for cell in line.replace("\\|", "\x00").split("|")]
    if columns is not None and len(cells) > columns:
        surplus = len(cells) - columns
        cells = [" | ".join(cells[: surplus + 1]), *cells[surplus + 1 :]]
    return cells


def markdown_to_html(markdown: str, image: Callable[[str, str], str]) -> str:
    """The markdown our reports write (headings, paragraphs, lists, pipe tables, images,
    code blocks) as HTML; ``image(alt, src)`` renders an image reference."""
    lines = markdown.splitlines()
    out: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            out.append(f"<p>{inline_html(' '.join(paragraph), image)}</p>")
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append(f"<pre>{html.escape(chr(10).join(block))}</pre>")
        elif not stripped:
            flush()
        elif heading := re.match(r"^(#{1,6})\s+(.*)$", stripped):
            flush()
            # The page's own h1/h2 frame each section: report headings start at h3.
            level = min(len(heading.group(1)) + 2, 6)
            out.append(f"<h{level}>{inline_html(heading.group(2), image)}</h{level}>")
        elif (
            stripped.startswith("|")
            and i + 1 < len(lines)
            and _TABLE_RULE.match(lines[i + 1].strip())
        ):
            flush()
            header = _split_row(stripped)
            i += 2
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_split_row(lines[i], len(header)))
                i += 1
            head = "".join(f"<th>{inline_html(c, image)}</th>" for c in header)
            body = "".join(
                "<tr>" + "".join(f"<td>{inline_html(c, image)}</td>" for c in row) + "</tr>"
                for row in rows
            )
            out.append(
                f'<div class="table"><table><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table></div>"
            )
            continue
        elif re.match(r"^[-*]\s+", stripped):
            flush()
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append(re.sub(r"^\s*[-*]\s+", "", lines[i]))
                i += 1
            out.append(
                "<ul>" + "".join(f"<li>{inline_html(t, image)}</li>" for t in items) + "</ul>"
            )
            continue
        else:
            paragraph.append(stripped)
        i += 1
    flush()
    return "\n".join(out)

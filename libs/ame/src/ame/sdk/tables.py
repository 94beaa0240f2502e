"""The seed's tables: the same rows as HTML in a notebook (`_repr_html_`) and as aligned text in a terminal."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime

__all__ = ["html_table", "seed_time", "short_sha", "text_table"]


def seed_time(at: datetime) -> str:
    """The seed's timestamps: `2023-22-May 19:55:15` (UTC)."""
    return at.astimezone(UTC).strftime("%Y-%d-%b %H:%M:%S")


def short_sha(sha: str) -> str:
    return f"{sha[:6]}...{sha[-6:]}" if len(sha) > 12 else sha


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, rule: bool = True) -> str:
    """Aligned columns; `rule` draws a dashed line under the headers (the seed's tables have one)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    ruled = [line(["-" * w for w in widths])] if rule else []
    return "\n".join([line(headers), *ruled, *(line(r) for r in rows)])


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

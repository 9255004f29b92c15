"""Plain-text tables for a terminal: display widths, shortened cells, padded columns.

Reports (careflow/report.py, careflow/uplift.py, careflow/insight/), the ledger's
timeline and the command line all lay text out with these.
"""

from __future__ import annotations

import unicodedata

from careflow.safe_text import for_terminal


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns, cut at a word where it can be, with an ellipsis."""
    text = " ".join(text.split())
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        used += display_width(ch)
        if used > width - 1:
            break
        out.append(ch)
    cut = "".join(out)
    at_word = cut.rsplit(" ", 1)[0]
    if " " in cut and display_width(at_word) > width // 2:  # a word boundary, if not too early
        cut = at_word
    return cut.rstrip(" ,.;:，。") + "…"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell (by display width), a rule under the header.

    Cells hold customers' and providers' text: each is one line, its control and bidi
    characters written out (careflow/safe_text.py), so a name cannot move the cursor,
    colour the terminal, link somewhere or reorder the columns after it.
    """
    header = [for_terminal(c) for c in header]
    rows = [[for_terminal(c) for c in r] for r in rows]
    widths = [max(display_width(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c + " " * (w - display_width(c)) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

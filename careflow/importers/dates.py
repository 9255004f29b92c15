"""Dates written day/month or month/day: read by a declared order, or one the file proves.

``03/11/2026`` is 3 November in Europe and March 11 in the US; nothing in the
value says which. careflow never guesses it value by value (that reads
``03/11/2026`` and ``13/11/2026`` in one column as March and November):

- ``--date-format DD/MM/YYYY`` or ``MM/DD/YYYY`` (``date_format=``) declares
  the order for every date column of the file; ``YYYY-MM-DD`` refuses every
  day/month value. The separator may be ``/``, ``.`` or ``-``; a two-digit
  year is the nearest one up to 2049 (``85`` is 1985).
- Without it, each date column is looked at whole before any row is read:
  a value whose first number is over 12 (``13/11/2026``) proves DD/MM for
  the whole column, one whose second number is (``11/13/2026``) proves
  MM/DD. The import report says which order was used and what proved it.
- When nothing proves it, every value that reads two ways (``03/11/2026``;
  ``05/05/2026`` reads one way) is a malformed row, ``ambiguous_date``,
  asking for ``--date-format``. When the column proves both orders, no order
  is used: its day/month values are all malformed (``mixed_date_order``).

Once an order is used, a value that does not fit it (``11/13/2026`` in a
DD/MM column) is a bad date: one column never mixes orders. ISO dates
(``2026-11-03``) and dates with the month in words (``3 Nov 2026``) read
one way whatever the order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from careflow.errors import DataError
from careflow.importers.report import shown

#: day/month or month/day, then a 4- or 2-digit year, then anything (a time)
DAY_MONTH = re.compile(r"^\s*(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})(?=$|[\sT])(.*)$")
DMY, MDY, ISO = "DD/MM/YYYY", "MM/DD/YYYY", "YYYY-MM-DD"
#: what --date-format accepts, by its normalised spelling
_DECLARED = {
    **{f"DD{s}MM{s}YYYY": DMY for s in "/.-"},
    **{f"MM{s}DD{s}YYYY": MDY for s in "/.-"},
    "YYYY-MM-DD": ISO,
    "ISO": ISO,
}
FORMATS = (DMY, MDY, ISO)
_ASK = "name the order with --date-format DD/MM/YYYY or --date-format MM/DD/YYYY"


def declared_format(text: str | None) -> str | None:
    """``--date-format``'s value as one of FORMATS (None: not given); DataError if unknown."""
    if text is None or not str(text).strip():
        return None
    found = _DECLARED.get(str(text).strip().upper())
    if found is None:
        raise DataError(
            f"--date-format must be DD/MM/YYYY, MM/DD/YYYY or YYYY-MM-DD, not {shown(text)}"
        )
    return found


@dataclass(frozen=True)
class DateOrder:
    """How one date column's day/month values are read, and why."""

    #: DMY, MDY, ISO (day/month values refused) or None (undecided: only one-way values)
    order: str | None
    #: declared, inferred, mixed, undecided or not needed
    how: str
    #: what proved it, for the report: "line 5 '13/11/2026'"
    evidence: str = ""

    def describe(self) -> str:
        if self.how == "declared":
            return f"{self.order} (declared with --date-format)"
        if self.how == "inferred":
            return f"{self.order} (inferred: {self.evidence})"
        if self.how == "mixed":
            return f"none: the column mixes both orders ({self.evidence})"
        if self.how == "undecided":
            return f"undecided: nothing proves DD/MM or MM/DD; two-way values refused ({_ASK})"
        return "ISO or unambiguous dates"


def decide(chunks: Iterable[pd.Series], declared: str | None) -> DateOrder:
    """The order of a whole column (its values in chunks, indexed by line number), or the
    declared one. Reads until both orders are proved or the column ends."""
    if declared:
        return DateOrder(declared, "declared")
    day_first = month_first = None
    seen = False
    for values in chunks:
        values = values.drop_duplicates()  # exports repeat their timestamps: each once
        parts = values.astype(str).str.extract(DAY_MONTH)
        first = pd.to_numeric(parts[0], errors="coerce")
        if first.isna().all():
            continue
        seen = True
        second = pd.to_numeric(parts[2], errors="coerce")
        if day_first is None:
            found = values[(first > 12) & (first <= 31) & (second <= 12)]
            day_first = _example(found) if len(found) else None
        if month_first is None:
            found = values[(second > 12) & (second <= 31) & (first <= 12)]
            month_first = _example(found) if len(found) else None
        if day_first and month_first:
            return DateOrder(
                None, "mixed", f"{day_first} is day first, {month_first} month first"
            )
    if day_first:
        return DateOrder(DMY, "inferred", f"{day_first} can only be day first")
    if month_first:
        return DateOrder(MDY, "inferred", f"{month_first} can only be month first")
    return DateOrder(None, "undecided" if seen else "not needed")


def _example(found: pd.Series) -> str:
    return f"line {found.index[0]} {shown(str(found.iloc[0]).strip())}"


def reorder(texts: pd.Series, order: DateOrder) -> tuple[pd.Series, pd.Series]:
    """(texts with day/month values rewritten year first, problems): the rewritten values
    parse one way; ``problems`` holds (kind, why) for values the order cannot read, None
    elsewhere. Values that are not day/month pass through unchanged. The work is done
    once per distinct value (exports repeat their timestamps)."""
    if order.how == "not needed":
        return texts, pd.Series([None] * len(texts), index=texts.index, dtype=object)
    distinct = pd.Series(texts.unique())
    out, problems = _reorder(distinct, order)
    new = dict(zip(distinct, out, strict=True))
    why = dict(zip(distinct, problems, strict=True))
    found = pd.Series([why[t] for t in texts], index=texts.index, dtype=object)
    return texts.map(new), found


def _reorder(texts: pd.Series, order: DateOrder) -> tuple[pd.Series, pd.Series]:
    problems = pd.Series([None] * len(texts), index=texts.index, dtype=object)
    parts = texts.str.extract(DAY_MONTH)
    matched = parts[0].notna()
    if not matched.any():
        return texts, problems
    a = pd.to_numeric(parts[0], errors="coerce")
    b = pd.to_numeric(parts[2], errors="coerce")
    if order.order == ISO:
        problems[matched] = [
            ("bad_date", f"not YYYY-MM-DD, as --date-format says: {shown(t)}")
            for t in texts[matched]
        ]
        return texts, problems
    if order.order in (DMY, MDY):
        day, month = (a, b) if order.order == DMY else (b, a)
        misfit = matched & ((month > 12) | (month < 1))
        problems[misfit] = [
            ("bad_date", f"{shown(t.strip())} is not a {order.order} date ({order.describe()})")
            for t in texts[misfit]
        ]
        matched = matched & ~misfit
    else:  # no order: only values that read the same both ways (05/05/2026)
        two_way = matched & (a != b)
        kind = "mixed_date_order" if order.how == "mixed" else "ambiguous_date"
        why = (
            f"the column mixes day-first and month-first dates (see the report); {_ASK}"
            if order.how == "mixed"
            else _ASK
        )
        problems[two_way] = [
            (kind, f"{shown(t.strip())} {_two_ways(t)}; {why}") for t in texts[two_way]
        ]
        day = month = a
        matched = matched & ~two_way
    years = parts[3].where(parts[3].str.len() != 2, _century(parts[3]))
    rewritten = (
        years.astype(str)
        + "-"
        + month.astype("Int64").astype(str).str.zfill(2)
        + "-"
        + day.astype("Int64").astype(str).str.zfill(2)
        + parts[4].fillna("")
    )
    out = texts.copy()
    out[matched] = rewritten[matched]
    return out, problems


_MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip


def _two_ways(text: str) -> str:
    """``could be 3 November or March 11`` (or what makes it unreadable either way)."""
    m = DAY_MONTH.match(text)
    a, b = int(m.group(1)), int(m.group(3))
    if a <= 12 and b <= 12:
        return f"could be {a} {_MONTHS[b - 1]} or {_MONTHS[a - 1]} {b}"
    return "cannot be read in one order with the column's other dates"


def _century(years: pd.Series) -> pd.Series:
    """Two-digit years as the nearest year up to 2049 (``85`` is 1985, ``26`` 2026)."""
    two = pd.to_numeric(years, errors="coerce")
    return (two + 2000).where(two < 50, two + 1900).astype("Int64").astype(str)

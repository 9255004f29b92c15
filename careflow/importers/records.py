"""Files of one record per row (customers, consents): fields declared, checked, reported.

An importer declares its fields (:class:`Field`: default column, whether
required, longest text, how to parse); ``read_records`` opens the file
(careflow/importers/source.py), maps the columns, and checks every row. A bad row is
reported with its line number and the first problem found, and left out;
the others come back as a DataFrame with a ``line`` column and one column
per field, ``None`` where the file left it empty. Rows repeated exactly are
counted as ``duplicate_row`` and kept once.

Parsers take the stripped text of the non-empty cells and return the
parsed values with a mask of cells they could not read; they run once per
distinct value where that is what costs (time zones, locales).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from careflow.errors import DataError
from careflow.importers.dates import DateOrder, decide, declared_format, reorder
from careflow.importers.report import ImportReport, bounded, shown
from careflow.importers.source import column_values, line_of, lines_of, open_source, read_chunks

#: parse(texts) -> (values, unreadable), both indexed like ``texts``; a parser may add a
#: third Series of (kind, why) for values with a problem of their own (None elsewhere)
Parser = Callable[[pd.Series], tuple]


@dataclass(frozen=True)
class Field:
    """One field of a record: where it comes from and what a good value is."""

    name: str
    column: str
    label: str
    required: bool = False
    max_length: int | None = None
    parse: Parser | None = None
    #: the kind of problem an unreadable value is reported as
    problem: str = "bad_value"
    #: what a good value looks like, added to the message for a bad one
    expect: str | Callable[[], str] = ""  # a callable is asked when a message is written
    #: a date field: its parser is made from the column's day/month order
    #: (careflow/importers/dates.py), which is decided before any row is read
    dated: Callable[[DateOrder], Parser] | None = None


def read_records(
    path: str | Path,
    fields: list[Field],
    *,
    mapping: dict[str, str] | None,
    encoding: str | None,
    report: ImportReport,
    date_format: str | None = None,
) -> pd.DataFrame:
    """The checked records of the file at ``path``; problems go to ``report``.

    ``date_format`` (DD/MM/YYYY, MM/DD/YYYY, YYYY-MM-DD) says how dated fields'
    day/month values read; without it each date column's order is inferred from
    the whole column or its two-way values are refused (careflow/importers/dates.py).
    Raises DataError when the file cannot be read, ``mapping`` names an
    unknown field, or a required field's column is missing.
    """
    by_name = {f.name: f for f in fields}
    unknown = sorted(set(mapping or {}) - set(by_name))
    if unknown:
        raise DataError(
            bounded(
                f"unknown field(s) in --map: {', '.join(map(shown, unknown))}; "
                f"fields are {', '.join(by_name)}"
            )
        )
    declared = declared_format(date_format)
    columns = {f.name: f.column for f in fields} | (mapping or {})
    source = open_source(path, encoding)
    report.path = str(source.path)
    report.encoding = f"{source.encoding}, {source.encoding_source}"
    missing = [
        f"{f.name} (column {shown(columns[f.name])})"
        for f in fields
        if f.required and columns[f.name] not in source.header
    ]
    if missing:
        raise DataError(
            bounded(
                f"{source.path}: required column(s) missing: {', '.join(missing)}; "
                f"the file has {', '.join(map(shown, source.header[:20]))}. "
                "Name other columns with --map FIELD=COLUMN.",
                600,
            )
        )
    present = {name: col for name, col in columns.items() if col in source.header}
    fields = [_dated(f, source, present, declared, report) for f in fields]
    parts = [
        _check(chunk, first, bad, fields, present, report, source.has_nul)
        for chunk, first, bad in read_chunks(source, report)
    ]
    rows = pd.concat(parts, ignore_index=True) if parts else _empty(fields)
    return drop_repeats(rows, report)


def _dated(
    f: Field, source, present: dict[str, str], declared: str | None, report: ImportReport
) -> Field:
    """``f`` with the parser for its column's day/month order (one look at the column)."""
    if f.dated is None:
        return f
    if f.name not in present:
        return f
    order = decide(column_values(source, present[f.name]), declared)
    report.note_dates(f.label, order)
    return replace(f, parse=f.dated(order))


def _empty(fields: list[Field]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in ("line", "_key", *_names(fields))})


def _names(fields: list[Field]) -> list[str]:
    return [f.name for f in fields]


def _check(
    chunk: pd.DataFrame,
    first_row: int,
    bad_lines: list[int],
    fields: list[Field],
    present: dict[str, str],
    report: ImportReport,
    check_nul: bool,
) -> pd.DataFrame:
    broken = pd.Series(False, index=chunk.index)
    out: dict[str, object] = {}

    def flag(kind: str, mask: pd.Series, message: Callable[[object], str]) -> None:
        nonlocal broken
        mask = mask.fillna(False).astype(bool) & ~broken
        for pos in mask.to_numpy().nonzero()[0]:
            report._bad(kind, line_of(first_row + int(pos), bad_lines), message(chunk.index[pos]))
        broken |= mask

    for f in fields:
        if f.name not in present:
            out[f.name] = pd.Series([None] * len(chunk), index=chunk.index, dtype=object)
            continue
        text = chunk[present[f.name]].astype(str).str.strip()
        empty = text == ""
        if f.required:
            flag("missing_field", empty, lambda i, f=f: f"no {f.label}")
        if check_nul:
            flag(
                "bad_text",
                text.str.contains("\x00", regex=False),
                lambda i, f=f, t=text: f"{f.label} contains a NUL character: {shown(t[i])}",
            )
        if f.max_length:
            lengths = np.fromiter(map(len, text.to_numpy(dtype=object)), np.int64, len(text))
            flag(
                "too_long",
                pd.Series(lengths > f.max_length, index=text.index),
                lambda i, f=f, t=text: (
                    f"{f.label} too long ({len(t[i]):,} characters, "
                    f"at most {f.max_length}): {shown(t[i])}"
                ),
            )
        values = text.astype(object).where(~empty, None)
        if f.parse is not None:
            # Only cells still in the running: a 1 MB value was reported as too long already.
            todo = ~empty & ~broken
            parsed, unreadable, *own = f.parse(text[todo])
            values[todo] = parsed
            if own:  # problems the parser explains itself (an ambiguous date)
                problems = own[0].reindex(text.index, fill_value=None)
                for kind in sorted({p[0] for p in problems if isinstance(p, tuple)}):
                    flag(
                        kind,
                        problems.map(lambda p, k=kind: isinstance(p, tuple) and p[0] == k),
                        lambda i, f=f, p=problems: f"{f.label} {p[i][1]}",
                    )
            wanted = f.expect() if callable(f.expect) else f.expect
            expect = f" ({wanted})" if wanted else ""
            flag(
                f.problem,
                unreadable.reindex(text.index, fill_value=False),
                lambda i, f=f, t=text, e=expect: f"bad {f.label} {shown(t[i])}{e}",
            )
        out[f.name] = values

    keep = ~broken
    positions = keep.to_numpy().nonzero()[0] + first_row
    others = [c for c in chunk.columns if c not in set(present.values())]
    key = (
        pd.util.hash_pandas_object(chunk.loc[keep, others], index=False).to_numpy()
        if others
        else np.zeros(int(keep.sum()), dtype=np.uint64)
    )
    return pd.DataFrame(
        {
            "line": lines_of(positions, bad_lines),
            "_key": key,
            # object columns: pandas would infer str or datetime dtypes and turn None into NaN/NaT
            **{name: pd.Series(col[keep].to_numpy(), dtype=object) for name, col in out.items()},
        }
    )


def drop_repeats(rows: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    """Keep the first of rows the same in every field (and unloaded column); count the rest."""
    if rows.empty:
        return rows
    same = [c for c in rows.columns if c != "line"]
    comparable = rows[same].astype(str)  # None and parsed values compare as text
    again = comparable.duplicated(keep="first")
    if not again.any():
        return rows
    keys = [comparable[c] for c in same]
    first = rows["line"].groupby(keys, sort=False, dropna=False).transform("min")
    for line, original in zip(rows["line"][again], first[again], strict=True):
        report._repeated(int(line), int(original))
    return rows[~again]


# --- parsers ---------------------------------------------------------------------


def per_distinct(convert: Callable[[str], object]) -> Parser:
    """A parser from ``convert(text)``, called once per distinct text; ValueError = bad."""

    def parse(texts: pd.Series) -> tuple[pd.Series, pd.Series]:
        done: dict[str, object] = {}
        for text in texts.unique():
            try:
                done[text] = convert(text)
            except ValueError:
                done[text] = _BAD
        values = texts.map(done).astype(object)
        bad = values.map(lambda v: v is _BAD).astype(bool)
        return values.where(~bad, None), bad

    return parse


_BAD = object()


def one_of(choices: dict[str, object] | Callable[[], dict[str, object]]) -> Parser:
    """Case-insensitive words to values: ``one_of({"yes": True, "no": False})``.

    ``choices`` may be a function, asked at parse time (the registered channels)."""

    def convert(text: str) -> object:
        try:
            return (choices() if callable(choices) else choices)[text.lower()]
        except KeyError:
            raise ValueError(text) from None

    return per_distinct(convert)


def dates_between(earliest: pd.Timestamp, latest: pd.Timestamp) -> Callable[[DateOrder], Parser]:
    """Calendar dates from ``earliest`` to ``latest``, day/month values read in the
    column's order (ISO, or what pandas reads one way: ``3 Nov 2026``)."""

    def parser(order: DateOrder) -> Parser:
        def parse(texts: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
            texts, problems = reorder(texts, order)
            when = _timestamps(texts)
            bad = (when.isna() | (when < earliest) | (when > latest)) & problems.isna()
            return when.dt.date.astype(object).where(~bad, None), bad, problems

        return parse

    return parser


def instants_between(
    earliest: pd.Timestamp, latest: pd.Timestamp
) -> Callable[[DateOrder], Parser]:
    """Date-times as naive UTC; a time with an offset is converted, one without is UTC.
    Day/month values are read in the column's order."""

    def parser(order: DateOrder) -> Parser:
        def parse(texts: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
            texts, problems = reorder(texts, order)
            when = _timestamps(texts, utc=True).dt.tz_localize(None)
            bad = (when.isna() | (when < earliest) | (when >= latest)) & problems.isna()
            values = [None if b else t.to_pydatetime() for t, b in zip(when, bad, strict=True)]
            return pd.Series(values, index=texts.index, dtype=object), bad, problems

        return parse

    return parser


#: longer than any way of writing a date and time: not worth parsing
MAX_DATE_TEXT = 64


def _timestamps(texts: pd.Series, utc: bool = False) -> pd.Series:
    texts = texts.where(texts.str.len() <= MAX_DATE_TEXT, "")
    when = pd.to_datetime(texts, errors="coerce", format="ISO8601", utc=utc)
    retry = when.isna() & (texts != "")
    if retry.any():
        when = when.copy()
        when[retry] = pd.to_datetime(texts[retry], errors="coerce", format="mixed", utc=utc)
    return when

"""Load customers (who they are and how to reach them) from a CSV file.

One row per customer, matched to the database by ``ref`` (the customer's
id in your systems; ``17850.0`` is read as ``17850``, as the order importer
does, so customers meet their orders). A new ref creates a customer; a
known one is updated with the fields the row fills in. An empty cell
changes nothing: exports often leave out what they do not know, and that
must not wipe what careflow knows.

Checked before anything is written (a bad row is reported with its line
and left out): text fits its column, ``locale`` is a locale Babel knows
(``zh_CN`` is stored as ``zh-CN``, the form templates are named by), ``time_zone`` an IANA zone,
``birthday`` a date from 1900 to today, ``preferred_channel`` sms, email or
fax, ``personal_send_time`` yes or no (no: messages at the campaign's own time,
never at a best hour worked out from their history; careflow/policy/send_time.py).
Phone numbers and emails are stored as given: a malformed one is
skipped at send time with ``invalid_contact``, for that customer only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, bindparam, update
from sqlalchemy.exc import SQLAlchemyError

from careflow.birthday_calendar import CALENDAR_WORDS, DEFAULT_RULE
from careflow.clock import utcnow
from careflow.customer_fields import SWITCH_WORDS, channel_names, length, locale, zone
from careflow.db.models import Customer
from careflow.errors import DataError
from careflow.importers.bulk import chunks, existing, insert_many
from careflow.importers.order_rows import normalize_customer_ref
from careflow.importers.records import Field, dates_between, one_of, per_distinct, read_records
from careflow.importers.report import ImportReport, bounded

_TABLE = Customer.__table__


def _ref(text: str) -> str:
    return normalize_customer_ref(text)


FIELDS = [
    Field(
        "ref",
        "ref",
        "customer ref",
        required=True,
        max_length=length("external_ref"),
        parse=per_distinct(_ref),
    ),
    Field("full_name", "full_name", "full name", max_length=length("full_name")),
    Field("given_name", "given_name", "given name", max_length=length("given_name")),
    Field("family_name", "family_name", "family name", max_length=length("family_name")),
    Field("mobile", "mobile", "mobile", max_length=length("mobile")),
    Field("email", "email", "email", max_length=length("email")),
    Field("fax", "fax", "fax", max_length=length("fax")),
    Field(
        "locale",
        "locale",
        "locale",
        max_length=length("locale"),
        parse=per_distinct(locale),
        problem="bad_locale",
        expect="e.g. en, zh-CN",
    ),
    Field(
        "time_zone",
        "time_zone",
        "time zone",
        max_length=length("time_zone"),
        parse=per_distinct(zone),
        problem="bad_time_zone",
        expect="an IANA zone, e.g. Asia/Shanghai",
    ),
    Field(
        "birthday",
        "birthday",
        "birthday",
        problem="bad_date",
        expect="a date from 1900-01-01 to today, e.g. 1990-11-22",
    ),
    Field(
        "birthday_calendar",
        "birthday_calendar",
        "birthday calendar",
        max_length=16,
        parse=one_of(CALENDAR_WORDS),
        problem="bad_calendar",
        expect="solar or lunar",
    ),
    Field("grade", "grade", "grade", max_length=length("grade")),
    Field("owner", "owner", "owner", max_length=length("owner")),
    Field("country", "country", "country", max_length=length("country")),
    Field(
        "preferred_channel",
        "preferred_channel",
        "preferred channel",
        max_length=length("preferred_channel"),
        parse=one_of(channel_names),
        problem="bad_channel",
        expect=lambda: " or ".join(channel_names()),
    ),
    Field(
        "personal_send_time",
        "personal_send_time",
        "personalised send time",
        parse=one_of(SWITCH_WORDS),
        problem="bad_switch",
        expect="yes or no",
    ),
]
_NAMES = [f.name for f in FIELDS if f.name != "ref"]


@dataclass
class CustomerImportReport(ImportReport):
    """What a customer import did, row by row accounted for:
    ``rows_read == created + updated + rows_merged + skipped + malformed``."""

    customers_created: int = 0
    customers_updated: int = 0
    #: later rows of a customer already in the file, their cells filled in over it
    rows_merged: int = 0
    #: customers of this file with a birthday, by the calendar it is kept on: "solar",
    #: "lunar" (said by the file) and "by locale" (left to the default rule)
    calendars: dict[str, int] = field(default_factory=dict)

    def loaded_lines(self) -> list[str]:
        lines = [
            f"  customers created   {self.customers_created:>10,}",
            f"  customers updated   {self.customers_updated:>10,}",
        ]
        if self.rows_merged:
            lines.append(
                f"  rows merged         {self.rows_merged:>10,}  "
                "(a customer's later rows fill in cells of the earlier one)"
            )
        if self.calendars:
            said = ", ".join(
                f"{n:,} {name}" for name, n in self.calendars.items() if name != "by locale"
            )
            lines.append(f"  birthday calendar   {said or 'none given'}")
            if self.calendars.get("by locale"):
                lines.append(
                    f"    {self.calendars['by locale']:,} birthday(s) with no birthday_calendar: "
                    f"{DEFAULT_RULE}"
                )
        return lines


def import_customers(
    engine: Engine,
    path: str | Path,
    *,
    mapping: dict[str, str] | None = None,
    encoding: str | None = None,
    today: date | None = None,
    date_format: str | None = None,
) -> CustomerImportReport:
    """Create or update the customers in the CSV at ``path``; one transaction.

    ``mapping`` maps fields (ref, full_name, given_name, family_name, mobile,
    email, fax, locale, time_zone, birthday, birthday_calendar, grade, owner,
    country, preferred_channel, personal_send_time) to the file's columns; by default the columns
    are named like the fields. ``today`` bounds birthdays (default: today).
    ``date_format`` (DD/MM/YYYY, MM/DD/YYYY) says how day/month birthdays read
    (careflow/importers/dates.py). Rows of one ref apply in file order, each
    filling in the cells it gives, as imports one after the other would.
    """
    started = time.perf_counter()
    report = CustomerImportReport(path=str(path))
    birthday = dates_between(pd.Timestamp("1900-01-01"), pd.Timestamp(today or date.today()))
    fields = [replace(f, dated=birthday) if f.name == "birthday" else f for f in FIELDS]
    rows = read_records(
        path, fields, mapping=mapping, encoding=encoding, report=report, date_format=date_format
    )
    rows = _one_row_per_customer(rows, report)
    _count_calendars(rows, report)
    try:
        with engine.begin() as conn:
            known = existing(conn, _TABLE.c.external_ref, rows["ref"].tolist())
            new = rows[~rows["ref"].isin(list(known))]
            created = utcnow()
            insert_many(
                conn,
                _TABLE,
                [
                    {"external_ref": r["ref"], **{n: r[n] for n in _NAMES}, "created_at": created}
                    for r in new.to_dict("records")
                ],
            )
            report.customers_created = len(new)
            report.customers_updated = _update(conn, rows[rows["ref"].isin(list(known))])
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise DataError(
            bounded(f"{report.path}: the database refused the import, nothing was loaded: {reason}")
        ) from exc
    report._finish(time.perf_counter() - started)
    return report


def _one_row_per_customer(rows: pd.DataFrame, report: CustomerImportReport) -> pd.DataFrame:
    """One row per ref: a customer's later rows fill in the cells they give over the
    earlier ones (an empty cell changes nothing), as upserts by ref do."""
    again = rows["ref"].duplicated(keep="first")
    if not again.any():
        return rows
    report.rows_merged = int(again.sum())
    repeated = rows["ref"].duplicated(keep=False)
    # the last non-empty value of each field, in file order, on the customer's first line
    merged = (
        rows[repeated]
        .groupby("ref", sort=False)
        .agg({"line": "first", "_key": "first", **{n: _last_given for n in _NAMES}})
        .reset_index()
    )
    out = pd.concat([rows[~repeated], merged[rows.columns]], ignore_index=True)
    return out.sort_values("line", kind="stable", ignore_index=True)


def _last_given(values: pd.Series):
    given = values[values.map(lambda v: v is not None).astype(bool)]
    return given.iloc[-1] if len(given) else None


def _count_calendars(rows: pd.DataFrame, report: CustomerImportReport) -> None:
    """How many of the file's birthdays are kept on which calendar, and how many are
    left to the default rule (careflow/birthday_calendar.py): the report says so."""
    with_birthday = rows[rows["birthday"].map(lambda v: v is not None).astype(bool)]
    said = with_birthday["birthday_calendar"].map(lambda v: v or "by locale")
    report.calendars = {k: int(v) for k, v in said.value_counts().sort_index().items()}


def _update(conn, rows: pd.DataFrame) -> int:
    """Fill in the fields each row gives; rows giving the same fields go in one executemany."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for r in rows.to_dict("records"):
        given = tuple(n for n in _NAMES if r[n] is not None)
        if given:
            groups.setdefault(given, []).append({"_ref": r["ref"], **{n: r[n] for n in given}})
    for given, params in groups.items():
        stmt = (
            update(_TABLE)
            .where(_TABLE.c.external_ref == bindparam("_ref"))
            .values({n: bindparam(n) for n in given})
        )
        for batch in chunks(params):
            conn.execute(stmt, batch)
    return len(rows)

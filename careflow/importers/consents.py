"""Load consent decisions (opt-ins and opt-outs per channel) from a CSV file.

One row per decision: ``customer`` (the customer's ref, as in
``careflow import customers``), ``channel`` (sms, email, fax),
``granted`` (yes/no, true/false, 1/0, y/n, granted/revoked, opt-in/opt-out),
``category`` (care, marketing, transactional, or all: the whole channel, the
default when left out; docs/policy.md), ``source`` (where it was given:
web_signup, store...) and ``when`` (a date
or date-time; with a UTC offset it is converted to UTC, without one it is
taken as UTC; left out, the time of the import).

The latest decision wins: of several rows for one customer, channel and category
only the latest is kept (the others count as ``superseded``), and a
decision older than the one careflow already holds is not applied
(``older_than_stored``), so importing an old export never undoes a newer
opt-out. A customer careflow does not know is a malformed row: consent
cannot wait for a customer that may never come.

Each decision applied is proven (careflow/consent_proof.py, source ``import``) in
the import's transaction: the file's name, its digest and the line, the state before
and after. The proof's key is the file's digest and the line, so importing the same
file again proves nothing twice.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, and_, bindparam, select, update
from sqlalchemy.exc import SQLAlchemyError

from careflow import consent_proof
from careflow.clock import utcnow
from careflow.customer_fields import channel_names
from careflow.db.models import Consent, Customer
from careflow.errors import DataError
from careflow.importers.bulk import chunks, existing, insert_many
from careflow.importers.order_rows import normalize_customer_ref
from careflow.importers.records import Field, instants_between, one_of, per_distinct, read_records
from careflow.importers.report import ImportReport, bounded, shown

_TABLE = Consent.__table__
_YES = ("1", "true", "yes", "y", "granted", "opt-in", "opt_in", "optin", "on")
_NO = ("0", "false", "no", "n", "revoked", "denied", "opt-out", "opt_out", "optout", "off")

FIELDS = [
    Field(
        "customer",
        "customer",
        "customer ref",
        required=True,
        max_length=Customer.__table__.c.external_ref.type.length,
        parse=per_distinct(normalize_customer_ref),
    ),
    Field(
        "channel",
        "channel",
        "channel",
        required=True,
        max_length=_TABLE.c.channel.type.length,
        parse=one_of(channel_names),
        problem="bad_channel",
        expect=lambda: " or ".join(channel_names()),
    ),
    Field(
        "granted",
        "granted",
        "granted",
        required=True,
        max_length=16,
        parse=one_of(dict.fromkeys(_YES, True) | dict.fromkeys(_NO, False)),
        problem="bad_granted",
        expect="yes or no",
    ),
    Field(
        "category",
        "category",
        "category",
        max_length=_TABLE.c.category.type.length,
        parse=one_of({c: c for c in ("all", "care", "marketing", "transactional")}),
        problem="bad_category",
        expect="all, care, marketing or transactional",
    ),
    Field("source", "source", "source", max_length=_TABLE.c.source.type.length),
    Field(
        "when",
        "when",
        "date",
        dated=instants_between(pd.Timestamp("1900-01-01"), pd.Timestamp("2100-01-01")),
        problem="bad_date",
        expect="a date or date-time from 1900 to 2099",
    ),
]


@dataclass
class ConsentImportReport(ImportReport):
    """What a consent import did, row by row accounted for."""

    consents_created: int = 0
    consents_updated: int = 0

    def loaded_lines(self) -> list[str]:
        return [
            f"  consents created    {self.consents_created:>10,}",
            f"  consents updated    {self.consents_updated:>10,}",
        ]


def import_consents(
    engine: Engine,
    path: str | Path,
    *,
    mapping: dict[str, str] | None = None,
    encoding: str | None = None,
    date_format: str | None = None,
) -> ConsentImportReport:
    """Record the consent decisions in the CSV at ``path``; one transaction.

    ``mapping`` maps fields (customer, channel, granted, source, when) to the
    file's columns; by default the columns are named like the fields.
    ``date_format`` (DD/MM/YYYY, MM/DD/YYYY) says how ``when``'s day/month
    values read (careflow/importers/dates.py).
    """
    started = time.perf_counter()
    report = ConsentImportReport(path=str(path))
    rows = read_records(
        path, FIELDS, mapping=mapping, encoding=encoding, report=report, date_format=date_format
    )
    now = utcnow()
    rows["when"] = rows["when"].map(lambda t: now if t is None else t)
    rows["category"] = rows["category"].map(lambda c: c or "all")
    try:
        with engine.begin() as conn:
            ids = existing(conn, Customer.__table__.c.external_ref, rows["customer"].tolist())
            rows = _known_customers(rows, ids, report)
            rows = _latest_per_channel(rows, report)
            _store(conn, rows, report, _ImportedFile.of(path), now)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise DataError(
            bounded(f"{report.path}: the database refused the import, nothing was loaded: {reason}")
        ) from exc
    report._finish(time.perf_counter() - started)
    return report


def _known_customers(rows: pd.DataFrame, ids: dict, report: ImportReport) -> pd.DataFrame:
    known = rows["customer"].isin(list(ids))
    for line, ref in zip(rows["line"][~known], rows["customer"][~known], strict=True):
        report._bad(
            "unknown_customer",
            int(line),
            f"no customer {shown(ref)} in the database: import customers (or orders) first",
        )
    rows = rows[known].copy()
    rows["customer_id"] = rows["customer"].map(ids)
    return rows


def _latest_per_channel(rows: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    """Of several decisions for one customer and channel, the latest (ties: the last line)."""
    rows = rows.sort_values(["when", "line"])
    older = rows.duplicated(["customer_id", "channel", "category"], keep="last")
    report._skip("superseded", int(older.sum()))
    return rows[~older]


@dataclass(frozen=True)
class _ImportedFile:
    """What a consent proof keeps of the file: its name and a digest of its bytes."""

    name: str
    digest: str

    @classmethod
    def of(cls, path: str | Path) -> _ImportedFile:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return cls(Path(path).name, digest.hexdigest()[:32])

    def proof(self, row: dict, before: bool | None, locale: str | None) -> consent_proof.Proof:
        line = int(row["line"])
        return consent_proof.Proof(
            customer_id=row["customer_id"],
            source="import",
            channel=row["channel"],
            category=row["category"],
            consent=(before, row["granted"]),
            shown=f"{self.name} line {line}",
            locale=locale,
            evidence={
                "file": self.name,
                "file_sha256": self.digest,
                "line": line,
                "given_at": row["source"],
            },
            evidence_key=f"import:{self.digest}:{line}",
            occurred_at=row["updated_at"],
        )


def _store(
    conn, rows: pd.DataFrame, report: ConsentImportReport, file: _ImportedFile, now
) -> None:
    stored: dict[tuple[int, str, str], tuple] = {}
    locales: dict[int, str | None] = {}
    t = _TABLE.c
    for batch in chunks(rows["customer_id"].unique().tolist(), 5_000):
        stored.update(
            ((r.customer_id, r.channel, r.category), (r.updated_at, r.granted))
            for r in conn.execute(
                select(t.customer_id, t.channel, t.category, t.updated_at, t.granted).where(
                    t.customer_id.in_(batch)
                )
            )
        )
        locales.update(
            (i, loc)
            for i, loc in conn.execute(
                select(Customer.id, Customer.locale).where(Customer.id.in_(batch))
            )
        )
    inserts, updates, proofs, stale = [], [], [], 0
    for r in rows.to_dict("records"):
        key = (int(r["customer_id"]), r["channel"], r["category"])
        row = {
            "customer_id": key[0],
            "channel": key[1],
            "category": key[2],
            "granted": bool(r["granted"]),
            "source": r["source"],
            "updated_at": r["when"],
        }
        if key not in stored:
            inserts.append(row)
        elif stored[key][0] > r["when"]:
            stale += 1
            continue
        else:
            updates.append({f"_{k}": v for k, v in row.items()})
        before = stored[key][1] if key in stored else None
        proofs.append(file.proof({**row, "line": r["line"]}, before, locales.get(key[0])))
    insert_many(conn, _TABLE, inserts)
    stmt = (
        update(_TABLE)
        .where(
            and_(
                _TABLE.c.customer_id == bindparam("_customer_id"),
                _TABLE.c.channel == bindparam("_channel"),
                _TABLE.c.category == bindparam("_category"),
            )
        )
        .values(
            granted=bindparam("_granted"),
            source=bindparam("_source"),
            updated_at=bindparam("_updated_at"),
        )
    )
    for batch in chunks(updates):
        conn.execute(stmt, batch)
    for batch in chunks(proofs):
        consent_proof.record_many(conn, batch, now=now)
    report._skip("older_than_stored", stale)
    report.consents_created, report.consents_updated = len(inserts), len(updates)

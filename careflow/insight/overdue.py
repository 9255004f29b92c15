"""Who should have been contacted and was not: the ``contact_due`` segment, per owner.

The playbook's question "which customers should we have contacted and did
not" is a task list for people: each customer's owner (the sales or
service person responsible) calls or writes. So the report groups the
segment's customers by owner, the owner with the most overdue customers
first, and within an owner the most overdue customer first (never contacted
and no record date: first of all). Cadences, what counts as a contact and
time travel are the segment's (careflow/segments/contact_due.py).

One function computes the report into plain data; ``as_text``, ``as_json``
and ``as_csv`` only format it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import Engine, func, or_, select

from careflow import segments
from careflow.csv_export import csv_text
from careflow.db.models import Customer
from careflow.report import text_table

NO_OWNER = "(no owner)"
COLUMNS = (
    "owner",
    "customer_id",
    "ref",
    "name",
    "grade",
    "cadence_days",
    "last_contact_on",
    "days_since_contact",
    "days_overdue",
)


@dataclass(frozen=True)
class OverdueReport:
    as_of: date
    cadence: dict[str, int]
    #: per owner, most overdue customers first: {"owner", "overdue", "customers": [...]}
    owners: list[dict]
    #: customers on file by as-of whose grade has no cadence (or who have no grade)
    without_cadence: int

    @property
    def overdue(self) -> int:
        return sum(o["overdue"] for o in self.owners)


def _most_overdue_first(row: dict) -> tuple:
    unknown = row["days_overdue"] is None
    return (not unknown, -(row["days_overdue"] or 0), row["customer_id"])


def overdue_report(
    engine: Engine, as_of: date, owner: str | None = None, params: dict | None = None
) -> OverdueReport:
    """The ``contact_due`` segment as of ``as_of``, grouped by owner (only ``owner``'s if given).

    ``params`` are the segment's (``cadence``, ``replies_count``); a bad one is
    a ConfigError naming it.
    """
    checked = segments.validate_params("contact_due", params)
    seg = segments.build("contact_due", as_of, checked).subquery("due")
    query = select(
        *[c for c in seg.c], Customer.external_ref.label("ref"), Customer.full_name.label("name")
    ).join(Customer, Customer.id == seg.c.customer_id)
    if owner is not None:
        query = query.where(seg.c.owner == owner)
    end = datetime.combine(as_of + timedelta(days=1), time())
    grade = func.upper(func.trim(Customer.grade))
    uncounted = (
        select(func.count())
        .select_from(Customer)
        .where(
            or_(Customer.grade.is_(None), grade.not_in(list(checked["cadence"]))),
            or_(Customer.created_at.is_(None), Customer.created_at < end),
        )
    )
    if owner is not None:
        uncounted = uncounted.where(Customer.owner == owner)
    with engine.connect() as conn:
        found = [dict(r) for r in conn.execute(query).mappings()]
        without = conn.execute(uncounted).scalar_one()
    by_owner: dict[str, list[dict]] = {}
    for row in found:
        row = {c: row[c] for c in COLUMNS}
        row["owner"] = row["owner"] or NO_OWNER
        if isinstance(row["last_contact_on"], str):  # SQLite hands back date() as text
            row["last_contact_on"] = date.fromisoformat(row["last_contact_on"])
        by_owner.setdefault(row["owner"], []).append(row)
    owners = [
        {"owner": name, "overdue": len(rows), "customers": sorted(rows, key=_most_overdue_first)}
        for name, rows in by_owner.items()
    ]
    owners.sort(key=lambda o: (-o["overdue"], o["owner"]))
    return OverdueReport(as_of, dict(checked["cadence"]), owners, without)


def _days(row: dict) -> str:
    if row["days_overdue"] is None:
        return "never contacted"
    return str(row["days_overdue"])


def as_text(report: OverdueReport, limit: int = 20) -> str:
    """Owners at a glance, then each owner's customers, most overdue first (``limit`` each)."""
    cadence = ", ".join(f"{g} {d}d" for g, d in report.cadence.items())
    lines = [
        f"Overdue for contact as of {report.as_of.isoformat()}: {report.overdue} customer(s)"
        f" (cadence: {cadence})"
    ]
    if report.without_cadence:
        lines.append(
            f"{report.without_cadence} customer(s) have no grade or a grade without a "
            "cadence and are not counted"
        )
    if not report.owners:
        lines.append("nobody is overdue")
        return "\n".join(lines)
    lines += [
        "",
        text_table(
            ["owner", "overdue", "most days overdue"],
            [[o["owner"], str(o["overdue"]), _days(o["customers"][0])] for o in report.owners],
        ),
    ]
    for o in report.owners:
        shown = o["customers"][:limit] if limit else o["customers"]
        rows = [
            [
                f"#{r['customer_id']}",
                r["name"] or "",
                r["grade"],
                f"every {r['cadence_days']}d",
                r["last_contact_on"].isoformat() if r["last_contact_on"] else "never",
                _days(r),
            ]
            for r in shown
        ]
        lines += ["", f"{o['owner']}: {o['overdue']} overdue"]
        header = ["customer", "name", "grade", "cadence", "last contact", "days overdue"]
        lines.append(text_table(header, rows))
        if len(shown) < len(o["customers"]):
            lines.append(f"... and {len(o['customers']) - len(shown)} more (--limit 0: all)")
    return "\n".join(lines)


def _plain(row: dict) -> dict:
    return {
        k: (v.isoformat() if isinstance(v, date) else v) for k, v in row.items() if k != "owner"
    }


def as_json(report: OverdueReport) -> str:
    return json.dumps(
        {
            "as_of": report.as_of.isoformat(),
            "cadence": report.cadence,
            "overdue": report.overdue,
            "without_cadence": report.without_cadence,
            "owners": [
                {
                    "owner": o["owner"],
                    "overdue": o["overdue"],
                    "customers": [_plain(r) for r in o["customers"]],
                }
                for o in report.owners
            ],
        },
        indent=2,
        ensure_ascii=False,
    )


def as_csv(report: OverdueReport) -> str:
    """One row per overdue customer, in the report's order."""
    rows = ([r[c] for c in COLUMNS] for o in report.owners for r in o["customers"])
    return csv_text(COLUMNS, rows)


__all__ = ["OverdueReport", "as_csv", "as_json", "as_text", "overdue_report"]

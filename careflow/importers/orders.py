"""Load a transactions export (one row per order line) into customers, products and orders.

The default layout is the UCI Online Retail file
(``InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country``);
``mapping`` names the columns of other exports.

The work is split in three: careflow/importers/source.py opens the file (gzip,
encoding, header) and reads it in chunks; careflow/importers/order_rows.py checks
every value and turns rows into purchase rows; this module writes them.
Every row read is accounted for in the :class:`OrderImportReport`: loaded as
an order line, skipped for a business reason (counted per reason, repeats of
an earlier row included), or malformed (counted per kind, first examples
kept with their line number). Nothing is dropped silently, so
``rows_read == lines_loaded + sum(skipped) + malformed``.

Speed comes from pandas doing the parsing and validation column-wise and
SQLAlchemy Core inserting plain dicts with executemany, in one transaction,
so a failed import leaves the database as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from careflow import purchase_facts
from careflow.db.models import Customer, Order, OrderLine, Product
from careflow.errors import DataError
from careflow.importers.bulk import (
    INSERT_CHUNK,
    chunks,
    existing,
    insert_many,
    insert_returning_ids,
)
from careflow.importers.dates import decide, declared_format
from careflow.importers.order_rows import (
    DEFAULT_MAPPING,
    OPTIONAL,
    REQUIRED,
    classify,
    drop_customer_conflicts,
    drop_oversized_orders,
    drop_repeats,
    empty_frame,
    normalize_customer_ref,
)
from careflow.importers.report import ImportReport, bounded, shown
from careflow.importers.source import column_values, open_source, read_chunks
from careflow.money import is_known_currency, line_minor

__all__ = ["DEFAULT_MAPPING", "ImportReport", "OrderImportReport", "import_orders"]
__all__ += ["normalize_customer_ref"]

#: progress(stage, done, total) — total is None while the row count is unknown.
Progress = Callable[[str, int, int | None], None]

_CUSTOMERS = Customer.__table__
_PRODUCTS = Product.__table__
_ORDERS = Order.__table__
_LINES = OrderLine.__table__


@dataclass
class OrderImportReport(ImportReport):
    """What an order import did, row by row accounted for."""

    orders_loaded: int = 0
    lines_loaded: int = 0
    customers_created: int = 0
    customers_matched: int = 0
    products_created: int = 0
    #: orders (invoices) found in the file that the database already had
    orders_already_present: int = 0
    #: customers whose purchase facts (careflow/purchase_facts.py) were brought up to date
    facts_refreshed: int = 0

    def loaded_lines(self) -> list[str]:
        return [
            (
                f"  orders loaded       {self.orders_loaded:>10,}  "
                f"({self.orders_already_present:,} already in the database)"
            ),
            f"  order lines loaded  {self.lines_loaded:>10,}",
            (
                f"  customers created   {self.customers_created:>10,}  "
                f"({self.customers_matched:,} matched existing)"
            ),
            f"  products created    {self.products_created:>10,}",
            f"  purchase facts      {self.facts_refreshed:>10,}  customers brought up to date",
        ]


def import_orders(
    engine: Engine,
    path: str | Path,
    *,
    mapping: dict[str, str] | None = None,
    currency: str = "GBP",
    encoding: str | None = None,
    progress: Progress | None = None,
    date_format: str | None = None,
) -> OrderImportReport:
    """Import a transactions CSV (plain or gzip) into ``engine``'s database.

    ``mapping`` maps our fields (invoice, sku, description, quantity,
    ordered_at, unit_price, customer, country) to the file's column names;
    fields it leaves out keep the Online Retail names. ``encoding`` names the
    file's encoding; without it the file must be UTF-8 (or say otherwise
    with a byte order mark). Orders whose invoice number is already in the
    database are skipped, so re-importing a file adds nothing. ``date_format``
    (DD/MM/YYYY, MM/DD/YYYY) says how day/month dates read; without it the
    column's order is inferred when its values prove it, and two-way dates are
    refused when they do not (careflow/importers/dates.py). Raises
    DataError when the file is missing, unreadable in its encoding or lacks
    a required column; bad rows are reported, not raised.
    """
    started = time.perf_counter()
    unknown = sorted(set(mapping or {}) - set(DEFAULT_MAPPING))
    if unknown:
        raise DataError(
            bounded(
                f"unknown field(s) in --map: {', '.join(map(shown, unknown))}; "
                f"fields are {', '.join(DEFAULT_MAPPING)}"
            )
        )
    declared = declared_format(date_format)
    currency = currency.upper() if isinstance(currency, str) else currency
    if not is_known_currency(currency):
        raise DataError(f"currency must be a 3-letter ISO 4217 code, not {shown(currency)}")
    columns = {**DEFAULT_MAPPING, **(mapping or {})}
    source = open_source(path, encoding)
    header = source.header
    missing_fields = [f for f in REQUIRED if columns[f] not in header]
    missing = [f"{f} (column {shown(columns[f])})" for f in missing_fields]
    if missing:
        raise DataError(
            bounded(
                f"{source.path}: required column(s) missing: {', '.join(missing)}; "
                f"the file has {', '.join(map(shown, header[:20]))}. "
                "Name the file's columns with --map FIELD=COLUMN, one per field "
                f"(e.g. --map {missing_fields[0]}=YourColumn).",
                600,
            )
        )
    present = {f: columns[f] for f in (*REQUIRED, *OPTIONAL) if columns.get(f) in header}

    report = OrderImportReport(
        path=str(source.path), encoding=f"{source.encoding}, {source.encoding_source}"
    )
    # the date column's day/month order, from the whole column, before any row is read
    dates = decide(column_values(source, present["ordered_at"]), declared)
    report.note_dates("ordered_at", dates)
    parts = []
    for chunk, first_row, bad_lines in read_chunks(source, report):
        part = classify(chunk, first_row, present, report, bad_lines, source.has_nul, dates)
        if len(part):
            parts.append(part)
        if progress:
            progress("read", report.rows_read, None)
    rows = pd.concat(parts, ignore_index=True) if parts else empty_frame()
    rows = drop_repeats(rows, report)
    rows = drop_customer_conflicts(rows, report)
    rows = drop_oversized_orders(rows, report)
    try:
        with engine.begin() as conn:
            _load(conn, rows, currency, report, progress)
    except SQLAlchemyError as exc:
        # Every value was checked above; this is the database itself refusing
        # (disk full, permissions, a concurrent import). One line, no SQL dump.
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise DataError(
            bounded(f"{source.path}: the database refused the import, nothing was loaded: {reason}")
        ) from exc
    # the segments' per-customer summaries, now rather than at the next run's start
    report.facts_refreshed = purchase_facts.refresh(
        engine, (lambda n: progress("purchase facts", n, None)) if progress else None
    )
    report._finish(time.perf_counter() - started)
    return report


def _load(
    conn: Connection,
    rows: pd.DataFrame,
    currency: str,
    report: OrderImportReport,
    progress: Progress | None,
) -> None:
    """Write the purchase rows as customers, products, orders and lines."""
    if rows.empty:
        return
    invoices = rows["invoice"].unique().tolist()
    present = existing(conn, _ORDERS.c.external_ref, invoices)
    if present:
        old = rows["invoice"].isin(list(present))
        report.orders_already_present = len(present)
        report._skip("already_imported", int(old.sum()))
        rows = rows[~old]
        if rows.empty:
            return

    # Customers: matched by external_ref, otherwise created without contact
    # details; "created" is the first purchase the file shows.
    firsts = rows.groupby("customer", sort=False).agg(
        country=("country", "first"), first=("when", "min")
    )
    customer_ids = existing(conn, _CUSTOMERS.c.external_ref, firsts.index.tolist())
    report.customers_matched = len(customer_ids)
    new_customers = [
        {
            "external_ref": ref,
            "country": country.strip() or None,
            "created_at": first.to_pydatetime(),
        }
        for ref, country, first in firsts.itertuples()
        if ref not in customer_ids
    ]
    customer_ids.update(insert_returning_ids(conn, _CUSTOMERS, new_customers))
    report.customers_created = len(new_customers)

    # Products: named after the first non-empty description the file gives.
    skus = rows["sku"].unique().tolist()
    have = existing(conn, _PRODUCTS.c.sku, skus)
    named = rows[rows["description"] != ""].drop_duplicates("sku").set_index("sku")["description"]
    new_products = [
        {"sku": sku, "name": (named.get(sku) or "").strip() or None}
        for sku in skus
        if sku not in have
    ]
    insert_many(conn, _PRODUCTS, new_products)
    report.products_created = len(new_products)

    # Line amounts from the exact Decimal price, rounded once to the minor unit;
    # the order total is the sum of its lines, in integers (careflow.money).
    # Files repeat a few thousand (price, quantity) pairs over and over: convert each once.
    minor: dict[tuple[str, int], tuple[int, int]] = {}
    totals: dict[str, int] = dict.fromkeys(rows["invoice"].unique(), 0)
    lines: list[dict] = []
    for invoice, sku, qty, price in zip(
        rows["invoice"].tolist(),
        rows["sku"].tolist(),
        rows["quantity"].tolist(),
        rows["price"].tolist(),
        strict=True,
    ):
        unit_minor, amount = minor.get((price, qty)) or minor.setdefault(
            (price, qty), line_minor(price, qty, currency)
        )
        totals[invoice] += amount
        lines.append(
            {
                "order_id": invoice,
                "sku": sku,
                "quantity": qty,
                "unit_price_minor": unit_minor,
                "amount_minor": amount,
            }
        )

    heads = rows.groupby("invoice", sort=False).agg(
        customer=("customer", "first"), when=("when", "min")
    )
    orders = []
    for invoice, customer, when in heads.itertuples():
        at = when.to_pydatetime()
        orders.append(
            {
                "external_ref": invoice,
                "customer_id": customer_ids[customer],
                "ordered_at": at,
                "ordered_on": at.date(),
                "currency": currency,
                "amount_minor": totals[invoice],
            }
        )
    order_ids: dict[str, int] = {}
    for batch in chunks(orders):
        order_ids.update(insert_returning_ids(conn, _ORDERS, batch))
        if progress:
            progress("orders", len(order_ids), len(orders))
    report.orders_loaded = len(orders)

    for line in lines:
        line["order_id"] = order_ids[line["order_id"]]
    for start in range(0, len(lines), INSERT_CHUNK * 5):
        batch = lines[start : start + INSERT_CHUNK * 5]
        insert_many(conn, _LINES, batch)
        if progress:
            progress("lines", start + len(batch), len(lines))
    report.lines_loaded = len(lines)

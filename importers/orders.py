"""Load a transactions export (one row per order line) into customers, products and orders.

The default layout is the UCI Online Retail file
(``InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country``);
``mapping`` names the columns of other exports.

Every row read is accounted for in the :class:`ImportReport`: loaded as an
order line, skipped for a business reason (counted per reason), or malformed
(counted per kind, first examples kept with their line number). Nothing is
dropped silently, so ``rows_read == lines_loaded + sum(skipped) + malformed``.

Speed comes from pandas doing the parsing and validation column-wise and
SQLAlchemy Core inserting plain dicts with executemany, in one transaction,
so a failed import leaves the database as it was.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.errors import ParserWarning
from sqlalchemy import Connection, Engine, insert, select

from careflow.db.models import Customer, Order, OrderLine, Product
from careflow.errors import DataError
from careflow.money import to_minor

DEFAULT_MAPPING: dict[str, str] = {
    "invoice": "InvoiceNo",
    "sku": "StockCode",
    "description": "Description",
    "quantity": "Quantity",
    "ordered_at": "InvoiceDate",
    "unit_price": "UnitPrice",
    "customer": "CustomerID",
    "country": "Country",
}
REQUIRED = ("invoice", "sku", "quantity", "ordered_at", "unit_price", "customer")
OPTIONAL = ("description", "country")
MAX_EXAMPLES = 20
READ_CHUNK = 100_000
INSERT_CHUNK = 10_000

#: progress(stage, done, total) — total is None while the row count is unknown.
Progress = Callable[[str, int, int | None], None]

_CUSTOMERS = Customer.__table__
_PRODUCTS = Product.__table__
_ORDERS = Order.__table__
_LINES = OrderLine.__table__
_BAD_LINE = re.compile(r"line (\d+): expected (\d+) fields, saw (\d+)")
#: the columns of the purchase frame _classify builds
_FIELDS = (
    "line",
    "invoice",
    "sku",
    "description",
    "quantity",
    "price",
    "when",
    "customer",
    "country",
)
_TZ_SUFFIX = r"(?:Z|[+-]\d\d:?\d\d)$"


@dataclass
class ImportReport:
    """What an import did, row by row accounted for."""

    path: str
    rows_read: int = 0
    orders_loaded: int = 0
    lines_loaded: int = 0
    customers_created: int = 0
    customers_matched: int = 0
    products_created: int = 0
    #: orders (invoices) found in the file that the database already had
    orders_already_present: int = 0
    #: rows skipped on purpose, by reason: no_customer, cancellation, ...
    skipped: dict[str, int] = field(default_factory=dict)
    #: malformed rows by kind: bad_quantity, bad_date, missing_field, ...
    malformed: dict[str, int] = field(default_factory=dict)
    #: the first malformed rows as (line number, explanation); line 1 is the header
    examples: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def malformed_rows(self) -> int:
        return sum(self.malformed.values())

    def summary(self) -> str:
        """A readable multi-line account of the import."""
        out = [
            f"Imported {self.path} in {self.seconds:.1f} s",
            f"  rows read           {self.rows_read:>10,}",
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
            f"  rows skipped        {sum(self.skipped.values()):>10,}",
        ]
        out += [f"    {reason:<22}{n:>8,}" for reason, n in sorted(self.skipped.items())]
        out.append(f"  malformed rows      {self.malformed_rows:>10,}")
        out += [f"    {kind:<22}{n:>8,}" for kind, n in sorted(self.malformed.items())]
        if self.examples:
            out.append("  first malformed rows:")
            out += [f"    line {line}: {why}" for line, why in self.examples]
        return "\n".join(out)

    # -- bookkeeping used while importing ---------------------------------
    def _skip(self, reason: str, n: int) -> None:
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + n

    def _bad(self, kind: str, line: int, why: str) -> None:
        self.malformed[kind] = self.malformed.get(kind, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((line, why))


def normalize_customer_ref(raw: str) -> str:
    """'17850.0' -> '17850': spreadsheets and pandas turn integer ids into floats."""
    raw = raw.strip()
    head, dot, tail = raw.partition(".")
    if dot and head.isdigit() and tail.strip("0") == "":
        return head
    return raw


def import_orders(
    engine: Engine,
    path: str | Path,
    *,
    mapping: dict[str, str] | None = None,
    currency: str = "GBP",
    progress: Progress | None = None,
) -> ImportReport:
    """Import a transactions CSV (plain or gzip) into ``engine``'s database.

    ``mapping`` maps our fields (invoice, sku, description, quantity,
    ordered_at, unit_price, customer, country) to the file's column names;
    fields it leaves out keep the Online Retail names. Orders whose invoice
    number is already in the database are skipped, so re-importing a file
    adds nothing. Raises DataError when the file is missing or lacks a
    required column.
    """
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"import file not found: {path}")
    unknown = sorted(set(mapping or {}) - set(DEFAULT_MAPPING))
    if unknown:
        raise DataError(
            f"unknown field(s) in mapping: {', '.join(unknown)}; "
            f"fields are {', '.join(DEFAULT_MAPPING)}"
        )
    if not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise DataError(f"currency must be a 3-letter ISO 4217 code, not {currency!r}")
    columns = {**DEFAULT_MAPPING, **(mapping or {})}
    compression = _compression(path)
    header = _header(path, compression)
    missing = [f"{f} (column {columns[f]!r})" for f in REQUIRED if columns[f] not in header]
    if missing:
        raise DataError(
            f"{path}: required column(s) missing: {', '.join(missing)}; "
            f"the file has {', '.join(header)}. Pass mapping= to name other columns."
        )
    present = {f: columns[f] for f in (*REQUIRED, *OPTIONAL) if columns.get(f) in header}

    report = ImportReport(path=str(path))
    parts = _read_purchases(path, compression, present, report, progress)
    rows = pd.concat(parts, ignore_index=True) if parts else _empty_frame()
    rows = _drop_customer_conflicts(rows, report)
    with engine.begin() as conn:
        _load(conn, rows, currency.upper(), report, progress)
    report.examples.sort()
    report.seconds = time.perf_counter() - started
    return report


# --- reading ---------------------------------------------------------------


def _compression(path: Path) -> str | None:
    """gzip when the name says so or the first bytes do (exports get renamed)."""
    if path.suffix.lower() == ".gz":
        return "gzip"
    with path.open("rb") as fh:
        return "gzip" if fh.read(2) == b"\x1f\x8b" else None


def _header(path: Path, compression: str | None) -> list[str]:
    try:
        frame = pd.read_csv(path, nrows=0, compression=compression, encoding_errors="replace")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from exc
    return [str(c).strip() for c in frame.columns]


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in _FIELDS})


def _read_purchases(
    path: Path,
    compression: str | None,
    present: dict[str, str],
    report: ImportReport,
    progress: Progress | None,
) -> list[pd.DataFrame]:
    """Read the file in chunks; keep the purchase rows and account for all others."""
    parts: list[pd.DataFrame] = []
    unrelated: list[warnings.WarningMessage] = []
    bad_lines: list[int] = []  # physical lines pandas refused (wrong field count)
    seen = 0
    with warnings.catch_warnings(record=True) as caught:
        # The C parser reports rows with too many fields only as warnings; we
        # collect them to report their line numbers instead of losing them.
        # (No usecols=: with it pandas silently truncates such rows.) Other
        # warnings are re-issued below. catch_warnings is process-global, so
        # imports are not meant to run in parallel threads of one process.
        warnings.simplefilter("always")
        reader = pd.read_csv(
            path,
            compression=compression,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            on_bad_lines="warn",
            chunksize=READ_CHUNK,
            encoding_errors="replace",
        )
        with reader:
            for chunk in _chunks_of(reader, path):
                chunk.columns = [str(c).strip() for c in chunk.columns]
                for w in caught:
                    # One warning may list several refused lines.
                    refused = list(_BAD_LINE.finditer(str(w.message)))
                    if not (issubclass(w.category, ParserWarning) and refused):
                        unrelated.append(w)
                    for found in refused:
                        line, want, got = map(int, found.groups())
                        bad_lines.append(line)
                        report.rows_read += 1
                        report._bad(
                            "wrong_field_count", line, f"expected {want} fields, found {got}"
                        )
                caught.clear()
                part = _classify(chunk, seen, present, report, bad_lines)
                if len(part):
                    parts.append(part)
                seen += len(chunk)
                report.rows_read += len(chunk)
                if progress:
                    progress("read", report.rows_read, None)
    for w in unrelated:  # not ours to swallow
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return parts


def _chunks_of(reader: Iterable[pd.DataFrame], path: Path) -> Iterator[pd.DataFrame]:
    """The reader's chunks; a file broken past repair (bad gzip, open quote) is a DataError."""
    try:
        yield from reader
    except (pd.errors.ParserError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read past this point: {exc}") from exc


def _line_of(row: int, bad_lines: list[int]) -> int:
    """Physical line of the ``row``-th record (0-based), stepping over refused lines.

    Exact unless quoted fields span lines or the file has blank lines.
    """
    line = row + 2
    for bad in sorted(bad_lines):
        if bad <= line:
            line += 1
        else:
            break
    return line


def _classify(
    chunk: pd.DataFrame,
    first_row: int,
    present: dict[str, str],
    report: ImportReport,
    bad_lines: list[int],
) -> pd.DataFrame:
    """Validate one chunk column-wise; return its purchase rows in our field names."""

    def col(name: str, strip: bool = False) -> pd.Series:
        if name not in present:
            return pd.Series("", index=chunk.index, dtype=str)
        values = chunk[present[name]].astype(str)
        # Stripping is per-element Python work: spend it only on the keys.
        # Numbers parse with surrounding blanks anyway, description and
        # country are stripped once per customer/product when loading.
        return values.str.strip() if strip else values

    invoice, sku, customer = col("invoice", True), col("sku", True), col("customer", True)
    qty_raw, price_raw, when_raw = col("quantity"), col("unit_price"), col("ordered_at")
    quantity = pd.to_numeric(qty_raw, errors="coerce")
    price = pd.to_numeric(price_raw, errors="coerce")
    when = _parse_times(when_raw)

    # First problem found wins, so each malformed row is counted once. Short
    # rows read as empty trailing fields, so they surface as missing_field.
    # The bounds keep values inside the Integer / Numeric(12,2) columns.
    checks = [
        ("missing_field", invoice == "", "no invoice number"),
        ("missing_field", sku == "", "no stock code"),
        ("missing_field", qty_raw == "", "no quantity"),
        ("missing_field", when_raw == "", "no date"),
        ("missing_field", price_raw == "", "no unit price"),
        ("bad_quantity", ~((quantity % 1 == 0) & quantity.abs().lt(2**31)), "bad quantity {q!r}"),
        ("bad_date", when.isna(), "bad date {d!r}"),
        ("bad_unit_price", ~price.abs().lt(1e10), "bad unit price {p!r}"),
    ]
    broken = pd.Series(False, index=chunk.index)
    for kind, mask, message in checks:
        mask = mask & ~broken
        for pos in mask.to_numpy().nonzero()[0]:
            idx = chunk.index[pos]
            line = _line_of(first_row + int(pos), bad_lines)
            why = message.format(q=qty_raw[idx], d=when_raw[idx], p=price_raw[idx])
            report._bad(kind, line, why)
        broken |= mask
    ok = ~broken

    # Business skips, in this order: a row without a customer cannot be
    # attributed to anyone whatever else it says.
    no_customer = ok & (customer == "")
    cancelled = ok & ~no_customer & invoice.str.startswith(("C", "c"))
    returned = ok & ~no_customer & ~cancelled & (quantity <= 0)
    negative = ok & ~no_customer & ~cancelled & ~returned & (price < 0)
    report._skip("no_customer", int(no_customer.sum()))
    report._skip("cancellation", int(cancelled.sum()))
    report._skip("non_positive_quantity", int(returned.sum()))
    report._skip("negative_price", int(negative.sum()))

    keep = ok & ~(no_customer | cancelled | returned | negative)
    positions = keep.to_numpy().nonzero()[0] + first_row
    lines = [_line_of(int(r), bad_lines) for r in positions] if bad_lines else positions + 2
    return pd.DataFrame(
        {
            "line": lines,
            "invoice": invoice[keep].to_numpy(),
            "sku": sku[keep].to_numpy(),
            "description": col("description")[keep].to_numpy(),
            "quantity": quantity[keep].astype("int64").to_numpy(),
            "price": price_raw[keep].to_numpy(),
            "when": when[keep].to_numpy(),
            "customer": _normalized(customer[keep]),
            "country": col("country")[keep].to_numpy(),
        }
    )


def _normalized(refs: pd.Series) -> np.ndarray:
    """normalize_customer_ref over a column, computed once per distinct id."""
    distinct = {ref: normalize_customer_ref(ref) for ref in refs.unique()}
    return refs.map(distinct).to_numpy()


def _parse_times(raw: pd.Series) -> pd.Series:
    """ISO timestamps fast; anything else (e.g. '12/1/2010 8:26') through pandas' guesser.

    A UTC offset, when present, is dropped: ordered_at keeps the shop's clock.
    """
    try:
        when = pd.to_datetime(raw, errors="coerce", format="ISO8601")
    except ValueError:  # mixed offsets
        raw = raw.str.replace(_TZ_SUFFIX, "", regex=True)
        when = pd.to_datetime(raw, errors="coerce", format="ISO8601")
    if getattr(when.dt, "tz", None) is not None:
        when = when.dt.tz_localize(None)
    retry = when.isna() & (raw != "")
    if retry.any():
        when = when.copy()
        when[retry] = pd.to_datetime(raw[retry], errors="coerce", format="mixed")
    return when


def _drop_customer_conflicts(rows: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    """An invoice belongs to one customer; rows naming another one are malformed."""
    if rows.empty:
        return rows
    owner = rows.groupby("invoice", sort=False)["customer"].transform("first")
    conflict = rows["customer"] != owner
    for line, invoice, customer, first in zip(
        rows["line"][conflict],
        rows["invoice"][conflict],
        rows["customer"][conflict],
        owner[conflict],
        strict=True,
    ):
        report._bad(
            "invoice_customer_conflict",
            int(line),
            f"invoice {invoice} belongs to customer {first}, this row names {customer}",
        )
    return rows[~conflict]


# --- writing ---------------------------------------------------------------


def _chunks(items: list, size: int = INSERT_CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _existing(conn: Connection, column, values: list[str]) -> dict[str, int | str]:
    """{value: id} for the values of a unique ``column`` already in the database."""
    table = column.table
    key = table.c.id if "id" in table.c else column
    found: dict[str, int | str] = {}
    for batch in _chunks(values, 5_000):
        found.update(conn.execute(select(column, key).where(column.in_(batch))).all())
    return found


def _insert_many(conn: Connection, table, rows: list[dict]) -> None:
    """Core executemany, in chunks (psycopg pipelines these; SQLite loops in C)."""
    for batch in _chunks(rows):
        conn.execute(insert(table), batch)


def _insert_returning_ids(conn: Connection, table, rows: list[dict]) -> dict[str, int]:
    """Insert rows and map each one's external_ref to its new id (both dialects)."""
    stmt = insert(table).returning(table.c.external_ref, table.c.id, sort_by_parameter_order=True)
    ids: dict[str, int] = {}
    for batch in _chunks(rows):
        ids.update(conn.execute(stmt, batch).all())
    return ids


def _load(
    conn: Connection,
    rows: pd.DataFrame,
    currency: str,
    report: ImportReport,
    progress: Progress | None,
) -> None:
    """Write the purchase rows as customers, products, orders and lines."""
    if rows.empty:
        return
    invoices = rows["invoice"].unique().tolist()
    present = _existing(conn, _ORDERS.c.external_ref, invoices)
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
    customer_ids = _existing(conn, _CUSTOMERS.c.external_ref, firsts.index.tolist())
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
    customer_ids.update(_insert_returning_ids(conn, _CUSTOMERS, new_customers))
    report.customers_created = len(new_customers)

    # Products: named after the first non-empty description the file gives.
    skus = rows["sku"].unique().tolist()
    have = _existing(conn, _PRODUCTS.c.sku, skus)
    named = rows[rows["description"] != ""].drop_duplicates("sku").set_index("sku")["description"]
    new_products = [
        {"sku": sku, "name": (named.get(sku) or "").strip() or None}
        for sku in skus
        if sku not in have
    ]
    _insert_many(conn, _PRODUCTS, new_products)
    report.products_created = len(new_products)

    # Line amounts from the exact Decimal price, rounded once to the minor unit;
    # the order total is the sum of its lines, in integers (careflow.money).
    units: dict[str, tuple[Decimal, int]] = {}
    totals: dict[str, int] = dict.fromkeys(rows["invoice"].unique(), 0)
    lines: list[dict] = []
    for invoice, sku, qty, price in zip(
        rows["invoice"].tolist(),
        rows["sku"].tolist(),
        rows["quantity"].tolist(),
        rows["price"].tolist(),
        strict=True,
    ):
        unit = units.get(price)
        if unit is None:
            exact = Decimal(price)
            unit = units[price] = (exact, to_minor(exact, currency))
        amount = to_minor(unit[0] * qty, currency)
        totals[invoice] += amount
        lines.append(
            {
                "order_id": invoice,
                "sku": sku,
                "quantity": qty,
                "unit_price_minor": unit[1],
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
    for batch in _chunks(orders):
        order_ids.update(_insert_returning_ids(conn, _ORDERS, batch))
        if progress:
            progress("orders", len(order_ids), len(orders))
    report.orders_loaded = len(orders)

    for line in lines:
        line["order_id"] = order_ids[line["order_id"]]
    for start in range(0, len(lines), INSERT_CHUNK * 5):
        batch = lines[start : start + INSERT_CHUNK * 5]
        _insert_many(conn, _LINES, batch)
        if progress:
            progress("lines", start + len(batch), len(lines))
    report.lines_loaded = len(lines)

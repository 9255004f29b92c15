"""Order rows: a transactions file's text columns checked into purchase rows.

Every value is checked against the column it will be stored in and against
sane bounds before the database sees it, so a bad row is reported with its
line number and reason and the rest loads; the database (PostgreSQL
rejects, SQLite stores anything) never has to say no. The bounds:

- text fits its column (invoice, stock code and customer 64 characters,
  description 300, country 64; read from the models) and has no NUL
  character, which PostgreSQL cannot store;
- quantity a whole number, at most ``MAX_QUANTITY`` either way;
- unit price a finite number up to ``MAX_UNIT_PRICE``; a line's amount and
  an order's total at most ``MAX_AMOUNT``, which keeps the total in minor
  units far inside a BigInteger for any currency (exponent <= 4);
- ordered between ``EARLIEST`` and ``LATEST`` (years 1000 and 9999 are
  typing errors, not orders).

The first problem found in a row is the one reported, so each malformed row
counts once. Rows repeated exactly (every field the same, anywhere in the
file) are purchases stated twice: they load once and the repeats are
counted with their line numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from careflow.db.models import Customer, Order, Product
from careflow.importers.dates import DateOrder, reorder
from careflow.importers.report import ImportReport, shown
from careflow.importers.source import line_of, lines_of

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

MAX_QUANTITY = 1_000_000
MAX_UNIT_PRICE = 10**9
MAX_AMOUNT = 10**12
EARLIEST = pd.Timestamp("1900-01-01")
LATEST = pd.Timestamp("2100-01-01")  # exclusive
#: longer than any way of writing a date and time ("Wednesday, 1 December 2010 08:26:00 +00:00")
MAX_DATE_TEXT = 64
#: longest text per field: the length of the column it is stored in
TEXT_LIMITS = {
    "invoice": Order.__table__.c.external_ref.type.length,
    "sku": Product.__table__.c.sku.type.length,
    "customer": Customer.__table__.c.external_ref.type.length,
    "description": Product.__table__.c.name.type.length,
    "country": Customer.__table__.c.country.type.length,
}
LABELS = {
    "invoice": "invoice number",
    "sku": "stock code",
    "customer": "customer id",
    "description": "description",
    "country": "country",
}
#: the columns of the purchase frame ``classify`` builds
FIELDS = (
    "line",
    "key",
    "invoice",
    "sku",
    "description",
    "quantity",
    "price",
    "when",
    "customer",
    "country",
    "amount",
)
#: what makes two rows the same row ("amount" follows from quantity and price)
_SAME_ROW = [f for f in FIELDS if f not in ("line", "amount")]
_TZ_SUFFIX = r"(?:Z|[+-]\d\d:?\d\d)$"
NOT_NEEDED = DateOrder(None, "not needed")


def normalize_customer_ref(raw: str) -> str:
    """'17850.0' -> '17850': spreadsheets and pandas turn integer ids into floats."""
    raw = raw.strip()
    head, dot, tail = raw.partition(".")
    if dot and head.isdigit() and tail.strip("0") == "":
        return head
    return raw


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in FIELDS})


def classify(
    chunk: pd.DataFrame,
    first_row: int,
    present: dict[str, str],
    report: ImportReport,
    bad_lines: list[int],
    check_nul: bool = True,
    dates: DateOrder = NOT_NEEDED,
) -> pd.DataFrame:
    """Check one chunk column-wise; return its purchase rows in our field names.

    ``check_nul=False`` skips looking for NUL characters (the file has none);
    ``dates`` is how the ordered_at column's day/month values read
    (careflow/importers/dates.py, decided over the whole column first).
    """

    def col(name: str, strip: bool = False) -> pd.Series:
        if name not in present:
            return pd.Series("", index=chunk.index, dtype=str)
        values = chunk[present[name]].astype(str)
        # Stripping is per-element Python work: spend it only on the keys.
        # Numbers parse with surrounding blanks anyway, description and
        # country are stripped once per customer/product when loading.
        return values.str.strip() if strip else values

    text = {
        "invoice": col("invoice", True),
        "sku": col("sku", True),
        "customer": col("customer", True),
        "description": col("description"),
        "country": col("country"),
    }
    invoice, sku, customer = text["invoice"], text["sku"], text["customer"]
    qty_raw, price_raw, when_raw = col("quantity"), col("unit_price"), col("ordered_at")
    quantity = pd.to_numeric(qty_raw, errors="coerce")
    price = pd.to_numeric(price_raw, errors="coerce")
    when, date_problems = parse_times(when_raw, dates)

    # (kind, rows with the problem, message for one of them by index label).
    # Short rows read as empty trailing fields, so they surface as missing_field.
    checks = [
        ("missing_field", invoice == "", lambda i: "no invoice number"),
        ("missing_field", sku == "", lambda i: "no stock code"),
        ("missing_field", qty_raw == "", lambda i: "no quantity"),
        ("missing_field", when_raw == "", lambda i: "no date"),
        ("missing_field", price_raw == "", lambda i: "no unit price"),
    ]
    if check_nul:
        checks += [_nul_check(name, values) for name, values in text.items()]
    for kind in sorted({p[0] for p in date_problems if isinstance(p, tuple)}):
        checks.append(
            (
                kind,
                date_problems.map(lambda p, k=kind: isinstance(p, tuple) and p[0] == k),
                lambda i: f"date {date_problems[i][1]}",
            )
        )
    for name, values in text.items():
        checks.append(_length_check(name, values))
    checks += [
        ("bad_quantity", ~(quantity % 1 == 0), lambda i: f"bad quantity {shown(qty_raw[i])}"),
        ("bad_date", when.isna(), lambda i: f"bad date {shown(when_raw[i])}"),
        (
            "bad_unit_price",
            ~np.isfinite(price),
            lambda i: f"bad unit price {shown(price_raw[i])}",
        ),
        (
            "out_of_range",
            quantity.abs() > MAX_QUANTITY,
            lambda i: f"quantity {shown(qty_raw[i])} out of range (at most {MAX_QUANTITY:,})",
        ),
        (
            "out_of_range",
            (when < EARLIEST) | (when >= LATEST),
            lambda i: (
                f"date {shown(when_raw[i])} out of range "
                f"({EARLIEST:%Y-%m-%d} to {LATEST - pd.Timedelta(days=1):%Y-%m-%d})"
            ),
        ),
        (
            "out_of_range",
            price.abs() > MAX_UNIT_PRICE,
            lambda i: f"unit price {shown(price_raw[i])} out of range (at most {MAX_UNIT_PRICE:,})",
        ),
        (
            "out_of_range",
            (quantity * price).abs() > MAX_AMOUNT,
            lambda i: (
                f"line amount {shown(qty_raw[i])} x {shown(price_raw[i])} out of range "
                f"(at most {MAX_AMOUNT:,})"
            ),
        ),
    ]
    broken = pd.Series(False, index=chunk.index)
    for kind, mask, message in checks:
        mask = mask.fillna(False).astype(bool) & ~broken
        for pos in mask.to_numpy().nonzero()[0]:
            line = line_of(first_row + int(pos), bad_lines)
            report._bad(kind, line, message(chunk.index[pos]))
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
    return pd.DataFrame(
        {
            "line": lines_of(positions, bad_lines),
            # With the fields below, the whole row as read: what "the same row" means.
            "key": _other_columns_hash(chunk[keep], present),
            "invoice": invoice[keep].to_numpy(),
            "sku": sku[keep].to_numpy(),
            "description": text["description"][keep].to_numpy(),
            "quantity": quantity[keep].astype("int64").to_numpy(),
            "price": price_raw[keep].to_numpy(),
            "when": when[keep].to_numpy(),
            "customer": _normalized(customer[keep]),
            "country": text["country"][keep].to_numpy(),
            # approximate, for the order-total bound only; stored amounts use Decimal
            "amount": (quantity * price)[keep].to_numpy(),
        }
    )


def _nul_check(name: str, values: pd.Series):
    return (
        "bad_text",
        values.str.contains("\x00", regex=False),
        lambda i: f"{LABELS[name]} contains a NUL character: {shown(values[i])}",
    )


def _length_check(name: str, values: pd.Series):
    limit = TEXT_LIMITS[name]
    # map(len) over the objects: several times faster than .str.len() on pandas' str dtype
    lengths = np.fromiter(map(len, values.to_numpy(dtype=object)), np.int64, len(values))
    return (
        "too_long",
        pd.Series(lengths > limit, index=values.index),
        lambda i: (
            f"{LABELS[name]} too long ({len(values[i]):,} characters, "
            f"at most {limit}): {shown(values[i])}"
        ),
    )


def _other_columns_hash(rows: pd.DataFrame, present: dict[str, str]) -> np.ndarray:
    """A 64-bit hash per row of the columns we do not load (0 when there are none)."""
    others = [c for c in rows.columns if c not in set(present.values())]
    if not others:
        return np.zeros(len(rows), dtype=np.uint64)
    return pd.util.hash_pandas_object(rows[others], index=False).to_numpy()


def _normalized(refs: pd.Series) -> np.ndarray:
    """normalize_customer_ref over a column, computed once per distinct id."""
    distinct = {ref: normalize_customer_ref(ref) for ref in refs.unique()}
    return refs.map(distinct).to_numpy()


def parse_times(raw: pd.Series, dates: DateOrder = NOT_NEEDED) -> tuple[pd.Series, pd.Series]:
    """(timestamps, problems): ISO timestamps fast; day/month values ('12/1/2010 8:26')
    in the column's order (``dates``), refused with a reason in ``problems`` when no
    order is known; anything else through pandas' guesser.

    A UTC offset, when present, is dropped: ordered_at keeps the shop's clock.
    Values longer than any date (``MAX_DATE_TEXT``) are not parsed at all:
    the guesser takes minutes over a megabyte of digits.
    """
    raw = raw.where(raw.str.len() <= MAX_DATE_TEXT, "")
    raw, problems = reorder(raw, dates)
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
    return when, problems


def drop_repeats(rows: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    """Keep the first of rows that are the same in every field; count the others.

    Compared: every parsed field and a 64-bit hash of the columns we do not
    load (a hash collision there could only merge rows that agree on every
    loaded field).
    """
    if rows.empty:
        return rows
    # Candidates share invoice and item (cheap to find), then every field among them.
    involved = rows[rows.duplicated(subset=["invoice", "sku"], keep=False)]
    again = involved.duplicated(subset=_SAME_ROW, keep="first")
    if not again.any():
        return rows
    first = involved.groupby(_SAME_ROW, sort=False, dropna=False)["line"].transform("min")
    for line, original in zip(involved["line"][again], first[again], strict=True):
        report._repeated(int(line), int(original))
    return rows.drop(index=involved.index[again.to_numpy()])


def drop_customer_conflicts(rows: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
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
            f"invoice {shown(invoice)} belongs to customer {shown(first)}, "
            f"this row names {shown(customer)}",
        )
    return rows[~conflict]


def drop_oversized_orders(rows: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    """Orders whose lines add up to more than MAX_AMOUNT: every row of them is malformed."""
    if rows.empty:
        return rows
    total = rows["amount"].groupby(rows["invoice"], sort=False).transform("sum")
    over = total.abs() > MAX_AMOUNT
    for line, invoice in zip(rows["line"][over], rows["invoice"][over], strict=True):
        report._bad(
            "out_of_range",
            int(line),
            f"invoice {shown(invoice)} totals more than {MAX_AMOUNT:,}",
        )
    return rows[~over]

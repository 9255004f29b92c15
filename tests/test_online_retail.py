"""The real UCI Online Retail file: importer figures and SQL segments vs. pandas.

The whole file (541,909 rows) is imported once per test module into its own
SQLite database; every test here reads that database. PostgreSQL gets the
importer through tests/test_importer.py on small files.

The figures asserted below were computed with pandas straight from the CSV
(see README in /work/shared/data and tests/reference_segments.py):

- 135,080 rows have no CustomerID; 9,288 rows have an invoice number
  starting with "C" (383 of them also lack a customer and count as
  no_customer, which is checked first); the 1,336
  other rows with Quantity <= 0 all lack a customer too.
- 397,924 purchase rows make 18,536 invoices of 4,339 customers (4,372 ids
  appear in the file; 33 only ever cancelled) over 3,665 stock codes.
- 5,192 of those rows repeat an earlier row exactly (same invoice, item,
  quantity, time, price, customer, country): the importer loads each such
  row once and counts the repeats, so 392,732 order lines are loaded.
- Purchase revenue, lines rounded to the cent, is 8,911,407.90 with the
  repeats and 8,887,208.89 without them.
"""

from __future__ import annotations

import os
from datetime import date
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from careflow import db
from careflow.db.models import Customer, Order, OrderLine, Product
from careflow.importers.orders import ImportReport, import_orders
from careflow.money import from_minor
from careflow.segments import build
from tests.reference_segments import reference_dormant, reference_reorder_due

DATA = Path(os.environ.get("CAREFLOW_ONLINE_RETAIL", "/work/shared/data/online_retail.csv.gz"))
AS_OF = date(2011, 12, 10)

pytestmark = pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} not available")


@pytest.fixture(scope="module")
def retail(tmp_path_factory) -> tuple:
    """(engine, first import report, second import report) for the whole file."""
    url = f"sqlite:///{tmp_path_factory.mktemp('online_retail') / 'retail.db'}"
    db.upgrade(url)
    engine = db.engine_for(url)
    first = import_orders(engine, DATA)
    again = import_orders(engine, DATA)
    yield engine, first, again
    engine.dispose()


def test_the_file_is_the_documented_one():
    """README figures, from pandas alone: guards the figures the importer is held to."""
    df = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    assert len(df) == 541_909
    assert (df["CustomerID"] == "").sum() == 135_080
    assert df.loc[df["CustomerID"] != "", "CustomerID"].nunique() == 4_372
    assert df["InvoiceNo"].nunique() == 25_900 and df["Country"].nunique() == 38
    total = (pd.to_numeric(df["Quantity"]) * pd.to_numeric(df["UnitPrice"])).sum()
    assert round(total, 2) == 9_747_747.93
    purchases = df[
        (df["CustomerID"] != "")
        & ~df["InvoiceNo"].str.startswith("C")
        & (pd.to_numeric(df["Quantity"]) > 0)
    ]
    assert len(purchases) == 397_924 and purchases.duplicated().sum() == 5_192


def test_import_report_accounts_for_every_row(retail):
    _, report, _ = retail
    assert isinstance(report, ImportReport)
    assert report.rows_read == 541_909
    assert report.skipped == {
        "no_customer": 135_080,
        "cancellation": 8_905,
        "duplicate_row": 5_192,
    }
    assert report.malformed == {} and report.examples == []
    assert report.lines_loaded + report.skipped["duplicate_row"] == 397_924
    assert report.lines_loaded == 392_732
    # the first repeat: 536409's luggage tag, on line 519 and, before it, on line 496
    assert report.duplicates[0] == (519, 496)
    assert report.rows_read == report.lines_loaded + sum(report.skipped.values())
    assert report.orders_loaded == 18_536
    assert (report.customers_created, report.customers_matched) == (4_339, 0)
    assert report.products_created == 3_665
    assert report.seconds < 60, report.summary()  # target: well under 30 s
    assert "541,909" in report.summary()


def test_database_holds_what_the_report_says(retail):
    engine, _, _ = retail
    with engine.connect() as conn:
        n_orders, revenue = conn.execute(select(func.count(), func.sum(Order.amount_minor))).one()
        n_lines, line_revenue = conn.execute(
            select(func.count(), func.sum(OrderLine.amount_minor))
        ).one()
        assert conn.execute(select(func.count(Customer.id))).scalar_one() == 4_339
        assert conn.execute(select(func.count()).select_from(Product)).scalar_one() == 3_665
        first = conn.execute(
            select(Order, Customer.external_ref.label("customer"), Customer.country)
            .join(Customer)
            .where(Order.external_ref == "536365")
        ).one()
        no_contact = conn.execute(
            select(func.count(Customer.id)).where(
                Customer.mobile.is_(None), Customer.email.is_(None), Customer.fax.is_(None)
            )
        ).scalar_one()
    assert (n_orders, n_lines) == (18_536, 392_732)
    # Money is integer pence (careflow.money): the sums are exact on every database.
    assert from_minor(revenue, "GBP") == from_minor(line_revenue, "GBP") == Decimal("8887208.89")
    assert (first.customer, first.country) == ("17850", "United Kingdom")
    assert first.ordered_on == date(2010, 12, 1)
    assert from_minor(first.amount_minor, first.currency) == Decimal("139.12")
    assert no_contact == 4_339  # the file has no contact details at all


def test_reimporting_the_file_changes_nothing(retail):
    engine, first, again = retail
    assert (again.orders_loaded, again.lines_loaded, again.customers_created) == (0, 0, 0)
    assert again.orders_already_present == first.orders_loaded
    assert again.skipped["already_imported"] == first.lines_loaded
    with engine.connect() as conn:
        assert conn.execute(select(func.count(Order.id))).scalar_one() == 18_536


def _segment_refs(engine, query) -> set[str]:
    members = query.subquery()
    stmt = select(Customer.external_ref).join(members, members.c.customer_id == Customer.id)
    with engine.connect() as conn:
        return set(conn.execute(stmt).scalars())


@pytest.mark.parametrize(("as_of", "days"), [(AS_OF, 180), (AS_OF, 90), (date(2011, 9, 1), 180)])
def test_dormant_matches_pandas(retail, as_of, days):
    engine, _, _ = retail
    expected = reference_dormant(DATA, as_of, days=days)
    assert expected  # a comparison of two empty sets proves nothing
    assert _segment_refs(engine, build("dormant", as_of, {"days": days})) == expected


@pytest.mark.parametrize("as_of", [AS_OF, date(2011, 9, 1), date(2011, 6, 15)])
def test_reorder_due_matches_pandas(retail, as_of):
    engine, _, _ = retail
    expected = reference_reorder_due(DATA, as_of)
    assert expected
    assert _segment_refs(engine, build("reorder_due", as_of)) == expected


def test_reference_sizes_on_the_documented_date():
    """Pin the pandas reference itself, so a change to it cannot go unnoticed."""
    assert len(reference_dormant(DATA, AS_OF)) == 861
    assert len(reference_reorder_due(DATA, AS_OF)) == 277

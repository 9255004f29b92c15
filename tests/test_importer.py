"""The transactions importer on small hand-written files, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
from datetime import date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from careflow.db.models import Customer, Order, OrderLine, Product
from careflow.errors import DataError
from careflow.importers.orders import ImportReport, import_orders, normalize_customer_ref

CUSTOMERS, PRODUCTS = Customer.__table__, Product.__table__
ORDERS, LINES = Order.__table__, OrderLine.__table__

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"

# Line numbers (the header is line 1) matter: tests assert them.
RETAIL = f"""{HEADER}
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom
536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom
536366,22633,HAND WARMER UNION JACK,6,2010-12-01 08:28:00,1.85,17850,United Kingdom
536367,84879,"ASSORTED COLOUR BIRD ORNAMENT, LARGE",32,2010-12-01 08:34:00,1.69,13047,France
C536379,D,Discount,-1,2010-12-01 09:41:00,27.50,14527,United Kingdom
536414,22139,,56,2010-12-01 11:52:00,0.00,,United Kingdom
536415,22139,amazon adjust,-20,2010-12-02 11:52:00,0.00,13047,France
536416,71053,WHITE METAL LANTERN,1,2010-12-01 23:59:59,0.005,13047,France
"""


def write(tmp_path: Path, text: str, name: str = "orders.csv", gz: bool = False) -> Path:
    path = tmp_path / name
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def accounted(report: ImportReport) -> int:
    return report.lines_loaded + sum(report.skipped.values()) + report.malformed_rows


def test_loads_purchases_and_counts_every_skip(engine, tmp_path):
    report = import_orders(engine, write(tmp_path, RETAIL))

    assert report.rows_read == 8
    assert report.skipped == {"cancellation": 1, "no_customer": 1, "non_positive_quantity": 1}
    assert report.malformed == {} and report.examples == []
    assert (report.orders_loaded, report.lines_loaded) == (4, 5)
    assert (report.customers_created, report.products_created) == (2, 4)
    assert accounted(report) == report.rows_read

    with engine.connect() as conn:
        customers = dict(conn.execute(select(CUSTOMERS.c.external_ref, CUSTOMERS.c.country)).all())
        orders = {
            r.external_ref: r
            for r in conn.execute(
                select(ORDERS, CUSTOMERS.c.external_ref.label("customer")).join(CUSTOMERS)
            )
        }
        names = dict(conn.execute(select(PRODUCTS.c.sku, PRODUCTS.c.name)).all())
        line_amounts = sorted(conn.execute(select(LINES.c.amount_minor)).scalars())
    # "17850.0" is how spreadsheets write customer 17850: one customer, not two.
    assert customers == {"17850": "United Kingdom", "13047": "France"}
    assert set(orders) == {"536365", "536366", "536367", "536416"}
    first = orders["536365"]
    assert first.customer == "17850"
    assert first.amount_minor == 3564  # 6 * 2.55 + 6 * 3.39 GBP, in pence
    assert first.currency == "GBP"
    assert first.ordered_at == datetime(2010, 12, 1, 8, 26)
    assert first.ordered_on == date(2010, 12, 1)
    assert orders["536416"].ordered_on == date(2010, 12, 1)  # 23:59:59 stays that day
    assert orders["536416"].amount_minor == 1  # 1 * 0.005, rounded half up to a penny
    assert names["84879"] == "ASSORTED COLOUR BIRD ORNAMENT, LARGE"
    assert 5408 in line_amounts  # 32 * 1.69


def test_reimport_adds_nothing(engine, tmp_path):
    path = write(tmp_path, RETAIL)
    import_orders(engine, path)
    before = [count(engine, t) for t in (CUSTOMERS, PRODUCTS, ORDERS, LINES)]

    again = import_orders(engine, path)

    assert [count(engine, t) for t in (CUSTOMERS, PRODUCTS, ORDERS, LINES)] == before
    assert (again.orders_loaded, again.lines_loaded, again.customers_created) == (0, 0, 0)
    assert again.orders_already_present == 4
    assert again.skipped["already_imported"] == 5
    assert accounted(again) == again.rows_read


def test_new_invoices_for_known_customers_are_added(engine, tmp_path):
    import_orders(engine, write(tmp_path, RETAIL))
    more = f"{HEADER}\n536999,71053,WHITE METAL LANTERN,2,2010-12-05 10:00:00,3.39,17850,United Kingdom\n"

    report = import_orders(engine, write(tmp_path, more, "more.csv"))

    assert (report.orders_loaded, report.customers_created, report.customers_matched) == (1, 0, 1)
    assert report.products_created == 0
    assert count(engine, ORDERS) == 5


def test_gzip_detected_by_suffix_and_by_magic_bytes(engine, tmp_path):
    by_suffix = import_orders(engine, write(tmp_path, RETAIL, "a.csv.gz", gz=True))
    assert by_suffix.orders_loaded == 4
    # A renamed export: gzip content, no .gz suffix. Same invoices, so nothing new.
    by_magic = import_orders(engine, write(tmp_path, RETAIL, "export.dat", gz=True))
    assert by_magic.rows_read == 8 and by_magic.orders_already_present == 4


def test_malformed_rows_are_reported_with_their_line_numbers(engine, tmp_path):
    text = f"""{HEADER}
1001,A1,Tea,2,2011-01-01 10:00:00,3.50,100,China
1002,A1,Tea,two,2011-01-02 10:00:00,3.50,100,China
1003,A1,Tea,2,not a date,3.50,100,China
1004,A1,Tea,2,2011-01-04 10:00:00,3.50,100,China,EXTRA
1005,A1,Tea,2,2011-01-05 10:00:00,3,50,100,China
1006,A1,Tea,2,2011-01-06 10:00:00
1007,A1,Tea,1.5,2011-01-07 10:00:00,3.50,100,China
1008,A1,Tea,2,2011-01-08 10:00:00,abc,100,China
1009,A1,Tea,3,2011-01-09 10:00:00,3.50,100,China
"""
    report = import_orders(engine, write(tmp_path, text))

    assert report.rows_read == 9
    assert report.malformed == {
        "bad_quantity": 2,
        "bad_date": 1,
        "bad_unit_price": 1,
        "missing_field": 1,
        "wrong_field_count": 2,
    }
    lines = dict(report.examples)
    assert sorted(lines) == [3, 4, 5, 6, 7, 8, 9]
    assert "'two'" in lines[3] and "'not a date'" in lines[4]
    assert "expected 8 fields, found 9" in lines[5] and "found 9" in lines[6]
    assert "unit price" in lines[7]  # the short row: no UnitPrice at all
    assert "'1.5'" in lines[8] and "'abc'" in lines[9]
    # Good rows around the bad ones still load.
    assert report.lines_loaded == 2 and count(engine, ORDERS) == 2
    assert accounted(report) == report.rows_read
    summary = report.summary()
    assert "malformed rows" in summary and "line 5: expected 8 fields" in summary


def test_examples_are_capped_but_totals_are_not(engine, tmp_path):
    rows = "\n".join(f"{i},A1,Tea,x,2011-01-01 10:00:00,1,100,China" for i in range(50))
    report = import_orders(engine, write(tmp_path, f"{HEADER}\n{rows}\n"))
    assert report.malformed == {"bad_quantity": 50}
    assert len(report.examples) == 20 and report.examples[0][0] == 2


def test_an_invoice_naming_two_customers_keeps_the_first(engine, tmp_path):
    text = f"""{HEADER}
2001,A1,Tea,1,2011-01-01 10:00:00,3.50,100,China
2001,A2,Rice,1,2011-01-01 10:00:00,9.00,200,China
"""
    report = import_orders(engine, write(tmp_path, text))
    assert report.malformed == {"invoice_customer_conflict": 1}
    assert report.examples[0][0] == 3
    assert (report.orders_loaded, report.lines_loaded, report.customers_created) == (1, 1, 1)


def test_custom_column_mapping(engine, tmp_path):
    text = """order_no;item;qty;when;price;client;title
SO-1;RICE5;2;2024-03-01T09:15:00;45.50;C-77;Wuchang rice 5kg
SO-1;TEA1;1;2024-03-01T09:15:00;88.00;C-77;Longjing tea
SO-2;RICE5;1;2024-03-31T18:00:00;45.50;C-78;Wuchang rice 5kg
""".replace(";", ",")
    mapping = {
        "invoice": "order_no",
        "sku": "item",
        "quantity": "qty",
        "ordered_at": "when",
        "unit_price": "price",
        "customer": "client",
        "description": "title",
        "country": "nation",  # absent from the file: optional, so ignored
    }
    report = import_orders(engine, write(tmp_path, text), mapping=mapping, currency="CNY")

    assert (report.orders_loaded, report.lines_loaded, report.customers_created) == (2, 3, 2)
    with engine.connect() as conn:
        so1 = conn.execute(select(ORDERS).where(ORDERS.c.external_ref == "SO-1")).one()
        rice = conn.execute(select(PRODUCTS.c.name).where(PRODUCTS.c.sku == "RICE5")).scalar()
    assert (so1.amount_minor, so1.currency, so1.ordered_on) == (
        17900,
        "CNY",
        date(2024, 3, 1),
    )
    assert rice == "Wuchang rice 5kg"


def test_missing_file_and_missing_columns_raise_data_error(engine, tmp_path):
    with pytest.raises(DataError, match="not found"):
        import_orders(engine, tmp_path / "nope.csv")
    path = write(tmp_path, "InvoiceNo,StockCode,Quantity\n1,A,2\n")
    with pytest.raises(DataError, match=r"InvoiceDate.*UnitPrice.*CustomerID|ordered_at"):
        import_orders(engine, path)
    with pytest.raises(DataError, match="customer \\(column 'client'\\)"):
        import_orders(engine, write(tmp_path, RETAIL), mapping={"customer": "client"})
    assert count(engine, ORDERS) == 0


def test_existing_customer_is_matched_not_duplicated(engine, tmp_path):
    with engine.begin() as conn:
        conn.execute(insert(CUSTOMERS), [{"external_ref": "13047", "full_name": "Known Buyer"}])
    report = import_orders(engine, write(tmp_path, RETAIL))
    assert (report.customers_created, report.customers_matched) == (1, 1)
    with engine.connect() as conn:
        known = conn.execute(select(CUSTOMERS).where(CUSTOMERS.c.external_ref == "13047")).one()
    assert known.full_name == "Known Buyer"  # contact details are never overwritten


def test_progress_reports_reading_and_writing(engine, tmp_path):
    seen: list[tuple[str, int, int | None]] = []
    import_orders(engine, write(tmp_path, RETAIL), progress=lambda *a: seen.append(a))
    stages = {stage for stage, _, _ in seen}
    assert stages == {"read", "orders", "lines", "purchase facts"}
    assert ("lines", 5, 5) in seen
    assert seen[-1][0] == "purchase facts"  # the segments' summaries, brought up to date last


def test_an_import_leaves_the_segments_purchase_facts_up_to_date(engine, tmp_path):
    from careflow import purchase_facts

    report = import_orders(engine, write(tmp_path, RETAIL))
    assert report.facts_refreshed == report.customers_created > 0
    assert purchase_facts.pending(engine) == 0
    assert "purchase facts" in report.summary()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("17850", "17850"), ("17850.0", "17850"), (" 17850.00 ", "17850"), ("C-7.5", "C-7.5")],
)
def test_customer_refs_are_normalised(raw, expected):
    assert normalize_customer_ref(raw) == expected


def test_bad_arguments_and_broken_files_raise_data_error(engine, tmp_path):
    path = write(tmp_path, RETAIL)
    with pytest.raises(DataError, match="unknown field.*custmer"):
        import_orders(engine, path, mapping={"custmer": "CustomerID"})
    with pytest.raises(DataError, match="3-letter"):
        import_orders(engine, path, currency="pounds")
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(RETAIL.encode() * 200)[:-400])  # truncated download
    with pytest.raises(DataError, match="broken.csv.gz"):
        import_orders(engine, broken)
    assert count(engine, ORDERS) == 0

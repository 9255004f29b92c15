"""Bad input to the order importer, on SQLite and PostgreSQL: every bad row is
reported with its line number and reason, the rest loads, and no message is
longer than a line or two whatever the file holds."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from careflow.cli.main import main
from careflow.db.models import Order, OrderLine, Product
from careflow.errors import DataError
from careflow.importers.orders import import_orders
from careflow.importers.report import MAX_MESSAGE

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
GOOD_BEFORE = "1001,A1,Tea,2,2011-01-01 10:00:00,3.50,100,China"  # line 2
GOOD_AFTER = "1003,A2,Rice,1,2011-01-03 10:00:00,9.00,200,China"  # line 4


def _row(**fields) -> str:
    row = {
        "invoice": "1002",
        "sku": "A3",
        "description": "Cup",
        "quantity": "1",
        "when": "2011-01-02 10:00:00",
        "price": "1.00",
        "customer": "100",
        "country": "China",
    } | fields
    return ",".join(row.values())


# (case, the bad row on line 3, kind, what the message says)
CASES = [
    ("invoice too long", _row(invoice="9" * 65), "too_long", "invoice number too long (65"),
    ("stock code too long", _row(sku="S" * 65), "too_long", "stock code too long (65"),
    ("customer id too long", _row(customer="7" * 65), "too_long", "customer id too long (65"),
    ("country too long", _row(country="Z" * 65), "too_long", "country too long (65"),
    (
        "a megabyte description",
        _row(description="X" * 1_000_000),
        "too_long",
        "description too long (1,000,000 characters, at most 300)",
    ),
    ("NUL in a description", _row(description="Cup\x00"), "bad_text", "NUL character"),
    ("quantity 1e19", _row(quantity="1e19"), "out_of_range", "quantity '1e19' out of range"),
    ("quantity 2**31", _row(quantity="2147483648"), "out_of_range", "quantity"),
    ("quantity not whole", _row(quantity="1.5"), "bad_quantity", "bad quantity '1.5'"),
    ("unit price 1e19", _row(price="1e19"), "out_of_range", "unit price '1e19' out of range"),
    ("unit price inf", _row(price="inf"), "bad_unit_price", "bad unit price 'inf'"),
    ("unit price NaN", _row(price="NaN"), "bad_unit_price", "bad unit price 'NaN'"),
    (
        "line amount too large",
        _row(quantity="1000000", price="10000000"),
        "out_of_range",
        "line amount",
    ),
    ("year 1000", _row(when="1000-01-01 10:00:00"), "out_of_range", "date '1000-01-01"),
    ("year 9999", _row(when="9999-12-31 10:00:00"), "out_of_range", "date '9999-12-31"),
    ("no date", _row(when=""), "missing_field", "no date"),
    (
        "a megabyte quantity",
        _row(quantity="9" * 1_000_000),
        "bad_quantity",
        "(1,000,000 characters)",
    ),
    ("a megabyte date", _row(when="2" * 1_000_000), "bad_date", "(1,000,000 characters)"),
]


def write(tmp_path: Path, text: str | bytes, name: str = "orders.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.mark.parametrize(("bad", "kind", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_row_is_reported_with_its_line_and_the_rest_loads(engine, tmp_path, bad, kind, says):
    path = write(tmp_path, f"{HEADER}\n{GOOD_BEFORE}\n{bad}\n{GOOD_AFTER}\n")

    report = import_orders(engine, path)

    assert report.malformed == {kind: 1}
    [(line, message)] = report.examples
    assert line == 3 and says in message
    assert len(message) <= MAX_MESSAGE
    assert len(report.summary()) < 2_000
    assert (report.lines_loaded, count(engine, Order), count(engine, OrderLine)) == (2, 2, 2)
    assert report.rows_read == report.lines_loaded + sum(report.skipped.values()) + 1


def test_an_order_whose_lines_add_up_too_high_is_refused_whole(engine, tmp_path):
    big = "2001,{sku},Gold,1000,2011-01-02 10:00:00,700000000,100,China"  # 7e11 each
    text = f"{HEADER}\n{GOOD_BEFORE}\n{big.format(sku='B1')}\n{big.format(sku='B2')}\n"
    report = import_orders(engine, write(tmp_path, text))
    assert report.malformed == {"out_of_range": 2}
    assert [line for line, _ in report.examples] == [3, 4]
    assert "invoice '2001' totals more than" in report.examples[0][1]
    assert report.lines_loaded == 1


def test_repeated_rows_load_once_and_are_reported(engine, tmp_path):
    text = f"{HEADER}\n{GOOD_BEFORE}\n{GOOD_AFTER}\n{GOOD_BEFORE}\n{GOOD_BEFORE}\n"
    report = import_orders(engine, write(tmp_path, text))

    assert report.skipped == {"duplicate_row": 2}
    assert report.duplicates == [(4, 2), (5, 2)]
    assert "line 4 repeats line 2" in report.summary()
    with engine.connect() as conn:
        quantities = conn.execute(select(OrderLine.quantity).order_by(OrderLine.id)).scalars()
        assert list(quantities) == [2, 1]
    # a row that differs in any field, even one not loaded, is not a repeat
    other = write(tmp_path, f"{HEADER},Note\n{GOOD_BEFORE},a\n{GOOD_BEFORE},b\n", "notes.csv")
    assert import_orders(engine, other).skipped.get("duplicate_row") is None


LATIN1 = f"{HEADER}\n{GOOD_BEFORE}\n1002,A3,Café crème,1,2011-01-02 10:00:00,1.00,100,France\n"


def test_a_latin1_file_is_refused_with_the_line_not_loaded_as_mojibake(engine, tmp_path):
    path = write(tmp_path, LATIN1.encode("latin-1"))
    with pytest.raises(DataError) as caught:
        import_orders(engine, path)
    message = str(caught.value)
    assert "not UTF-8" in message and "line 3" in message and "0xE9" in message
    assert "--encoding" in message and "Café crème" in message  # as cp1252 reads it
    assert count(engine, Order) == 0

    report = import_orders(engine, path, encoding="latin-1")
    assert report.lines_loaded == 2 and "latin-1, given" in report.summary()
    with engine.connect() as conn:
        names = set(conn.execute(select(Product.name)).scalars())
    assert "Café crème" in names


def test_declared_encoding_is_checked_too(engine, tmp_path):
    path = write(tmp_path, LATIN1.encode("latin-1"))
    with pytest.raises(DataError, match=r"line 3 is not valid utf-8"):
        import_orders(engine, path, encoding="utf-8")
    with pytest.raises(DataError, match="unknown encoding 'klingon'"):
        import_orders(engine, path, encoding="klingon")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_byte_order_marks_name_the_encoding(engine, tmp_path, encoding):
    path = write(tmp_path, LATIN1.encode(encoding))
    report = import_orders(engine, path)
    assert report.lines_loaded == 2 and report.malformed == {}
    with engine.connect() as conn:
        assert "Café crème" in set(conn.execute(select(Product.name)).scalars())


def test_a_huge_line_in_a_non_utf8_file_gives_a_short_message(engine, tmp_path):
    huge = f"{HEADER}\n1002,A3,{'é' * 1_000_000},1,2011-01-02 10:00:00,1.00,100,France\n"
    with pytest.raises(DataError) as caught:
        import_orders(engine, write(tmp_path, huge.encode("latin-1")))
    assert len(str(caught.value)) <= MAX_MESSAGE


def test_cli_encoding_option(engine, tmp_path):
    path = write(tmp_path, LATIN1.encode("cp1252"))
    runner = CliRunner()
    out = runner.invoke(main, ["import", "orders", str(path)])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1 and "--encoding" in out.output
    out = runner.invoke(main, ["import", "orders", str(path), "--encoding", "cp1252"])
    assert out.exit_code == 0, out.output
    assert "order lines loaded" in out.output and "cp1252, given" in out.output


@pytest.mark.parametrize(
    "text",
    [
        f"{'H' * 1_000_000},StockCode\n1,2\n",  # no required column, one huge one
        f'{HEADER}\n{GOOD_BEFORE}\n1002,A3,"{"x" * 1_000_000},1,2011-01-02,1.00,100,China\n',
    ],
    ids=["huge header", "unterminated quote"],
)
def test_file_level_errors_are_short_too(engine, tmp_path, text):
    with pytest.raises(DataError) as caught:
        import_orders(engine, write(tmp_path, text))
    assert len(str(caught.value)) <= 2 * MAX_MESSAGE
    assert count(engine, Order) == 0


def ordered(engine) -> dict[str, datetime]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Order.external_ref, Order.ordered_at)).all())


def test_day_first_order_dates_are_read_day_first_when_the_file_proves_it(engine, tmp_path):
    """03/11/2026 and 13/11/2026 in one file were read as 11 March and 13 November."""
    text = (
        f"{HEADER}\n"
        f"{_row(invoice='1', when='03/11/2026 10:00')}\n"
        f"{_row(invoice='2', when='13/11/2026 10:00')}\n"
    )
    report = import_orders(engine, write(tmp_path, text))

    assert report.malformed == {}
    assert ordered(engine) == {"1": datetime(2026, 11, 3, 10), "2": datetime(2026, 11, 13, 10)}
    assert "dates: ordered_at   DD/MM/YYYY (inferred: line 3 '13/11/2026 10:00'" in (
        report.summary()
    )


def test_the_online_retail_layout_is_month_first(engine, tmp_path):
    text = (
        f"{HEADER}\n"
        f"{_row(invoice='1', when='12/1/2010 8:26')}\n"
        f"{_row(invoice='2', when='12/13/2010 9:05')}\n"
    )
    report = import_orders(engine, write(tmp_path, text))
    assert report.malformed == {}
    assert ordered(engine) == {"1": datetime(2010, 12, 1, 8, 26), "2": datetime(2010, 12, 13, 9, 5)}
    assert report.date_orders["ordered_at"].startswith("MM/DD/YYYY (inferred")


def test_order_dates_that_read_two_ways_are_refused_or_read_as_declared(engine, tmp_path):
    text = f"{HEADER}\n{GOOD_BEFORE}\n{_row(when='03/11/2026 10:00')}\n{GOOD_AFTER}\n"
    report = import_orders(engine, write(tmp_path, text))
    assert report.malformed == {"ambiguous_date": 1}
    [(line, message)] = report.examples
    assert line == 3 and "could be 3 November or March 11" in message
    assert "--date-format" in message and len(message) <= MAX_MESSAGE
    assert "1002" not in ordered(engine)

    again = write(tmp_path, f"{HEADER}\n{_row(invoice='1005', when='03/11/2026 10:00')}\n", "b.csv")
    report = import_orders(engine, again, date_format="MM/DD/YYYY")
    assert report.malformed == {} and ordered(engine)["1005"] == datetime(2026, 3, 11, 10)


def test_cli_import_exits_1_when_rows_were_malformed_and_says_how_to_map(engine, tmp_path):
    runner = CliRunner()
    bad = write(tmp_path, f"{HEADER}\n{GOOD_BEFORE}\n{_row(quantity='lots')}\n{GOOD_AFTER}\n")
    out = runner.invoke(main, ["import", "orders", str(bad)])
    assert out.exit_code == 1, out.output
    assert "line 3: bad quantity 'lots'" in out.output and "Traceback" not in out.output
    assert count(engine, Order) == 2  # the good rows are loaded all the same

    good = write(tmp_path, f"{HEADER}\n{_row(invoice='2001')}\n", "good.csv")
    assert runner.invoke(main, ["import", "orders", str(good)]).exit_code == 0

    other = write(tmp_path, "Invoice,StockCode\n1,2\n", "other.csv")
    out = runner.invoke(main, ["import", "orders", str(other)])
    assert out.exit_code == 2 and "mapping=" not in out.output
    assert "--map FIELD=COLUMN" in out.output and "--map invoice=YourColumn" in out.output

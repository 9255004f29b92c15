"""`careflow segment list NAME --format json|csv`: every computed column, every row."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta

from click.testing import CliRunner

from careflow.cli.main import main
from tests.factories import add_customer, add_orders

AS_OF = date(2026, 11, 22)


def _shop(engine, n=30):
    for cid in range(1, n + 1):
        add_customer(engine, cid, external_ref=f"R{cid}")
        add_orders(engine, cid, [AS_OF - timedelta(days=d) for d in (3 * cid, 3 * cid + 40)],
                   amount=f"{cid}.05")


def _list(*args):
    out = CliRunner().invoke(main, ["segment", "list", *args, "--as-of", AS_OF.isoformat()])
    assert out.exit_code == 0, out.output
    return out.output


def test_json_has_every_pyramid_column_and_every_row(engine):
    _shop(engine)
    rows = json.loads(_list("pyramid", "--format", "json"))
    assert len(rows) == 30  # not the 20 rows text shows by default
    assert list(rows[0]) == [
        "customer_id", "ref", "name", "monetary", "currency", "frequency", "days_since",
        "buyers", "tier", "r_score", "f_score", "m_score",
    ]
    first = rows[0]
    assert first["ref"] == "R1" and first["monetary"] == "2.10" and first["currency"] == "GBP"
    assert first["frequency"] == 2 and first["days_since"] == 3 and first["buyers"] == 30
    assert sorted(r["m_score"] for r in rows) == [s for s in range(1, 6) for _ in range(6)]


def test_csv_matches_json_and_dates_are_iso(engine):
    _shop(engine)
    table = list(csv.DictReader(io.StringIO(_list("pyramid", "--format", "csv"))))
    as_json = json.loads(_list("pyramid", "--format", "json"))
    assert len(table) == 30
    assert [r["tier"] for r in table] == [r["tier"] for r in as_json]
    assert table[0]["monetary"] == "2.10" and table[0]["name"] == "Customer 1"
    dormant = list(csv.DictReader(io.StringIO(
        _list("dormant", "--format", "csv", "--param", "days=60"))))
    assert dormant and date.fromisoformat(dormant[0]["last_purchase_on"])


def test_limit_still_applies_and_text_stays_the_default(engine):
    _shop(engine)
    assert len(json.loads(_list("pyramid", "--format", "json", "--limit", "5"))) == 5
    text = _list("pyramid")
    assert text.splitlines()[0].startswith("customer_id") and len(text.splitlines()) == 22

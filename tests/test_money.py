"""Money in integer minor units: conversions, and amounts as people see them."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from click.testing import CliRunner

from careflow.cli.main import main
from careflow.money import exponent, from_minor, is_known_currency, to_minor, with_amounts
from tests.factories import add_customer, add_orders

AS_OF = date(2026, 11, 22)


@pytest.mark.parametrize(
    ("currency", "places"),
    [("GBP", 2), ("CNY", 2), ("USD", 2), ("AUD", 2), ("NZD", 2), ("JPY", 0), ("KWD", 3)],
)
def test_exponents_of_stored_currencies_never_change(currency, places):
    """Stored amounts are read with today's exponent: a Babel upgrade that
    changed one would make every stored amount of that currency 10x off."""
    assert exponent(currency) == places


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("39.99", "GBP", 3999),
        ("0.005", "GBP", 1),  # half a penny rounds up
        ("0.004", "GBP", 0),
        ("1200", "JPY", 1200),
        ("1200.5", "JPY", 1201),
        ("1.25", "KWD", 1250),
        ("8911407.90", "GBP", 891140790),
        ("-2.50", "GBP", -250),
    ],
)
def test_minor_units_round_trip(amount, currency, minor):
    assert to_minor(amount, currency) == minor
    minor_unit = Decimal(1).scaleb(-exponent(currency))
    assert from_minor(minor, currency) == Decimal(amount).quantize(minor_unit, ROUND_HALF_UP)


def test_exact_conversion_refuses_fractions_of_the_minor_unit():
    assert to_minor(Decimal("2.50"), "GBP", exact=True) == 250
    with pytest.raises(ValueError, match="finer"):
        to_minor(Decimal("2.555"), "GBP", exact=True)
    with pytest.raises(ValueError, match="not an amount"):
        to_minor("NaN", "GBP")
    with pytest.raises(ValueError, match="not an amount"):
        to_minor("12,50", "GBP")


def test_known_currencies():
    assert is_known_currency("GBP") and is_known_currency("JPY")
    assert not is_known_currency("gbp") and not is_known_currency("XYZ")
    assert not is_known_currency("POUNDS")


def test_rows_show_amounts_in_their_currency():
    row = {"customer_id": 1, "monetary_minor": 3999, "currency": "GBP", "tier": "VIP"}
    assert with_amounts(row) == {
        "customer_id": 1,
        "monetary": Decimal("39.99"),
        "currency": "GBP",
        "tier": "VIP",
    }
    assert with_amounts({"monetary_minor": 1200, "currency": "JPY"})["monetary"] == 1200
    # a sum over several currencies is not an amount in any of them
    assert with_amounts({"monetary_minor": 500, "currency": None})["monetary"] is None


def test_segment_list_and_preview_show_the_exact_amount(engine):
    add_customer(engine, 1)
    add_orders(engine, 1, [AS_OF - timedelta(days=3)], amount="10.00")
    add_orders(engine, 1, [AS_OF - timedelta(days=2)], amount="29.99")
    runner = CliRunner()

    out = runner.invoke(main, ["segment", "list", "vip", "--as-of", "2026-11-22"])
    assert out.exit_code == 0, out.output
    header, _, row = out.output.splitlines()[:3]
    assert "monetary" in header.split() and "monetary_minor" not in header
    assert "39.99" in row.split() and "GBP" in row.split()

    out = runner.invoke(
        main,
        ["preview", "vip_care", "--customer", "1", "--as-of", "2026-11-22", "--channel", "email"],
    )
    assert out.exit_code == 0, out.output
    assert "£39.99" in out.output  # the customer's currency, not the CNY default


def test_a_sum_over_two_currencies_is_not_shown_as_money(engine):
    from sqlalchemy import update

    from careflow import segments
    from careflow.db.models import Order
    from careflow.errors import TemplateError
    from careflow.rendering import Renderer
    from careflow.settings import PROJECT_ROOT
    from tests.factories import rows

    add_customer(engine, 1)
    add_orders(engine, 1, [AS_OF - timedelta(days=3), AS_OF - timedelta(days=2)], amount="10")
    with engine.begin() as conn:
        conn.execute(
            update(Order)
            .where(Order.ordered_on == AS_OF - timedelta(days=2))
            .values(currency="USD")
        )
    row = with_amounts(rows(engine, segments.build("pyramid", AS_OF))[1])
    assert row["currency"] is None and row["monetary"] is None
    ctx = {**row, "name": "Ann", "brand": "Shop", "customer": {"owner": None}}
    with pytest.raises(TemplateError, match="mixes currencies"):
        Renderer(PROJECT_ROOT / "templates").render("vip_care", "email", "en", ctx)


# --- absurd stored amounts: another program wrote the orders table -----------------------
@pytest.mark.parametrize("stored", [float("nan"), float("inf"), -float("inf"), 2.5, 1e30,
                                    "NaN", "12", None, True, 10**19, Decimal("NaN")])
def test_from_minor_refuses_what_is_not_a_whole_amount(stored):
    from careflow.errors import DataError

    with pytest.raises(DataError, match="not a whole number of minor units"):
        from_minor(stored, "GBP")


def test_from_minor_takes_a_whole_float_as_sqlite_may_return_it():
    assert from_minor(3599.0, "GBP") == Decimal("35.99")


def _absurd_values(engine) -> list:
    """What each database can hold that is no amount: SQLite keeps any value in any column."""
    huge = [9_000_000_000_000_000_000, -9_000_000_000_000_000_000]
    return huge + (["NaN", 1e30, float("inf")] if engine.dialect.name == "sqlite" else [])


def _shop_with(engine, stored):
    from sqlalchemy import text

    for cid in (1, 2):
        add_customer(engine, cid)
        add_orders(engine, cid, [AS_OF - timedelta(days=d) for d in (10, 40)], amount="12.50")
    with engine.begin() as conn:
        first = conn.execute(text("SELECT min(id) FROM orders WHERE customer_id = 1")).scalar()
        conn.execute(text("UPDATE orders SET amount_minor = :v WHERE id = :id"),
                     {"v": stored, "id": first})


def test_an_absurd_stored_amount_is_that_orders_line_in_history(engine):
    for stored in _absurd_values(engine):
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM orders")
            conn.exec_driver_sql("DELETE FROM customers")
        _shop_with(engine, stored)
        out = CliRunner().invoke(main, ["history", "1", "--limit", "0"])
        assert out.exit_code == 0, (stored, out.output)
        assert "12.50 GBP" in out.output  # the other order is shown
        assert "unreadable amount" in out.output and "not a whole number" in out.output


@pytest.mark.parametrize("command", [
    ["segment", "list", "vip"], ["segment", "count", "pyramid"], ["segment", "list", "clv"],
    ["report", "pyramid"], ["report", "clv", "--draws", "0"],
], ids=" ".join)
def test_an_absurd_stored_amount_is_one_line_naming_the_order(engine, command):
    for stored in _absurd_values(engine):
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM orders")
            conn.exec_driver_sql("DELETE FROM customers")
        _shop_with(engine, stored)
        out = CliRunner().invoke(main, [*command, "--as-of", AS_OF.isoformat()])
        assert out.exit_code == 2, (stored, out.output)
        [line] = out.output.strip().splitlines()
        assert line.startswith("error: ") and "of customer 1" in line, line

"""dormant and reorder_due on hand-made histories, on SQLite and PostgreSQL."""

from datetime import date, timedelta

import pytest

from careflow import segments
from tests.factories import add_customer, add_orders, ids, rows, set_product

AS_OF = date(2026, 11, 22)


def dormant(as_of: date, **params):
    return segments.build("dormant", as_of, params)


def reorder_due(as_of: date, **params):
    return segments.build("reorder_due", as_of, params)


def ago(*days: int) -> list[date]:
    return [AS_OF - timedelta(days=d) for d in days]


def test_dormant_counts_calendar_days_strictly_more_than_n(engine):
    for cid, last in [(1, 180), (2, 181), (3, 10), (4, 400)]:
        add_customer(engine, cid)
        add_orders(engine, cid, ago(last + 30, last))
    add_customer(engine, 5)  # never bought: not dormant, a prospect
    assert ids(engine, dormant(AS_OF)) == {2, 4}
    assert ids(engine, dormant(AS_OF, days=9)) == {1, 2, 3, 4}
    assert ids(engine, dormant(AS_OF, max_days=365)) == {2}
    got = rows(engine, dormant(AS_OF))
    assert got[2]["days_since"] == 181
    assert got[2]["last_purchase_on"] == AS_OF - timedelta(days=181)


def test_dormant_ignores_purchases_after_as_of(engine):
    add_customer(engine, 1)
    add_orders(engine, 1, ago(200) + [AS_OF + timedelta(days=5)])
    assert ids(engine, dormant(AS_OF)) == {1}


@pytest.mark.parametrize("purchases", [0, 1, 2])
def test_reorder_needs_three_purchase_days(engine, purchases):
    add_customer(engine, 1)
    add_orders(engine, 1, ago(*[30 * (i + 1) for i in range(purchases)]))
    assert ids(engine, reorder_due(AS_OF)) == set()


def test_reorder_window_is_median_to_twice_median(engine):
    # gaps 10, 30, 20 -> median 20; due when 20 <= days since last < 40
    history = [80, 70, 40, 20]
    for cid, shift in [(1, -1), (2, 0), (3, 19), (4, 20)]:
        add_customer(engine, cid)
        add_orders(engine, cid, ago(*[d + shift for d in history]))
    # customer 1: 19 days since -> not yet; 2: 20 -> due; 3: 39 -> due; 4: 40 -> too late
    assert ids(engine, reorder_due(AS_OF)) == {2, 3}
    got = rows(engine, reorder_due(AS_OF))[2]
    assert got["median_gap"] == 20 and got["days_since"] == 20 and got["basis"] == "median"


def test_reorder_median_of_even_gap_count_is_mean_of_middle_two(engine):
    # days 100, 90, 70, 40, 0 ago... gaps 10, 20, 30, 40 -> median 25
    add_customer(engine, 1)
    add_orders(engine, 1, ago(125, 115, 95, 65, 25))
    assert rows(engine, reorder_due(AS_OF))[1]["median_gap"] == 25


def test_two_orders_on_one_day_are_one_purchase_day(engine):
    add_customer(engine, 1)
    # three days but four orders: gaps 10, 10 -> median 10; 15 days since -> due
    add_orders(engine, 1, ago(35, 25, 25, 15))
    got = rows(engine, reorder_due(AS_OF))
    assert got[1]["purchase_days"] == 3 and got[1]["median_gap"] == 10


def test_known_replenishment_period_replaces_the_median(engine):
    # one purchase of 2 bags of rice lasting 15 days each -> runs out after 30 days
    add_customer(engine, 1)
    add_orders(engine, 1, ago(31), lines=[("RICE", 2)])
    set_product(engine, "RICE", 15)
    got = rows(engine, reorder_due(AS_OF))
    assert got[1]["interval_days"] == 30 and got[1]["basis"] == "product"
    assert ids(engine, reorder_due(AS_OF, use_replenishment=False)) == set()

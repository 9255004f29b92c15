"""Kept purchase windows: what the pyramid reads equals the orders, whatever happened.

careflow/purchase_windows.py keeps each buyer's window (money, days, last
purchase) for one as-of day and moves it day by day. These tests move it
every way a run can (first build, a day on, a week on, back, a jump that
rebuilds), change orders behind its back, and check against the window
summed straight from the orders.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from sqlalchemy import delete, select, update

from careflow import purchase_facts, purchase_windows
from careflow.clock import utcnow
from careflow.db.models import Order, PurchaseWindow, PurchaseWindowState
from careflow.segments.vip import PyramidParams, prepare
from tests.factories import add_customer, add_orders

AS_OF = date(2026, 11, 22)


def _shop(engine, customers: int = 60, seed: int = 5) -> None:
    rnd = random.Random(seed)
    for cid in range(1, customers + 1):
        add_customer(engine, cid)
        days = [AS_OF - timedelta(days=rnd.randrange(-20, 420)) for _ in range(rnd.randrange(6))]
        for day in days:  # a repeated day is two orders that day
            add_orders(engine, cid, [day], amount=rnd.choice(["5.00", "20.00", "20.00", "99.99"]))
    with engine.begin() as conn:  # some orders in euros, so currency windows differ
        conn.execute(update(Order).where(Order.customer_id % 7 == 0).values(currency="EUR"))
    purchase_facts.refresh(engine)


def _truth(engine, as_of, days=365, currency=None) -> dict[int, tuple]:
    with engine.connect() as conn:
        query = purchase_windows.computed(as_of, days, currency)
        return {r[0]: tuple(r) for r in conn.execute(query)}


def _read(engine, as_of, days=365, currency=None) -> dict[int, tuple]:
    with engine.connect() as conn:
        query = purchase_windows.buyers(as_of, days, currency)
        return {r[0]: tuple(r) for r in conn.execute(query)}


def _kept(engine, days=365, currency=None) -> dict[int, tuple]:
    w, key = PurchaseWindow, purchase_windows.window_key(days, currency)
    with engine.connect() as conn:
        query = select(*[getattr(w, c) for c in purchase_windows.COLUMNS]).where(
            w.window_key == key
        )
        return {r[0]: tuple(r) for r in conn.execute(query)}


@pytest.mark.parametrize("days, currency", [(365, None), (90, "EUR")])
def test_a_kept_window_equals_the_orders_after_every_kind_of_move(engine, days, currency):
    _shop(engine)
    moves = [(0, "built"), (0, "kept"), (1, "rolled"), (8, "rolled"), (-3, "rolled"),
             (60, "built"), (29, "rolled"), (0, "rolled")]
    for back, expected in moves:
        as_of = AS_OF - timedelta(days=back)
        assert purchase_windows.bring_to(engine, as_of, days, currency) == expected, back
        truth = _truth(engine, as_of, days, currency)
        assert truth, "the shop has buyers in every window tested"
        assert _kept(engine, days, currency) == truth, (back, expected)
        assert _read(engine, as_of, days, currency) == truth, (back, expected)


def test_changed_orders_are_read_from_the_orders_until_a_refresh_rewrites_them(engine):
    _shop(engine)
    purchase_windows.bring_to(engine, AS_OF, 365, None)
    with engine.begin() as conn:  # hand-written SQL after the window was kept
        conn.execute(update(Order).where(Order.customer_id == 3).values(amount_minor=777_700))
        conn.execute(delete(Order).where(Order.customer_id == 4))
        conn.execute(update(Order).where(Order.customer_id == 5).values(ordered_on=AS_OF))
    add_customer(engine, 999)
    add_orders(engine, 999, [AS_OF - timedelta(days=2)], amount="1000.00")
    truth = _truth(engine, AS_OF)
    assert _kept(engine) != truth  # the kept rows are behind ...
    assert _read(engine, AS_OF) == truth  # ... but what the pyramid reads is not
    purchase_facts.refresh(engine)
    assert _kept(engine) == truth and _read(engine, AS_OF) == truth


def test_a_window_kept_for_another_day_is_not_read_for_this_one(engine):
    _shop(engine)
    purchase_windows.bring_to(engine, AS_OF, 365, None)
    other = AS_OF - timedelta(days=5)
    assert _read(engine, other) == _truth(engine, other) != _truth(engine, AS_OF)


def test_cut_values_are_the_same_read_off_the_indexes_or_sorted(engine):
    """prepare sorts every buyer when a customer is dirty, and walks the kept window's
    indexes when none is: the two must give the same cut values."""
    _shop(engine, customers=150, seed=9)
    add_customer(engine, 999)
    add_orders(engine, 999, [AS_OF - timedelta(days=2)], amount="20.00")  # dirty: sorted
    assert purchase_facts.pending(engine) == 1
    with engine.connect() as conn:
        sorted_cuts = prepare(conn, AS_OF, PyramidParams())
    assert purchase_facts.pending(engine) == 1  # prepare refreshed nobody: it sorted
    purchase_facts.refresh(engine)
    with engine.connect() as conn:
        indexed_cuts = prepare(conn, AS_OF, PyramidParams())  # nobody dirty: read off the indexes
    assert indexed_cuts == sorted_cuts
    assert indexed_cuts["cutoffs"]["buyers"] == len(_truth(engine, AS_OF))


def test_a_window_nobody_moved_for_a_month_is_dropped(engine):
    _shop(engine)
    purchase_windows.bring_to(engine, AS_OF, 365, None)
    with engine.begin() as conn:
        conn.execute(
            update(PurchaseWindowState).values(
                used_at=utcnow() - timedelta(days=purchase_windows.KEEP_DAYS + 1)
            )
        )
    purchase_windows.bring_to(engine, AS_OF, 90, None)
    with engine.connect() as conn:
        kept = set(conn.execute(select(PurchaseWindowState.window_key)).scalars())
        rows = set(conn.execute(select(PurchaseWindow.window_key).distinct()).scalars())
    assert kept == rows == {"90"}


def test_a_customer_deleted_leaves_no_row_behind(engine):
    from careflow.db.models import Customer

    _shop(engine)
    purchase_windows.bring_to(engine, AS_OF, 365, None)
    buyer = next(iter(_kept(engine)))
    with engine.begin() as conn:
        conn.execute(delete(Order).where(Order.customer_id == buyer))
        conn.execute(delete(Customer).where(Customer.id == buyer))
    assert buyer not in _kept(engine) and _read(engine, AS_OF) == _truth(engine, AS_OF)
    add_customer(engine, buyer)  # the id is used again by someone new
    add_orders(engine, buyer, [AS_OF - timedelta(days=1)])
    purchase_facts.refresh(engine)
    assert _kept(engine) == _truth(engine, AS_OF)

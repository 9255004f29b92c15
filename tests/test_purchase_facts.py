"""Purchase facts: every write marks what it touches, and segments stay exact.

careflow/purchase_facts.py keeps one summary row per customer so segments
need not aggregate millions of orders. These tests change orders, lines
and products the ways people do (imports, hand-written SQL) and check that
what segments read always equals the facts computed from the orders.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from sqlalchemy import delete, insert, select, text, update

from careflow import db, purchase_facts
from careflow.db.models import Order, OrderLine, Product, PurchaseFacts, PurchaseFactsDirty
from tests.conftest import _reset_postgres as reset_postgres
from tests.factories import add_customer, add_orders, set_product

AS_OF = date(2026, 11, 22)


def stored(engine) -> dict[int, tuple]:
    with engine.connect() as conn:
        return {r[0]: tuple(r) for r in conn.execute(select(PurchaseFacts.__table__))}


def truth(engine, as_of: date | None = None) -> dict[int, tuple]:
    with engine.connect() as conn:
        return {r[0]: tuple(r) for r in conn.execute(purchase_facts.computed(as_of))}


def seen(engine, as_of: date) -> dict[int, tuple]:
    with engine.connect() as conn:
        return {r[0]: tuple(r) for r in conn.execute(purchase_facts.history(as_of))}


def dirty(engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(select(PurchaseFactsDirty.customer_id)).scalars())


def test_every_kind_of_write_marks_the_customers_it_touches(engine):
    for cid in (1, 2, 3):
        add_customer(engine, cid)
    add_orders(engine, 1, [AS_OF - timedelta(days=60), AS_OF - timedelta(days=30)])
    add_orders(engine, 2, [AS_OF - timedelta(days=90)], lines=[("RICE", 2)])
    set_product(engine, "RICE", 20)
    assert dirty(engine) == {1, 2}
    assert purchase_facts.refresh(engine) == 2
    assert dirty(engine) == set() and stored(engine) == truth(engine)
    assert stored(engine)[2][-1] == 40  # product_days: 2 x 20 days of rice

    with engine.begin() as conn:  # an order moved to another customer: both change
        first = conn.execute(select(func_min_order(1))).scalar_one()
        conn.execute(update(Order).where(Order.id == first).values(customer_id=3))
    assert dirty(engine) == {1, 3}
    purchase_facts.refresh(engine)
    assert stored(engine) == truth(engine) and 3 in stored(engine)

    with engine.begin() as conn:  # a product's period changes: its buyers' facts change
        conn.execute(update(Product).where(Product.sku == "RICE").values(replenish_days=45))
    assert dirty(engine) == {2}
    purchase_facts.refresh(engine)
    assert stored(engine)[2][-1] == 90

    with engine.begin() as conn:  # a line added to an existing order
        order = conn.execute(select(Order.id).where(Order.customer_id == 1)).scalars().first()
        conn.execute(
            insert(OrderLine),
            [{"order_id": order, "sku": "RICE", "quantity": 1, "unit_price_minor": 1,
              "amount_minor": 1}],
        )
    assert dirty(engine) == {1}
    purchase_facts.refresh(engine)
    assert stored(engine) == truth(engine)

    with engine.begin() as conn:  # every order of a customer deleted: no facts left
        conn.execute(delete(OrderLine))
        conn.execute(delete(Order).where(Order.customer_id == 3))
    assert {3} <= dirty(engine)
    purchase_facts.refresh(engine)
    assert 3 not in stored(engine) and stored(engine) == truth(engine)


def func_min_order(cid: int):
    from sqlalchemy import func

    return func.min(Order.id).filter(Order.customer_id == cid)


def _random_shop(engine, rnd: random.Random, customers: int = 40) -> None:
    for cid in range(1, customers + 1):
        add_customer(engine, cid)
        days = sorted({AS_OF - timedelta(days=rnd.randrange(400)) for _ in range(rnd.randrange(6))})
        lines = [("FILTER", rnd.randint(1, 3))] if cid % 3 == 0 else None
        add_orders(engine, cid, days, lines=lines)
    set_product(engine, "FILTER", 30)


@pytest.mark.parametrize("state", ["all dirty", "refreshed", "partly dirty"])
def test_history_equals_the_orders_for_any_as_of(engine, state):
    rnd = random.Random(11)
    _random_shop(engine, rnd)
    if state != "all dirty":
        purchase_facts.refresh(engine)
    if state == "partly dirty":  # hand-written SQL after the last refresh
        with engine.begin() as conn:
            conn.execute(
                update(Order)
                .where(Order.customer_id.in_([3, 7, 12]))
                .values(ordered_on=AS_OF - timedelta(days=5))
            )
            conn.execute(delete(Order).where(Order.customer_id == 20))
        assert {3, 7, 12} <= dirty(engine)
    for back in (400, 200, 100, 30, 5, 0, -30):
        as_of = AS_OF - timedelta(days=back)
        assert seen(engine, as_of) == truth(engine, as_of), as_of
    assert seen(engine, AS_OF) == truth(engine, None)


def test_a_database_migrated_from_before_the_facts_starts_exact(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db.upgrade(url, "0004")
    engine = db.engine_for(url)
    for cid in (1, 2):
        add_customer(engine, cid)
        add_orders(engine, cid, [AS_OF - timedelta(days=10 * cid)])
    db.upgrade(url)
    assert dirty(engine) == {1, 2}  # nothing stored yet: computed from orders
    assert seen(engine, AS_OF) == truth(engine)
    purchase_facts.refresh(engine)
    assert stored(engine) == truth(engine)


@pytest.mark.postgres
def test_a_refresh_never_loses_a_write_committed_while_it_runs(postgres_server_url):
    """PostgreSQL, two sessions: an order written while a refresh runs stays marked,
    whether its customer was clean (the new mark is not yet visible) or dirty (the
    mark is locked, and the refresh skips it). SQLite has one writer at a time."""
    reset_postgres(postgres_server_url)
    db.upgrade(postgres_server_url)
    engine = db.engine_for(postgres_server_url)
    for cid in (1, 2):
        add_customer(engine, cid)
        add_orders(engine, cid, [AS_OF - timedelta(days=40)])
    purchase_facts.refresh(engine)
    add_orders(engine, 2, [AS_OF - timedelta(days=20)])  # 2 is dirty again
    writer = engine.connect()
    try:
        tx = writer.begin()
        for cid in (1, 2):
            writer.execute(
                text(
                    "INSERT INTO orders (customer_id, ordered_at, ordered_on, currency, "
                    "amount_minor) VALUES (:c, :d, :d, 'GBP', 100)"
                ),
                {"c": cid, "d": AS_OF - timedelta(days=1)},
            )
        assert purchase_facts.refresh(engine) == 0  # 2's mark is locked; 1's not visible
        tx.commit()
    finally:
        writer.close()
    assert dirty(engine) == {1, 2}
    assert seen(engine, AS_OF) == truth(engine)
    purchase_facts.refresh(engine)
    assert stored(engine) == truth(engine)


@pytest.mark.parametrize("bad", ["2026-13-45", "yesterday", "", "2026-02-30", "now"])
def test_unreadable_order_dates_affect_only_their_customer(tmp_path, bad):
    """Regression: on SQLite (which keeps any text in a DATE column) one customer whose
    orders all had an unreadable date made the purchase-facts refresh raise, so every
    run, dry runs included, failed with a traceback. Such orders are left out of their
    customer's facts (and windows, and every segment), and the refresh names them."""
    from careflow import purchase_windows, segments

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    db.upgrade(url)
    engine = db.engine_for(url)
    for cid in range(1, 13):  # enough buyers with repeats for the clv model
        add_customer(engine, cid)
        add_orders(engine, cid, [AS_OF - timedelta(days=d) for d in (200, 120 + cid, 40 + cid)])
    add_customer(engine, 20)  # every order unreadable
    add_orders(engine, 20, [AS_OF - timedelta(days=d) for d in (300, 200)])
    add_customer(engine, 21)  # one unreadable order among readable ones
    add_orders(engine, 21, [AS_OF - timedelta(days=d) for d in (300, 200, 100)])
    with engine.begin() as conn:
        conn.execute(text("UPDATE orders SET ordered_on = :bad WHERE customer_id = 20"),
                     {"bad": bad})  # fmt: skip
        conn.execute(text("UPDATE orders SET ordered_on = :bad WHERE customer_id = 21 AND id = "
                          "(SELECT max(id) FROM orders WHERE customer_id = 21)"), {"bad": bad})  # fmt: skip
    told = []
    assert purchase_facts.refresh(engine, warn=told.append) == 14
    assert len(told) == 1 and "customer 20 order" in told[0] and repr(bad) in told[0]
    facts = stored(engine)
    assert 20 not in facts  # nothing readable: no facts
    assert facts[21][1:5] == (
        (AS_OF - timedelta(days=300) - date(1970, 1, 1)).days,
        (AS_OF - timedelta(days=200) - date(1970, 1, 1)).days,
        2,
        2,
    )
    assert seen(engine, AS_OF) == facts == truth(engine)
    assert purchase_windows.bring_to(engine, AS_OF, 365, None) == "built"
    with engine.connect() as conn:  # every segment runs on this shop
        for name in segments.names():
            params = segments.prepare(name, conn, AS_OF, {})
            conn.execute(segments.build(name, AS_OF, params)).all()

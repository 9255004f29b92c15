"""Tiny builders for hand-made test databases: a customer, their purchase days."""

from __future__ import annotations

from datetime import date, datetime, time
from itertools import count

from sqlalchemy import Engine, insert, select

from careflow import purchase_facts
from careflow.db.models import Consent, Customer, Order, OrderLine, Product
from careflow.money import to_minor

_order_ids = count(1)


def add_customer(engine: Engine, cid: int, **fields) -> int:
    row = {
        "id": cid,
        "full_name": f"Customer {cid}",
        "given_name": f"C{cid}",
        "locale": "en",
        "time_zone": "UTC",
        "email": f"c{cid}@example.com",
        **fields,
    }
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [row])
    return cid


def add_orders(
    engine: Engine,
    cid: int,
    days: list[date],
    amount: str = "10.00",
    lines: list[tuple[str, int]] | None = None,
) -> None:
    """One order per entry of ``days`` (repeat a day for two orders that day)."""
    with engine.begin() as conn:
        for d in days:
            oid = next(_order_ids) + cid * 10_000
            conn.execute(
                insert(Order.__table__),
                [
                    {
                        "id": oid,
                        "customer_id": cid,
                        "ordered_at": datetime.combine(d, time(10)),
                        "ordered_on": d,
                        "currency": "GBP",
                        "amount_minor": to_minor(amount, "GBP"),
                    }
                ],
            )
            for sku, qty in lines or []:
                if conn.execute(select(Product.sku).where(Product.sku == sku)).first() is None:
                    conn.execute(insert(Product.__table__), [{"sku": sku, "name": sku}])
                conn.execute(
                    insert(OrderLine.__table__),
                    [
                        {
                            "order_id": oid,
                            "sku": sku,
                            "quantity": qty,
                            "unit_price_minor": 100,
                            "amount_minor": 100 * qty,
                        }
                    ],
                )


_contact_ids = count(1)


def add_contact(
    engine: Engine,
    cid: int,
    at: datetime,
    state: str = "sent",
    *,
    delivery_state: str | None = None,
    campaign: str = "care",
) -> None:
    """A ledger row: ``campaign`` reached (``sent``) or not (any other state) customer ``cid``."""
    from careflow.db.models import ContactHistory

    at = at.replace(tzinfo=None)
    n = next(_contact_ids)
    with engine.begin() as conn:
        conn.execute(
            insert(ContactHistory.__table__),
            [
                {
                    "campaign": campaign,
                    "customer_id": cid,
                    "occasion": f"o{n}",
                    "channel": "sms",
                    "state": state,
                    "created_at": at,
                    "updated_at": at,
                    "sent_at": at if state == "sent" else None,
                    "delivery_state": delivery_state,
                }
            ],
        )


def set_product(engine: Engine, sku: str, replenish_days: int | None) -> None:
    from sqlalchemy import update

    with engine.begin() as conn:
        conn.execute(
            update(Product).where(Product.sku == sku).values(replenish_days=replenish_days)
        )


def set_consent(engine: Engine, cid: int, channel: str, granted: bool) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(Consent.__table__),
            [
                {
                    "customer_id": cid,
                    "channel": channel,
                    "granted": granted,
                    "updated_at": datetime(2026, 1, 1),
                }
            ],
        )


def ids(engine: Engine, query) -> set[int]:
    return set(rows(engine, query))


def rows(engine: Engine, query) -> dict[int, dict]:
    """The query's rows by customer, read twice: with every customer's purchase facts
    computed from orders (what a segment sees right after a write), then with the
    facts stored by a refresh. Segments must give the same answer both ways."""
    fresh = _rows(engine, query)
    purchase_facts.refresh(engine)
    stored = _rows(engine, query)
    assert stored == fresh, "stored purchase facts disagree with the orders"
    return stored


def _rows(engine: Engine, query) -> dict[int, dict]:
    with engine.connect() as conn:
        return {r["customer_id"]: dict(r) for r in conn.execute(query).mappings()}

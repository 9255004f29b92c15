"""The shop's events, recorded once: on the customer's timeline, and orders where orders go.

Written against :class:`careflow.shop_events.ShopEvent`, a batch at a time
(``careflow serve``'s writer hands over whatever posts arrived together), in
one transaction:

1. **Matched** to the customer the shop names (``customers.external_ref``, as
   an import keeps it). A sign-up for a customer careflow does not know creates
   them first (careflow/signups.py); for any other event an unknown customer is
   that event's refusal (``unknown_customer``): nothing of it is written.
2. **Idempotent.** Each event goes on the timeline (``contact_events``, what
   ``careflow history`` reads) under ``(shop, <source>:<id>)``, inserted with
   ON CONFLICT DO NOTHING: a retried post, the same event twice in one post,
   or two receivers writing it at once store it once, and every later copy is
   answered ``duplicate``.
3. **Orders go where imported orders go**: one ``orders`` row per new order
   event, keyed by the shop's order number (``external_ref``) as the import
   keys it, so an order both posted and imported is one order; its lines, if
   posted, into ``order_lines`` (a product careflow does not know is created).
   The orders table's triggers mark the customer's purchase facts
   (careflow/purchase_facts.py), as for an import. An order event that triggers nothing (older than
   CAREFLOW_EVENT_MAX_AGE_HOURS, not a backfill) is written ``quiet``:
   it counts in the purchase history, and attribution and journeys pass it by.
4. **A sign-up** recorded now completes a known customer's blank fields and
   grants the consent its form gave, with the proof (careflow/signups.py).
5. **Attributed at once**: the batch's new orders that trigger are attributed
   to the message that earned them (:func:`careflow.responses.attribute_orders`,
   the one attribution), so ``careflow report responses`` counts them without an
   import, and each conversion is a ``careflow.order.converted`` Prefect event.
   Best-effort: should it fail, the next report or import attributes them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from careflow import signups
from careflow.clock import utcnow
from careflow.db import sqlfunc
from careflow.db.models import ContactEvent, Customer, Order, OrderLine, Product
from careflow.responses import attribute, database_unavailable
from careflow.shop_events import PROVIDER, OrderFacts, ShopEvent

log = logging.getLogger(__name__)

CE = ContactEvent.__table__
ORDERS = Order.__table__
LINES = OrderLine.__table__
PRODUCTS = Product.__table__
CUSTOMERS = Customer.__table__


@dataclass
class ShopRecorded:
    """What one batch did: each event's answer by receipt, and what may be acted on."""

    #: receipt -> {"status": accepted | duplicate | refused, "reason"?, "triggers"?}
    answers: dict[int, dict] = field(default_factory=dict)
    #: (timeline kind, customer_id, message, campaign) of each new event that triggers and
    #: each conversion it made, for Prefect
    recorded: list[tuple[str, int | None, int | None, str | None]] = field(default_factory=list)
    orders: int = 0  # new orders written
    converted: int = 0  # of them, attributed to a message at once
    customers: int = 0  # created by sign-ups
    consents: int = 0  # granted by sign-ups

    def __add__(self, other: ShopRecorded) -> ShopRecorded:
        return ShopRecorded(
            {**self.answers, **other.answers},
            self.recorded + other.recorded,
            self.orders + other.orders,
            self.converted + other.converted,
            self.customers + other.customers,
            self.consents + other.consents,
        )


def record_shop_events(
    engine: Engine,
    events: Sequence[ShopEvent],
    *,
    shop_zone: str = "UTC",
    window_days: int = 7,
) -> ShopRecorded:
    """Record ``events`` exactly once (module docs). A database that cannot be reached
    raises, and nothing is written."""
    result = ShopRecorded()
    if not events:
        return result
    now, zone = utcnow(), ZoneInfo(shop_zone)
    with engine.begin() as conn:
        customers = _customers(conn, {e.customer_ref for e in events})
        created = signups.create_customers(conn, events, customers, now)
        customers.update(created)
        first: dict[str, ShopEvent] = {}
        for e in events:
            if e.customer_ref not in customers:
                result.answers[e.receipt] = {"status": "refused", "reason": "unknown_customer"}
            elif e.key in first:  # the same event twice in what arrived together
                result.answers[e.receipt] = {"status": "duplicate"}
            else:
                first[e.key] = e
        new = _insert_timeline(conn, list(first.values()), customers, now)
        for e in first.values():
            if e.key in new:
                result.answers[e.receipt] = {"status": "accepted", "triggers": e.triggers}
                if e.customer_ref in created and e.kind == signups.SIGNUP:
                    result.answers[e.receipt]["customer"] = "created"
            else:
                result.answers[e.receipt] = {"status": "duplicate"}
        fresh = [e for e in first.values() if e.key in new]
        orders = _insert_orders(conn, [e for e in fresh if e.order], customers, zone)
        result.consents = signups.apply(conn, fresh, customers, set(created))
    result.customers = len(created)
    result.orders = len(orders)
    for e in fresh:
        if e.triggers:
            result.recorded.append((e.kind, customers[e.customer_ref], None, None))
    attribute_now = [order_id for order_id, triggers in orders if triggers]
    if attribute_now:
        try:
            converted = attribute(engine, window_days, shop_zone, order_ids=attribute_now)
            result.converted = len(converted)
            result.recorded += converted
        except Exception as exc:  # the events are stored: a report or import attributes later
            if database_unavailable(exc):
                log.warning("orders not attributed yet: %s", type(exc).__name__)
            else:
                log.error("orders not attributed yet: %s", type(exc).__name__)
    return result



def _customers(conn, refs: set[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    ordered = sorted(refs)
    for start in range(0, len(ordered), 1000):
        for ref, customer_id in conn.execute(
            select(CUSTOMERS.c.external_ref, CUSTOMERS.c.id).where(
                CUSTOMERS.c.external_ref.in_(ordered[start : start + 1000])
            )
        ):
            found[ref] = customer_id
    return found


def _insert_timeline(conn, events: list[ShopEvent], customers, now: datetime) -> set[str]:
    """The events no one has recorded yet, inserted in key order (two receivers writing
    the same events wait for each other rather than deadlock); returns their keys."""
    if not events:
        return set()
    events = sorted(events, key=lambda e: e.key)
    inserted = conn.execute(
        sqlfunc.insert(conn, CE)
        .on_conflict_do_nothing(index_elements=[CE.c.provider, CE.c.event_id])
        .returning(CE.c.event_id),
        [
            {
                "provider": PROVIDER,
                "event_id": e.key,
                "kind": e.kind,
                "occurred_at": e.occurred_at,
                "received_at": now,
                "customer_id": customers[e.customer_ref],
                "detail": e.order.ref if e.order else None,
                "payload": _payload(e),
            }
            for e in events
        ],
    )
    return {key for (key,) in inserted}


def _payload(e: ShopEvent) -> dict:
    payload = {"source": e.source, "id": e.event_id, "triggers": e.triggers}
    if e.backfill:
        payload["backfill"] = True
    if e.order:
        payload["order"] = {
            "id": e.order.ref,
            "amount_minor": e.order.amount_minor,
            "currency": e.order.currency,
        }
        if e.order.lines:
            payload["order"]["lines"] = len(e.order.lines)
    if e.data:
        payload["data"] = e.data
    return payload


def _insert_orders(conn, events: list[ShopEvent], customers, zone) -> list[tuple[int, bool]]:
    """One order per new order event, unless the shop's order number is already there
    (imported, or posted under another event id); returns (order id, triggers) of those
    written. Orders keep the shop's clock (CAREFLOW_TIME_ZONE), as an import keeps them."""
    if not events:
        return []
    rows = {}
    for e in sorted(events, key=lambda e: e.order.ref):
        at = e.occurred_at.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)
        rows.setdefault(
            e.order.ref,
            {
                "external_ref": e.order.ref,
                "customer_id": customers[e.customer_ref],
                "ordered_at": at,
                "ordered_on": at.date(),
                "currency": e.order.currency,
                "amount_minor": e.order.amount_minor,
                "quiet": not e.triggers,
            },
        )
    inserted = conn.execute(
        sqlfunc.insert(conn, ORDERS)
        .on_conflict_do_nothing(index_elements=[ORDERS.c.external_ref])
        .returning(ORDERS.c.id, ORDERS.c.external_ref, ORDERS.c.quiet),
        list(rows.values()),
    ).all()
    first = {}
    for e in events:
        first.setdefault(e.order.ref, e.order)
    _insert_lines(conn, [(order_id, first[ref]) for order_id, ref, _ in inserted])
    return [(order_id, not quiet) for order_id, _, quiet in inserted]


def _insert_lines(conn, orders: list[tuple[int, OrderFacts]]) -> None:
    """The lines of the orders written now, as an import writes them: a product careflow
    does not know is created under its code, with the name the line gives."""
    lines = [(order_id, line) for order_id, facts in orders for line in facts.lines]
    if not lines:
        return
    names: dict[str, str | None] = {}
    for _, line in lines:
        names[line.sku] = names.get(line.sku) or line.name
    conn.execute(
        sqlfunc.insert(conn, PRODUCTS).on_conflict_do_nothing(index_elements=[PRODUCTS.c.sku]),
        [{"sku": sku, "name": names[sku]} for sku in sorted(names)],
    )
    conn.execute(
        LINES.insert(),
        [
            {"order_id": order_id, "sku": line.sku, "quantity": line.quantity,
             "unit_price_minor": line.unit_price_minor, "amount_minor": line.amount_minor}
            for order_id, line in lines
        ],
    )  # fmt: skip

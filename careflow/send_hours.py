"""The hours customers act at, for send-time optimisation (careflow/policy/send_time.py).

Two reads, both set-based:

- :func:`customer_hours`: for one batch's id range, each customer's 24-hour
  histogram of their orders (``orders.ordered_at``, the shop's clock), replies
  and clicks (``contact_events`` of kind ``replied``/``clicked``, UTC), each in
  the customer's own zone, in one query;
- :func:`shop_hours`: the same for the whole shop, summed, once per run (the
  prior every customer is shrunk towards). It groups by zone and hour in the
  database and turns each group into local hours with the zones' offsets at the
  run's instant (a daylight-saving change inside the history shifts part of
  it by an hour: good enough for a prior).

Opens never count: Apple Mail Privacy Protection opens every message, and SMS
and fax have none.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, extract, func, literal, select, union_all

from careflow.db.models import ContactEvent, Customer, Order
from careflow.policy.send_time import HOURS
from careflow.policy.timing import zone_of

#: the contact events that show when a customer is there to answer
ANSWER_KINDS = ("replied", "clicked")


def _naive(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(tzinfo=None) if instant.tzinfo else instant


def customer_hours(
    engine: Engine,
    id_range: tuple[int, int],
    zones: dict[int, str | None],
    business_zone: str,
    now: datetime,
    history_days: int,
) -> dict[int, tuple[int, ...]]:
    """customer id -> counts of their orders, replies and clicks per local hour (0-23) over
    the last ``history_days``, for the customers in ``zones`` (id -> their time zone)."""
    if not zones:
        return {}
    shop = ZoneInfo(business_zone)
    since_utc = _naive(now) - timedelta(days=history_days)
    since_shop = _naive(now.astimezone(shop)) - timedelta(days=history_days)
    lo, hi = id_range
    orders = select(
        Order.customer_id.label("cid"), Order.ordered_at.label("at"), literal(1).label("shop")
    ).where(Order.customer_id.between(lo, hi), Order.ordered_at >= since_shop)
    events = select(
        ContactEvent.customer_id.label("cid"),
        ContactEvent.occurred_at.label("at"),
        literal(0).label("shop"),
    ).where(
        ContactEvent.customer_id.between(lo, hi),
        ContactEvent.kind.in_(ANSWER_KINDS),
        ContactEvent.occurred_at >= since_utc,
    )
    with engine.connect() as conn:
        rows = conn.execute(union_all(orders, events)).all()
    resolved = {cid: zone_of(name, business_zone)[0] for cid, name in zones.items()}
    out: dict[int, list[int]] = {}
    for cid, at, on_shop_clock in rows:
        zone = resolved.get(cid)
        if zone is None or not isinstance(at, datetime):
            continue  # not a candidate, or a value SQLite kept unparsed
        instant = at.replace(tzinfo=shop if on_shop_clock else UTC)
        out.setdefault(cid, [0] * HOURS)[instant.astimezone(zone).hour] += 1
    return {cid: tuple(v) for cid, v in out.items()}


def _offset_hours(zone: ZoneInfo, at: datetime) -> int:
    offset = at.astimezone(zone).utcoffset() or timedelta()
    return int(offset.total_seconds() // 3600)


def shop_hours(
    engine: Engine, business_zone: str, now: datetime, history_days: int
) -> tuple[int, ...] | None:
    """The shop's pattern: every customer's orders, replies and clicks per local hour (each
    in their own zone) over the last ``history_days``; None when there are none."""
    shop = ZoneInfo(business_zone)
    since_utc = _naive(now) - timedelta(days=history_days)
    since_shop = _naive(now.astimezone(shop)) - timedelta(days=history_days)
    order_hour = extract("hour", Order.ordered_at)
    event_hour = extract("hour", ContactEvent.occurred_at)
    with engine.connect() as conn:
        orders = conn.execute(
            select(Customer.time_zone, order_hour, func.count())
            .select_from(Order)
            .join(Customer, Customer.id == Order.customer_id)
            .where(Order.ordered_at >= since_shop)
            .group_by(Customer.time_zone, order_hour)
        ).all()
        events = conn.execute(
            select(Customer.time_zone, event_hour, func.count())
            .select_from(ContactEvent)
            .join(Customer, Customer.id == ContactEvent.customer_id)
            .where(ContactEvent.kind.in_(ANSWER_KINDS), ContactEvent.occurred_at >= since_utc)
            .group_by(Customer.time_zone, event_hour)
        ).all()
    aware = now if now.tzinfo else now.replace(tzinfo=UTC)
    counts = [0] * HOURS
    shop_offset = _offset_hours(shop, aware)

    def add(groups: Iterable, from_offset: int) -> None:
        for name, hour, n in groups:
            if hour is None:
                continue
            zone = zone_of(name, business_zone)[0]
            counts[(int(hour) + _offset_hours(zone, aware) - from_offset) % HOURS] += int(n)

    add(orders, shop_offset)
    add(events, 0)
    return tuple(counts) if sum(counts) else None

"""What a customer did since a given instant: the facts waits and exits test.

One read per batch of positions (contact events, orders, revoked consents and
entries into other journeys of the batch's customers), then each position's
question ("did they reply or order since this instant?") is answered in
Python. Orders keep the shop's clock (CAREFLOW_TIME_ZONE) and everything
else is UTC; both are compared as instants here, so a window is exact in
every zone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, literal, or_, select, update

from careflow.db.models import Consent, ContactEvent, JourneyPosition, Order
from careflow.db.sqlfunc import shifted, unindexed

CE = ContactEvent.__table__.c
P = JourneyPosition.__table__.c

#: the contact_events kinds each journey event stands for (``ordered`` reads orders,
#: ``opted_out`` revoked consents as well)
EVENT_KINDS = {
    "replied": ("replied",),
    "clicked": ("clicked",),
    "delivered": ("delivered",),
    "bounced": ("bounced",),
    "opted_out": ("opted_out", "unsubscribed"),
    "ordered": (),
}

#: shop clocks run from 12 hours behind UTC to 14 ahead: a wider net catches every order
#: whose instant may fall after a UTC instant
_SHOP_SLACK = timedelta(hours=14)


def naive(instant: datetime) -> datetime:
    """An instant as the database keeps it: naive UTC."""
    return instant.astimezone(UTC).replace(tzinfo=None) if instant.tzinfo else instant


class Facts:
    """customer -> [(what, when)] with ``when`` naive UTC; ``what`` is a journey event
    (replied, ordered...) or ``entered:<journey>``."""

    def __init__(self) -> None:
        self.by_customer: dict[int, list[tuple[str, datetime]]] = defaultdict(list)

    def first(self, customer_id: int, wanted: Iterable[str], since: datetime, until=None):
        """The earliest of ``wanted`` at or after ``since`` (and before ``until``), as
        (what, when); None if nothing."""
        wanted = set(wanted)
        hits = [
            (when, what)
            for what, when in self.by_customer.get(customer_id, ())
            if what in wanted and when >= since and (until is None or when <= until)
        ]
        if not hits:
            return None
        when, what = min(hits)
        return what, when


def load_facts(
    engine: Engine,
    customer_ids: Iterable[int],
    wanted: Iterable[str],
    since: datetime,
    shop_zone: str,
    journey: str,
) -> Facts:
    """Everything in ``wanted`` the customers did at or after ``since`` (naive UTC)."""
    ids = sorted(set(customer_ids))
    wanted = set(wanted)
    facts = Facts()
    if not ids or not wanted:
        return facts
    kinds = {k: what for what in wanted for k in EVENT_KINDS.get(what, ())}
    zone = ZoneInfo(shop_zone)
    with engine.connect() as conn:
        for start in range(0, len(ids), 1000):
            part = ids[start : start + 1000]
            if kinds:
                for r in conn.execute(
                    select(CE.customer_id, CE.kind, CE.occurred_at).where(
                        CE.customer_id.in_(part), CE.kind.in_(kinds), CE.occurred_at >= since
                    )
                ):
                    facts.by_customer[r.customer_id].append((kinds[r.kind], r.occurred_at))
            if "ordered" in wanted:
                for r in conn.execute(
                    select(Order.customer_id, Order.ordered_at).where(
                        Order.customer_id.in_(part), Order.ordered_at >= since - _SHOP_SLACK
                    )
                ):
                    at = r.ordered_at.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
                    facts.by_customer[r.customer_id].append(("ordered", at))
            if "opted_out" in wanted:
                for r in conn.execute(
                    select(Consent.customer_id, Consent.updated_at).where(
                        Consent.customer_id.in_(part),
                        Consent.granted.is_(False),
                        Consent.updated_at >= since,
                    )
                ):
                    facts.by_customer[r.customer_id].append(("opted_out", r.updated_at))
            others = [w.removeprefix("entered:") for w in wanted if w.startswith("entered:")]
            if others:
                for r in conn.execute(
                    select(P.customer_id, P.journey, P.entered_at).where(
                        P.customer_id.in_(part), P.journey.in_(others), P.journey != journey,
                        P.entered_at >= since, P.state != "held_out",
                    )
                ):
                    facts.by_customer[r.customer_id].append(
                        (f"entered:{r.journey}", r.entered_at)
                    )
    return facts


def wake_waiting(engine: Engine, journey: str, now: datetime, shop_zone: str) -> int:
    """Make due now every position of ``journey`` waiting for an event that may have
    happened (a reply, an order...): the advancer then decides exactly. Returns how many.

    A wider net than the exact check (orders by the shop's clock, with slack) wakes a
    few too many; those go back to waiting until their window ends.
    """
    now = naive(now)
    # an order's wall clock against a UTC instant: shifted by the shop's offset now, an
    # hour early in case a clock change lies between
    offset = ZoneInfo(shop_zone).utcoffset(now) or timedelta()
    minutes = int(offset.total_seconds() // 60) - 60
    wakes = []
    for what, kinds in EVENT_KINDS.items():
        mine = P.waiting_for.contains(what)
        if kinds:
            hit = select(CE.id).where(
                CE.customer_id == P.customer_id,
                # (found through the customer's events: SQLite took the kind's index
                # and read every reply since the wait began, for each waiting position)
                unindexed(CE.kind).in_(kinds),
                CE.occurred_at >= P.waiting_since,
            ).exists()
        else:
            hit = select(Order.id).where(
                Order.customer_id == P.customer_id,
                Order.ordered_at >= shifted(P.waiting_since, literal(minutes)),
            ).exists()
        if what == "opted_out":
            hit = or_(
                hit,
                select(Consent.customer_id).where(
                    Consent.customer_id == P.customer_id,
                    Consent.granted.is_(False),
                    Consent.updated_at >= P.waiting_since,
                ).exists(),
            )
        wakes.append(and_(mine, hit))
    with engine.begin() as conn:
        return conn.execute(
            update(JourneyPosition.__table__)
            .where(
                P.journey == journey,
                P.state == "waiting",
                P.waiting_for.not_in(("time", "message")),
                P.due_at > now,
                or_(*wakes),
            )
            .values(due_at=now)
        ).rowcount

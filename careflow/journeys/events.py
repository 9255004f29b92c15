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

from sqlalchemy import (
    Engine,
    and_,
    func,
    literal,
    or_,
    select,
    union,
    update,
)

from careflow.db.models import Consent, ContactEvent, JourneyPosition, Order
from careflow.db.sqlfunc import among, id_chunks, shifted, unindexed
from careflow.journey_spec import CUSTOM_EVENT

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
    "signed_up": ("signed_up",),  # the shop's events (POST /events)
    "cart_updated": ("cart_updated",),
}


def kinds_of(what: str) -> tuple[str, ...]:
    """The contact_events kinds journey event ``what`` stands for: a custom event from the
    shop (``event:<name>``) is its own kind."""
    return EVENT_KINDS.get(what, (what,) if CUSTOM_EVENT.fullmatch(what) else ())

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
    kinds = {k: what for what in wanted for k in kinds_of(what)}
    zone = ZoneInfo(shop_zone)
    others = [w.removeprefix("entered:") for w in wanted if w.startswith("entered:")]
    with engine.connect() as conn:
        postgresql = conn.dialect.name == "postgresql"
        for part in id_chunks(conn, ids):

            def of(col, _part=part):
                return among(conn, col, _part)

            if kinds:
                for r in conn.execute(
                    select(CE.customer_id, CE.kind, CE.occurred_at).where(
                        of(CE.customer_id), CE.kind.in_(kinds), CE.occurred_at >= since
                    )
                ):
                    facts.by_customer[r.customer_id].append((kinds[r.kind], r.occurred_at))
            if "ordered" in wanted:
                first = since - _SHOP_SLACK
                # (PostgreSQL keeps only real days: the day, the index's second column,
                # bounds the walk of each customer's orders)
                day = [Order.ordered_on >= first.date()] if postgresql else []
                for r in conn.execute(
                    select(Order.customer_id, Order.ordered_at).where(
                        of(Order.customer_id), *day, Order.ordered_at >= first
                    )
                ):
                    at = r.ordered_at.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
                    facts.by_customer[r.customer_id].append(("ordered", at))
            if "opted_out" in wanted:
                for r in conn.execute(
                    select(Consent.customer_id, Consent.updated_at).where(
                        of(Consent.customer_id),
                        Consent.granted.is_(False),
                        Consent.updated_at >= since,
                    )
                ):
                    facts.by_customer[r.customer_id].append(("opted_out", r.updated_at))
            if others:
                for r in conn.execute(
                    select(P.customer_id, P.journey, P.entered_at).where(
                        of(P.customer_id), P.journey.in_(others), P.journey != journey,
                        P.entered_at >= since, P.state != "held_out",
                    )
                ):  # fmt: skip
                    facts.by_customer[r.customer_id].append(
                        (f"entered:{r.journey}", r.entered_at)
                    )
    return facts


def _happened(what: str, kinds: tuple[str, ...], since, order_minutes: int):
    """SQL: the position's customer did ``what`` at or after the column ``since`` (orders:
    by the shop's clock, ``order_minutes`` early; a wider net than the exact check)."""
    if kinds:
        hit = select(CE.id).where(
            CE.customer_id == P.customer_id,
            # (found through the customer's events: SQLite took the kind's index and
            # read every reply since the wait began, for each waiting position)
            unindexed(CE.kind).in_(kinds),
            CE.occurred_at >= since,
        ).exists()
    else:
        hit = select(Order.id).where(
            Order.customer_id == P.customer_id,
            Order.ordered_at >= shifted(since, literal(order_minutes)),
        ).exists()
    if what == "opted_out":
        hit = or_(
            hit,
            select(Consent.customer_id).where(
                Consent.customer_id == P.customer_id,
                Consent.granted.is_(False),
                Consent.updated_at >= since,
            ).exists(),
        )
    return hit


def wake_waiting(
    engine: Engine,
    journey: str,
    now: datetime,
    shop_zone: str,
    exit_on: Iterable[str] = (),
    customers=None,
    events: Iterable[str] = (),
) -> int:
    """Make due now every waiting position of ``journey`` that an event may have moved on
    or ended: one waiting for an event that may have happened since ``waiting_since`` (a
    reply, an order...), and, whatever its step (a ``wait``, a message deferred to its
    send time), one whose customer may have done one of the journey's ``exit_on`` since
    entering (the instant the advancer's exit rules count from). The advancer then
    decides exactly. Returns how many. ``customers`` (a query of customer ids, e.g.
    :func:`responders`) limits it to them; ``events``: the custom events (``event:<name>``)
    the journey waits for.

    A wider net than the exact check (orders by the shop's clock, with slack) wakes a
    few too many; those go back to waiting until their own due time (the advancer works
    it out again from the step, so a wait is never shortened).
    """
    now = naive(now)
    exit_on = set(exit_on)
    # an order's wall clock against a UTC instant: shifted by the shop's offset now, an
    # hour early in case a clock change lies between
    offset = ZoneInfo(shop_zone).utcoffset(now) or timedelta()
    minutes = int(offset.total_seconds() // 60) - 60
    wakes = []
    custom = {e: (e,) for e in (*events, *exit_on) if CUSTOM_EVENT.fullmatch(e)}
    for what, kinds in {**EVENT_KINDS, **custom}.items():
        wakes.append(and_(
            P.waiting_for.not_in(("time", "message")),
            P.waiting_for.contains(what),
            _happened(what, kinds, P.waiting_since, minutes),
        ))  # fmt: skip
        if what in exit_on:
            wakes.append(_happened(what, kinds, P.entered_at, minutes))
    others = sorted(e.removeprefix("entered:") for e in exit_on if e.startswith("entered:"))
    if others:
        Q = JourneyPosition.__table__.alias("other")
        wakes.append(
            select(Q.c.id).where(
                Q.c.customer_id == P.customer_id,
                Q.c.journey.in_(others),
                Q.c.journey != journey,
                Q.c.entered_at >= P.entered_at,
                Q.c.state != "held_out",
            ).exists()
        )
    scope = [] if customers is None else [P.customer_id.in_(customers)]
    with engine.begin() as conn:
        return conn.execute(
            update(JourneyPosition.__table__)
            .where(
                P.journey == journey,
                P.state == "waiting",
                P.due_at > now,
                *scope,
                or_(*wakes),
            )
            .values(due_at=now)
        ).rowcount


#: the contact_events kinds that are responses a journey may wait for or exit on (not
#: delivery receipts: every message has one; as the deployment's trigger, prefect.yaml),
#: and the shop's custom events (``event:<name>``)
RESPONSE_KINDS = tuple(k for what, kinds in EVENT_KINDS.items() if what != "delivered"
                       for k in kinds)  # fmt: skip


def _response():
    """SQL: a contact event that is a response (:data:`RESPONSE_KINDS`, or custom)."""
    return or_(CE.kind.in_(RESPONSE_KINDS), CE.kind.like("event:%"))


def response_mark(engine: Engine, after: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """(newest response event id, newest order id), each at least ``after``'s: a mark that
    moved means a response (a reply, a click, an opt-out, an order...) was recorded.
    Reads only the ids above ``after`` (the primary keys)."""
    with engine.connect() as conn:
        event = conn.execute(
            select(func.max(CE.id)).where(CE.id > after[0], _response())
        ).scalar()
        order = conn.execute(select(func.max(Order.id)).where(Order.id > after[1])).scalar()
    return (event or after[0], order or after[1])


def responders(mark: tuple[int, int]):
    """SQL: the customers with a response recorded above ``mark`` (:func:`response_mark`)."""
    return union(
        select(CE.customer_id).where(CE.id > mark[0], _response()),
        select(Order.customer_id).where(Order.id > mark[1]),
    )

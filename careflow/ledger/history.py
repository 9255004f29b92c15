"""The ledger read for people: what happened with a customer, what waits, what failed.

Read models only: nothing here decides what is sent or writes a row (the
transitions are careflow/ledger/state.py). The CLI and reports read these.
"""

from __future__ import annotations

from datetime import UTC
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, case, func, or_, select

from careflow.db.models import (
    ContactEvent,
    ContactHistory,
    JourneyPosition,
    JourneyStepRecord,
    Order,
)
from careflow.errors import DataError
from careflow.journey_spec import ENTRY_STEP
from careflow.ledger.state import retryable_deferred
from careflow.messages import State
from careflow.money import from_minor
from careflow.tables import shorten

CH = ContactHistory.__table__


def contact_history(engine: Engine, customer_id: int, limit: int = 50) -> list[dict]:
    """The customer's contact history, newest first, each contact with its events."""
    with engine.connect() as conn:
        rows = (
            conn.execute(
                select(CH)
                .where(CH.c.customer_id == customer_id)
                .order_by(CH.c.created_at.desc(), CH.c.id.desc())
                .limit(limit)
            )
            .mappings()
            .all()
        )
        events = (
            conn.execute(
                select(ContactEvent.__table__)
                .where(ContactEvent.customer_id == customer_id)
                .order_by(ContactEvent.occurred_at)
            )
            .mappings()
            .all()
        )
    by_contact: dict[int | None, list[dict]] = {}
    for e in events:
        by_contact.setdefault(e["contact_id"], []).append(dict(e))
    out = [dict(r) | {"events": by_contact.get(r["id"], [])} for r in rows]
    return out


def timeline(
    engine: Engine, customer_id: int, limit: int = 50, shop_zone: str = "UTC"
) -> list[dict]:
    """Everything that happened with one customer, oldest first (the last ``limit`` items):
    messages and their outcomes, delivery states, replies, opt-outs, bounces, orders.

    Every ``at`` is naive UTC: orders keep the shop's clock (``shop_zone``) and are
    converted, so an order sorts after the message it followed whatever the zone."""
    zone = ZoneInfo(shop_zone)
    items: list[dict] = []
    with engine.connect() as conn:
        campaign_of = {}
        for r in conn.execute(select(CH).where(CH.c.customer_id == customer_id)).mappings():
            campaign_of[r["id"]] = r["campaign"]
            text = r["subject"] or (r["body"] or "").split("\n")[0]
            items.append(
                {
                    "at": r["sent_at"] or r["updated_at"],
                    "what": r["state"] + (f": {r['reason']}" if r["reason"] else ""),
                    "campaign": r["campaign"],
                    "channel": r["channel"],
                    "text": shorten(text, 120) or None,
                    "detail": r["detail"],
                }
            )
        for e in conn.execute(
            select(ContactEvent.__table__).where(ContactEvent.customer_id == customer_id)
        ).mappings():
            items.append(
                {
                    "at": e["occurred_at"],
                    "what": e["kind"],
                    "campaign": campaign_of.get(e["contact_id"]),
                    "channel": e["channel"],
                    "text": e["detail"],
                    "detail": None,
                }
            )
        for o in conn.execute(
            select(Order.ordered_at, Order.amount_minor, Order.currency).where(
                Order.customer_id == customer_id
            )
        ):
            try:
                text, why = f"{from_minor(o.amount_minor, o.currency)} {o.currency}", None
            except DataError as exc:  # that order's own line says so; the rest is shown
                text, why = f"? {o.currency}", f"unreadable amount: {exc}"
            items.append(
                {
                    "at": o.ordered_at.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None),
                    "what": "order",
                    "campaign": None,
                    "channel": None,
                    "text": text,
                    "detail": why,
                }
            )
        items += _journey_items(conn, customer_id)
    items.sort(key=lambda i: i["at"])
    return items[-limit:] if limit else items


#: what a journey step row's outcome reads as on a timeline
_OUTCOME_WORDS = {
    "entered": "entered",
    "held_out": "held out",
    "happened": "it happened",
    "timed_out": "window ended",
    "exited": "exited",
    "ended": "ended",
}


def _journey_items(conn, customer_id: int) -> list[dict]:
    """The customer's journeys on their timeline: each step they took (its outcome,
    why, where it led; an exit with its reason), and where a journey they are still in
    stands: at which step, waiting for what, until when. Items carry ``journey`` and
    ``step``; a send step's message is on the timeline too, under its campaign
    (``j_<journey>__<step>``)."""
    out = []
    for r in conn.execute(
        select(JourneyStepRecord.__table__).where(JourneyStepRecord.customer_id == customer_id)
    ).mappings():
        what = _OUTCOME_WORDS.get(r["outcome"], r["outcome"])
        if r["reason"] and r["outcome"] not in ("entered", "held_out"):
            what += f": {r['reason']}"
        if r["step"] == ENTRY_STEP:
            text = f"starts at {r['next_step']}" if r["next_step"] else None
        else:
            text = f"{r['step']} -> {r['next_step']}" if r["next_step"] else r["step"]
        out.append({
            "at": r["at"], "what": f"journey {what}", "campaign": r["journey"],
            "channel": None, "text": text, "detail": r["detail"],
            "journey": r["journey"], "step": r["step"],
        })  # fmt: skip
    for p in conn.execute(
        select(JourneyPosition.__table__).where(JourneyPosition.customer_id == customer_id)
    ).mappings():
        if p["state"] in ("active", "waiting"):
            if p["waiting_for"] == "message":
                why = "waiting for its message's send time"
            elif p["state"] == "waiting" and p["waiting_for"] not in (None, "time"):
                why = f"waiting for {p['waiting_for'].replace(',', ' or ')}"
            else:
                why = "waiting" if p["state"] == "waiting" else "due"
            due = f" until {p['due_at']:%Y-%m-%d %H:%M} UTC" if p["due_at"] else ""
            out.append({
                "at": p["arrived_at"], "what": f"journey {why}", "campaign": p["journey"],
                "channel": None, "text": f"at {p['step']}{due}", "detail": None,
                "journey": p["journey"], "step": p["step"], "due_at": p["due_at"],
            })  # fmt: skip
    return out


def deferred_summary(engine: Engine) -> list[dict]:
    """Deferred messages not yet sent, per campaign and reason: how many (``count``, those
    whose attempt failed and will be tried again included, under the failure's reason),
    of which a run has taken and not yet sent (``taken``: being sent now, or left by a
    run that died, for the next follow-up), and the first and last due (UTC)."""
    taken = CH.c.state.in_([State.RESERVED, State.SENDING])
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                CH.c.campaign,
                CH.c.reason,
                func.count().label("count"),
                func.count(case((taken, 1))).label("taken"),
                func.min(CH.c.not_before).label("first_due"),
                func.max(CH.c.not_before).label("last_due"),
            )
            .where(
                or_(
                    CH.c.state == State.DEFERRED,
                    and_(taken, CH.c.not_before.is_not(None)),
                    retryable_deferred(),
                )
            )
            .group_by(CH.c.campaign, CH.c.reason)
            .order_by(CH.c.campaign, CH.c.reason)
        ).all()
    return [dict(r._mapping) for r in rows]


def failure_reasons(engine: Engine, campaign: str) -> dict[str, int]:
    """How many failed messages of ``campaign`` there are, by reason."""
    with engine.connect() as conn:
        return dict(
            conn.execute(
                select(CH.c.reason, func.count())
                .where(CH.c.campaign == campaign, CH.c.state == State.FAILED)
                .group_by(CH.c.reason)
            ).all()
        )

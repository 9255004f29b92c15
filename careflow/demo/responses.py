"""The demo hears back: simulated provider callbacks, through the live endpoints' own code.

After the demo's campaigns go to the outbox, this plays the providers'
part: Twilio status callbacks and a few replies (some of them 退订/TD/STOP,
some words for a person), SendGrid's event batches (delivered, opens,
clicks, a bounce or two), and a few orders from customers who got a
message, and fewer from customers held out of it (the holdout
comparison). Each callback is built as the provider would post it and
goes through careflow/webhooks/ and careflow/responses.py exactly as `careflow
serve` would send it, so a new user sees the whole loop without
credentials.

Deterministic (seeded by the message ids) and idempotent: running the demo
again records nothing twice. Nothing is simulated after the demo's "now": the
demo sends its messages moments before it hears back, so a reply, an open
or an order that would come minutes later is heard at "now" instead, and
`careflow history` never shows a response that has not happened yet.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, insert, select

from careflow.clock import utcnow
from careflow.db.models import ContactHistory, Customer, Order
from careflow.money import to_minor
from careflow.responses import attribute_orders, record_events
from careflow.webhooks import sendgrid, twilio

REPLIES_ZH = ["退订", "TD", "谢谢！", "请给我回电话", "还有别的颜色吗？"]
REPLIES_EN = ["STOP", "Thanks!", "Can you call me back?", "stop", "Is the offer still on?"]


def simulate_responses(
    engine: Engine, *, window_days: int, shop_zone: str, now: datetime | None = None
) -> int:
    """Feed simulated callbacks for every message sent to the outbox; returns events new.

    ``now`` (naive UTC; default the real clock) is the last instant anything is
    simulated at: a callback or an order due later is stamped ``now``."""
    with engine.connect() as conn:
        sent = conn.execute(
            select(
                ContactHistory.id,
                ContactHistory.campaign,
                ContactHistory.customer_id,
                ContactHistory.occasion,
                ContactHistory.channel,
                ContactHistory.recipient,
                ContactHistory.provider_id,
                ContactHistory.sent_at,
                Customer.locale,
            )
            .join(Customer, Customer.id == ContactHistory.customer_id)
            .where(ContactHistory.state == "sent", ContactHistory.provider_id.like("outbox:%"))
            .order_by(ContactHistory.id)
        ).all()
    now = now or utcnow()
    events, mails, orders = [], [], []
    for m in sent:
        rng = random.Random(m.provider_id)  # the same story every time the demo runs
        if m.channel == "sms":
            status = "delivered" if rng.random() < 0.93 else "undelivered"
            params = {"MessageSid": m.provider_id, "MessageStatus": status, "To": m.recipient}
            if status == "undelivered":
                params["ErrorCode"] = "30003"
            events.append(twilio.parse_status(params, m.sent_at + timedelta(seconds=5)))
            if status == "delivered" and rng.random() < 0.04:
                texts = REPLIES_ZH if (m.locale or "").startswith("zh") else REPLIES_EN
                reply = {
                    "MessageSid": f"SMreply-{m.id}",
                    "From": m.recipient,
                    "To": "+12025550123",
                    "Body": rng.choice(texts),
                }
                events.append(twilio.parse_inbound(reply, m.sent_at + timedelta(minutes=7)))
        elif m.channel == "email":
            mails += _sendgrid_events(m, rng)
        delivered = rng.random() < 0.06
        if delivered and m.channel in ("sms", "email"):
            orders.append((m, m.sent_at + timedelta(minutes=rng.randint(20, 110))))
    orders += _held_out_orders(engine)
    if mails:
        events += sendgrid.parse(mails)
    # nothing after now: a response due later is heard now (events are naive UTC)
    events = [replace(e, occurred_at=min(e.occurred_at, now)) for e in events]
    orders = [(m, min(at, now)) for m, at in orders]
    result = record_events(engine, events)
    _place_orders(engine, orders, ZoneInfo(shop_zone))
    attribute_orders(engine, window_days, shop_zone)
    return result.received - result.duplicates


#: how often a customer orders in the days after being taken up anyway, without a message;
#: those who get one order more often (above): the holdout comparison shows the difference
HELD_OUT_ORDER_RATE = 0.02


def _held_out_orders(engine: Engine) -> list:
    """Orders from held-out customers: nobody wrote to them, and some buy all the same."""
    with engine.connect() as conn:
        held = conn.execute(
            select(ContactHistory.id, ContactHistory.customer_id, ContactHistory.created_at)
            .where(ContactHistory.state == "held_out")
            .order_by(ContactHistory.id)
        ).all()
    out = []
    for h in held:
        rng = random.Random(f"held-out-{h.id}")  # the same story every time
        if rng.random() < HELD_OUT_ORDER_RATE:
            out.append((h, h.created_at + timedelta(minutes=rng.randint(20, 110))))
    return out


def _sendgrid_events(m, rng: random.Random) -> list[dict]:
    """What SendGrid would post about one email: delivered, maybe opened and clicked."""
    ts = int(m.sent_at.replace(tzinfo=UTC).timestamp())  # naive UTC, whatever the machine's zone
    base = {
        "email": m.recipient,
        "sg_message_id": f"{m.provider_id}.filter0001",
        "careflow_key": f"{m.campaign}:{m.customer_id}:{m.occasion}",
        "contact_id": str(m.id),
    }
    if rng.random() < 0.02:
        return [
            {
                **base,
                "event": "bounce",
                "type": "bounce",
                "timestamp": ts + 3,
                "sg_event_id": f"demo-{m.id}-bounce",
                "reason": "550 5.1.1 unknown user",
            }
        ]
    out = [{**base, "event": "delivered", "timestamp": ts + 2, "sg_event_id": f"demo-{m.id}-d"}]
    if rng.random() < 0.4:
        out.append(
            {**base, "event": "open", "timestamp": ts + 600, "sg_event_id": f"demo-{m.id}-o"}
        )
        if rng.random() < 0.25:
            out.append(
                {**base, "event": "click", "timestamp": ts + 660, "sg_event_id": f"demo-{m.id}-c"}
            )
    return out


def _place_orders(engine: Engine, orders, zone: ZoneInfo) -> None:
    """Orders some customers place after their message (once: refs are per message).

    Orders keep the shop's clock, so the UTC instant is written in ``zone``."""
    if not orders:
        return
    refs = {
        f"demo-after-{m.id}": (m, at.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None))
        for m, at in orders
    }
    with engine.begin() as conn:
        known = set(
            conn.execute(
                select(Order.external_ref).where(Order.external_ref.in_(list(refs)))
            ).scalars()
        )
        rows = [
            {
                "external_ref": ref,
                "customer_id": m.customer_id,
                "ordered_at": at,
                "ordered_on": at.date(),
                "currency": "CNY",
                "amount_minor": to_minor(random.Random(ref).choice(["129", "268", "399"]), "CNY"),
            }
            for ref, (m, at) in refs.items()
            if ref not in known
        ]
        if rows:
            conn.execute(insert(Order), rows)

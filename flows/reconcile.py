"""Reconciliation: settle what is in doubt by asking the provider, without a public URL.

Two kinds of message need the provider's word:

- **In doubt** (``failed`` with ``timeout_unknown``, ``connection_lost_unknown``
  or ``interrupted``): the request may or may not have reached the
  provider. Twilio keeps a log of every message it accepted, so careflow
  asks it for messages to that number around the time of the attempt. One
  found (with the same text, where the ledger holds it): the row becomes
  ``sent`` with Twilio's id. None found, well after the attempt: Twilio
  never took it, so the row becomes retryable and the next run sends it,
  once. Never messaging anyone twice and never forgetting anyone are both
  kept.
- **Without a final state** after ``status_after`` (no status callback
  arrived: careflow serve was down, or no public URL is configured): the
  message's current status is fetched and recorded as if the callback had
  come, through the same code (careflow/responses.py).

SendGrid keeps no message log careflow can query without its paid Email
Activity add-on, and retries its Event Webhook for 24 hours; email in doubt
stays for an operator (``careflow retry``), listed in the flow's log.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from prefect import flow, get_run_logger
from sqlalchemy import Engine, and_, or_, select, update

from careflow import db
from careflow.db.models import ContactHistory, Customer
from careflow.ledger import utcnow
from careflow.messages import State
from careflow.policy import normalize_address
from careflow.responses import record_events
from careflow.settings import Settings, load_settings
from webhooks import twilio as twilio_hooks

CH = ContactHistory.__table__
IN_DOUBT = ("timeout_unknown", "connection_lost_unknown", "interrupted")


@dataclass
class Reconciled:
    confirmed_sent: int = 0
    released: int = 0
    statuses: int = 0
    left_for_a_person: Counter = None  # channel -> rows nobody can settle automatically

    def __post_init__(self):
        self.left_for_a_person = self.left_for_a_person or Counter()


def reconcile_sms(
    engine: Engine,
    sms,
    *,
    now: datetime | None = None,
    settle_after: timedelta = timedelta(minutes=15),
    status_after: timedelta = timedelta(hours=2),
    default_region: str = "CN",
) -> Reconciled:
    """Settle SMS in doubt and fetch missing delivery states; ``sms`` is a TwilioSMS."""
    now = now or utcnow()
    out = Reconciled()
    with engine.connect() as conn:
        doubtful = conn.execute(
            select(CH, Customer.mobile, Customer.country)
            .join(Customer, Customer.id == CH.c.customer_id)
            .where(
                CH.c.state == State.FAILED,
                CH.c.retryable.is_(False),
                CH.c.reason.in_(IN_DOUBT),
                or_(CH.c.channel == "sms", CH.c.channel.is_(None)),
                CH.c.updated_at < now - settle_after,
            )
        ).all()
        pending = conn.execute(
            select(CH.c.id, CH.c.provider_id, CH.c.recipient).where(
                CH.c.state == State.SENT,
                CH.c.channel == "sms",
                CH.c.provider_id.like("SM%"),
                or_(CH.c.delivery_rank.is_(None), CH.c.delivery_rank < 3),
                CH.c.sent_at < now - status_after,
            )
        ).all()
    for row in doubtful:
        to = row.recipient or _address(row, default_region)
        if to is None:
            out.left_for_a_person["sms"] += 1
            continue
        since = row.created_at - timedelta(minutes=1)
        found = [
            m
            for m in sms.messages_to(to, since)
            if row.body is None or (m["body"] or "").strip() == row.body.strip()
        ]
        with engine.begin() as conn:
            if found:
                first = min(found, key=lambda m: m["date_created"] or now)
                conn.execute(
                    update(CH)
                    .where(CH.c.id == row.id, CH.c.state == State.FAILED)
                    .values(
                        state=State.SENT,
                        reason=None,
                        provider_id=first["sid"],
                        recipient=to,
                        sent_at=(first["date_created"] or now).replace(tzinfo=None),
                        detail="confirmed sent by reconciliation with Twilio's message log",
                        updated_at=now,
                    )
                )
                out.confirmed_sent += 1
            else:
                conn.execute(
                    update(CH)
                    .where(and_(CH.c.id == row.id, CH.c.state == State.FAILED))
                    .values(
                        retryable=True,
                        detail="reconciliation: Twilio has no such message, so it never went "
                        "out; the next run sends it",
                        updated_at=now,
                    )
                )
                out.released += 1
    events = []
    for row in pending:
        message = sms.status_of(row.provider_id)
        if message is None:
            continue
        params = {"MessageSid": row.provider_id, "MessageStatus": message["status"],
                  "To": message["to"] or row.recipient or ""}
        if message["error_code"]:
            params["ErrorCode"] = str(message["error_code"])
        events.append(twilio_hooks.parse_status(params, now))
    if events:
        out.statuses = record_events(engine, events).received
    return out


def _address(row, default_region: str) -> str | None:
    """The number a row in doubt went to: rows settled as interrupted kept none."""
    if not row.mobile:
        return None
    try:
        return normalize_address(
            "sms", row.mobile, country=row.country, default_region=default_region
        )
    except Exception:  # an unusable number cannot have been texted
        return None


def email_in_doubt(engine: Engine) -> int:
    """Email rows nobody can settle automatically (no queryable message log)."""
    with engine.connect() as conn:
        return len(
            conn.execute(
                select(CH.c.id).where(
                    CH.c.state == State.FAILED,
                    CH.c.retryable.is_(False),
                    CH.c.reason.in_(IN_DOUBT),
                    CH.c.channel == "email",
                )
            ).all()
        )


@flow(name="reconcile", flow_run_name="reconcile")
def reconcile(settle_after_minutes: int = 15, status_after_hours: int = 2) -> dict:
    """Ask the providers about messages in doubt or without a final state (module docs)."""
    logger = get_run_logger()
    settings: Settings = load_settings()
    engine = db.engine_for(settings.effective_database_url)
    db.ensure_schema(engine)
    summary: dict = {"sms": None, "email_left_for_a_person": email_in_doubt(engine)}
    if settings.delivery != "live" or not settings.twilio_account_sid:
        logger.info("no live Twilio configured: nothing to ask about SMS")
    else:
        from channels.sms import TwilioSMS

        with TwilioSMS(settings) as sms:
            result = reconcile_sms(
                engine,
                sms,
                settle_after=timedelta(minutes=settle_after_minutes),
                status_after=timedelta(hours=status_after_hours),
                default_region=settings.sms_default_region,
            )
        summary["sms"] = {
            "confirmed_sent": result.confirmed_sent,
            "released_for_the_next_run": result.released,
            "statuses_fetched": result.statuses,
            "left_for_a_person": result.left_for_a_person["sms"],
        }
        logger.info("SMS: %s", summary["sms"])
    if summary["email_left_for_a_person"]:
        logger.warning(
            "%d email(s) in doubt: check SendGrid's activity feed, then `careflow retry`",
            summary["email_left_for_a_person"],
        )
    return summary

"""Reconciliation: settle what is in doubt by asking the provider, without a public URL.

First, what runs that died still hold once their lease has passed, and that no
later run has met (``ContactLedger.settle_abandoned``), is settled: reserved
messages go back for the next run, messages left in ``sending`` are in doubt.
Then two kinds of message need the provider's word:

- **In doubt** (``failed`` with ``timeout_unknown``, ``connection_lost_unknown``
  or ``interrupted``): the request may or may not have reached the
  provider. Twilio keeps a log of every message it created, so careflow
  reads the log for that number since the attempt and looks for *its*
  message: the same text (the ledger keeps what went out from the moment
  it is marked sending). Twilio's Message resource keeps nothing else of
  the request (no status-callback URL, no custom field), and a customer may
  well have had another campaign's SMS that day, so a message with other
  text is not a confirmation. Found, in any status (queued, accepted and
  scheduled have no ``date_sent`` yet, and count: Twilio has it): the row
  becomes ``sent`` with Twilio's id, each Twilio message confirming one row
  at most. Nothing to that number since the attempt, well after it: Twilio
  never took it, so the row becomes retryable and the next run sends it,
  once. Other messages there, none ours, on a row that kept no text (in
  doubt before careflow kept it): nobody can tell, left for a person.
  Never messaging anyone twice and never forgetting anyone are both kept.
- **Without a final state** after ``status_after`` (no status callback
  arrived: careflow serve was down, or no public URL is configured): the
  message's current status is fetched and recorded as if the callback had
  come, through the same code (careflow/responses.py).

Each question to Twilio is asked up to ``ASK_ATTEMPTS`` times, with a growing
pause, while it fails on the way (a dropped connection, a 429 or 5xx); a row
whose question still fails is left as it is, counted in ``unanswered`` with
the error, and the next reconciliation asks again. The other rows are
settled all the same.

SendGrid keeps no message log careflow can query without its paid Email
Activity add-on, and retries its Event Webhook for 24 hours; email in doubt
stays for an operator (``careflow retry``), listed in the flow's log.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field
from sqlalchemy import Engine, and_, or_, select, update

from careflow import db
from careflow.clock import utcnow
from careflow.db.models import ContactHistory, Customer
from careflow.errors import AmbiguousError, DeliveryError, TransientError
from careflow.flows.campaign import occasion_text
from careflow.flows.idle import idle
from careflow.flows.params import Describe
from careflow.ledger import ContactLedger
from careflow.messages import State
from careflow.policy import normalize_address
from careflow.responses import record_events
from careflow.settings import Settings, load_settings
from careflow.webhooks import twilio as twilio_hooks

CH = ContactHistory.__table__
IN_DOUBT = ("timeout_unknown", "connection_lost_unknown", "interrupted")

#: how often one question to Twilio is asked while it fails on the way (module docs)
ASK_ATTEMPTS = 4
#: the pause before the second attempt, doubled before each further one
ASK_BACKOFF_SECONDS = 1.0
#: errors kept in a reconciliation's report
ERRORS_KEPT = 5


@dataclass
class Reconciled:
    confirmed_sent: int = 0
    released: int = 0
    statuses: int = 0
    #: channel -> rows nobody can settle automatically
    left_for_a_person: Counter = field(default_factory=Counter)
    #: rows Twilio could not be asked about this time (the next reconciliation asks again)
    unanswered: int = 0
    errors: list[str] = field(default_factory=list)  # a few of their errors

    def could_not_ask(self, exc: DeliveryError) -> None:
        self.unanswered += 1
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append(f"{exc.reason}: {exc.detail or ''}"[:300])


def ask(question: Callable, *, attempts: int = ASK_ATTEMPTS, sleep=time.sleep):
    """``question()``, asked again after a pause (1 s, 2 s, 4 s...) while it fails on the
    way; a refusal (PermanentError) or the last failure is raised."""
    for attempt in range(attempts):
        try:
            return question()
        except (TransientError, AmbiguousError) as exc:
            if attempt == attempts - 1:
                raise
            pause = ASK_BACKOFF_SECONDS * 2**attempt
            sleep(max(pause, getattr(exc, "retry_after", None) or 0))
    raise AssertionError("unreachable")


def reconcile_sms(
    engine: Engine,
    sms,
    *,
    now: datetime | None = None,
    settle_after: timedelta = timedelta(minutes=15),
    status_after: timedelta = timedelta(hours=2),
    default_region: str = "CN",
    sleep=time.sleep,
) -> Reconciled:
    """Settle SMS in doubt and fetch missing delivery states; ``sms`` is a TwilioSMS.
    ``sleep`` waits between attempts at a question (tests pass a fake)."""
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
            .order_by(CH.c.id)
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
        since = (row.created_at - timedelta(minutes=1)).replace(tzinfo=UTC)
        try:
            log = ask(lambda to=to, since=since: sms.messages_to(to, since), sleep=sleep)
        except DeliveryError as exc:  # this row waits for the next reconciliation
            out.could_not_ask(exc)
            continue
        settled = _settle(engine, row, to, log, now)
        if settled == State.SENT:
            out.confirmed_sent += 1
        elif settled == "released":
            out.released += 1
        else:
            out.left_for_a_person["sms"] += 1
    events = []
    for row in pending:
        try:
            message = ask(lambda sid=row.provider_id: sms.status_of(sid), sleep=sleep)
        except DeliveryError as exc:
            out.could_not_ask(exc)
            continue
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


def _release(conn, row_id: int, now: datetime, why: str) -> str:
    """Row ``row_id`` never went out (``why``): retryable, the next run sends it."""
    conn.execute(
        update(CH)
        .where(and_(CH.c.id == row_id, CH.c.state == State.FAILED))
        .values(
            retryable=True,
            detail=f"reconciliation: {why}, so it never went out; the next run sends it",
            updated_at=now,
        )
    )
    return "released"


def _settle(engine: Engine, row, to: str, log: list[dict], now: datetime) -> str | None:
    """Settle one row in doubt by the number's log since its attempt: ``sent`` when one
    of the messages is ours (its text, not yet in the ledger), ``released`` when Twilio
    has none at all, None when only other messages are there and the row has no text to
    tell (left for a person). A message with other text is another campaign's."""
    with engine.begin() as conn:
        if not log:
            return _release(
                conn, row.id, now, "Twilio has no message to this number since the attempt"
            )
        if row.body is None:
            return None
        known = set(
            conn.execute(
                select(CH.c.provider_id).where(CH.c.provider_id.in_([m["sid"] for m in log]))
            ).scalars()
        )
        ours = [
            m
            for m in log
            if m["sid"] not in known and (m["body"] or "").strip() == row.body.strip()
        ]
        if not ours:
            return _release(
                conn, row.id, now,
                "Twilio's messages to this number since the attempt are all others",
            )
        first = min(ours, key=lambda m: m["date_created"])
        conn.execute(
            update(CH)
            .where(CH.c.id == row.id, CH.c.state == State.FAILED)
            .values(
                state=State.SENT,
                reason=None,
                provider_id=first["sid"],
                recipient=to,
                sent_at=first["date_created"].astimezone(UTC).replace(tzinfo=None),
                detail=f"confirmed sent by reconciliation with Twilio's message log "
                f"(status {first['status']})",
                updated_at=now,
            )
        )
        return State.SENT


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


SettleAfter = Annotated[
    int,
    Field(ge=1),
    Describe("Minutes: ask about a message in doubt once it has been in doubt this long."),
]
StatusAfter = Annotated[
    int,
    Field(ge=1),
    Describe("Hours: ask for the delivery state of a message sent this long ago without one."),
]


def run_name() -> str:
    """``reconcile 2026-12-07 14:17``: the hour it settles, in the shop's time zone."""
    return f"reconcile {occasion_text(None, minutes=True)}"


@flow(name="reconcile", flow_run_name=run_name)
def reconcile(settle_after_minutes: SettleAfter = 15, status_after_hours: StatusAfter = 2) -> dict:
    """Ask the providers about messages in doubt or without a final state (module docs).
    A run with nothing to settle ends Completed named Idle, tagged nothing-due."""
    logger = get_run_logger()
    settings: Settings = load_settings()
    engine = db.engine_for(settings.effective_database_url)
    db.ensure_schema(engine)
    # what dead runs still hold and no run met since: due again, or in doubt to settle
    ledger = ContactLedger(engine, settings.reservation_lease_seconds)
    released, interrupted = ledger.settle_abandoned()
    if released or interrupted:
        logger.warning(
            "runs that died left %d reserved message(s), released for the next run, and %d "
            "in doubt, recorded as failed: interrupted",
            released,
            interrupted,
        )
    summary: dict = {"sms": None, "email_left_for_a_person": email_in_doubt(engine)}
    if settings.delivery != "live" or not settings.twilio_account_sid:
        logger.info("no live Twilio configured: nothing to ask about SMS")
    else:
        from careflow.channels.sms import TwilioSMS

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
            "unanswered": result.unanswered,
        }
        logger.info("SMS: %s", summary["sms"])
        if result.unanswered:
            logger.warning(
                "%d SMS row(s) could not be checked with Twilio this time (the next "
                "reconciliation asks again): %s",
                result.unanswered,
                "; ".join(result.errors),
            )
    if summary["email_left_for_a_person"]:
        logger.warning(
            "%d email(s) in doubt: check SendGrid's activity feed, then `careflow retry`",
            summary["email_left_for_a_person"],
        )
    summary["abandoned"] = {"released": released, "interrupted": interrupted}
    if not (released or interrupted or summary["email_left_for_a_person"]) and not any(
        (summary["sms"] or {}).values()
    ):  # most hours: told apart in the runs list (careflow/flows/idle.py)
        return idle(summary, "Nothing to settle")
    return summary

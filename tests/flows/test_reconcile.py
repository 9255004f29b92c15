"""Reconciliation settles messages in doubt by Twilio's own log: none lost, none twice."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from careflow.channels.sms import TwilioSMS
from careflow.clock import utcnow
from careflow.db.models import ContactHistory
from careflow.flows.reconcile import ASK_ATTEMPTS, reconcile_sms
from careflow.flows.route import send_chunk
from careflow.ledger import ContactLedger
from careflow.messages import State
from tests.factories import add_customer
from tests.providers.fault_server import FaultServer
from tests.providers.kit import live_settings, make_message


class Clock:
    """The ledger's clock, moved by hand."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


NUMBERS = {1: "+8613800138001", 2: "+8613800138002", 3: "+8613800138003"}


@pytest.fixture
def server():
    with FaultServer() as s:
        yield s


def rows(engine):
    with engine.connect() as conn:
        return {r.customer_id: r for r in conn.execute(select(ContactHistory.__table__))}


def test_in_doubt_messages_are_settled_by_the_providers_log(engine, server):
    settings = live_settings(server.base_url, delivery_read_timeout_seconds=0.5)
    for cid, number in NUMBERS.items():
        add_customer(engine, cid, mobile=number, locale="en")
    led = ContactLedger(engine)
    claim = led.claim("winback", "run-1", [(cid, "2026") for cid in NUMBERS])
    ids = {cid: claim.owned[(cid, "2026")] for cid in NUMBERS}
    # 1: Twilio took it, then the connection dropped: careflow cannot know
    server.script(NUMBERS[1], ["accept_reset"])
    with TwilioSMS(settings) as sms:
        for cid in (1, 3):
            led.mark_sending([ids[cid]], "sms", "run-1")
            message = make_message(cid, "sms", NUMBERS[cid], contact_id=ids[cid], body=f"hello {cid}",
                                   locale="en")
            [outcome] = sms.send_batch([message])
            led.record([outcome], "run-1", {ids[cid]: {"channel": "sms", "recipient": NUMBERS[cid],
                                                       "body": message.body}})
    # 2: the run died after marking it sending, before any request: interrupted
    led.mark_sending([ids[2]], "sms", "run-1")
    led.resolve_interrupted("winback", [(2, "2026")], "run-1")
    before = rows(engine)
    assert before[1].reason == "connection_lost_unknown" and before[2].reason == "interrupted"
    assert before[3].state == State.SENT and before[3].delivery_state is None

    later = utcnow() + timedelta(hours=3)  # past settling and status delays
    with TwilioSMS(settings) as sms:
        result = reconcile_sms(engine, sms, now=later)
    assert (result.confirmed_sent, result.released, result.statuses) == (1, 1, 1)
    after = rows(engine)
    assert after[1].state == State.SENT and after[1].provider_id.startswith("SM")
    assert after[2].state == State.FAILED and after[2].retryable  # the next run sends it
    assert after[3].delivery_state == "delivered"  # fetched, as if the callback had come
    # running it again changes nothing
    with TwilioSMS(settings) as sms:
        again = reconcile_sms(engine, sms, now=later)
    assert (again.confirmed_sent, again.released) == (0, 0)
    assert server.accepted[NUMBERS[1]] == 1 and server.accepted[NUMBERS[2]] == 0


def test_nothing_is_settled_before_the_attempt_has_had_time(engine, server):
    settings = live_settings(server.base_url)
    add_customer(engine, 2, mobile=NUMBERS[2])
    led = ContactLedger(engine)
    cid = led.claim("winback", "run-1", [(2, "2026")]).owned[(2, "2026")]
    led.mark_sending([cid], "sms", "run-1")
    with engine.begin() as conn:
        conn.execute(update(ContactHistory).values(state=State.FAILED, reason="timeout_unknown",
                                                   updated_at=utcnow()))
    with TwilioSMS(settings) as sms:
        result = reconcile_sms(engine, sms)  # now: too soon to say Twilio never took it
    assert (result.confirmed_sent, result.released) == (0, 0)


def chunk_of(ledger, settings=None):
    """What ``send_chunk`` reads of a run's route: its ledger, id and home."""
    return SimpleNamespace(ledger=ledger, run=SimpleNamespace(run_id="run-1", settings=settings))


class Died(BaseException):
    """The process dies while the channel has the message (SIGKILL, seen from the ledger)."""


class DyingChannel:
    """An SMS channel (matched by its text in Twilio's log) whose process dies."""

    matched_by_text = True

    def send_batch(self, messages):
        raise Died


def left_in_doubt(engine, cid: int, number: str, text: str) -> int:
    """Customer ``cid``'s win-back SMS handed to the channel by the route, then the run
    died; its clean-up settles it as ``failed: interrupted``. Returns the row id."""
    add_customer(engine, cid, mobile=number, locale="en")
    led = ContactLedger(engine)
    row = led.claim("winback", "run-1", [(cid, "2026")]).owned[(cid, "2026")]
    message = make_message(cid, "sms", number, contact_id=row, body=text, locale="en")
    with pytest.raises(Died):
        send_chunk(chunk_of(led), DyingChannel(), "sms", [message])
    assert led.release("run-1") == (0, 1)
    return row


LATER = timedelta(hours=3)  # past the settling delay


def test_another_campaigns_message_to_the_number_is_no_confirmation(engine, server):
    """Regression: an interrupted row kept no text, and any message to the number
    confirmed it as sent: a customer who had another campaign's SMS that day never got
    the win-back, and the ledger said sent."""
    number = NUMBERS[1]
    left_in_doubt(engine, 1, number, "We miss you, C1! 20% off this week.")
    server.add_twilio_message(number, "Your order #8812 has shipped.")
    with TwilioSMS(live_settings(server.base_url)) as sms:
        result = reconcile_sms(engine, sms, now=utcnow() + LATER)
    assert (result.confirmed_sent, result.released) == (0, 1)
    row = rows(engine)[1]
    assert row.state == State.FAILED and row.retryable  # the next run sends it, once
    assert row.body == "We miss you, C1! 20% off this week."


def test_our_message_is_found_among_others_to_the_same_number(engine, server):
    number = NUMBERS[1]
    text = "We miss you, C1! 20% off this week."
    left_in_doubt(engine, 1, number, text)
    server.add_twilio_message(number, "Your order #8812 has shipped.")
    ours = server.add_twilio_message(number, text, status="delivered")
    server.add_twilio_message(number, "Happy birthday from the shop!")
    with TwilioSMS(live_settings(server.base_url)) as sms:
        result = reconcile_sms(engine, sms, now=utcnow() + LATER)
    assert (result.confirmed_sent, result.released) == (1, 0)
    assert rows(engine)[1].state == State.SENT and rows(engine)[1].provider_id == ours


def test_a_message_twilio_has_queued_but_not_sent_counts_as_taken(engine):
    """Regression: the log was read with a DateSent filter, and a message Twilio has
    accepted but not yet sent has no date_sent: the row was released and sent again."""
    with FaultServer(twilio_status="queued") as server:
        settings = live_settings(server.base_url, delivery_read_timeout_seconds=0.5)
        add_customer(engine, 1, mobile=NUMBERS[1], locale="en")
        led = ContactLedger(engine)
        cid = led.claim("winback", "run-1", [(1, "2026")]).owned[(1, "2026")]
        server.script(NUMBERS[1], ["accept_reset"])  # Twilio took it; the answer was lost
        message = make_message(1, "sms", NUMBERS[1], contact_id=cid, body="hello 1",
                               locale="en")  # fmt: skip
        with TwilioSMS(settings) as sms:
            send_chunk(chunk_of(led, settings), sms, "sms", [message])
        assert rows(engine)[1].reason == "connection_lost_unknown"
        [sid] = server.twilio_messages
        assert server.twilio_messages[sid]["date_sent"] is None  # queued, not yet sent
        with TwilioSMS(settings) as sms:
            result = reconcile_sms(engine, sms, now=utcnow() + LATER)
        assert (result.confirmed_sent, result.released) == (1, 0)
        assert rows(engine)[1].state == State.SENT and rows(engine)[1].provider_id == sid
        server.twilio_advance("delivered")  # later its delivery state is fetched
        with TwilioSMS(settings) as sms:
            reconcile_sms(engine, sms, now=utcnow() + timedelta(hours=6))
        assert rows(engine)[1].delivery_state == "delivered"
        assert server.accepted[NUMBERS[1]] == 1


def test_a_dropped_connection_costs_one_row_a_try_not_the_whole_reconciliation(engine, server):
    """Regression: the first connection error ended reconciliation with nothing settled.
    Each question is asked again after a pause; a row Twilio cannot be asked about is
    reported and left for the next reconciliation, the others are settled."""
    texts = {cid: f"We miss you, C{cid}!" for cid in NUMBERS}
    for cid, number in NUMBERS.items():
        left_in_doubt(engine, cid, number, texts[cid])
    server.add_twilio_message(NUMBERS[2], texts[2])  # 2 went out; 1 and 3 did not
    pauses: list[float] = []
    server.log_script = ["reset"] * ASK_ATTEMPTS + ["http:503", "reset"]
    with TwilioSMS(live_settings(server.base_url)) as sms:
        result = reconcile_sms(engine, sms, now=utcnow() + LATER, sleep=pauses.append)
    # row 1: every attempt failed; row 2: a 503 and a reset, then the answer
    assert (result.unanswered, result.confirmed_sent, result.released) == (1, 1, 1)
    assert "connection_lost_unknown" in result.errors[0]
    assert pauses == [1.0, 2.0, 4.0, 1.0, 2.0]  # backoff, per question
    after = rows(engine)
    assert after[1].state == State.FAILED and not after[1].retryable  # still in doubt
    assert after[2].state == State.SENT and after[3].retryable
    with TwilioSMS(live_settings(server.base_url)) as sms:
        again = reconcile_sms(engine, sms, now=utcnow() + LATER, sleep=pauses.append)
    assert (again.unanswered, again.released) == (0, 1)  # asked again, settled


def test_a_message_a_dead_run_left_in_flight_is_reconciled_though_no_run_meets_it(
    engine, server
):
    """Regression: a row left ``sending`` by a run that died was settled only when a later
    claim met its key, i.e. when a run selected the customer again for that occasion (a
    birthday: next year). Reconciliation now settles what dead runs hold first."""
    clock = Clock(utcnow())
    led = ContactLedger(engine, clock=clock)
    add_customer(engine, 1, mobile=NUMBERS[1], locale="en")
    add_customer(engine, 2, mobile=NUMBERS[2], locale="en")
    ids = led.claim("birthday", "dead", [(1, "2026"), (2, "2026")]).owned
    row = ids[(1, "2026")]
    led.mark_sending([row], "sms", "dead", {row: (NUMBERS[1], None, "Happy birthday, C1!")})
    ours = server.add_twilio_message(NUMBERS[1], "Happy birthday, C1!", status="queued")
    assert led.settle_abandoned() == (0, 0)  # within the lease: the run may be alive
    clock.now += timedelta(minutes=16)
    assert led.settle_abandoned() == (1, 1)
    assert rows(engine)[2].reason == "run_died"  # the next run sends it
    with TwilioSMS(live_settings(server.base_url)) as sms:
        result = reconcile_sms(engine, sms, now=clock.now + LATER)
    assert result.confirmed_sent == 1 and rows(engine)[1].provider_id == ours


def test_the_reconcile_flow_settles_what_dead_runs_hold(prefect_api, engine):
    from careflow.flows.reconcile import reconcile

    add_customer(engine, 1, mobile=NUMBERS[1], locale="en")
    long_ago = Clock(utcnow() - timedelta(hours=1))  # the run died an hour ago
    led = ContactLedger(engine, clock=long_ago)
    row = led.claim("birthday", "dead", [(1, "2026")]).owned[(1, "2026")]
    led.mark_sending([row], "email", "dead", {row: ("c1@example.com", "Hi", "Happy birthday")})
    summary = reconcile()
    assert summary["email_left_for_a_person"] == 1  # in doubt now, for SendGrid's log
    assert rows(engine)[1].reason == "interrupted"

"""Reconciliation settles messages in doubt by Twilio's own log: none lost, none twice."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from careflow.db.models import ContactHistory
from careflow.ledger import ContactLedger, utcnow
from careflow.messages import State
from channels.sms import TwilioSMS
from flows.reconcile import reconcile_sms
from tests.factories import add_customer
from tests.providers.fault_server import FaultServer
from tests.providers.kit import live_settings, make_message

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

"""``channels: [last_answered, ...]``: a send step goes first by the channel the customer
last replied or clicked on, of those it lists; the others follow in the file's order."""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta

import pytest
from sqlalchemy import insert

from careflow.db.models import ContactEvent
from careflow.errors import ConfigError
from careflow.journey_spec import load_journey
from tests.journeys.conftest import START, advance, dormant, messages, write_journey

ANSWERED = """\
entry: {segment: dormant, parameters: {days: 30}}
steps:
  - {id: first, type: send, channels: [last_answered, sms, email]}
"""


def answered(engine, cid: int, kind: str, channel: str, days_before: int) -> None:
    at = (START - timedelta(days=days_before)).astimezone(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(insert(ContactEvent.__table__), [{
            "customer_id": cid, "kind": kind, "channel": channel, "provider": "test",
            "event_id": uuid.uuid4().hex, "occurred_at": at, "received_at": at,
        }])  # fmt: skip


def test_the_channel_last_answered_on_goes_first(engine, templates, real_clock):
    write_journey(templates, "nudge", ANSWERED, sends=("first",))
    for cid in (1, 2, 3, 4):
        dormant(engine, cid)
    answered(engine, 1, "replied", "email", 5)  # answered by email
    answered(engine, 2, "replied", "email", 9)  # by email, then more lately by SMS
    answered(engine, 2, "replied", "sms", 2)
    answered(engine, 3, "clicked", "email", 1)  # a click answers too
    answered(engine, 4, "delivered", "email", 1)  # a delivery is no answer: the file's order
    advance(real_clock, START)
    assert messages(engine, 1) == [("j_nudge__first", "sent", "email")]
    assert messages(engine, 2) == [("j_nudge__first", "sent", "sms")]
    assert messages(engine, 3) == [("j_nudge__first", "sent", "email")]
    assert messages(engine, 4) == [("j_nudge__first", "sent", "sms")]


def test_a_customer_who_cannot_get_the_answered_channel_gets_the_next(
    engine, templates, real_clock
):
    write_journey(templates, "nudge", ANSWERED, sends=("first",))
    dormant(engine, 1, email=None)  # answered by email once; the address is gone since
    answered(engine, 1, "replied", "email", 3)
    advance(real_clock, START)
    assert messages(engine, 1) == [("j_nudge__first", "sent", "sms")]


@pytest.mark.parametrize(
    ("channels", "problem"),
    [
        ("[last_answered]", "picks among the channels listed with it"),
        ("[sms, sms]", "listed twice"),
        ("[last_answered, pigeon]", "'pigeon' is not a channel"),
    ],
)
def test_last_answered_needs_channels_to_pick_from(tmp_path, channels, problem):
    write_journey(tmp_path, "nudge", ANSWERED.replace("[last_answered, sms, email]", channels),
                  sends=("first",))  # fmt: skip
    with pytest.raises(ConfigError, match=problem):
        load_journey("nudge", tmp_path)

"""Journeys entered on an event (a reply, an order): every event after the journey
started enters its customer once, whatever order the database commits them in."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, insert, select

from careflow.db.models import ContactEvent, Order
from tests.factories import add_customer
from tests.journeys.conftest import START, advance, positions, write_journey

REPLIED = """\
description: Thank a customer who answered
category: care
entry:
  event: replied
steps:
  - {id: thanks, type: send, channels: [sms]}
"""

ORDERED = """\
description: Thank a customer for an order
category: care
entry:
  event: ordered
steps:
  - {id: thanks, type: send, channels: [sms]}
"""


@pytest.fixture
def event_journeys(templates):
    write_journey(templates, "replied_thanks", REPLIED, sends=("thanks",))
    write_journey(templates, "order_thanks", ORDERED, sends=("thanks",))
    return templates


def customer(engine, cid: int) -> int:
    return add_customer(engine, cid, mobile=f"+4479111{cid:05d}", country="GB")


def reply(engine, cid: int, at, event_id: int | None = None) -> None:
    row = {"customer_id": cid, "kind": "replied", "occurred_at": at.replace(tzinfo=None)}
    if event_id is not None:  # an id handed out earlier, by a transaction committing late
        row["id"] = event_id
    with engine.begin() as conn:
        conn.execute(insert(ContactEvent.__table__), [row])


def order(engine, cid: int, at, order_id: int | None = None) -> None:
    row = {
        "customer_id": cid,
        "ordered_at": at.replace(tzinfo=None),
        "ordered_on": at.date(),
        "currency": "GBP",
        "amount_minor": 1000,
    }
    if order_id is not None:
        row["id"] = order_id
    with engine.begin() as conn:
        conn.execute(insert(Order.__table__), [row])


def test_a_reply_after_the_journey_started_enters_once(engine, event_journeys, real_clock):
    customer(engine, 1)
    reply(engine, 1, START - timedelta(days=1))  # before the journey existed: not an entry
    advance(real_clock, START, "replied_thanks")
    assert positions(engine, "replied_thanks") == {}
    reply(engine, 1, START + timedelta(minutes=1))
    advance(real_clock, START + timedelta(minutes=5), "replied_thanks")
    advance(real_clock, START + timedelta(minutes=10), "replied_thanks")
    assert list(positions(engine, "replied_thanks")) == [1]


def test_an_order_enters_however_many_contact_events_there_are(engine, event_journeys, real_clock):
    """Regression: the journey's first look started reading orders from the newest
    *contact event's* id, so with more events than orders no order ever entered."""
    customer(engine, 1)
    for minute in range(5):  # contact events outnumber orders, as in every real shop
        reply(engine, 1, START - timedelta(days=2, minutes=minute))
    order(engine, 1, START - timedelta(days=2))
    advance(real_clock, START, "order_thanks")
    order(engine, 1, START + timedelta(minutes=1))
    advance(real_clock, START + timedelta(minutes=5), "order_thanks")
    assert list(positions(engine, "order_thanks")) == [1]


@pytest.mark.parametrize("source", ["reply", "order"])
def test_an_event_committed_after_a_later_one_still_enters(
    engine, event_journeys, real_clock, source
):
    """Regression: entries read events above the highest id seen, but ids are handed out
    when a row is inserted and become visible when its transaction commits: an event
    whose transaction committed after a later one's was never read (PostgreSQL commits
    concurrent writers in any order)."""
    journey = "replied_thanks" if source == "reply" else "order_thanks"
    write, table = (reply, ContactEvent) if source == "reply" else (order, Order)
    for cid in (1, 2):
        customer(engine, cid)
    write(engine, 1, START - timedelta(days=1))
    advance(real_clock, START, journey)
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(table.id))).scalar()
    # customer 2's transaction took id newest+5 and committed; customer 1's took newest+2
    # earlier and commits only after the advancer has read customer 2's
    write(engine, 2, START + timedelta(minutes=1), newest + 5)
    advance(real_clock, START + timedelta(minutes=5), journey)
    write(engine, 1, START + timedelta(minutes=1), newest + 2)
    advance(real_clock, START + timedelta(minutes=6), journey)
    assert sorted(positions(engine, journey)) == [1, 2]


def test_a_long_quiet_spell_does_not_read_old_events_again(engine, event_journeys, real_clock):
    """What has been read for longer than the settling time is not read again: an
    advance reads the events of its last few minutes, not the whole table."""
    from careflow.journeys import advance as adv

    customer(engine, 1)
    advance(real_clock, START, "replied_thanks")
    reply(engine, 1, START + timedelta(minutes=1))
    for hours in (1, 2, 3):
        advance(real_clock, START + timedelta(hours=hours), "replied_thanks")
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(ContactEvent.id))).scalar()
        assert adv.entry_read_from(conn, "replied_thanks") == newest
    assert list(positions(engine, "replied_thanks")) == [1]


def test_a_journey_whose_entry_changes_to_orders_starts_from_the_newest_order(
    engine, event_journeys, real_clock
):
    """An edited entry (replied -> ordered) reads orders from the moment of the edit, not
    from the contact events' position."""
    customer(engine, 1)
    advance(real_clock, START, "replied_thanks")
    order(engine, 1, START - timedelta(days=400))  # an old order: no entry
    write_journey(event_journeys, "replied_thanks", ORDERED, sends=("thanks",))
    advance(real_clock, START + timedelta(minutes=5), "replied_thanks")
    assert positions(engine, "replied_thanks") == {}
    order(engine, 1, START + timedelta(minutes=6))
    advance(real_clock, START + timedelta(minutes=10), "replied_thanks")
    assert list(positions(engine, "replied_thanks")) == [1]
    assert date(2026, 6, 1) == positions(engine, "replied_thanks")[1].entered_on

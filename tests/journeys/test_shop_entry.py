"""Journeys on the shop's own events (POST /events): a welcome series entered on a
sign-up, an abandoned cart that waits for the order, a custom event. The events are
read and recorded as `careflow serve` reads and records a post (shop_events.parse,
shop_record.record_shop_events), at fake instants."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from careflow.errors import ConfigError
from careflow.journey_spec import load_journey
from careflow.shop_events import parse
from careflow.shop_record import record_shop_events
from tests.factories import add_customer
from tests.journeys.conftest import START, advance, messages, positions, steps, write_journey

WELCOME = """\
description: Welcome a new customer
category: marketing
entry:
  event: signed_up
steps:
  - {id: hello, type: send, channels: [sms]}
"""

CART = """\
description: Remind a customer of what they left in their cart
category: marketing
entry:
  event: cart_updated
once: every 7 days
steps:
  - {id: wait, type: wait_for, event: ordered, within: 1 day, then: done, else: remind}
  - {id: remind, type: send, channels: [sms]}
  - {id: done, type: exit}
"""

WISHLIST = """\
description: Tell a customer who wished for something that it is back
category: care
entry:
  event: event:wishlist.added
exit_on: [event:wishlist.removed]
steps:
  - {id: pause, type: wait, days: 2}
  - {id: back, type: send, channels: [sms]}
"""


@pytest.fixture
def shop_journeys(templates, monkeypatch):
    monkeypatch.setenv("CAREFLOW_FREQUENCY_CAP", "off")
    write_journey(templates, "welcome", WELCOME, sends=("hello",))
    write_journey(templates, "cart", CART, sends=("remind",))
    write_journey(templates, "wishlist", WISHLIST, sends=("back",))
    return templates


def post(engine, real_clock, *events, backfill=False, ago=timedelta(minutes=1)) -> dict:
    """The shop posts ``events`` (occurred ``ago`` before the clock); the answers by id."""
    now = real_clock()
    for e in events:
        e.setdefault("occurred_at", (now - ago).isoformat())
    body = json.dumps({"events": list(events), "backfill": backfill}).encode()
    parsed = parse(body, "shop", now, max_age_hours=72, max_batch=500, first_receipt=0)
    recorded = record_shop_events(engine, parsed.events)
    return {e.event_id: recorded.answers[e.receipt] for e in parsed.events}


def shopper(engine, cid: int) -> None:
    add_customer(engine, cid, external_ref=f"C-{cid}", mobile=f"+4479111{cid:05d}",
                 country="GB")  # fmt: skip


def test_a_sign_up_enters_the_welcome_journey_of_the_customer_it_created(
    engine, shop_journeys, real_clock
):
    advance(real_clock, START, "welcome")  # the journey starts looking
    real_clock.set(START + timedelta(minutes=10))
    answers = post(engine, real_clock, {
        "id": "s1", "type": "signup", "customer": "C-new",
        "profile": {"mobile": "+447911100099", "country": "GB", "locale": "en"},
        "consent": {"channels": ["sms"], "shown": "Yes, text me offers"}})  # fmt: skip
    assert answers["s1"]["customer"] == "created"
    summary = advance(real_clock, START + timedelta(minutes=15), "welcome")
    assert summary["new_entries"] == 1 and summary["sent"] == 1
    (cid,) = positions(engine, "welcome")
    assert messages(engine, cid) == [("j_welcome__hello", "sent", "sms")]


def test_an_abandoned_cart_is_reminded_unless_the_order_comes(engine, shop_journeys, real_clock):
    for cid in (1, 2):
        shopper(engine, cid)
    advance(real_clock, START, "cart")
    real_clock.set(START + timedelta(hours=1))
    post(engine, real_clock, *[{"id": f"cart-{cid}", "type": "cart", "customer": f"C-{cid}",
                                "data": {"items": 2}} for cid in (1, 2)])  # fmt: skip
    assert advance(real_clock, START + timedelta(hours=1, minutes=5), "cart")["new_entries"] == 2
    real_clock.set(START + timedelta(hours=5))
    post(engine, real_clock, {"id": "o-2", "type": "order", "customer": "C-2",
                              "order": {"id": "SO-2", "amount": "20.00", "currency": "GBP"}})
    advance(real_clock, START + timedelta(hours=5, minutes=5), "cart")
    assert steps(engine, 2, "cart")[-2:] == [("wait", "happened"), ("done", "ended")]
    advance(real_clock, START + timedelta(days=1, hours=2), "cart")
    assert steps(engine, 1, "cart")[-3:] == [("wait", "timed_out"), ("remind", "sent"), ("done", "ended")]
    assert messages(engine, 1) == [("j_cart__remind", "sent", "sms")]
    assert messages(engine, 2) == []


def test_an_old_cart_posted_late_enters_nothing_unless_it_is_a_backfill(
    engine, shop_journeys, real_clock
):
    for cid in (1, 2):
        shopper(engine, cid)
    advance(real_clock, START, "cart")
    real_clock.set(START + timedelta(days=5))
    old = timedelta(days=4)  # beyond the 72 hours of the age rule
    post(engine, real_clock, {"id": "late", "type": "cart", "customer": "C-1"}, ago=old)
    post(engine, real_clock, {"id": "back", "type": "cart", "customer": "C-2"}, ago=old,
         backfill=True)  # fmt: skip
    advance(real_clock, START + timedelta(days=5, minutes=5), "cart")
    assert list(positions(engine, "cart")) == [2]


def test_a_custom_event_enters_and_another_ends_the_journey(engine, shop_journeys, real_clock):
    for cid in (1, 2):
        shopper(engine, cid)
    advance(real_clock, START, "wishlist")
    real_clock.set(START + timedelta(hours=1))
    post(engine, real_clock, *[{"id": f"w-{cid}", "type": "custom", "name": "wishlist.added",
                                "customer": f"C-{cid}", "data": {"sku": "85123A"}}
                               for cid in (1, 2)])  # fmt: skip
    assert advance(real_clock, START + timedelta(hours=1, minutes=5), "wishlist")[
        "new_entries"] == 2  # fmt: skip
    real_clock.set(START + timedelta(days=1))
    post(engine, real_clock, {"id": "r-2", "type": "custom", "name": "wishlist.removed",
                              "customer": "C-2"})  # fmt: skip
    # the exit event wakes customer 2 at once, though their wait has a day to go
    summary = advance(real_clock, START + timedelta(days=1, minutes=5), "wishlist")
    assert summary["woken"] == 1 and positions(engine, "wishlist")[2].state == "exited"
    advance(real_clock, START + timedelta(days=2, hours=2), "wishlist")
    assert messages(engine, 1) == [("j_wishlist__back", "sent", "sms")]
    assert messages(engine, 2) == []


@pytest.mark.parametrize("event", ["signedup", "'event:'", "event:Wishlist", "cart"])
def test_an_event_a_journey_cannot_hear_is_one_line_naming_the_choices(tmp_path, event):
    write_journey(tmp_path, "bad", WELCOME.replace("signed_up", event), sends=("hello",))
    with pytest.raises(ConfigError) as raised:
        load_journey("bad", tmp_path)
    assert "signed_up, cart_updated or event:<name>" in str(raised.value)

"""An ``exit_on`` event ends a waiting customer's journey at the next advance, whatever
step they wait in (a seven days' ``wait`` here), not when their wait ends; anything
else leaves the wait as it was. On SQLite and PostgreSQL, at fake instants."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from careflow.db.models import Order
from tests.journeys.conftest import (
    START,
    advance,
    days,
    dormant,
    messages,
    positions,
    steps,
    write_journey,
)
from tests.journeys.test_advance import event
from tests.journeys.test_history import history

#: a message, two one-day waits, then a week's pause before the second message: in the
#: pause the customer waits since they reached the first day's wait (START + 1 day)
PAUSE = """\
description: A message, then a week before the next
category: marketing
entry:
  segment: dormant
  parameters: {days: 30}
exit_on: [ordered, opted_out, "entered:other"]
steps:
  - {id: first, type: send, channels: [sms]}
  - {id: day1, type: wait, days: 1}
  - {id: day2, type: wait, days: 1}
  - {id: pause, type: wait, days: 7}
  - {id: second, type: send, channels: [email]}
"""

OTHER = """\
description: Another journey the same customers may enter
category: marketing
entry:
  segment: dormant
  parameters: {days: 30}
steps:
  - {id: first, type: send, channels: [sms]}
"""

PAUSE_ENDS = (START + days(9)).replace(tzinfo=None)
_ids = itertools.count(900_000)


def order(engine, cid: int, at: datetime) -> None:
    """An order placed at ``at`` (the shop's clock is UTC in these tests), recorded now."""
    wall = at.astimezone(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(insert(Order.__table__), [{
            "id": next(_ids), "customer_id": cid, "ordered_at": wall, "ordered_on": wall.date(),
            "currency": "GBP", "amount_minor": 2500,
        }])  # fmt: skip


def in_the_pause(engine, templates, real_clock, *cids: int) -> None:
    """``cids`` entered at START and wait in the pause from START + 2 days to + 9."""
    write_journey(templates, "pause", PAUSE)
    for cid in cids:
        dormant(engine, cid)
    for at in (START, START + days(1), START + days(2)):
        advance(real_clock, at, "pause")
    for cid in cids:
        pos = positions(engine, "pause")[cid]
        assert (pos.step, pos.state, pos.due_at) == ("pause", "waiting", PAUSE_ENDS)


def test_an_order_during_a_week_s_wait_exits_at_the_next_advance(engine, templates, real_clock):
    in_the_pause(engine, templates, real_clock, 1, 2)
    order(engine, 1, START + days(3))
    summary = advance(real_clock, START + days(3) + timedelta(minutes=5), "pause")
    assert summary["woken"] == 1
    assert summary["exits"] == {"ordered": 1}
    one, two = positions(engine, "pause")[1], positions(engine, "pause")[2]
    assert (one.state, one.exit_reason, one.due_at) == ("exited", "ordered", None)
    assert steps(engine, 1, "pause")[-1] == ("pause", "exited")
    text = history("1")
    assert "journey exited: ordered" in text
    assert "ordered at 2026-06-04 12:00 UTC" in text
    assert "journey waiting" not in text
    # the other customer's wait is untouched, and only they get the second message
    assert (two.state, two.due_at) == ("waiting", PAUSE_ENDS)
    advance(real_clock, START + days(9), "pause")
    assert [m[0] for m in messages(engine, 1)] == ["j_pause__first"]
    assert [m[0] for m in messages(engine, 2)] == ["j_pause__first", "j_pause__second"]


def test_an_opt_out_and_entering_a_named_journey_exit_at_once_too(
    engine, templates, real_clock
):
    in_the_pause(engine, templates, real_clock, 1, 2)
    event(engine, 1, "opted_out", START + days(3))
    summary = advance(real_clock, START + days(3) + timedelta(minutes=5), "pause")
    assert (summary["woken"], summary["exits"]) == (1, {"opted_out": 1})

    write_journey(templates, "other", OTHER)  # exit_on: entered:other
    advance(real_clock, START + days(4), "other")
    summary = advance(real_clock, START + days(4) + timedelta(minutes=5), "pause")
    assert (summary["woken"], summary["exits"]) == (1, {"entered:other": 1})
    assert positions(engine, "pause")[2].exit_reason == "entered:other"


def test_an_order_placed_before_the_wait_and_recorded_during_it_exits_at_once(
    engine, templates, real_clock
):
    """Exit rules count from the entry: an order placed between entering and the pause but
    recorded only during the pause (an import, a late webhook) ends the journey at the next
    advance, not a week later."""
    in_the_pause(engine, templates, real_clock, 1)
    order(engine, 1, START + timedelta(hours=12))
    summary = advance(real_clock, START + days(2) + timedelta(minutes=5), "pause")
    assert summary["woken"] == 1 and summary["exits"] == {"ordered": 1}
    assert positions(engine, "pause")[1].exit_reason == "ordered"


def test_other_events_and_an_order_before_the_entry_leave_the_wait_as_it_was(
    engine, templates, real_clock
):
    in_the_pause(engine, templates, real_clock, 1)
    event(engine, 1, "clicked", START + days(3))  # not an exit rule of this journey
    event(engine, 1, "replied", START + days(3))
    summary = advance(real_clock, START + days(3) + timedelta(minutes=5), "pause")
    assert summary["woken"] == 0
    assert positions(engine, "pause")[1].due_at == PAUSE_ENDS

    # placed half an hour before the customer entered, recorded now: the wake's net (orders
    # by the shop's clock, an hour's slack) takes it, the exact rule does not, and the
    # customer goes back to the same end of the same wait
    order(engine, 1, START - timedelta(minutes=30))
    summary = advance(real_clock, START + days(4), "pause")
    assert summary["woken"] == 1 and summary["exits"] == {}
    pos = positions(engine, "pause")[1]
    assert (pos.step, pos.state, pos.due_at) == ("pause", "waiting", PAUSE_ENDS)
    assert steps(engine, 1, "pause")[-1] == ("day2", "waited")

    advance(real_clock, START + days(9), "pause")
    assert steps(engine, 1, "pause")[-2:] == [("pause", "waited"), ("second", "sent")]

"""A run started by a response follows the responses of the trigger's minute.

Prefect's trigger starts the journey advance on a first response and no other run for
the next minute (prefect.yaml, ``within: 60``). A reply of that minute recorded after
the run's advance would otherwise wait for the five-minute schedule; the run follows
them instead: every few seconds, if a response came, it wakes and advances again. At a
fake clock, with the naps counted instead of slept."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from careflow.db.models import ContactHistory, JourneyStepRecord
from careflow.flows.journey import _merged, advance_journeys, follow_responses
from careflow.journeys.events import response_mark
from careflow.settings import load_settings
from tests.journeys.conftest import START, advance, dormant, positions, steps, write_journey
from tests.journeys.test_advance import event


def test_a_reply_in_the_trigger_s_minute_moves_its_customer_at_the_next_look(
    engine, templates, real_clock
):
    for cid in (1, 2, 3):
        dormant(engine, cid)
    advance(real_clock, START)  # all texted, all waiting for an answer
    first = START + timedelta(hours=1)  # the response that started the run
    mark = response_mark(engine)  # read before the run's advance
    real_clock.set(first + timedelta(seconds=20))  # its advance is over, and then
    event(engine, 2, "replied", real_clock())  # customer 2 answered
    naps = []

    def nap(seconds):
        naps.append(seconds)
        real_clock.set(real_clock() + timedelta(seconds=seconds))
        if len(naps) == 3:  # customer 3 answers while the run follows
            event(engine, 3, "replied", real_clock())

    made = follow_responses("nudge", first + timedelta(seconds=60), load_settings(), sleep=nap,
                            mark=mark)  # fmt: skip
    # an advance at the first look (customer 2), and one at the look after customer 3's
    assert [m[0]["woken"] for m in made] == [1, 1]
    for cid, looked in ((2, 25), (3, 35)):
        assert steps(engine, cid)[-2:] == [("answer", "happened"), ("thanks", "ended")]
        with engine.connect() as conn:
            at = conn.execute(select(JourneyStepRecord.at).where(
                JourneyStepRecord.customer_id == cid, JourneyStepRecord.step == "answer",
            )).scalar_one()  # fmt: skip
        assert at == (first + timedelta(seconds=looked)).replace(tzinfo=None)
    assert positions(engine)[1].step == "answer"  # the other one still waits
    # it looked every few seconds until the minute was over, and no longer
    assert max(naps) <= 5 and sum(naps) == 40


def test_a_follow_up_wakes_only_who_responded_the_schedule_wakes_everyone(
    engine, templates, real_clock
):
    """A follow-up wakes the customers with a response since its last look (no scan of
    every waiting customer every few seconds); a response it does not see (here: one
    below the mark that no advance took; live: an id handed out before the mark and
    committed after the run's advance) is the schedule's."""
    dormant(engine, 1)
    dormant(engine, 2)
    advance(real_clock, START)
    event(engine, 1, "replied", START + timedelta(minutes=30))  # nobody advanced since
    real_clock.set(START + timedelta(hours=1))
    mark = response_mark(engine)
    event(engine, 2, "replied", real_clock())

    def nap(seconds):
        real_clock.set(real_clock() + timedelta(seconds=seconds))

    made = follow_responses("nudge", real_clock() + timedelta(seconds=5), sleep=nap, mark=mark)
    assert [m[0]["woken"] for m in made] == [1]
    assert positions(engine)[2].state == "done" and positions(engine)[1].step == "answer"
    assert advance(real_clock, real_clock())["woken"] == 1  # the five-minute schedule
    assert positions(engine)[1].state == "done"


def test_nothing_new_no_advance_and_a_late_run_does_not_follow(engine, templates, real_clock):
    dormant(engine, 1)
    advance(real_clock, START)
    real_clock.set(START + timedelta(seconds=30))
    naps = []

    def nap(seconds):
        naps.append(seconds)
        real_clock.set(real_clock() + timedelta(seconds=seconds))

    assert follow_responses("nudge", START + timedelta(seconds=60), sleep=nap) == []
    assert sum(naps) == 30
    naps.clear()  # a run that starts after its minute (it waited for a slot) just advances
    assert follow_responses("nudge", START, sleep=nap) == [] and naps == []


THANK = """\
description: Thank who answers
category: care
entry:
  segment: dormant
  parameters: {days: 30}
steps:
  - {id: first, type: send, channels: [sms]}
  - {id: answer, type: wait_for, event: [replied], within: 3 days, then: thanks, else: done}
  - {id: thanks, type: send, channels: [sms]}
  - {id: done, type: exit}
"""


def test_a_run_that_followed_counts_the_follow_ups_messages_in_its_summary(
    engine, templates, real_clock
):
    """Regression: the flow's summary of a run that followed responses added the
    follow-ups' steps, entries and wakes to its first advance's, but not their messages:
    a thank-you sent while following was missing from the run's "sent"."""
    write_journey(templates, "thank", THANK, sends=("first", "thanks"))
    dormant(engine, 1)
    dormant(engine, 2)
    real_clock.set(START)
    mark = response_mark(engine)
    summaries = advance_journeys("thank", settings=load_settings())
    event(engine, 2, "replied", START + timedelta(seconds=2))  # after the advance

    def nap(seconds):
        real_clock.set(real_clock() + timedelta(seconds=seconds))

    made = follow_responses("thank", START + timedelta(seconds=60), sleep=nap, mark=mark)
    (run,) = _merged(summaries, made)
    with engine.connect() as conn:
        sent = conn.execute(select(func.count()).where(
            ContactHistory.state == "sent", ContactHistory.campaign.like("j_thank__%"),
        )).scalar_one()  # fmt: skip
    assert sent == 3  # the first SMS to both, the thank-you to customer 2
    assert (run["sent"], run["selected"], run["steps"]["sent"]) == (3, 3, 3)

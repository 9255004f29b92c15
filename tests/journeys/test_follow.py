"""A run started by a response follows the responses of the trigger's minute.

Prefect's trigger starts the journey advance on a first response and no other run for
the next minute (prefect.yaml, ``within: 60``). A reply of that minute recorded after
the run's advance would otherwise wait for the five-minute schedule; the run follows
them instead: every few seconds, if a response came, it wakes and advances again. At a
fake clock, with the naps counted instead of slept."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from careflow.db.models import JourneyStepRecord
from careflow.flows.journey import follow_responses
from careflow.settings import load_settings
from tests.journeys.conftest import START, advance, dormant, positions, steps
from tests.journeys.test_advance import event


def test_a_reply_in_the_trigger_s_minute_moves_its_customer_at_the_next_look(
    engine, templates, real_clock
):
    dormant(engine, 1)
    dormant(engine, 2)
    advance(real_clock, START)  # both texted, both waiting for an answer
    first = START + timedelta(hours=1)  # the response that started the run
    real_clock.set(first + timedelta(seconds=20))  # its advance is over
    naps = []

    def nap(seconds):
        naps.append(seconds)
        real_clock.set(real_clock() + timedelta(seconds=seconds))
        if len(naps) == 3:  # customer 2 answers in the minute, after the run's advance
            event(engine, 2, "replied", real_clock())

    made = follow_responses("nudge", first + timedelta(seconds=60), load_settings(), sleep=nap)
    # one more advance, for the one new response, at the look after it
    assert len(made) == 1 and made[0][0]["steps"] == {"happened": 1, "ended": 1}
    assert steps(engine, 2)[-2:] == [("answer", "happened"), ("thanks", "ended")]
    with engine.connect() as conn:
        at = conn.execute(select(JourneyStepRecord.at).where(
            JourneyStepRecord.customer_id == 2, JourneyStepRecord.step == "answer")).scalar_one()
    assert at == (first + timedelta(seconds=35)).replace(tzinfo=None)
    assert positions(engine)[1].step == "answer"  # the other one still waits
    # it looked every few seconds until the minute was over, and no longer
    assert max(naps) <= 5 and sum(naps) == 40


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

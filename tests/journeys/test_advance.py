"""Journeys advanced over fake days through the real route and ledger, on SQLite and
PostgreSQL: entries once per key, every step type, exits, waits in the customer's zone,
quiet hours, concurrent advancers and a crash between a send and the move."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from careflow.db.models import ContactEvent, JourneyStepRecord
from careflow.flows.journey import sender
from careflow.journey_spec import load_journey
from careflow.journeys import advance as core
from careflow.settings import load_settings
from tests.factories import set_consent
from tests.journeys.conftest import (
    NUDGE,
    START,
    Crash,
    advance,
    days,
    dormant,
    messages,
    positions,
    send_then_crash,
    steps,
    write_journey,
)


def event(engine, cid: int, kind: str, at: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(insert(ContactEvent.__table__), [{
            "customer_id": cid, "kind": kind, "provider": "test", "event_id": uuid.uuid4().hex,
            "occurred_at": at.astimezone(UTC).replace(tzinfo=None),
            "received_at": at.astimezone(UTC).replace(tzinfo=None),
        }])  # fmt: skip


def test_no_answer_takes_the_else_branch_to_the_owner(engine, templates, real_clock):
    dormant(engine, 1, owner="Grace")
    first = advance(real_clock, START)
    assert first["new_entries"] == 1
    assert steps(engine, 1) == [("_entry", "entered"), ("first", "sent")]
    assert messages(engine, 1) == [("j_nudge__first", "sent", "sms")]
    assert positions(engine)[1].step == "answer" and positions(engine)[1].state == "waiting"

    advance(real_clock, START + days(2))  # the window is still open: nothing moves
    assert steps(engine, 1)[-1] == ("first", "sent")

    advance(real_clock, START + days(3))
    assert steps(engine, 1)[2:] == [("answer", "timed_out"), ("second", "sent")]
    assert messages(engine, 1)[1] == ("j_nudge__second", "sent", "email")

    advance(real_clock, START + days(9))  # the 7 days' wait is not over
    assert positions(engine)[1].step == "pause"
    advance(real_clock, START + days(10))
    assert steps(engine, 1)[4:] == [("pause", "waited"), ("call", "notified"), ("thanks", "ended")]
    with engine.connect() as conn:
        note = conn.execute(
            select(JourneyStepRecord.reason, JourneyStepRecord.detail).where(
                JourneyStepRecord.step == "call"
            )
        ).one()
    assert note == ("Grace", "No answer to the SMS or the email")
    assert positions(engine)[1].state == "done"
    assert len(messages(engine, 1)) == 2


def test_a_reply_takes_the_then_branch_as_it_comes(engine, templates, real_clock):
    dormant(engine, 1)
    advance(real_clock, START)
    event(engine, 1, "replied", START + days(1))
    summary = advance(real_clock, START + days(1, ) + timedelta(minutes=5))
    assert summary["woken"] == 1
    assert steps(engine, 1)[2:] == [("answer", "happened"), ("thanks", "ended")]
    assert len(messages(engine, 1)) == 1


def test_a_reply_before_the_customer_reaches_the_wait_counts_at_once(
    engine, templates, real_clock
):
    dormant(engine, 1)
    real_clock.set(START)
    spec = load_journey("nudge", load_settings().templates_dir)
    settings = load_settings()

    def send_then_reply(*args):
        sender(settings)(*args)
        event(engine, 1, "replied", START + timedelta(hours=1))  # answered at once

    core.enter(engine, spec, settings, START)
    core.advance_range(engine, spec, settings, (1, 1), START + timedelta(hours=1),
                       send_then_reply)  # fmt: skip
    assert steps(engine, 1)[-2:] == [("answer", "happened"), ("thanks", "ended")]
    with engine.connect() as conn:
        detail = conn.execute(
            select(JourneyStepRecord.detail).where(JourneyStepRecord.step == "answer")
        ).scalar_one()
    assert detail.startswith("replied at") and "already when the customer arrived" in detail


def test_an_opt_out_between_two_steps_stops_the_next_send(engine, templates, real_clock):
    dormant(engine, 1)
    dormant(engine, 2)
    advance(real_clock, START)
    set_consent(engine, 1, "email", False)  # recorded now: after entering
    with engine.begin() as conn:
        from careflow.db.models import Consent

        conn.execute(
            Consent.__table__.update()
            .where(Consent.customer_id == 1)
            .values(updated_at=(START + days(1)).replace(tzinfo=None))
        )
    summary = advance(real_clock, START + days(3))
    assert summary["exits"] == {"opted_out": 1}
    assert steps(engine, 1)[-1] == ("answer", "exited")
    assert positions(engine)[1].state == "exited" and positions(engine)[1].exit_reason == "opted_out"
    assert [m[0] for m in messages(engine, 1)] == ["j_nudge__first"]
    assert [m[0] for m in messages(engine, 2)] == ["j_nudge__first", "j_nudge__second"]


def test_entry_is_once_per_key(engine, templates, real_clock):
    dormant(engine, 1)
    advance(real_clock, START)
    again = advance(real_clock, START + timedelta(minutes=5))
    assert again["new_entries"] == 0 and len(positions(engine)) == 1
    later = advance(real_clock, START + days(40))  # still dormant, still once
    assert later["new_entries"] == 0


def test_every_n_days_enters_again_after_n_days(engine, templates, real_clock, monkeypatch):
    monkeypatch.setenv("CAREFLOW_FREQUENCY_CAP", "off")  # three messages in two weeks
    write_journey(templates, "nudge", NUDGE + "once: every 14 days\n")
    dormant(engine, 1)
    advance(real_clock, START)
    assert advance(real_clock, START + days(13))["new_entries"] == 0
    assert advance(real_clock, START + days(14))["new_entries"] == 1
    with engine.connect() as conn:
        keys = conn.execute(
            select(JourneyStepRecord.entry_key).where(JourneyStepRecord.step == "first")
        ).scalars().all()
    assert sorted(keys) == ["2026-06-01", "2026-06-15"]  # each entry sent its own first SMS
    assert [m[0] for m in messages(engine, 1)].count("j_nudge__first") == 2


def test_the_holdout_is_drawn_at_entry_and_gets_nothing(engine, templates, real_clock):
    write_journey(templates, "nudge", NUDGE + "holdout: 50%\n")
    for cid in range(1, 21):
        dormant(engine, cid)
    summary = advance(real_clock, START)
    spec = load_journey("nudge", templates)
    held = {
        cid for cid, p in positions(engine).items()
        if core.is_held_out(spec, 0.5, p)
    }  # fmt: skip
    assert 0 < len(held) < 20 and summary["steps"]["held_out"] == len(held)
    for cid in range(1, 21):
        if cid in held:
            assert positions(engine)[cid].state == "held_out" and messages(engine, cid) == []
        else:
            assert messages(engine, cid) == [("j_nudge__first", "sent", "sms")]


BRANCHES = """\
entry: {segment: dormant, parameters: {days: 30}}
steps:
  - id: language
    type: branch
    cases:
      - {when: {locale: zh}, goto: chinese}
    default: ab
  - id: ab
    type: split
    paths: [{share: 50%, goto: left}, {share: 50%, goto: right}]
  - {id: left, type: exit}
  - {id: right, type: exit}
  - {id: chinese, type: exit}
"""


def test_branch_on_locale_and_a_fixed_split(engine, templates, real_clock):
    write_journey(templates, "nudge", BRANCHES, sends=())
    dormant(engine, 1, locale="zh-CN")
    for cid in range(2, 30):
        dormant(engine, cid)
    advance(real_clock, START)
    assert steps(engine, 1) == [("_entry", "entered"), ("language", "branched"),
                                ("chinese", "ended")]  # fmt: skip
    spec = load_journey("nudge", templates)
    ends = {cid: p.step for cid, p in positions(engine).items() if cid != 1}
    assert {"left", "right"} == set(ends.values())
    for cid, end in ends.items():  # the same draw again: a fixed split
        assert core.split_path(spec, spec.step("ab"), positions(engine)[cid]) == end


WAIT_UNTIL = """\
entry: {segment: dormant, parameters: {days: 30}}
steps:
  - {id: morning, type: wait, until: "10:00"}
  - {id: first, type: send, channels: [sms]}
"""


@pytest.mark.parametrize(
    ("zone", "due_utc"),
    [
        # UTC+14: 10:00 on 2 June local is 20:00 UTC on 1 June
        ("Pacific/Kiritimati", datetime(2026, 6, 1, 20, 0)),
        # UTC-12: at noon UTC it is midnight there; 10:00 local is 22:00 UTC
        ("Etc/GMT+12", datetime(2026, 6, 1, 22, 0)),
    ],
)
def test_wait_until_a_local_time_in_far_zones(engine, templates, real_clock, zone, due_utc):
    write_journey(templates, "nudge", WAIT_UNTIL, sends=("first",))
    dormant(engine, 1, time_zone=zone)
    advance(real_clock, START)
    p = positions(engine)[1]
    assert (p.step, p.state, p.due_at) == ("morning", "waiting", due_utc)
    advance(real_clock, due_utc.replace(tzinfo=UTC) - timedelta(minutes=1))
    assert messages(engine, 1) == []
    advance(real_clock, due_utc.replace(tzinfo=UTC))
    assert messages(engine, 1) == [("j_nudge__first", "sent", "sms")]
    with engine.connect() as conn:
        sent_at = conn.execute(select(ContactEvent.id)).all()
    assert sent_at == []


def test_quiet_hours_defer_the_send_which_then_goes_once(engine, templates, real_clock, monkeypatch):
    monkeypatch.setenv("CAREFLOW_QUIET_HOURS", "21:00-09:00")
    dormant(engine, 1, time_zone="Asia/Tokyo")  # noon UTC is 21:00 in Tokyo
    advance(real_clock, START)
    p = positions(engine)[1]
    assert (p.step, p.state, p.waiting_for) == ("first", "waiting", "message")
    assert messages(engine, 1) == [("j_nudge__first", "deferred", "sms")]
    assert steps(engine, 1) == [("_entry", "entered")]
    advance(real_clock, START + timedelta(hours=6))  # 03:00 in Tokyo: still quiet
    assert messages(engine, 1) == [("j_nudge__first", "deferred", "sms")]
    # 09:00 in Tokyo
    advance(real_clock, p.due_at.replace(tzinfo=UTC))
    advance(real_clock, p.due_at.replace(tzinfo=UTC) + timedelta(minutes=5))
    assert messages(engine, 1) == [("j_nudge__first", "sent", "sms")]
    assert steps(engine, 1) == [("_entry", "entered"), ("first", "sent")]
    assert positions(engine)[1].step == "answer"


def test_two_concurrent_advancers_take_each_step_once(engine, templates, real_clock):
    for cid in range(1, 6):
        dormant(engine, cid)
    real_clock.set(START)
    settings = load_settings()
    spec = load_journey("nudge", settings.templates_dir)
    core.enter(engine, spec, settings, START)
    inside, other_done = threading.Event(), threading.Event()
    real_send = sender(settings)

    def held_send(*args):
        inside.set()
        assert other_done.wait(30)  # the second advancer runs while this one is sending
        real_send(*args)

    results = {}

    def first():
        results["a"] = core.advance_range(engine, spec, settings, (1, 10), START, held_send)

    def second():
        assert inside.wait(30)
        try:
            results["b"] = core.advance_range(engine, spec, settings, (1, 10), START, real_send)
        finally:
            other_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results["b"].steps == {}  # everything due was held by the first
    for cid in range(1, 6):
        assert steps(engine, cid) == [("_entry", "entered"), ("first", "sent")]
        assert messages(engine, cid) == [("j_nudge__first", "sent", "sms")]


def test_a_crash_between_the_send_and_the_move_does_not_send_again(
    engine, templates, real_clock
):
    dormant(engine, 1)
    real_clock.set(START)
    settings = load_settings()
    spec = load_journey("nudge", settings.templates_dir)
    core.enter(engine, spec, settings, START)

    with pytest.raises(Crash):
        core.advance_range(engine, spec, settings, (1, 1), START, send_then_crash(settings))
    assert messages(engine, 1) == [("j_nudge__first", "sent", "sms")]
    assert positions(engine)[1].step == "first"  # the move never happened
    # before the lease passes nobody takes it; after, the next advance moves on, no resend
    lease = timedelta(seconds=settings.reservation_lease_seconds)
    advance(real_clock, START + lease - timedelta(seconds=1))
    assert positions(engine)[1].step == "first"
    advance(real_clock, START + lease + timedelta(seconds=1))
    assert positions(engine)[1].step == "answer"
    assert messages(engine, 1) == [("j_nudge__first", "sent", "sms")]
    assert steps(engine, 1) == [("_entry", "entered"), ("first", "sent")]


def test_the_follow_up_flow_sends_a_deferred_journey_message(
    prefect_api, engine, templates, real_clock, monkeypatch
):
    from careflow.flows.deferred import deferred_flow

    monkeypatch.setenv("CAREFLOW_QUIET_HOURS", "21:00-09:00")
    dormant(engine, 1, time_zone="Asia/Tokyo")  # noon UTC is 21:00 in Tokyo
    advance(real_clock, START)
    due = positions(engine)[1].due_at.replace(tzinfo=UTC)
    real_clock.set(due)
    (summary,) = deferred_flow()
    assert summary["campaign"] == "j_nudge__first" and summary["sent"] == 1
    advance(real_clock, due + timedelta(minutes=5))  # the journey reads the ledger: on
    assert messages(engine, 1) == [("j_nudge__first", "sent", "sms")]
    assert steps(engine, 1) == [("_entry", "entered"), ("first", "sent")]

"""One bad event costs only itself; receivers writing at once are safe (both databases)."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from careflow import db
from careflow.db.models import Consent, ContactEvent
from careflow.events import EventKind, InboundEvent
from careflow.responses import record_events
from careflow.service.writer import EventWriter
from careflow.webhooks import twilio
from tests.factories import add_customer
from tests.service.test_serve import events, sent, suppressed
from tests.webhooks.payloads import sid, twilio_inbound

AT = datetime(2026, 11, 22, 9)


def mobile(n: int) -> str:
    return f"+86138{n:08d}"


def customers_texted(engine, count: int) -> None:
    for n in range(1, count + 1):
        add_customer(engine, n, mobile=mobile(n), locale="zh-CN")
        sent(engine, n, "winback", "sms", mobile(n), sid("SM", n))


def stop(n: int, body: str = "STOP") -> InboundEvent:
    """Customer ``n``'s reply, parsed from the form Twilio posts."""
    return twilio.parse_inbound(twilio_inbound(body, mobile(n), n=n), AT)


def refused(n: int) -> InboundEvent:
    """An event the database refuses however it is cleaned: it names a customer who is
    not there (an unsubscribe link for a deleted record)."""
    return InboundEvent(provider="careflow", kind=EventKind.UNSUBSCRIBED,
                        event_id=f"unsubscribe:{n}:winback:2026", occurred_at=AT,
                        channel="email", recipient="gone@example.com", customer_id=n)


def timeline(engine) -> dict[str, tuple[str, str | None]]:
    return {e.event_id: (e.kind, e.detail) for e in events(engine)}


def test_one_bad_event_costs_only_itself(engine):
    """PostgreSQL refused a NUL character, and a value longer than its column, and the
    whole batch's transaction failed with it: 30 STOP replies were lost with one."""
    customers_texted(engine, 30)
    nul = stop(31, "STOP\x00")  # a reply from a number careflow never texted
    long_id = InboundEvent(provider="sendgrid", kind=EventKind.DELIVERED, event_id="x" * 400,
                           occurred_at=AT, channel="email", provider_message_id="m" * 300,
                           recipient="a" * 300 + "@example.com", raw={"k\x00": ["v\x00"]})
    batch = [stop(n) for n in range(1, 16)] + [nul, long_id, refused(999)] + [
        stop(n) for n in range(16, 31)]
    result = record_events(engine, batch)
    assert result.rejected == 1 and result.received == 33
    opted = {mobile(n): "opted_out" for n in range(1, 32)}
    assert suppressed(engine) == {("sms", k): v for k, v in opted.items()}
    kept = timeline(engine)
    assert kept[nul.event_id] == ("opted_out", "STOP")  # stored without its NUL
    (long_key,) = [k for k in kept if k.startswith("xxx")]
    assert len(long_key) <= 160
    kind, why = kept["unsubscribe:999:winback:2026"]
    assert kind == "rejected" and why.startswith("not stored: ")
    # the provider retries them all: nothing new, nothing refused
    again = record_events(engine, batch)
    assert again.duplicates == 33 and again.rejected == 0
    assert len(events(engine)) == 33


def run_writer(write, requests: list[list[InboundEvent]]) -> list:
    """Every request submitted while the first write is held, so the rest are written
    as one batch; returns each request's answer (its result or its exception)."""

    async def main():
        writer = EventWriter(write)
        await writer.start()
        first = asyncio.create_task(writer.submit(requests[0]))
        await asyncio.to_thread(write.started.wait, 30)
        rest = [asyncio.create_task(writer.submit(r)) for r in requests[1:]]
        await asyncio.sleep(0)  # one step each: every request is queued
        write.release.set()
        answers = await asyncio.gather(first, *rest, return_exceptions=True)
        await writer.stop()
        return answers

    return asyncio.run(main())


class HeldWrite:
    """record_events, holding its first call until released; counts its calls."""

    def __init__(self, engine, fail=None):
        self.engine, self.fail, self.calls = engine, fail, []
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, batch):
        self.calls.append(len(batch))
        if len(self.calls) == 1:
            self.started.set()
            self.release.wait(30)
        if self.fail is not None:
            self.fail(batch)
        return record_events(self.engine, batch)


def test_simultaneous_stop_replies_with_a_bad_one_all_get_their_answer(engine):
    customers_texted(engine, 30)
    write = HeldWrite(engine)
    requests = [[stop(n)] for n in range(1, 31)] + [[stop(31, "\x00STOP")], [refused(999)]]
    answers = run_writer(write, requests)
    assert not [a for a in answers if isinstance(a, BaseException)]
    assert write.calls == [1, 31]  # the rest went as one batch
    assert len(suppressed(engine)) == 31


def test_a_request_failing_a_batch_fails_alone_and_an_unreachable_database_fails_all(engine):
    customers_texted(engine, 3)

    def bug(batch):  # anything but the database: a request's own trouble
        if any(e.text == "boom" for e in batch):
            raise ValueError("boom")

    write = HeldWrite(engine, fail=bug)
    answers = run_writer(write, [[stop(1)], [stop(2)], [stop(3, "boom")]])
    assert [isinstance(a, ValueError) for a in answers] == [False, False, True]
    assert set(suppressed(engine)) == {("sms", mobile(1)), ("sms", mobile(2))}

    def down(batch):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    write = HeldWrite(engine, fail=down)
    answers = run_writer(write, [[stop(1)], [stop(2)], [stop(3)]])
    assert all(isinstance(a, OperationalError) for a in answers)
    assert write.calls == [1, 2]  # not retried request by request


# --- two receivers at once ------------------------------------------------------------------
def second_engine(url: str):
    """Another process's engine: its own pool and connections, set up as careflow's."""
    return db.new_engine(url)


def race(engine_a, engine_b, batch_a, batch_b, *, hold_after: str, until_b: str) -> list:
    """A writes ``batch_a`` and holds its transaction open after its first statement
    starting ``hold_after``, until B is about to run one starting ``until_b`` (B has
    read what A has not committed yet). Returns each side's result or exception."""
    held, b_there = threading.Event(), threading.Event()

    def a_after(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith(hold_after) and not held.is_set():
            held.set()
            b_there.wait(30)

    def b_before(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith(until_b):
            b_there.set()

    sa_event.listen(engine_a, "after_cursor_execute", a_after)
    sa_event.listen(engine_b, "before_cursor_execute", b_before)
    out: dict[str, object] = {}

    def run(name, eng, batch, wait=None):
        if wait is not None:
            wait.wait(30)
        try:
            out[name] = record_events(eng, batch)
        except Exception as exc:  # the test reads it
            out[name] = exc
        finally:
            b_there.set()  # never leave A waiting on a B that failed early

    threads = [threading.Thread(target=run, args=("a", engine_a, batch_a)),
               threading.Thread(target=run, args=("b", engine_b, batch_b, held))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sa_event.remove(engine_a, "after_cursor_execute", a_after)
        sa_event.remove(engine_b, "before_cursor_execute", b_before)
    return [out["a"], out["b"]]


@pytest.fixture
def other(db_url):
    eng = second_engine(db_url)
    yield eng
    eng.dispose()


def test_two_receivers_recording_the_same_events_both_succeed_once(engine, other):
    """The provider delivered the same callbacks to both `careflow serve` processes: the
    second hit the unique key on (provider, event id) and failed its whole batch."""
    customers_texted(engine, 3)
    batch = [stop(1), stop(2), stop(3)]
    a, b = race(engine, other, batch, batch, hold_after="INSERT INTO CONTACT_EVENTS",
                until_b="INSERT INTO CONTACT_EVENTS")
    assert not isinstance(a, Exception) and not isinstance(b, Exception), (a, b)
    assert a.duplicates + b.duplicates == 3 and sum(len(r.recorded) for r in (a, b)) == 3
    assert len(events(engine)) == 3 and len(suppressed(engine)) == 3


def test_two_receivers_opting_one_customer_out_at_once_both_succeed(engine, other):
    """Two STOP replies from one customer, received by two processes at once: the
    suppression and the consent row are written by both."""
    customers_texted(engine, 1)
    first, second = stop(1), twilio.parse_inbound(twilio_inbound("退订", mobile(1), n=2), AT)
    a, b = race(engine, other, [first], [second], hold_after="INSERT INTO CONSENTS",
                until_b="INSERT INTO SUPPRESSIONS")
    assert not isinstance(a, Exception) and not isinstance(b, Exception), (a, b)
    assert suppressed(engine) == {("sms", mobile(1)): "opted_out"}
    with engine.connect() as conn:
        assert conn.execute(select(Consent.granted)).scalars().all() == [False]
        assert len(conn.execute(select(ContactEvent.id)).all()) == 2


def test_a_callback_is_written_ahead_of_bulk_posts_queued_before_it():
    """Twilio callbacks waited behind every SendGrid post queued before them (issue 23):
    a one-event request goes in the next batch, bulk posts fill batches of their own."""
    from careflow.service import writer as writer_module

    bulk = writer_module.BULK_BATCH // 2 + 1  # two such posts never share a batch
    batches: list[list[str]] = []
    started, release = threading.Event(), threading.Event()

    def write(batch):
        batches.append(sorted({e.provider for e in batch}))
        if len(batches) == 1:
            started.set()
            release.wait(30)
        return None

    def post(provider: str, n: int) -> list[InboundEvent]:
        return [InboundEvent(provider=provider, kind=EventKind.DELIVERED, event_id=f"{i}",
                             occurred_at=AT, channel="email") for i in range(n)]

    async def main():
        writer = EventWriter(write)
        await writer.start()
        first = asyncio.create_task(writer.submit(post("first", 1)))
        await asyncio.to_thread(started.wait, 30)
        later = [asyncio.create_task(writer.submit(post("sendgrid", bulk))) for _ in range(3)]
        await asyncio.sleep(0)
        later.append(asyncio.create_task(writer.submit(post("twilio", 1))))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, *later)
        await writer.stop()

    asyncio.run(main())
    assert batches == [["first"], ["sendgrid", "twilio"], ["sendgrid"], ["sendgrid"]]

"""The compliance monitors (careflow/compliance.py) from SendGrid's events as SendGrid
documents them (tests/webhooks/payloads.py), through the receiver's own parse and
record_events, on both databases."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import delete

from careflow import responses
from careflow.cli.main import main
from careflow.compliance import domain_days, opt_out_days
from careflow.db.models import Suppression
from careflow.events import EventKind, InboundEvent
from careflow.ledger import ContactLedger
from careflow.messages import Outcome
from careflow.responses import record_events
from careflow.settings import PROJECT_ROOT
from careflow.webhooks import sendgrid
from tests.factories import add_customer
from tests.webhooks.payloads import sendgrid_blocked, sendgrid_event

DAY = date(2026, 11, 21)


def _at(day: date, hour: int = 10, minute: int = 0) -> int:
    """A unix timestamp as SendGrid sends it."""
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).timestamp())


def post(engine, events: list[dict]) -> None:
    """What careflow serve does with a verified SendGrid post."""
    record_events(engine, sendgrid.parse(events))


def sendgrid_day(day: date, delivered: int, spam: int, bounced: int = 0, blocked: int = 0,
                 start: int = 0) -> list[dict]:
    """One day's events of ``delivered`` messages, ``spam`` of them reported as spam, and
    ``bounced`` hard and ``blocked`` bounces besides; with the noise SendGrid also posts
    (processed, open, click, deferred), which no rate counts."""
    out = []
    for n in range(start, start + delivered):
        email, at = f"c{n}@gmail.example", _at(day, 8 + n % 12)
        out += [sendgrid_event("processed", email, n, at=at),
                sendgrid_event("delivered", email, n, at=at + 5)]
        if n % 50 == 0:
            out += [sendgrid_event("open", email, n, at=at + 60),
                    sendgrid_event("click", email, n, at=at + 90)]
        if n - start < spam:
            out.append(sendgrid_event("spamreport", email, n, at=at + 600))
    for n in range(start + delivered, start + delivered + bounced):
        out += [sendgrid_event("deferred", f"b{n}@mail.example", n, at=_at(day)),
                sendgrid_event("bounce", f"b{n}@mail.example", n, at=_at(day, 11))]
    first = start + delivered + bounced
    out += [sendgrid_blocked(f"k{n}@mail.example", n, timestamp=_at(day, 12))
            for n in range(first, first + blocked)]
    return out


def test_the_report_counts_each_days_events_once_and_marks_the_thresholds(
    engine, monkeypatch, real_clock
):
    monkeypatch.setenv("CAREFLOW_SENDGRID_FROM_EMAIL", "care@Shop.Example.com")
    real_clock.set(datetime(2026, 11, 23, 12, tzinfo=UTC))
    day1 = sendgrid_day(DAY, delivered=1500, spam=6, bounced=30, blocked=10)
    day2 = sendgrid_day(DAY + timedelta(days=1), delivered=500, spam=1, start=10_000)
    day3 = sendgrid_day(DAY + timedelta(days=2), delivered=2000, spam=3, start=20_000)
    post(engine, day1 + day2 + day3)
    post(engine, day1[:700])  # SendGrid retries a post: nothing is counted twice

    days = {d.day: d for d in domain_days(engine, "shop.example.com", DAY, DAY + timedelta(2))}
    first, second, third = days[DAY], days[DAY + timedelta(1)], days[DAY + timedelta(2)]
    assert (first.delivered, first.spam_reports, first.bounced) == (1500, 6, 40)
    assert first.spam_rate == pytest.approx(0.004)
    assert first.bounce_rate == pytest.approx(40 / 1540)
    assert first.verdict(0.003, 1000) == "over limit"
    assert second.verdict(0.003, 1000) == "too few"  # 0.2% of only 500
    assert third.verdict(0.003, 1000) == "warn"  # 0.15%: over Google's 0.1%, under the limit

    runner = CliRunner()
    out = runner.invoke(main, ["report", "compliance", "--days", "30", "--json"])
    assert out.exit_code == 0, out.output
    found = json.loads(out.output)
    assert found["domain"] == "shop.example.com"
    assert found["limit_rate"] == 0.003 and found["min_delivered"] == 1000
    # the days add up to the events posted
    assert sum(d["delivered"] for d in found["domain_days"]) == 1500 + 500 + 2000
    assert sum(d["spam_reports"] for d in found["domain_days"]) == 6 + 1 + 3
    assert sum(d["bounced"] for d in found["domain_days"]) == 40
    assert [d["day"] for d in found["domain_days"]] == ["2026-11-23", "2026-11-22", "2026-11-21"]

    text = runner.invoke(main, ["report", "compliance", "--days", "30"]).output
    line = next(row for row in text.splitlines() if "2026-11-21" in row)
    assert "0.40% OVER LIMIT" in line and "1,500" in line and "2.60%" in line
    assert "0.20% (too few to judge)" in text and "0.15% over 0.1%" in text
    assert "limit 0.30%" in text and "warn over 0.10%" in text

    # docs/compliance.md shows this very report: its header and domain table are true
    shown = CliRunner().invoke(main, ["report", "compliance", "--days", "5"]).output
    doc = (PROJECT_ROOT / "docs" / "compliance.md").read_text(encoding="utf-8")
    example = doc.split("```\nsending domain", 1)[1].split("\n\nopt-out", 1)[0]
    assert shown.startswith("sending domain" + example + "\n\nopt-out")


def test_the_report_leaves_out_days_before_its_window(engine, real_clock):
    real_clock.set(datetime(2026, 11, 23, 12, tzinfo=UTC))
    post(engine, sendgrid_day(DAY - timedelta(days=10), delivered=10, spam=1)
         + sendgrid_day(DAY, delivered=20, spam=0, start=100))
    found = json.loads(CliRunner().invoke(
        main, ["report", "compliance", "--days", "3", "--json"]).output)
    assert [(d["day"], d["delivered"]) for d in found["domain_days"]] == [("2026-11-21", 20)]


def _sms_sent(engine, cid: int, number: str) -> None:
    add_customer(engine, cid, mobile=number)
    led = ContactLedger(engine)
    row = led.claim("winback", "r", [(cid, "2026")]).owned[(cid, "2026")]
    led.mark_sending([row], "sms", "r")
    led.record([Outcome.sent(row, f"SM{cid}")], "r", {row: {"recipient": number}})


def test_the_time_from_an_opt_out_to_its_suppression_is_its_worst_case_per_day(
    engine, monkeypatch, real_clock
):
    """Every route: SendGrid's unsubscribe and spam report (posted late, as after an
    outage of careflow serve), a STOP reply, the one-click POST; p100 is the slowest."""
    real_clock.set(datetime(2026, 11, 24, 12, tzinfo=UTC))
    t0 = datetime(2026, 11, 21, 9)
    clock = {"now": t0}
    monkeypatch.setattr(responses, "utcnow", lambda: clock["now"])
    add_customer(engine, 7, email="seven@example.com")
    _sms_sent(engine, 8, "+447911123008")

    clock["now"] = t0 + timedelta(minutes=1)  # the one-click POST, recorded at once
    record_events(engine, [InboundEvent(
        provider="careflow", kind=EventKind.UNSUBSCRIBED, event_id="unsubscribe:7:winback:2026",
        occurred_at=t0, channel="email", recipient="seven@example.com", customer_id=7,
        reason="one-click")])  # fmt: skip
    clock["now"] = t0 + timedelta(seconds=5)  # STOP, read as Twilio posts it
    record_events(engine, [InboundEvent(
        provider="twilio", kind=EventKind.REPLIED, event_id="SMstop8", occurred_at=t0,
        channel="sms", recipient="+447911123008", text="STOP")])  # fmt: skip
    clock["now"] = t0 + timedelta(hours=36)  # SendGrid's retries reach careflow late
    post(engine, [
        sendgrid_event("unsubscribe", "u1@example.com", 1, at=_at(DAY, 9)),
        sendgrid_event("spamreport", "s1@example.com", 2, at=_at(DAY, 10)),
    ])  # fmt: skip

    (day,) = opt_out_days(engine, DAY, DAY)
    assert day.opt_outs == 4 and day.applied == 4 and day.not_applied == 0
    assert day.worst_seconds == pytest.approx(36 * 3600)  # u1: 09:00 to 21:00 next day
    assert day.worst_route == "SendGrid unsubscribe"
    assert day.routes == {"one-click / unsubscribe page": 1, "SMS reply (STOP, 退订)": 1,
                          "SendGrid unsubscribe": 1, "SendGrid spam report": 1}
    assert day.within_deadline  # a day and a half: within Gmail's and Yahoo's 2 days
    text = CliRunner().invoke(main, ["report", "compliance", "--days", "30"]).output
    assert "1.5 days" in text and "LATE" not in text and "NOT APPLIED" not in text

    clock["now"] = datetime(2026, 11, 24, 9)  # three days after the customer asked
    post(engine, [sendgrid_event("unsubscribe", "u2@example.com", 3, at=_at(DAY, 9))])
    (day,) = opt_out_days(engine, DAY, DAY)
    assert day.worst_seconds == pytest.approx(3 * 24 * 3600) and not day.within_deadline
    text = CliRunner().invoke(main, ["report", "compliance", "--days", "30"]).output
    assert "3.0 days LATE" in text


def test_an_opt_out_whose_suppression_is_missing_is_counted_not_applied(engine, real_clock):
    """A suppression removed by hand (or never written) is a broken opt-out; one lifted by
    the customer's own START is not."""
    real_clock.set(datetime(2026, 11, 23, 12, tzinfo=UTC))
    _sms_sent(engine, 8, "+447911123008")
    _sms_sent(engine, 9, "+447911123009")
    at = datetime(2026, 11, 21, 9)
    stop = [InboundEvent(provider="twilio", kind=EventKind.REPLIED, event_id=f"SMstop{c}",
                         occurred_at=at, channel="sms", recipient=f"+4479111230{c:02d}",
                         text="STOP") for c in (8, 9)]
    record_events(engine, stop)
    record_events(engine, [InboundEvent(
        provider="twilio", kind=EventKind.REPLIED, event_id="SMstart9",
        occurred_at=at + timedelta(hours=1), channel="sms", recipient="+447911123009",
        text="START")])  # fmt: skip
    with engine.begin() as conn:
        conn.execute(delete(Suppression).where(Suppression.address == "+447911123008"))

    (day,) = opt_out_days(engine, DAY, DAY)
    assert (day.opt_outs, day.applied, day.not_applied, day.opted_in_again) == (2, 0, 1, 1)
    assert not day.within_deadline
    text = CliRunner().invoke(main, ["report", "compliance", "--days", "30"]).output
    assert "1 NOT APPLIED" in text

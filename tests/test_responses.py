"""careflow/responses.py against the event type, without HTTP."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from careflow.db.models import ContactEvent
from careflow.events import EventKind, InboundEvent
from careflow.ledger import ContactLedger
from careflow.messages import Outcome
from careflow.responses import record_events
from tests.factories import add_customer

AT = datetime(2026, 11, 22, 9)


def _event(event_id, kind, **kw):
    return InboundEvent(provider="sendgrid", kind=kind, event_id=event_id, occurred_at=AT,
                        channel="email", **kw)


def test_several_events_of_one_message_in_one_batch_all_find_it(engine):
    """Only the last of them was matched when they shared careflow's ledger key."""
    add_customer(engine, 1, email="a@example.com")
    led = ContactLedger(engine)
    cid = led.claim("winback", "r", [(1, "2026")]).owned[(1, "2026")]
    led.mark_sending([cid], "email", "r")
    led.record([Outcome.sent(cid, "MSG1")], "r", {cid: {"recipient": "a@example.com"}})
    batch = [
        _event("e1", EventKind.DELIVERED, contact_key="winback:1:2026"),
        _event("e2", EventKind.OPENED, contact_key="winback:1:2026"),
        _event("e3", EventKind.CLICKED, provider_message_id="MSG1"),
        _event("e4", EventKind.OPENED, provider_message_id="MSG1"),
    ]
    result = record_events(engine, batch)
    assert result.unmatched == 0
    with engine.connect() as conn:
        assert set(conn.execute(select(ContactEvent.contact_id)).scalars()) == {cid}


def test_recipients_sharing_one_request_each_get_their_own_events(engine):
    """Identical mail to several recipients goes out as one SendGrid request, so
    their ledger rows share its X-Message-Id; an event without careflow's key
    must still find its own recipient's row, not the last one with that id."""
    led = ContactLedger(engine)
    ids = {}
    for n in (1, 2, 3):
        add_customer(engine, n, email=f"c{n}@example.com")
        ids[n] = led.claim("notice", "r", [(n, "2026")]).owned[(n, "2026")]
    led.mark_sending(list(ids.values()), "email", "r")
    led.record([Outcome.sent(c, "SHARED1") for c in ids.values()], "r",
               {c: {"recipient": f"c{n}@example.com"} for n, c in ids.items()})
    batch = [_event(f"e{n}", EventKind.DELIVERED, provider_message_id="SHARED1",
                    recipient=f"C{n}@example.com") for n in (1, 2, 3)]
    result = record_events(engine, batch)
    assert result.unmatched == 0
    with engine.connect() as conn:
        got = dict(conn.execute(select(ContactEvent.event_id, ContactEvent.contact_id)).all())
    assert got == {f"e{n}": ids[n] for n in (1, 2, 3)}


def test_the_demo_hears_back_once(engine):
    """The demo's simulated callbacks go through the live ingestion code, idempotently."""
    from datetime import UTC, date, timedelta

    from careflow.campaigns import load_campaign
    from careflow.clock import utcnow
    from careflow.demo.data import seed_demo
    from careflow.demo.responses import simulate_responses
    from careflow.flows.route import Route, RunPlan, process_batch
    from careflow.report import response_summary
    from careflow.settings import load_settings

    as_of = date(2026, 11, 22)
    seed_demo(engine, as_of=as_of, customers=400)
    settings = load_settings()
    for name in ("winback", "reorder_reminder"):
        spec = load_campaign(name, settings.templates_dir)
        run = RunPlan(spec=spec, run_id=f"demo-{name}", as_of=as_of,
                      at=datetime(2026, 11, 22, 12, tzinfo=UTC), settings=settings)  # fmt: skip
        route = Route.for_run(run)
        route.engine = engine
        process_batch(route, (1, 10_000))
    later = utcnow() + timedelta(hours=3)  # replies and orders come after their message
    first = simulate_responses(engine, window_days=7, shop_zone="UTC", now=later)
    assert first > 0
    assert simulate_responses(engine, window_days=7, shop_zone="UTC", now=later) == 0  # once
    report = {r["campaign"]: r for r in response_summary(engine)}
    assert report["winback"]["delivered"] > 0
    assert report["winback"]["delivered"] <= report["winback"]["sent"]


def test_the_demo_simulates_nothing_after_its_now(engine):
    """Replies, opens and orders were stamped up to hours after the demo ran, so
    `careflow history` showed conversions that had not happened yet: one due later
    than the demo's now is heard at now."""
    from datetime import UTC, date, timedelta

    from sqlalchemy import func

    from careflow.campaigns import load_campaign
    from careflow.db.models import ContactHistory, Order
    from careflow.demo.data import seed_demo
    from careflow.demo.responses import simulate_responses
    from careflow.flows.route import Route, RunPlan, process_batch
    from careflow.ledger import timeline
    from careflow.settings import load_settings

    as_of = date(2026, 11, 22)
    seed_demo(engine, as_of=as_of, customers=400)
    settings = load_settings()
    for name in ("winback", "reorder_reminder"):
        spec = load_campaign(name, settings.templates_dir)
        run = RunPlan(spec=spec, run_id=f"demo-{name}", as_of=as_of,
                      at=datetime(2026, 11, 22, 12, tzinfo=UTC), settings=settings)  # fmt: skip
        route = Route.for_run(run)
        route.engine = engine
        process_batch(route, (1, 10_000))
    with engine.connect() as conn:
        last_sent = conn.execute(select(func.max(ContactHistory.sent_at))).scalar_one()
        before = conn.execute(select(func.max(Order.id))).scalar_one()
    now = last_sent + timedelta(seconds=30)  # the demo's "now": just after it sent
    assert simulate_responses(engine, window_days=7, shop_zone="Asia/Shanghai", now=now) > 0

    with engine.connect() as conn:
        latest_event = conn.execute(select(func.max(ContactEvent.occurred_at))).scalar_one()
        touched = conn.execute(select(ContactHistory.customer_id).distinct()).scalars().all()
        new_orders = conn.execute(
            select(Order.ordered_at).where(Order.id > before)
        ).scalars().all()
    assert latest_event is not None and latest_event <= now
    assert new_orders and max(new_orders) <= now + timedelta(hours=8)  # the shop's clock: UTC+8
    for customer in touched:  # history shows every time in UTC, none after now
        assert all(i["at"] <= now for i in timeline(engine, customer, 0, "Asia/Shanghai"))
    later = now + timedelta(hours=3)  # a later demo run records nothing twice
    assert simulate_responses(engine, window_days=7, shop_zone="Asia/Shanghai", now=later) == 0


def test_a_stop_then_a_start_in_one_batch_are_acted_on_in_the_order_they_came(engine):
    """Twilio's message ids are random: acting in id order would leave this customer,
    who opted back in, suppressed."""
    from careflow.db.models import Suppression

    add_customer(engine, 1, mobile="+8613812345678", locale="zh-CN")
    led = ContactLedger(engine)
    cid = led.claim("winback", "r", [(1, "2026")]).owned[(1, "2026")]
    led.mark_sending([cid], "sms", "r")
    led.record([Outcome.sent(cid, "SM1")], "r", {cid: {"recipient": "+8613812345678"}})
    replies = [InboundEvent(provider="twilio", kind=EventKind.REPLIED, event_id=sid,
                            occurred_at=AT, channel="sms", recipient="+8613812345678", text=text)
               for sid, text in [("SMzz", "STOP"), ("SMaa", "START")]]
    record_events(engine, replies)
    with engine.connect() as conn:
        assert conn.execute(select(Suppression.address)).all() == []


def test_a_batch_of_events_from_many_messages_and_senders_finds_each_ones_own(engine):
    """Ledger keys of two campaigns and replies from two numbers, one batch: each event
    finds its own message, a reply the latest one texted to its sender."""
    led = ContactLedger(engine)
    sent = {}
    for customer, number in ((1, "+8613800000001"), (2, "+8613800000002")):
        add_customer(engine, customer, mobile=number, email=f"c{customer}@example.com")
        for campaign in ("winback", "birthday"):  # birthday is texted last
            row = led.claim(campaign, "r", [(customer, "2026")]).owned[(customer, "2026")]
            led.mark_sending([row], "sms", "r")
            led.record([Outcome.sent(row, f"SM{campaign}{customer}")], "r",
                       {row: {"recipient": number}})
            sent[(campaign, customer)] = row
    batch = [_event(f"k{c}{n}", EventKind.DELIVERED, contact_key=f"{n}:{c}:2026")
             for c in (1, 2) for n in ("winback", "birthday")] + [
        _reply("SMr1", "thanks", "+8613800000001"), _reply("SMr2", "ok", "+8613800000002"),
        _reply("SMr3", "who?", "+8613800000009")]  # fmt: skip
    record_events(engine, batch)
    with engine.connect() as conn:
        got = dict(conn.execute(select(ContactEvent.event_id, ContactEvent.contact_id)).all())
    assert got == {
        **{f"k{c}{n}": sent[(n, c)] for c in (1, 2) for n in ("winback", "birthday")},
        "SMr1": sent[("birthday", 1)], "SMr2": sent[("birthday", 2)], "SMr3": None,
    }  # fmt: skip


# --- consent proof: one record per change, whatever the source (careflow/consent_proof.py) ---


def _proof(engine) -> list[dict]:
    from careflow.db.models import ConsentProof

    with engine.connect() as conn:
        rows = conn.execute(select(ConsentProof.__table__).order_by(ConsentProof.id)).mappings()
        return [dict(r) for r in rows]


def _texted(engine, cid: int, number: str, sid: str, locale: str = "en") -> int:
    add_customer(engine, cid, mobile=number, locale=locale)
    led = ContactLedger(engine)
    row = led.claim("winback", "r", [(cid, "2026")]).owned[(cid, "2026")]
    led.mark_sending([row], "sms", "r")
    led.record([Outcome.sent(row, sid)], "r", {row: {"recipient": number}})
    return row


def _reply(sid, text, number="+8613812345678"):
    return InboundEvent(provider="twilio", kind=EventKind.REPLIED, event_id=sid, occurred_at=AT,
                        channel="sms", provider_message_id=sid, recipient=number, text=text)


def test_a_stop_reply_is_proven_once_with_what_the_customer_sent(engine):
    row = _texted(engine, 1, "+8613812345678", "SM1", locale="zh-CN")
    record_events(engine, [_reply("SMr1", "退订")])
    record_events(engine, [_reply("SMr1", "退订")])  # Twilio posts the same reply again
    [p] = _proof(engine)
    assert (p["customer_id"], p["source"], p["channel"], p["category"]) == (1, "reply", "sms", "all")
    assert (p["consent_before"], p["consent_after"]) == ("none", "withdrawn")
    assert (p["suppression_before"], p["suppression_after"]) == ("none", "opted_out")
    assert p["shown"] == "退订" and p["locale"] == "zh-CN" and p["occurred_at"] == AT
    assert p["evidence"]["provider_message_id"] == "SMr1"
    assert p["evidence"]["answered_message_id"] == "SM1"
    assert p["evidence"]["answered_contact_id"] == row
    assert p["evidence_key"] == "twilio:SMr1"

    record_events(engine, [_reply("SMr2", "STOP")])  # a second STOP: its own proof, no change
    second = _proof(engine)[1]
    assert (second["consent_before"], second["consent_after"]) == ("withdrawn", "withdrawn")
    assert second["suppression_before"] == second["suppression_after"] == "opted_out"


def test_a_start_reply_is_proven_as_consent_given_back(engine):
    _texted(engine, 1, "+8613812345678", "SM1")
    record_events(engine, [_reply("SMa", "STOP"), _reply("SMb", "START")])
    stop, start = _proof(engine)
    assert (stop["consent_after"], stop["suppression_after"]) == ("withdrawn", "opted_out")
    assert (start["consent_before"], start["consent_after"]) == ("withdrawn", "granted")
    assert (start["suppression_before"], start["suppression_after"]) == ("opted_out", "none")


def test_a_reply_that_is_no_keyword_proves_nothing(engine):
    _texted(engine, 1, "+8613812345678", "SM1")
    record_events(engine, [_reply("SMx", "call me back please")])
    assert _proof(engine) == []


def test_bounces_spam_reports_and_provider_opt_outs_are_proven_by_source(engine):
    add_customer(engine, 1, email="a@example.com")
    led = ContactLedger(engine)
    cid = led.claim("winback", "r", [(1, "2026")]).owned[(1, "2026")]
    led.mark_sending([cid], "email", "r")
    led.record([Outcome.sent(cid, "MSG1")], "r", {cid: {"recipient": "a@example.com"}})
    batch = [
        _event("d1", EventKind.DELIVERED, provider_message_id="MSG1", recipient="a@example.com"),
        _event("b1", EventKind.BOUNCED, provider_message_id="MSG1", recipient="a@example.com",
               suppress="bounced", reason="550 5.1.1 no such user"),
        _event("s1", EventKind.SPAM_REPORT, provider_message_id="MSG1",
               recipient="a@example.com"),
        _event("u1", EventKind.UNSUBSCRIBED, provider_message_id="MSG1",
               recipient="a@example.com"),
        InboundEvent(provider="twilio", kind=EventKind.FAILED, event_id="SM7:failed",
                     occurred_at=AT, channel="sms", provider_message_id="SM7",
                     recipient="+8613800000000", reason="21610", suppress="opted_out"),
    ]
    record_events(engine, batch)
    record_events(engine, batch)  # SendGrid retries the whole post
    got = {p["evidence_key"]: p for p in _proof(engine)}
    assert set(got) == {"sendgrid:b1", "sendgrid:s1", "sendgrid:u1", "twilio:SM7:failed"}
    assert got["sendgrid:b1"]["source"] == "bounce"
    assert got["sendgrid:b1"]["evidence"]["reason"] == "550 5.1.1 no such user"
    assert got["sendgrid:b1"]["suppression_after"] == "bounced"
    assert got["sendgrid:b1"]["consent_after"] is None  # a bounce is no opt-out
    assert got["sendgrid:s1"]["source"] == "spam_report"
    assert got["sendgrid:s1"]["suppression_before"] == "bounced"  # the first reason stays
    assert got["sendgrid:u1"]["source"] == "provider"
    assert (got["sendgrid:u1"]["consent_before"], got["sendgrid:u1"]["consent_after"]) == (
        "none", "withdrawn")
    twilio = got["twilio:SM7:failed"]  # no message of ours: the address, no customer
    assert (twilio["source"], twilio["customer_id"], twilio["address"]) == (
        "provider", None, "+8613800000000")


def test_the_timeline_keeps_each_event_as_it_came(engine):
    """The timeline's insert sends its rows as one JSON document (issue 23): every value
    reads back as given, times to the microsecond and comparable with the ledger's,
    payloads (non-ASCII, nested, numbers) as JSON, none as none."""
    from careflow.clock import utcnow

    at = datetime(2026, 11, 22, 9, 30, 5, 123456)
    raw = {"event": "open", "n": 3, "f": 1.5, "tags": ["a", {"b": None}], "名": "退订 é"}
    given = [
        InboundEvent(provider="sendgrid", kind=EventKind.OPENED, event_id="e1", occurred_at=at,
                     channel="email", provider_message_id="m1", recipient="a@example.com",
                     reason="why", raw=raw),
        InboundEvent(provider="careflow", kind=EventKind.UNKNOWN, event_id="e2",
                     occurred_at=datetime(2026, 11, 22), channel="sms", text="STOP 退订"),
    ]  # fmt: skip
    before = utcnow()
    assert record_events(engine, given).received == 2
    with engine.connect() as conn:
        rows = {r.event_id: r for r in conn.execute(select(ContactEvent.__table__))}
        later = conn.execute(
            select(ContactEvent.event_id).where(ContactEvent.occurred_at > datetime(2026, 11, 22))
        ).scalars().all()
    e1, e2 = rows["e1"], rows["e2"]
    assert (e1.provider, e1.kind, e1.occurred_at, e1.channel, e1.provider_id, e1.detail) == (
        "sendgrid", "opened", at, "email", "m1", "why")  # fmt: skip
    assert e1.payload == raw and e1.contact_id is None and e1.customer_id is None
    assert (e2.occurred_at, e2.detail, e2.payload) == (datetime(2026, 11, 22), "STOP 退订", None)
    assert before <= e1.received_at == e2.received_at <= utcnow()
    assert later == ["e1"]  # times compare as times, on SQLite as the text SQLAlchemy writes

"""A sign-up posted to `careflow serve`'s POST /events creates the customer careflow does
not know, completes the one it knows, and grants what the form asked, with its proof."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from careflow.cli.main import main
from careflow.db.models import Consent, ConsentProof, ContactEvent, Customer
from careflow.shop_events import ShopEvent, SignupConsent
from tests.factories import add_customer
from tests.service.test_shop_events import at, order, shop_post, two_receivers

FORM = "Yes, send me offers by SMS and email. Reply TD or unsubscribe at any time."


@pytest.fixture
def shop(served, engine):
    """The service, one customer the shop's import brought (ids from 100 up: the
    database numbers the customers a sign-up creates)."""
    add_customer(engine, 100, external_ref="C-1", mobile="+8613812345678", locale="zh-CN",
                 time_zone="Asia/Shanghai", email=None)  # fmt: skip
    served.clock.now = datetime.now(UTC).replace(microsecond=0)
    return served


def signup(event_id, customer, when, profile=None, consent=None):
    event = {"id": event_id, "type": "signup", "customer": customer, "occurred_at": when}
    if profile is not None:
        event["profile"] = profile
    if consent is not None:
        event["consent"] = consent
    return event


def customer(engine, ref):
    with engine.connect() as conn:
        return conn.execute(select(Customer).where(Customer.external_ref == ref)).one_or_none()


def consents(engine, customer_id):
    with engine.connect() as conn:
        rows = conn.execute(select(Consent).where(Consent.customer_id == customer_id)).all()
    return {(r.channel, r.category): (r.granted, r.source) for r in rows}


def proofs(engine):
    with engine.connect() as conn:
        return conn.execute(select(ConsentProof).order_by(ConsentProof.id)).all()


def test_a_sign_up_creates_its_customer_with_the_consent_its_form_gave(shop, engine):
    when = at(shop, minutes=-3)
    code, answer = shop_post(shop, [
        signup("s1", "C-9", when, profile={
            "full_name": "Mei Lin", "mobile": "+8613900000009", "email": "mei@example.com",
            "locale": "zh_cn", "time_zone": "Asia/Shanghai", "birthday": "1990-11-22",
            "birthday_calendar": "农历", "preferred_channel": "SMS",
            "personal_send_time": False, "country": "CN"},
            consent={"channels": ["sms", "email"], "shown": FORM}),
        order("o1", "C-9", at(shop, minutes=-2), "SO-9"),  # the same post: theirs now
    ])  # fmt: skip
    assert code == 200, answer
    assert answer["events"] == [
        {"id": "s1", "status": "accepted", "triggers": True, "customer": "created"},
        {"id": "o1", "status": "accepted", "triggers": True},
    ]
    c = customer(engine, "C-9")
    assert (c.full_name, c.mobile, c.email, c.locale, c.time_zone, c.birthday.isoformat(),
            c.birthday_calendar, c.preferred_channel, c.personal_send_time, c.country) == (
        "Mei Lin", "+8613900000009", "mei@example.com", "zh-CN", "Asia/Shanghai",
        "1990-11-22", "lunar", "sms", False, "CN")  # fmt: skip
    assert consents(engine, c.id) == {
        ("sms", "marketing"): (True, "signup"), ("email", "marketing"): (True, "signup")}
    # the proof: what the form said, the event it came in, the customer's language
    result = CliRunner().invoke(main, ["consent", "show", "C-9", "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)["records"]
    assert {(r["source"], r["channel"], r["category"]) for r in records} == {
        ("signup", "sms", "marketing"), ("signup", "email", "marketing")}
    assert all(r["shown"] == FORM and r["locale"] == "zh-CN" for r in records)
    assert all(r["evidence"] == {"source": "shop", "event_id": "s1"} for r in records)


def test_a_retried_sign_up_creates_nobody_twice_and_proves_once(shop, engine):
    events = [signup("s1", "C-9", at(shop, minutes=-1), profile={"email": "a@example.com"},
                     consent={"channels": ["email"], "shown": FORM})]  # fmt: skip
    assert shop_post(shop, events)[1]["accepted"] == 1
    code, answer = shop_post(shop, events)
    assert code == 200 and answer["events"] == [{"id": "s1", "status": "duplicate"}]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Customer)).scalar_one() == 2
    assert len(proofs(engine)) == 1


def test_a_known_customer_s_sign_up_fills_in_only_what_careflow_lacks(shop, engine):
    code, answer = shop_post(shop, [signup("s1", "C-1", at(shop, minutes=-1), profile={
        "mobile": "+8613700000000", "email": "c1@example.com", "locale": "en"})])
    assert code == 200 and answer["events"][0] == {
        "id": "s1", "status": "accepted", "triggers": True}  # no "created"
    c = customer(engine, "C-1")
    # the import's mobile and locale stay; the email careflow did not have is taken
    assert (c.mobile, c.locale, c.email) == ("+8613812345678", "zh-CN", "c1@example.com")


def test_a_later_decision_stands_against_an_older_sign_up(shop, engine):
    """A sign-up backfilled from before the customer's opt-out does not undo it; one
    from after it (the customer ticked the box again) does, with its proof."""
    stop = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(days=2)
    with engine.begin() as conn:
        conn.execute(Consent.__table__.insert(), [dict(
            customer_id=100, channel="sms", category="marketing", granted=False, source="reply",
            updated_at=stop)])  # fmt: skip
    form = {"channels": ["sms"], "shown": FORM}
    old = (stop - timedelta(days=5)).isoformat() + "Z"
    code, answer = shop_post(shop, [signup("s-old", "C-1", old, consent=form)], backfill=True)
    assert code == 200 and answer["accepted"] == 1
    assert consents(engine, 100) == {("sms", "marketing"): (False, "reply")}
    assert proofs(engine) == []
    code, answer = shop_post(shop, [signup("s-new", "C-1", at(shop, minutes=-1), consent=form)])
    assert consents(engine, 100) == {("sms", "marketing"): (True, "signup")}
    (proof,) = proofs(engine)
    assert (proof.consent_before, proof.consent_after) == ("withdrawn", "granted")


def test_a_bad_profile_or_consent_refuses_that_sign_up_alone(shop, engine):
    when = at(shop, minutes=-1)
    code, answer = shop_post(shop, [
        signup("field", "N-1", when, profile={"nickname": "x"}),
        signup("locale", "N-2", when, profile={"locale": "xx-NOPE-123"}),
        signup("zone", "N-3", when, profile={"time_zone": "Mars/Olympus"}),
        signup("born", "N-4", when, profile={"birthday": "2999-01-01"}),
        signup("switch", "N-5", when, profile={"personal_send_time": "no"}),
        signup("long", "N-6", when, profile={"mobile": "9" * 41}),
        signup("unshown", "N-7", when, consent={"channels": ["sms"]}),
        signup("pigeon", "N-8", when, consent={"channels": ["pigeon"], "shown": FORM}),
        signup("promise", "N-9", when, consent={"channels": ["sms"], "category":
                                                "transactional", "shown": FORM}),
        order("o", "C-1", when, "SO-1") | {"profile": {"email": "x@example.com"}},
        signup("ok", "N-10", when, profile={"email": "ok@example.com"}),
    ])  # fmt: skip
    assert code == 200, answer
    reasons = {e["id"]: e.get("reason", e["status"]) for e in answer["events"]}
    assert reasons == {
        "field": reasons["field"], "locale": "invalid: profile.locale must be a locale, e.g. en, "
        "zh-CN", "zone": "invalid: profile.time_zone must be an IANA zone, e.g. Asia/Shanghai",
        "born": "invalid: profile.birthday must be a date from 1900-01-01 to today, e.g. "
        "1990-11-22", "switch": "invalid: profile.personal_send_time must be true or false",
        "long": "invalid: profile.mobile is longer than 40 characters",
        "unshown": "invalid: consent.shown must be a non-empty string",
        "pigeon": reasons["pigeon"], "promise": "invalid: consent.category must be marketing "
        "or care", "o": "invalid: profile is taken on a signup only", "ok": "accepted"}  # fmt: skip
    assert reasons["field"].startswith("invalid: profile.nickname is not a customer field")
    assert reasons["pigeon"].startswith("invalid: consent.channels must list channels of sms")
    with engine.connect() as conn:
        refs = set(conn.execute(select(Customer.external_ref)).scalars())
        kept = conn.execute(select(ContactEvent.event_id)).scalars().all()
    assert refs == {"C-1", "N-10"} and kept == ["shop:ok"]


def test_two_receivers_creating_one_customer_at_once_make_one(engine):
    when = datetime(2026, 12, 7, 12)
    form = SignupConsent(("email",), "marketing", FORM)
    batch = [ShopEvent(1, "shop", "s1", "signed_up", "C-9", when, True,
                       profile={"email": "mei@example.com"}, consent=form)]  # fmt: skip
    results = two_receivers(engine, batch)
    assert sorted(r.answers[1]["status"] for r in results) == ["accepted", "duplicate"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Customer)).scalar_one() == 1
    assert len(proofs(engine)) == 1


def test_the_documented_sign_up_creates_its_customer(shop, engine):
    """docs/events.md's sign-up example, posted as it stands (at this service's clock)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text("utf-8")
    section = text.split("## Sign-ups", 1)[1]
    event = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    event["occurred_at"] = at(shop, minutes=-1)
    code, answer = shop_post(shop, [event])
    assert code == 200 and answer["events"][0]["customer"] == "created", answer
    c = customer(engine, event["customer"])
    assert (c.full_name, c.birthday_calendar) == ("林梅", "lunar")
    assert set(consents(engine, c.id)) == {("sms", "marketing"), ("email", "marketing")}

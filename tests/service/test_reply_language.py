"""A reply is read in the language of the message it answers, as that message was sent."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select, update

from careflow.db.models import ContactHistory, Customer
from tests.factories import add_customer
from tests.service.test_serve import events, suppressed
from tests.service.test_twilio_forms import send
from tests.webhooks.payloads import twilio_inbound

MOBILE = "+8613812345678"


def run_birthday() -> None:
    """The birthday campaign's real route on 2026-06-01 (a zh-CN customer's lunar birthday
    is 1990-05-10): rendered, finished, recorded as a run leaves it."""
    from careflow.campaigns import load_campaign
    from careflow.flows.route import Route, RunPlan, process_batch
    from careflow.settings import load_settings

    settings = load_settings()
    spec = load_campaign("birthday", settings.templates_dir)
    run = RunPlan(spec=spec, run_id="bday", as_of=date(2026, 6, 1),
                  at=datetime(2026, 6, 1, 12, tzinfo=UTC), settings=settings)  # fmt: skip
    assert process_batch(Route.for_run(run), (1, 10)).sent == 1


def sent_body(engine) -> str:
    with engine.connect() as conn:
        return conn.execute(select(ContactHistory.body)).scalar_one()


@pytest.mark.parametrize("reply", ["TD", "退订", "t"])
def test_a_customer_without_a_locale_answers_the_default_locales_message(
    served, engine, monkeypatch, reply
):
    """They got the default locale's (zh-CN) message; their TD was read with their empty
    locale, kept as an ordinary reply, and they were texted again."""
    monkeypatch.setenv("CAREFLOW_DEFAULT_LOCALE", "zh-CN")
    add_customer(engine, 1, mobile=MOBILE, locale=None, email=None, birthday=date(1990, 6, 1))
    run_birthday()
    assert "生日快乐" in sent_body(engine)  # the default locale's message
    assert send(served, "/webhooks/twilio/inbound", twilio_inbound(reply, MOBILE))[0] == 200
    assert suppressed(engine) == {("sms", MOBILE): "opted_out"}
    assert events(engine)[0].kind == "opted_out"


def test_a_locale_changed_after_the_message_does_not_change_its_words(served, engine):
    add_customer(engine, 1, mobile=MOBILE, locale="zh-CN", email=None,
                 birthday=date(1990, 5, 10))
    run_birthday()
    with engine.begin() as conn:  # the customer's record is edited after the send
        conn.execute(update(Customer).values(locale="en"))
    assert send(served, "/webhooks/twilio/inbound", twilio_inbound("退订", MOBILE))[0] == 200
    assert suppressed(engine) == {("sms", MOBILE): "opted_out"}


def test_an_english_message_is_not_answered_with_chinese_single_letters(served, engine):
    add_customer(engine, 1, mobile=MOBILE, locale="en", email=None, birthday=date(1990, 6, 1))
    run_birthday()
    assert send(served, "/webhooks/twilio/inbound", twilio_inbound("T", MOBILE))[0] == 200
    assert events(engine)[0].kind == "replied" and suppressed(engine) == {}
    stop = twilio_inbound("STOP", MOBILE, n=2)  # the carriers' words work whatever the language
    assert send(served, "/webhooks/twilio/inbound", stop)[0] == 200
    assert suppressed(engine) == {("sms", MOBILE): "opted_out"}

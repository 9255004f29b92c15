"""Twilio's callbacks as Twilio posts them: every documented parameter, blank ones included,
form-encoded and signed as Twilio does (tests/webhooks/payloads.py)."""

from __future__ import annotations

import pytest

from tests.factories import add_customer
from tests.service.conftest import PUBLIC, TWILIO_TOKEN
from tests.service.test_serve import events, post, row, sent, suppressed
from tests.webhooks.payloads import sid, twilio_inbound, twilio_signed, twilio_status

MOBILE = "+8613812345678"


def send(served, path: str, params, **kw) -> tuple[int, bytes]:
    body, headers = twilio_signed(TWILIO_TOKEN, f"{PUBLIC}{path}", params, **kw)
    return post(served.url + path, body, headers)


@pytest.mark.parametrize("spaces", ["+", "%20"])
def test_a_real_inbound_stop_with_blank_fields_opts_out(served, engine, spaces):
    """FromCity, FromZip, ToCity... arrive blank and are signed: they were dropped before
    the signature was checked, and every genuine reply was refused with 403."""
    add_customer(engine, 1, mobile=MOBILE, locale="zh-CN")
    sent(engine, 1, "winback", "sms", MOBILE, sid("SM", 1))
    params = twilio_inbound("退订 ", MOBILE, OptOutType="")
    code, body = send(served, "/webhooks/twilio/inbound", params, spaces=spaces)
    assert code == 200 and b"<Response>" in body
    assert suppressed(engine) == {("sms", MOBILE): "opted_out"}
    (reply,) = events(engine)
    assert reply.kind == "opted_out" and reply.payload["FromCity"] == ""


def test_a_reply_with_spaces_plus_signs_and_chinese_is_kept_as_sent(served, engine):
    add_customer(engine, 1, mobile=MOBILE, locale="zh-CN")
    sent(engine, 1, "winback", "sms", MOBILE, sid("SM", 1))
    text = "请 周五+周六 再联系我 100% 好吗?&=#"
    for n, spaces in enumerate(["+", "%20"]):
        params = twilio_inbound(text, MOBILE, n=n)
        assert send(served, "/webhooks/twilio/inbound", params, spaces=spaces)[0] == 200
    assert [(e.kind, e.detail) for e in events(engine)] == [("replied", text)] * 2


def test_a_repeated_parameter_is_signed_with_all_its_values(served, engine):
    add_customer(engine, 1, mobile=MOBILE, locale="zh-CN")
    sent(engine, 1, "winback", "sms", MOBILE, sid("SM", 1))
    params = list(twilio_inbound("STOP", MOBILE, OptOutType="STOP").items())
    params += [("AddOns", ""), ("AddOns", '{"status":"successful"}')]
    assert send(served, "/webhooks/twilio/inbound", params)[0] == 200
    assert suppressed(engine) == {("sms", MOBILE): "opted_out"}
    # the same request with one of the values changed is not Twilio's
    body, headers = twilio_signed(TWILIO_TOKEN, f"{PUBLIC}/webhooks/twilio/inbound", params)
    forged = body.replace(b"successful", b"failed")
    assert post(served.url + "/webhooks/twilio/inbound", forged, headers)[0] == 403


@pytest.mark.parametrize("status", ["sent", "delivered", "undelivered", "failed"])
def test_real_status_callbacks_are_accepted(served, engine, status):
    add_customer(engine, 1, mobile=MOBILE)
    message = sid("SM", 7)
    contact = sent(engine, 1, "winback", "sms", MOBILE, message)
    assert send(served, "/webhooks/twilio/status", twilio_status(message, status, MOBILE))[0] == 204
    assert row(engine, contact).delivery_state == status
    assert [e.kind for e in events(engine)] == [status]


def test_a_blank_error_code_is_no_error(served, engine):
    add_customer(engine, 1, mobile=MOBILE)
    message = sid("SM", 8)
    sent(engine, 1, "winback", "sms", MOBILE, message)
    params = twilio_status(message, "delivered", MOBILE, ErrorCode="", ErrorMessage="")
    assert send(served, "/webhooks/twilio/status", params)[0] == 204
    (event,) = events(engine)
    assert event.kind == "delivered" and event.detail is None and suppressed(engine) == {}


def test_a_reply_with_a_nul_character_is_stored_and_acted_on(served, engine):
    """PostgreSQL's text refuses NUL: the request got 503 and Twilio's reply was lost."""
    add_customer(engine, 1, mobile=MOBILE, locale="zh-CN")
    sent(engine, 1, "winback", "sms", MOBILE, sid("SM", 1))
    params = twilio_inbound("STOP\x00", MOBILE, FromCity="\x00")
    assert send(served, "/webhooks/twilio/inbound", params)[0] == 200
    assert suppressed(engine) == {("sms", MOBILE): "opted_out"}
    (reply,) = events(engine)
    assert reply.detail == "STOP" and reply.payload["FromCity"] == ""

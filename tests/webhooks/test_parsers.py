"""Provider modules: verify as each provider signs, parse into one event type."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from careflow.events import EventKind
from tests.providers.kit import sendgrid_webhook_keys
from tests.webhooks.payloads import twilio_inbound, twilio_signed
from webhooks import sendgrid, sinch, twilio

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
RECEIVED = NOW.replace(tzinfo=None)


# --- Twilio ---------------------------------------------------------------------------
TOKEN = "test-auth-token-0123456789abcdef"
URL = "https://care.example.com/webhooks/twilio/status"
STATUS = {"MessageSid": "SM123", "MessageStatus": "delivered", "To": "+8613812345678"}


def test_twilio_signature_is_checked_like_twilio_computes_it():
    signature = RequestValidator(TOKEN).compute_signature(URL, STATUS)
    assert twilio.verify(TOKEN, URL, STATUS, signature)
    assert not twilio.verify(TOKEN, URL, {**STATUS, "MessageStatus": "failed"}, signature)
    assert not twilio.verify(TOKEN, URL.replace("https", "http"), STATUS, signature)  # proxy
    assert not twilio.verify(TOKEN, URL, STATUS, None)
    assert not twilio.verify("", URL, STATUS, signature)


def test_twilio_form_keeps_blank_and_repeated_parameters_for_the_signature():
    pairs = list(twilio_inbound("STOP now", "+8613812345678").items()) + [("AddOns", "a"),
                                                                          ("AddOns", "b")]
    body, headers = twilio_signed(TOKEN, URL, pairs)
    params = twilio.form(body)
    assert params["FromCity"] == "" and params["Body"] == "STOP now"
    assert params.getall("AddOns") == ["a", "b"] and params["AddOns"] == "a"
    assert twilio.verify(TOKEN, URL, params, headers["X-Twilio-Signature"])
    blanks_dropped = {k: v for k, v in params.items() if v}
    assert not twilio.verify(TOKEN, URL, blanks_dropped, headers["X-Twilio-Signature"])


def test_twilio_status_and_reply_map_to_events():
    event = twilio.parse_status({**STATUS, "MessageStatus": "undelivered", "ErrorCode": "30003"},
                                RECEIVED)
    assert (event.kind, event.event_id, event.reason) == (
        EventKind.UNDELIVERED, "SM123:undelivered", "30003")
    reply = twilio.parse_inbound({"MessageSid": "SM9", "From": "+86138", "Body": "退订"}, RECEIVED)
    assert reply.kind == EventKind.REPLIED and reply.text == "退订" and reply.recipient == "+86138"
    with pytest.raises(ValueError):
        twilio.parse_status({"MessageSid": "SM1"}, RECEIVED)


# --- SendGrid ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys():
    return sendgrid_webhook_keys()


def _sign(private, body: bytes, timestamp: str) -> str:
    return base64.b64encode(private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


EVENTS = [
    {"email": "a@example.com", "timestamp": 1795338000, "event": "delivered",
     "sg_event_id": "ev1", "sg_message_id": "MSG1.filter0001", "careflow_key": "winback:7:after-x"},
    {"email": "a@example.com", "timestamp": 1795338060, "event": "bounce",
     "sg_event_id": "ev2", "sg_message_id": "MSG2.filter0001", "type": "bounce"},
]


def test_sendgrid_signed_event_webhook(keys):
    private, public = keys
    body = json.dumps(EVENTS).encode()
    ts = str(int(NOW.timestamp()))
    good = _sign(private, body, ts)
    assert sendgrid.verify(public, body, good, ts, now=NOW)
    assert not sendgrid.verify(public, body + b" ", good, ts, now=NOW)  # tampered
    assert not sendgrid.verify(public, body, good, str(int(ts) - 3600), now=NOW)  # forged ts
    late = NOW.replace(hour=10)  # a captured request replayed an hour later
    assert not sendgrid.verify(public, body, good, ts, now=late)
    assert not sendgrid.verify(public, body, "not base64!", ts, now=NOW)
    assert not sendgrid.verify(public, body, None, ts, now=NOW)


def test_sendgrid_events_map_to_events():
    first, second = sendgrid.parse(EVENTS)
    assert first.kind == EventKind.DELIVERED and first.provider_message_id == "MSG1"
    assert first.contact_key == "winback:7:after-x" and first.event_id == "ev1"
    assert second.kind == EventKind.BOUNCED and second.reason == "bounce"
    with pytest.raises(ValueError):
        sendgrid.parse({"event": "delivered"})


# --- Sinch ------------------------------------------------------------------------------
def test_sinch_callback_needs_the_path_token():
    assert sinch.verify("s3cret-token", "s3cret-token")
    assert not sinch.verify("s3cret-token", "guess")
    assert not sinch.verify("", "")
    event = sinch.parse({"fax": {"id": "F1", "status": "FAILURE", "errorMessage": "busy"}},
                        RECEIVED)
    assert (event.kind, event.event_id, event.reason) == (EventKind.FAILED, "F1:FAILURE", "busy")

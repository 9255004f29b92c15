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
from careflow.webhooks import sendgrid, sinch, twilio
from tests.providers.kit import sendgrid_webhook_keys
from tests.webhooks import payloads
from tests.webhooks.payloads import (
    SENDGRID_EVENTS,
    sendgrid_blocked,
    sendgrid_event,
    twilio_inbound,
    twilio_signed,
    twilio_status,
)

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


@pytest.mark.parametrize(
    "body",
    [
        "",
        "&&a=1&&",
        "Body=Hello+world%21&From=%2B8613800000000&FromCity=&ToZip",
        "a=%zz&b=%e4&c=%C3%A9+x&d==&=e&f=1=2&g=%2B%26%3D",
        "na+me%20x=v+a%2Bl&na+me%20x=second",
        "Body=%F0%9F%98%80%F0%9F%98%80;x=1",
        "Body=中文+退订",
    ],
)
def test_twilio_form_reads_as_parse_qsl_does(body):
    """The form is read without parse_qsl's generic cost (issue 23): the same fields,
    the same values, for everything a form may hold."""
    from urllib.parse import parse_qsl

    read = twilio.form(body.encode())
    pairs = parse_qsl(body, keep_blank_values=True)
    assert dict(read) == dict(reversed(pairs)) and all(
        read.getall(name) == [v for n, v in pairs if n == name] for name in read
    )
    assert twilio.form(body.encode()) == read  # asked again for the same body: the same


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


@pytest.mark.parametrize("status, kind, reason", [
    ("COMPLETED", EventKind.DELIVERED, None),
    ("FAILURE", EventKind.FAILED, "CALL_ERROR 17: Busy"),
    ("IN_PROGRESS", EventKind.QUEUED, None),
])  # fmt: skip
def test_a_documented_sinch_fax_is_read_with_its_time_and_error(status, kind, reason):
    """The fax's completedTime, not the arrival (Sinch retries for days); the error as
    Sinch documents it (errorType, a numeric errorCode, errorMessage); no document kept."""
    fax = payloads.sinch_fax("01KNPQW6SGZKAZEX8ZX7MCN559", status, "+861065529988")
    callback = {"event": "FAX_COMPLETED", "eventTime": "2026-11-22T08:59:48Z", "fax": fax,
                "file": "JVBERi0xLjcK", "fileType": "PDF"}
    event = sinch.parse(callback, RECEIVED)
    assert (event.kind, event.reason, event.recipient) == (kind, reason, "+861065529988")
    assert event.occurred_at == datetime(2026, 11, 22, 8, 59, 47)
    assert event.event_id == f"01KNPQW6SGZKAZEX8ZX7MCN559:{status}"
    assert set(event.raw) == {"event", "eventTime", "fax"}


def test_a_sinch_fax_without_a_time_is_timed_by_its_arrival_and_a_bad_time_is_refused():
    fax = payloads.sinch_fax("F1", "COMPLETED", "+861065529988", completedTime=None)
    assert sinch.parse({"fax": fax}, RECEIVED).occurred_at == RECEIVED
    with pytest.raises(ValueError):
        sinch.parse({"fax": {**fax, "completedTime": "yesterday"}}, RECEIVED)


# --- what each provider's codes mean, read in its own module -------------------------------------
SENDGRID_KINDS = {
    "processed": (EventKind.QUEUED, None),
    "dropped": (EventKind.DROPPED, "dropped"),  # reason "Bounced Address": the address
    "deferred": (EventKind.DEFERRED, None),
    "delivered": (EventKind.DELIVERED, None),
    "bounce": (EventKind.BOUNCED, "bounced"),  # type "bounce": a hard bounce
    "open": (EventKind.OPENED, None),
    "click": (EventKind.CLICKED, None),
    "spamreport": (EventKind.SPAM_REPORT, None),
    "unsubscribe": (EventKind.UNSUBSCRIBED, None),
    "group_unsubscribe": (EventKind.UNSUBSCRIBED, None),
    "group_resubscribe": (EventKind.UNKNOWN, None),
}


@pytest.mark.parametrize("name", SENDGRID_EVENTS)
def test_every_documented_sendgrid_event_maps_with_its_permanence(name):
    (event,) = sendgrid.parse([sendgrid_event(name, "ann@example.com")])
    assert (event.kind, event.suppress) == SENDGRID_KINDS[name]
    assert event.provider_message_id == "14c5d75ce93dfd64b469" and event.channel == "email"


def test_a_blocked_bounce_is_temporary_and_says_so():
    (blocked,) = sendgrid.parse([sendgrid_blocked("ann@example.com")])
    assert blocked.kind == EventKind.BOUNCED and blocked.suppress is None
    assert blocked.reason.startswith("blocked: 550 5.7.1")
    for message_level in ("Recipient List over Package Quota", "Invalid SMTPAPI header",
                          "Spam Content (if spam checker app enabled)"):
        (drop,) = sendgrid.parse([sendgrid_event("dropped", "a@x.com", reason=message_level)])
        assert drop.kind == EventKind.DROPPED and drop.suppress is None


def test_an_unreadable_sendgrid_event_is_rejected_alone():
    good = sendgrid_event("delivered", "a@x.com", 1)
    batch = [sendgrid_event("delivered", "a@x.com", 2, at=10**30), {"event": "open"}, 42, good]
    late, nameless, number, fine = sendgrid.parse(batch)
    assert fine.kind == EventKind.DELIVERED
    assert [e.kind for e in (late, nameless, number)] == [EventKind.REJECTED] * 3
    assert late.event_id == batch[0]["sg_event_id"] and late.reason.startswith("unreadable: ")
    assert nameless.event_id.startswith("unreadable:") and number.raw == {"element": 42}
    assert sendgrid.parse([{"event": "open"}])[0].event_id == nameless.event_id  # a retry


@pytest.mark.parametrize(("code", "suppress"), [
    ("21610", "opted_out"), ("30006", "landline"), ("30005", "unknown_number"),
    ("30003", None), ("30007", None), ("", None),
])
def test_twilio_error_codes_are_read_in_the_twilio_module(code, suppress):
    params = twilio_status("SM1", "undelivered", "+8613812345678", ErrorCode=code)
    assert twilio.parse_status(params, RECEIVED).suppress == suppress

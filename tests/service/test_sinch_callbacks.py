"""Sinch fax callbacks as Sinch posts them, in both documented encodings, over real HTTP.

Sinch posts the fax-completed webhook as multipart/form-data with the fax
document attached, unless the fax asked for application/json (then the
document is in the JSON, in base64). Either way the fax's state reaches its
ledger row and the document is never kept.
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.factories import add_customer
from tests.service.conftest import SINCH_TOKEN
from tests.service.test_serve import events, post, row, sent
from tests.webhooks.payloads import FAX_DOCUMENT, sinch_callback, sinch_fax

FAX_NUMBER = "+861065529988"
ENCODINGS = ["multipart", "json"]


def sinch_post(served, body: bytes, headers: dict) -> tuple[int, bytes]:
    return post(f"{served.url}/webhooks/sinch/{SINCH_TOKEN}", body, headers)


def faxed(engine, fax_id: str) -> int:
    """A fax careflow sent to customer 1 (Sinch's fax id its provider id): its ledger row."""
    add_customer(engine, 1, phone=FAX_NUMBER)
    return sent(engine, 1, "winback", "fax", FAX_NUMBER, fax_id)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("status, state, reason", [
    ("COMPLETED", "delivered", None),
    ("FAILURE", "failed", "CALL_ERROR 17: Busy"),
])  # fmt: skip
def test_a_documented_fax_callback_reaches_the_ledger_row(served, engine, encoding, status,
                                                         state, reason):
    """Before: the service read every Sinch callback as JSON, so Sinch's default
    multipart/form-data callback was a 400 and the fax's outcome was never recorded."""
    contact = faxed(engine, "01KNPQW6SGZKAZEX8ZX7MCN559")
    fax = sinch_fax("01KNPQW6SGZKAZEX8ZX7MCN559", status, FAX_NUMBER)
    assert sinch_post(served, *sinch_callback(fax, encoding))[0] == 204
    assert row(engine, contact).delivery_state == state
    [event] = events(engine)
    assert (event.kind, event.contact_id, event.detail) == (state, contact, reason)
    assert event.payload["fax"]["id"] == fax["id"] and event.payload["event"] == "FAX_COMPLETED"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_the_fax_document_is_never_kept(served, engine, encoding):
    faxed(engine, "F-doc")
    body, headers = sinch_callback(sinch_fax("F-doc", "COMPLETED", FAX_NUMBER), encoding)
    assert sinch_post(served, body, headers)[0] == 204
    [event] = events(engine)
    stored = json.dumps(event.payload)
    assert "file" not in event.payload and "fileType" not in event.payload
    assert base64.b64encode(FAX_DOCUMENT[:300]).decode()[:40] not in stored


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_retried_callback_is_recorded_once(served, engine, encoding):
    """Sinch retries a callback it got no 200 for: the same fax state is one event."""
    contact = faxed(engine, "F-again")
    request = sinch_callback(sinch_fax("F-again", "COMPLETED", FAX_NUMBER), encoding)
    assert [sinch_post(served, *request)[0] for _ in range(2)] == [204, 204]
    assert len(events(engine)) == 1 and row(engine, contact).delivery_state == "delivered"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_fax_someone_sent_us_is_no_delivery(served, engine, encoding):
    """INCOMING_FAX (a fax to careflow's Sinch number) is kept, but as no outcome."""
    fax = sinch_fax("F-in", "COMPLETED", "+12025550123", direction="INBOUND",
                    **{"from": FAX_NUMBER})
    assert sinch_post(served, *sinch_callback(fax, encoding, event="INCOMING_FAX"))[0] == 204
    assert [e.kind for e in events(engine)] == ["unknown"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_callback_past_the_body_bound_is_a_413(served, engine, encoding):
    """The attached document counts toward CAREFLOW_SERVE_MAX_BODY_BYTES (100 KB here)."""
    fax = sinch_fax("F-big", "COMPLETED", FAX_NUMBER)
    body, headers = sinch_callback(fax, encoding, document=FAX_DOCUMENT * 8)
    assert len(body) > served.settings.serve_max_body_bytes
    assert sinch_post(served, body, headers)[0] == 413
    assert events(engine) == []


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded", "text/plain", "application/pdf"])  # fmt: skip
def test_a_body_in_no_documented_encoding_is_a_415(served, engine, content_type):
    body, _ = sinch_callback(sinch_fax("F-415", "COMPLETED", FAX_NUMBER), "json")
    assert sinch_post(served, body, {"Content-Type": content_type})[0] == 415
    assert events(engine) == []


MULTIPART_MALFORMED = [
    # the fax part is no JSON
    (b'--b\r\nContent-Disposition: form-data; name="fax"\r\n\r\n{"id": \r\n--b--\r\n'),
    # no fax part at all
    (b'--b\r\nContent-Disposition: form-data; name="event"\r\n\r\nFAX_COMPLETED\r\n--b--\r\n'),
    # cut short
    (b'--b\r\nContent-Disposition: form-data; name="fax"\r\n\r\n{}'),
]


@pytest.mark.parametrize("body", MULTIPART_MALFORMED, ids=["fax-not-json", "no-fax", "cut"])
def test_a_malformed_multipart_callback_is_a_400(served, engine, body):
    code, answer = sinch_post(served, body, {"Content-Type": "multipart/form-data; boundary=b"})
    assert code == 400 and answer.startswith(b"malformed")
    assert events(engine) == []


def test_the_document_part_is_skipped_unread_even_without_a_file_name(served, engine):
    """A binary ``file`` part with no filename would not decode as text: it is never read."""
    contact = faxed(engine, "F-noname")
    body, headers = sinch_callback(sinch_fax("F-noname", "COMPLETED", FAX_NUMBER), "multipart")
    body = body.replace(b'; filename="fax.pdf"', b"")
    assert sinch_post(served, body, headers)[0] == 204
    assert row(engine, contact).delivery_state == "delivered"

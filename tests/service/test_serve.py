"""careflow serve over real HTTP, with requests signed exactly as the providers sign them."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from datetime import date, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert, select
from twilio.request_validator import RequestValidator

from careflow.db.models import Consent, ContactEvent, ContactHistory, Order, Suppression
from careflow.ledger import ContactLedger
from careflow.messages import Outcome
from careflow.report import response_summary
from careflow.responses import attribute_orders, match_orphans
from careflow.unsubscribe import UnsubscribeTokens
from tests.factories import add_customer
from tests.service.conftest import PUBLIC, SINCH_TOKEN, TWILIO_TOKEN, UNSUB_SECRET


def post(url, body: bytes, headers: dict) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def twilio_post(served, path: str, params: dict, *, signed_url: str | None = None, sign=True):
    body = urllib.parse.urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if sign:  # Twilio signs the public URL it called, not the one behind the proxy
        url = signed_url or f"{PUBLIC}{path}"
        headers["X-Twilio-Signature"] = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    return post(served.url + path, body, headers)


def sendgrid_post(served, events, private, *, at: datetime | None = None, body: bytes | None = None):
    body = json.dumps(events).encode() if body is None else body
    ts = str(int((at or served.clock.now).timestamp()))
    sig = base64.b64encode(private.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return post(served.url + "/webhooks/sendgrid", body, {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": sig,
        "X-Twilio-Email-Event-Webhook-Timestamp": ts,
    })


def sent(engine, cid: int, campaign: str, channel: str, recipient: str, provider_id: str) -> int:
    """A message recorded as sent, as a run would leave it."""
    led = ContactLedger(engine)
    contact = led.claim(campaign, "run-1", [(cid, "2026")]).owned[(cid, "2026")]
    led.mark_sending([contact], channel, "run-1")
    led.record([Outcome.sent(contact, provider_id)], "run-1",
               {contact: {"channel": channel, "recipient": recipient, "body": "hi"}})
    return contact


def events(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(ContactEvent).order_by(ContactEvent.id)).all()


def row(engine, contact_id):
    with engine.connect() as conn:
        return conn.execute(select(ContactHistory).where(ContactHistory.id == contact_id)).one()


def suppressed(engine) -> dict:
    with engine.connect() as conn:
        return {(r.channel, r.address): r.reason for r in conn.execute(select(Suppression))}


# --- Twilio ---------------------------------------------------------------------------------
def test_twilio_status_is_verified_recorded_once_and_never_goes_backwards(served, engine):
    add_customer(engine, 1, mobile="+8613812345678", locale="zh-CN")
    contact = sent(engine, 1, "winback", "sms", "+8613812345678", "SM1")
    path = "/webhooks/twilio/status"
    status = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+8613812345678"}
    assert twilio_post(served, path, status)[0] == 204
    assert twilio_post(served, path, status)[0] == 204  # Twilio retried: recorded once
    late = {**status, "MessageStatus": "sent"}  # arrives after "delivered"
    assert twilio_post(served, path, late)[0] == 204
    assert row(engine, contact).delivery_state == "delivered"
    assert [e.kind for e in events(engine)] == ["delivered", "sent"]
    # forged: signed with another token, or for another URL, or not at all
    forged = {**status, "MessageStatus": "failed"}
    assert twilio_post(served, path, forged, signed_url="http://evil.example/x")[0] == 403
    assert twilio_post(served, path, forged, sign=False)[0] == 403
    assert len(events(engine)) == 2 and row(engine, contact).delivery_state == "delivered"


def test_an_unknown_message_is_kept_and_matched_when_its_send_is_recorded(served, engine):
    add_customer(engine, 1, mobile="+8613812345678")
    status = {"MessageSid": "SM-early", "MessageStatus": "delivered", "To": "+8613812345678"}
    assert twilio_post(served, "/webhooks/twilio/status", status)[0] == 204
    (orphan,) = events(engine)
    assert orphan.contact_id is None and orphan.provider_id == "SM-early"
    contact = sent(engine, 1, "winback", "sms", "+8613812345678", "SM-early")
    assert match_orphans(engine) == 1
    assert events(engine)[0].contact_id == contact
    assert row(engine, contact).delivery_state == "delivered"


@pytest.mark.parametrize("reply", ["退订", "TD", " stop! "])
def test_a_stop_reply_opts_the_customer_out(served, engine, reply):
    add_customer(engine, 1, mobile="+8613812345678", locale="zh-CN")
    sent(engine, 1, "winback", "sms", "+8613812345678", "SM1")
    inbound = {"MessageSid": "SMin1", "From": "+8613812345678", "To": "+1202555", "Body": reply}
    code, body = twilio_post(served, "/webhooks/twilio/inbound", inbound)
    assert code == 200 and b"<Response>" in body
    assert suppressed(engine) == {("sms", "+8613812345678"): "opted_out"}
    with engine.connect() as conn:
        assert conn.execute(select(Consent.granted)).scalar() is False
    assert events(engine)[0].kind == "opted_out"
    # operators can automate on it in Prefect; no contact details travel
    (event,) = [e for e in served.emitted if e["event"] == "careflow.customer.opted-out"]
    assert event["resource"]["prefect.resource.id"] == "careflow.customer.1"
    assert "+86138" not in json.dumps(event)
    # START restores it
    again = {**inbound, "MessageSid": "SMin2", "Body": "START"}
    assert twilio_post(served, "/webhooks/twilio/inbound", again)[0] == 200
    assert suppressed(engine) == {}


def test_a_reply_that_is_not_a_keyword_is_kept_for_a_person(served, engine):
    add_customer(engine, 1, mobile="+8613812345678", locale="zh-CN", owner="陈杰")
    contact = sent(engine, 1, "winback", "sms", "+8613812345678", "SM1")
    inbound = {"MessageSid": "SMin", "From": "+8613812345678", "Body": "请给我回电话"}
    assert twilio_post(served, "/webhooks/twilio/inbound", inbound)[0] == 200
    (reply,) = events(engine)
    assert reply.kind == "replied" and reply.contact_id == contact and reply.customer_id == 1
    assert suppressed(engine) == {}
    # surfaced to the customer's owner
    from careflow.report import replies_by_owner

    ((owner, items),) = replies_by_owner(engine).items()
    assert owner == "陈杰" and items[0]["text"] == "请给我回电话"


def test_malformed_and_oversized_requests_are_4xx(served, engine):
    assert twilio_post(served, "/webhooks/twilio/status", {"MessageSid": "SM1"})[0] == 400
    big = {"MessageSid": "SM1", "MessageStatus": "sent", "Body": "x" * 200_000}
    assert twilio_post(served, "/webhooks/twilio/status", big)[0] == 413
    assert post(served.url + "/webhooks/sendgrid", b"[", {})[0] == 403  # unsigned
    assert events(engine) == []


# --- SendGrid ---------------------------------------------------------------------------------
def test_sendgrid_batches_bounces_suppress_and_replays_change_nothing(served, engine,
                                                                     sendgrid_keys):
    private, _ = sendgrid_keys
    add_customer(engine, 1, email="ann@example.com")
    add_customer(engine, 2, email="bob@example.com")
    c1 = sent(engine, 1, "vip_care", "email", "ann@example.com", "MSG1")
    sent(engine, 2, "vip_care", "email", "bob@example.com", "MSG2")
    batch = [
        {"email": "ann@example.com", "timestamp": 1795338000, "event": "delivered",
         "sg_event_id": "e1", "sg_message_id": "MSG1.filter0", "careflow_key": "vip_care:1:2026"},
        {"email": "ann@example.com", "timestamp": 1795338001, "event": "open",
         "sg_event_id": "e2", "sg_message_id": "MSG1.filter0"},
        {"email": "bob@example.com", "timestamp": 1795338002, "event": "bounce", "type": "bounce",
         "sg_event_id": "e3", "sg_message_id": "MSG2.filter0"},
    ]
    assert sendgrid_post(served, batch, private)[0] == 204
    assert sendgrid_post(served, batch, private)[0] == 204  # a retry of the same post
    assert len(events(engine)) == 3
    assert row(engine, c1).delivery_state == "delivered"
    assert suppressed(engine) == {("email", "bob@example.com"): "bounced"}
    # a captured request replayed an hour later
    served.clock.now += timedelta(hours=1)
    replay = [{**batch[0], "sg_event_id": "e9", "event": "spamreport"}]
    assert sendgrid_post(served, replay, private, at=served.clock.now - timedelta(hours=1))[0] == 403
    assert sendgrid_post(served, None, private, body=b"{not json")[0] == 400
    assert len(events(engine)) == 3 and ("email", "ann@example.com") not in suppressed(engine)


def test_a_suppressed_address_is_skipped_by_the_next_run(served, engine, sendgrid_keys):
    from datetime import UTC

    from careflow.campaigns import load_campaign
    from careflow.flows.route import Route, RunPlan, process_batch
    from careflow.settings import load_settings

    # SMS only; zh-CN keeps the lunar birthday: lunar 4/16, kept on 2026-06-01
    bday = {"locale": "zh-CN", "birthday": date(1990, 5, 10), "email": None}
    add_customer(engine, 1, mobile="+8613812345678", **bday)
    add_customer(engine, 2, mobile="+8613812345679", **bday)
    sent(engine, 1, "winback", "sms", "+8613812345678", "SM1")
    inbound = {"MessageSid": "SMin", "From": "+8613812345678", "Body": "退订"}
    assert twilio_post(served, "/webhooks/twilio/inbound", inbound)[0] == 200
    settings = load_settings()
    spec = load_campaign("birthday", settings.templates_dir)
    run = RunPlan(spec=spec, run_id="bday", as_of=date(2026, 6, 1),
                  at=datetime(2026, 6, 1, 12, tzinfo=UTC), settings=settings)  # fmt: skip
    result = process_batch(Route.for_run(run), (1, 10))
    assert result.sent == 1 and dict(result.skipped) == {"opted_out": 1}


# --- Sinch, unsubscribe, health ---------------------------------------------------------------
def test_sinch_callback_needs_its_token(served, engine):
    body = json.dumps({"fax": {"id": "F1", "status": "COMPLETED"}}).encode()
    headers = {"Content-Type": "application/json"}
    assert post(f"{served.url}/webhooks/sinch/{SINCH_TOKEN}", body, headers)[0] == 204
    assert post(f"{served.url}/webhooks/sinch/wrong-token", body, headers)[0] == 403
    assert [e.kind for e in events(engine)] == ["delivered"]


def test_unsubscribe_page_and_one_click(served, engine):
    add_customer(engine, 1, email="wang@example.com", locale="zh-CN")
    add_customer(engine, 2, email="ann@example.com", locale="en")
    tokens = UnsubscribeTokens(UNSUB_SECRET)
    t1 = tokens.make(1, "winback", "2026", now=served.clock.now)
    page = urllib.request.urlopen(f"{served.url}/unsubscribe?token={t1}").read().decode()
    assert "退订" in page and "w***@example.com" in page and "wang@" not in page
    # RFC 8058: the mailbox provider POSTs List-Unsubscribe=One-Click
    code, body = post(f"{served.url}/unsubscribe?token={t1}", b"List-Unsubscribe=One-Click",
                      {"Content-Type": "application/x-www-form-urlencoded"})
    assert code == 200
    assert post(f"{served.url}/unsubscribe?token={t1}", b"List-Unsubscribe=One-Click", {})[0] == 200
    t2 = tokens.make(2, "winback", "2026", now=served.clock.now)
    code, body = post(f"{served.url}/unsubscribe?token={t2}", b"confirm=yes", {})
    assert code == 200 and b"You are unsubscribed" in body
    with engine.connect() as conn:
        assert {r.customer_id: r.granted for r in conn.execute(select(Consent))} == {
            1: False, 2: False}
    assert [e.kind for e in events(engine)] == ["unsubscribed", "unsubscribed"]
    forged = t1[:-2] + ("AA" if not t1.endswith("AA") else "BB")
    assert post(f"{served.url}/unsubscribe?token={forged}", b"confirm=yes", {})[0] == 400
    served.clock.now += timedelta(days=61)  # expired
    assert post(f"{served.url}/unsubscribe?token={t1}", b"confirm=yes", {})[0] == 400


def test_health(served):
    assert json.loads(urllib.request.urlopen(f"{served.url}/healthz").read()) == {"ok": True}


# --- conversions ------------------------------------------------------------------------------
def test_an_order_after_a_delivered_message_is_a_conversion(served, engine):
    add_customer(engine, 1, mobile="+8613812345678")
    add_customer(engine, 2, mobile="+8613812345679")
    contact = sent(engine, 1, "winback", "sms", "+8613812345678", "SM1")
    sent(engine, 2, "winback", "sms", "+8613812345679", "SM2")  # never delivered
    status = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+8613812345678"}
    assert twilio_post(served, "/webhooks/twilio/status", status)[0] == 204
    sent_at = row(engine, contact).sent_at
    with engine.begin() as conn:
        for oid, cid, days in [(1, 1, 2), (2, 1, 30), (3, 2, 1)]:
            at = sent_at + timedelta(days=days)
            conn.execute(insert(Order), [{"id": oid, "customer_id": cid, "ordered_at": at,
                                          "ordered_on": at.date(), "currency": "GBP",
                                          "amount_minor": 4999}])
    assert attribute_orders(engine, window_days=7) == 1
    assert attribute_orders(engine, window_days=7) == 0  # once
    report = {r["campaign"]: r for r in response_summary(engine)}
    assert report["winback"]["sent"] == 2 and report["winback"]["delivered"] == 1
    assert report["winback"]["converted"] == 1 and report["winback"]["revenue"] == {"GBP": "49.99"}


# --- RFC 8058 one-click, as mailbox providers send it -------------------------------------
def raw_post(url: str, body: bytes, content_type: str | None) -> tuple[int, bytes]:
    """A POST with exactly this Content-Type (or none at all, which urllib cannot send)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Content-Type": content_type} if content_type else {}
    conn.request("POST", f"{parts.path}?{parts.query}", body=body, headers=headers)
    resp = conn.getresponse()
    try:
        return resp.status, resp.read()
    finally:
        conn.close()


def multipart(fields: list[tuple[str, str]], boundary: str, newline: str = "\r\n") -> bytes:
    """multipart/form-data as RFC 7578 writes it (and as Gmail posts a one-click)."""
    lines = []
    for name, value in fields:
        lines += [f"--{boundary}", f'Content-Disposition: form-data; name="{name}"', "", value]
    return newline.join([*lines, f"--{boundary}--", ""]).encode()


B = "----careflowFormBoundary7MA4YWxkTrZu0gW"
ONE_CLICK = [
    ("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click"),
    ("application/x-www-form-urlencoded; charset=UTF-8", b"List-Unsubscribe=One-Click"),
    ("application/x-www-form-urlencoded;charset=iso-8859-1", b"List-Unsubscribe=One-Click"),
    ("application/x-www-form-urlencoded", b"utm_source=gm&List-Unsubscribe=One-Click&x="),
    ("application/x-www-form-urlencoded", b"List%2DUnsubscribe=One%2DClick"),
    ("application/x-www-form-urlencoded", b"List-Unsubscribe%3DOne-Click"),
    (None, b"List-Unsubscribe=One-Click"),
    (f"multipart/form-data; boundary={B}", multipart([("List-Unsubscribe", "One-Click")], B)),
    (f'multipart/form-data; boundary="{B}"',
     multipart([("utm", "1"), ("List-Unsubscribe", "One-Click"), ("x", "")], B)),
    (f"multipart/form-data; charset=utf-8; boundary={B}",
     multipart([("List-Unsubscribe", "One-Click")], B, newline="\n")),
]  # fmt: skip


@pytest.mark.parametrize("content_type, body", ONE_CLICK, ids=[
    "urlencoded", "urlencoded-utf8", "urlencoded-latin1", "other-fields", "percent-encoded",
    "line-percent-encoded", "no-content-type", "multipart", "multipart-other-fields",
    "multipart-lf-charset"])  # fmt: skip
def test_a_one_click_post_in_any_encoding_providers_use_unsubscribes(served, engine,
                                                                     content_type, body):
    """Before: a byte search for List-Unsubscribe=One-Click; a multipart one-click (what
    RFC 8058 recommends, and Gmail posts) was answered 200 and recorded nothing."""
    add_customer(engine, 1, email="wang@example.com", locale="zh-CN")
    token = UnsubscribeTokens(UNSUB_SECRET).make(1, "winback", "2026", now=served.clock.now)
    status, _ = raw_post(f"{served.url}/unsubscribe?token={token}", body, content_type)
    assert status == 200
    assert [(e.kind, e.detail) for e in events(engine)] == [("unsubscribed", "one-click")]
    with engine.connect() as conn:
        assert conn.execute(select(Consent.granted)).scalar() is False


NOT_ONE_CLICK = [
    ("application/x-www-form-urlencoded", b"List-Unsubscribe=Two-Click", 400),
    ("application/x-www-form-urlencoded", b"List-Unsubscribe=", 400),
    ("application/x-www-form-urlencoded", b"", 400),
    ("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click%FF", 400),
    ("application/x-www-form-urlencoded; charset=no-such-charset", b"List-Unsubscribe=One-Click",
     400),
    ("multipart/form-data", multipart([("List-Unsubscribe", "One-Click")], B), 400),
    (f"multipart/form-data; boundary={B}",
     multipart([("List-Unsubscribe", "One-Click")], B)[:-10], 400),
    ("text/plain", b"List-Unsubscribe=One-Click", 415),
    ("application/json", b'{"List-Unsubscribe": "One-Click"}', 415),
]  # fmt: skip


@pytest.mark.parametrize("content_type, body, status", NOT_ONE_CLICK, ids=[
    "other-value", "blank", "empty", "not-utf8", "unknown-charset", "multipart-no-boundary",
    "multipart-cut-short", "text", "json"])  # fmt: skip
def test_a_post_that_is_no_one_click_is_never_answered_as_a_success(served, engine,
                                                                   content_type, body, status):
    """A mailbox provider reads a 2xx as done: anything else than a one-click or the page's
    button gets a 4xx (with the page, for a person) and records nothing."""
    add_customer(engine, 1, email="wang@example.com", locale="zh-CN")
    token = UnsubscribeTokens(UNSUB_SECRET).make(1, "winback", "2026", now=served.clock.now)
    code, page = raw_post(f"{served.url}/unsubscribe?token={token}", body, content_type)
    assert code == status and "退订".encode() in page
    assert events(engine) == []


# --- signed, but malformed: always a 400, never a 500 ---------------------------------------
SENDGRID_MALFORMED = [
    b"[" * 40_000 + b"]" * 40_000,  # far deeper than the recursion limit
    b"[" * 33 + b"]" * 33,
    b'[{"event": "delivered", "sg_event_id": "e1", "timestamp": 1e999}]',
    b'[{"event": "delivered", "sg_event_id": "e1", "timestamp": NaN}]',
    json.dumps({"event": "delivered", "sg_event_id": "e1"}).encode(),
    b"",
]


@pytest.mark.parametrize("body", SENDGRID_MALFORMED, ids=[
    "deep", "33-deep", "timestamp-overflow", "nan", "object", "empty"])  # fmt: skip
def test_a_signed_but_malformed_sendgrid_post_is_a_400(served, engine, sendgrid_keys, body):
    """Before: a deep array blew the recursion limit and absurd timestamps overflowed
    datetime, each a 500 with a traceback in the log. A post that is no list of events
    as a whole is a 400 and records nothing."""
    code, answer = sendgrid_post(served, None, sendgrid_keys[0], body=body)
    assert code == 400 and answer.startswith(b"malformed")
    assert events(engine) == []


SENDGRID_UNREADABLE_EVENTS = [
    [{"event": "delivered", "sg_event_id": "e1", "timestamp": 10**20}],
    [{"event": "delivered", "sg_event_id": "e1", "timestamp": -(10**20)}],
    [{"event": "delivered", "sg_event_id": "e1", "timestamp": "soon"}],
    [{"event": "delivered", "sg_event_id": "e1", "timestamp": [1]}],
    [1, 2, 3],
]


@pytest.mark.parametrize("batch", SENDGRID_UNREADABLE_EVENTS, ids=[
    "timestamp-far-future", "timestamp-far-past", "timestamp-text", "timestamp-list",
    "numbers"])  # fmt: skip
def test_a_signed_list_of_unreadable_events_is_kept_as_rejected(
    served, engine, sendgrid_keys, batch
):
    """A list whose elements cannot be read: each is kept as ``rejected`` with its reason
    and acted on never; the post is answered 2xx, so SendGrid does not retry it for a
    day (tests/service/test_sendgrid_events.py mixes such elements with good ones)."""
    code, _ = sendgrid_post(served, batch, sendgrid_keys[0])
    assert code == 204
    recorded = events(engine)
    assert [e.kind for e in recorded] == ["rejected"] * len(batch)
    assert all(e.detail for e in recorded)


SINCH_MALFORMED = [
    b"\xff\xfe{}",
    b"[" * 40_000 + b"]" * 40_000,
    b'{"fax": 5}',
    b"[]",
    b'{"fax": {"id": "F1"}}',
    b'{"fax": {"id": "F1", "status": "COMPLETED"',  # cut short
]


@pytest.mark.parametrize("body", SINCH_MALFORMED, ids=[
    "not-utf8", "deep", "fax-number", "array", "no-status", "cut-short"])  # fmt: skip
def test_a_malformed_sinch_callback_with_its_token_is_a_400(served, engine, body):
    code, answer = post(f"{served.url}/webhooks/sinch/{SINCH_TOKEN}", body,
                        {"Content-Type": "application/json"})
    assert code == 400 and answer.startswith(b"malformed")
    assert events(engine) == []


@pytest.mark.parametrize("customer_id", [2**63 - 1, 2**63, 10**30, -5])
def test_an_unsubscribe_token_naming_an_impossible_customer_is_a_400(served, engine,
                                                                     customer_id):
    """Before: ids past the database's integers reached the query and came back a 500."""
    tokens = UnsubscribeTokens(UNSUB_SECRET)
    fields = [customer_id, "winback", "2026", int(served.clock.now.timestamp())]
    payload = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    token = f"v2.{payload}.{tokens._mac(f'v2.{payload}')}"
    for method in ("GET", "POST"):
        code, page = raw_post(f"{served.url}/unsubscribe?token={token}", b"confirm=yes", None) \
            if method == "POST" else _get(f"{served.url}/unsubscribe?token={token}")
        assert code == 400 and b"This link does not work" in page
    assert events(engine) == []


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- what the service logs and which headers it sends -------------------------------------
def test_the_log_never_holds_the_sinch_token_and_cannot_be_forged(served, caplog):
    """Before: the access log printed the path, Sinch's secret token included, and decoded
    paths let anyone write a line of their own into it."""
    body = json.dumps({"fax": {"id": "F1", "status": "COMPLETED"}}).encode()
    with caplog.at_level(logging.INFO, logger="careflow.serve"):
        headers = {"Content-Type": "application/json"}
        assert post(f"{served.url}/webhooks/sinch/{SINCH_TOKEN}", body, headers)[0] == 204
        assert post(f"{served.url}/webhooks/sinch/{SINCH_TOKEN}/x", body, headers)[0] == 404
        assert _get(f"{served.url}/x%0A2026-01-01%20INFO%20forged%1b[31m")[0] == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "careflow.serve"]
    text = "\n".join(lines)
    assert SINCH_TOKEN not in text and SINCH_TOKEN[:12] not in text
    assert any(line.startswith("POST /webhooks/sinch/{token} 204 ") for line in lines)
    assert any(line.startswith("POST /webhooks/sinch/…/… 404 ") for line in lines)
    (forged,) = [line for line in lines if "forged" in line]
    assert "\n" not in forged and "\x1b" not in forged and "\\n" in forged


def test_pages_are_never_framed_cached_or_referred(served, engine):
    """Before: the unsubscribe page, its token in the URL, sent none of these headers."""
    add_customer(engine, 1, email="wang@example.com", locale="zh-CN")
    token = UnsubscribeTokens(UNSUB_SECRET).make(1, "winback", "2026", now=served.clock.now)
    answers = [urllib.request.urlopen(f"{served.url}/unsubscribe?token={token}")]
    try:
        urllib.request.urlopen(f"{served.url}/unsubscribe?token=forged")
    except urllib.error.HTTPError as exc:
        answers.append(exc)
    for answer in answers:
        headers = answer.headers
        assert headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["Cache-Control"] == "no-store"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Content-Type-Options"] == "nosniff"

"""What the providers post, shaped as they document it: every parameter, blank ones included.

Tests build their requests from these, so a receiver that only copes with
the three fields it reads (and not with the twenty a real callback carries)
fails here, not in production.

Twilio (application/x-www-form-urlencoded, every parameter signed):
- the inbound-message webhook, "Twilio's request to your incoming message
  Webhook URL" (twilio.com/docs/messaging/guides/webhook-request): message
  ids, account and service, From/To, Body, media and segment counts, the
  geographic fields Twilio fills from the numbers when it can (often blank),
  SmsStatus, ApiVersion, OptOutType for keyword replies;
- the status callback, "Outbound Message Status in Status Callbacks"
  (twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks):
  MessageSid/SmsSid, MessageStatus/SmsStatus, AccountSid, From, To,
  ApiVersion, MessagingServiceSid, ErrorCode and ErrorMessage when it failed,
  RawDlrDoneDate on carrier receipts, the Channel* fields.

SendGrid (one JSON array of events, signed as a whole): the Event Webhook
reference (twilio.com/docs/sendgrid/for-developers/tracking-events/event),
each event type with the properties it documents for it; a bounce carries
``type`` ("bounce", a permanent failure, or "blocked", the receiving server's
temporary refusal) and ``bounce_classification``.

Sinch (no signature: the secret is the token in the callback URL): the Fax
API v3 "fax completed" webhook (developers.sinch.com/docs/fax/api-reference/
fax/tag/Notifications), ``event`` FAX_COMPLETED, ``eventTime``, the ``fax``
object with every property of the Fax schema (the ones a fax has no value
for as null or empty) and the fax document, in both encodings Sinch posts:
multipart/form-data (Sinch's default: ``fax`` a JSON part, ``file`` a PDF
part) and application/json (with ``callbackUrlContentType``: ``file`` in
base64 and ``fileType``). A failed fax has status FAILURE with ``errorType``,
``errorCode`` and ``errorMessage`` (Sinch's call error 17 is "Busy").
"""

from __future__ import annotations

import base64
import json
import urllib.parse

from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "1f0e2d3c4b5a6978" * 2
SERVICE_SID = "MG" + "0a1b2c3d4e5f6789" * 2
OUR_NUMBER = "+12025550143"


def sid(prefix: str, n: int) -> str:
    """A Twilio SID: two letters and 32 hex digits."""
    return f"{prefix}{n:032x}"


def twilio_inbound(body: str, sender: str, n: int = 1, **fields: str) -> dict[str, str]:
    """An inbound SMS as Twilio posts it to the number's "A message comes in" URL.

    Twilio fills the From*/To* places from the numbers and leaves them blank
    when it cannot tell (most non-US numbers), and OptOutType only on a
    keyword it handled itself (STOP, START, HELP).
    """
    message = sid("SM", 0x1000 + n)
    return {
        "ToCountry": "US",
        "ToState": "DC",
        "SmsMessageSid": message,
        "NumMedia": "0",
        "ToCity": "",
        "FromZip": "",
        "SmsSid": message,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": "CN" if sender.startswith("+86") else "",
        "To": OUR_NUMBER,
        "MessagingServiceSid": SERVICE_SID,
        "ToZip": "",
        "NumSegments": "1",
        "ReferralNumMedia": "0",
        "MessageSid": message,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "ApiVersion": "2010-04-01",
        **fields,
    }


def twilio_status(message_sid: str, status: str, to: str, **fields: str) -> dict[str, str]:
    """A status callback as Twilio posts it to the message's StatusCallback URL.

    ``delivered`` and ``undelivered`` carry the carrier's RawDlrDoneDate
    (YYMMDDhhmm); ``failed`` and ``undelivered`` carry ErrorCode and
    ErrorMessage. Pass ``ErrorCode=...`` to set one.
    """
    out = {
        "SmsSid": message_sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": to,
        "MessagingServiceSid": SERVICE_SID,
        "MessageSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": OUR_NUMBER,
        "ApiVersion": "2010-04-01",
        "ChannelToAddress": to[:-4] + "XXXX",
        "ChannelPrefix": "",
        "ChannelInstallSid": "",
        "ChannelStatusMessage": "",
    }
    if status in ("delivered", "undelivered"):
        out["RawDlrDoneDate"] = "2611220901"
    if status in ("failed", "undelivered"):
        out |= {"ErrorCode": "30003", "ErrorMessage": "Unreachable destination handset"}
    return out | fields


class _Multi(dict):
    """Form fields with names that repeat, in the shape the SDK signs (``getall``)."""

    def __init__(self, pairs):
        super().__init__(pairs)
        self.pairs = list(pairs)

    def getall(self, name):
        return [v for k, v in self.pairs if k == name]


def twilio_signed(
    token: str, url: str, params: dict[str, str] | list[tuple[str, str]], *, spaces: str = "+"
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a Twilio POST: form-encoded as Twilio sends it (spaces as ``+``
    or ``%20``; ``+`` in a number as ``%2B``; UTF-8 percent-encoded), signed with the
    SDK's ``RequestValidator`` over every parameter, blank and repeated ones included."""
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    quote = urllib.parse.quote_plus if spaces == "+" else urllib.parse.quote
    body = urllib.parse.urlencode(pairs, quote_via=quote).encode()
    signature = RequestValidator(token).compute_signature(url, _Multi(pairs))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": signature,
    }
    return body, headers


# --- SendGrid ---------------------------------------------------------------------------------
def _common(event: str, email: str, n: int, message_id: str, at: int) -> dict:
    return {
        "email": email,
        "timestamp": at,
        "smtp-id": f"<{message_id}@ismtpd0001p1lon1.sendgrid.net>",
        "event": event,
        "category": ["careflow"],
        "sg_event_id": f"{event[:4]}-{n:06d}-ZjU2Y2M4NjQtYzA5",
        "sg_message_id": f"{message_id}.recvd-6d4f8b5f9-x2x7t-1-674044C1-3.0",
    }


def sendgrid_event(
    event: str, email: str, n: int = 1, *, message_id: str = "14c5d75ce93dfd64b469",
    at: int = 1795338000, **fields,
) -> dict:
    """One event of the Event Webhook with every property SendGrid documents for its type.

    ``event``: processed, dropped, deferred, delivered, bounce (``type`` bounce by
    default; pass ``type="blocked"``), open, click, spamreport, unsubscribe,
    group_unsubscribe, group_resubscribe. ``fields`` add or replace properties,
    careflow's ``custom_args`` (``careflow_key``) among them.
    """
    out = _common(event, email, n, message_id, at)
    extra: dict = {
        "processed": {"pool": {"name": "new_MY_test", "id": 210}, "send_at": 0},
        "dropped": {"reason": "Bounced Address", "status": "5.0.0"},
        "deferred": {
            "domain": email.split("@")[-1],
            "from": "care@shop.example.com",
            "response": "400 try again later",
            "attempt": "5",
        },
        "delivered": {
            "response": "250 OK",
            "ip": "168.1.1.1",
            "tls": 1,
            "cert_err": 0,
        },
        "bounce": {
            "bounce_classification": "Invalid Address",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
            "status": "5.1.1",
            "type": "bounce",
            "ip": "168.1.1.1",
            "tls": 1,
            "cert_err": 0,
        },
        "open": {
            "sg_machine_open": False,
            "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322)",
            "ip": "255.255.255.255",
        },
        "click": {
            "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322)",
            "ip": "255.255.255.255",
            "url": "https://shop.example.com/offers?utm_source=careflow",
            "url_offset": {"index": 0, "type": "html"},
        },
        "spamreport": {},
        "unsubscribe": {},
        "group_unsubscribe": {
            "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322)",
            "ip": "255.255.255.255",
            "url": "https://sendgrid.com/unsubscribe",
            "asm_group_id": 10,
        },
        "group_resubscribe": {
            "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322)",
            "ip": "255.255.255.255",
            "url": "https://sendgrid.com/resubscribe",
            "asm_group_id": 10,
        },
    }[event]
    return out | extra | fields


def sendgrid_blocked(email: str, n: int = 1, **fields) -> dict:
    """A bounce of type ``blocked``: the receiving server refused this message for now
    (reputation, content, rate), as SendGrid documents it; not a dead address."""
    return sendgrid_event(
        "bounce",
        email,
        n,
        type="blocked",
        bounce_classification="Reputation",
        reason="550 5.7.1 Service unavailable; client host blocked using Spamhaus",
        status="5.7.1",
        **fields,
    )


SENDGRID_EVENTS = (
    "processed",
    "dropped",
    "deferred",
    "delivered",
    "bounce",
    "open",
    "click",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
    "group_resubscribe",
)


# --- Sinch ------------------------------------------------------------------------------------
SINCH_PROJECT = "37b62a7b-0177-429a-bb0b-e10f848de0b8"
SINCH_SERVICE = "01HQK89SYWBCJK1DMYD3QAW2DW"
#: A fax document as Sinch attaches it: a PDF, binary (no text encoding reads it)
FAX_DOCUMENT = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 64 + b"\n%%EOF\n"


def sinch_fax(fax_id: str, status: str, to: str, **fields) -> dict:
    """The fax object of a callback with every property Sinch's Fax schema has.

    ``status`` COMPLETED (no error: errorType, errorCode and errorMessage are
    null) or FAILURE (Sinch's call error 17, "Busy", no page sent). ``fields``
    add or replace properties.
    """
    failed = status == "FAILURE"
    return {
        "id": fax_id,
        "direction": "OUTBOUND",
        "from": "+12025550123",
        "to": to,
        "contentUrl": [],
        "numberOfPages": 2,
        "pagesSentSuccessfully": 0 if failed else 2,
        "status": status,
        "price": {"amount": "0.00" if failed else "0.14", "currencyCode": "USD"},
        "createTime": "2026-11-22T08:58:01Z",
        "completedTime": "2026-11-22T08:59:47Z",
        "headerText": "",
        "headerPageNumbers": True,
        "headerTimeZone": "America/New_York",
        "retryDelaySeconds": 60,
        "maxRetries": 0,
        "retryCount": 0,
        "labels": {},
        "callbackUrl": "https://care.example.com/webhooks/sinch/***",
        "callbackUrlContentType": "application/json",
        "imageConversionMethod": "HALFTONE",
        "resolution": "FINE",
        "coverPageId": None,
        "coverPageData": {},
        "barCodes": [],
        "hasFile": "true",
        "errorType": "CALL_ERROR" if failed else None,
        "errorCode": 17 if failed else None,
        "errorMessage": "Busy" if failed else None,
        "projectId": SINCH_PROJECT,
        "serviceId": SINCH_SERVICE,
        **fields,
    }


def sinch_callback(
    fax: dict, encoding: str, *, event: str = "FAX_COMPLETED",
    event_time: str = "2026-11-22T08:59:48Z", document: bytes = FAX_DOCUMENT,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a Sinch fax callback, ``encoding`` "multipart" or "json"."""
    if encoding == "json":
        body = {
            "event": event,
            "eventTime": event_time,
            "fax": fax,
            "file": base64.b64encode(document).decode(),
            "fileType": "PDF",
        }
        return json.dumps(body).encode(), {"Content-Type": "application/json"}
    boundary = "----SinchFaxBoundary7MA4YWxkTrZu0gW"

    def part(headers: str, content: bytes) -> bytes:
        return f"--{boundary}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n"

    body = (
        part('Content-Disposition: form-data; name="event"', event.encode())
        + part('Content-Disposition: form-data; name="eventTime"', event_time.encode())
        + part(
            'Content-Disposition: form-data; name="fax"\r\nContent-Type: application/json',
            json.dumps(fax).encode(),
        )
        + part(
            'Content-Disposition: form-data; name="file"; filename="fax.pdf"\r\n'
            "Content-Type: application/pdf",
            document,
        )
        + f"--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}

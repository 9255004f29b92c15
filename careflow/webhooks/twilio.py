"""Twilio: SMS status callbacks and inbound messages.

Verify: ``X-Twilio-Signature`` is an HMAC-SHA1, keyed with the account's
Auth Token, of the full public URL Twilio called plus every POST parameter
it sent, sorted by name: blank ones too (an inbound SMS usually carries
``FromCity=`` and ``ToZip=``), each value of a name that repeats. So the form
is read with :func:`form`, which keeps all of them, and the SDK's
``RequestValidator`` computes the signature. Behind a reverse proxy the URL
must be the public one Twilio used, not the internal one.

Parse: status callbacks carry ``MessageSid`` and ``MessageStatus`` (and
``ErrorCode`` when it failed) but no event id or time, so the event id is
``MessageSid:status`` (Twilio retries the same status; a new status is a
new event) and the time is when it arrived. The error codes that mean the
number is dead for good (21610: the recipient replied STOP to Twilio;
30006: a landline; 30005: no such handset) become the event's ``suppress``;
the others (30003 unreachable, 30007 filtered...) are this message's
failure only.

Receive (:data:`PROVIDER`): on when CAREFLOW_TWILIO_AUTH_TOKEN is set, with
the public URL Twilio calls (CAREFLOW_PUBLIC_BASE_URL; ``--local`` rebuilds
it from the Host header). A request without ``X-Twilio-Signature`` is
refused unread; a form is a few KB (:data:`MAX_BODY`). A status callback is
answered 204, an inbound message with empty TwiML (Twilio answers STOP,
START and HELP itself; careflow only records the reply).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from urllib.parse import unquote

from twilio.request_validator import RequestValidator

from careflow.errors import ConfigError
from careflow.events import EventKind, InboundEvent
from careflow.settings import Settings
from careflow.webhooks.registry import Answer, Configured, Hook, Posted, WebhookProvider

_STATUS = {
    "accepted": EventKind.QUEUED,
    "scheduled": EventKind.QUEUED,
    "queued": EventKind.QUEUED,
    "sending": EventKind.QUEUED,
    "sent": EventKind.SENT,
    "delivered": EventKind.DELIVERED,
    "read": EventKind.DELIVERED,
    "undelivered": EventKind.UNDELIVERED,
    "failed": EventKind.FAILED,
    "canceled": EventKind.FAILED,
}

#: Largest form accepted. An inbound SMS is at most 1,600 characters, 19,200 bytes
#: percent-encoded if every one is a four-byte emoji; ten MMS media URLs and the forty-odd
#: other fields add a few KB more.
MAX_BODY = 64 * 1024
SIGNATURE_HEADER = "X-Twilio-Signature"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

#: Twilio error codes that mean "never text this number again", as suppression reasons
_PERMANENT = {"21610": "opted_out", "30006": "landline", "30005": "unknown_number"}


class Form(dict):
    """A form Twilio posted: each name's first value, as a dict, and ``getall(name)``
    for all of its values (the SDK's validator signs every one)."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()):
        super().__init__()
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name, []).append(value)
            self.setdefault(name, value)

    def getall(self, name: str) -> list[str]:
        return self._values.get(name) or [self[name]]


def form(body: bytes) -> Form:
    """The ``application/x-www-form-urlencoded`` body Twilio posts, blank values kept.

    Read as ``parse_qsl(..., keep_blank_values=True)`` reads it, without its generic
    cost (a callback's forty-odd fields were a fifth of its CPU); and once per request:
    the signature check and the parser ask for the same body one after the other, and
    get the same form (read only, never changed)."""
    last = _last_form
    if last[0] is body:
        return last[1]
    read = Form(_pairs(body.decode("utf-8", "replace")))
    globals()["_last_form"] = (body, read)
    return read


_last_form: tuple[bytes | None, Form] = (None, Form())


def _pairs(text: str) -> list[tuple[str, str]]:
    """``parse_qsl(text, keep_blank_values=True)``: fields split on ``&``, empty ones
    skipped, a name without ``=`` a blank value, ``+`` a space, then percent-decoded."""
    out = []
    for field in text.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "%" in name:
            name = unquote(name)
        if "+" in value:
            value = value.replace("+", " ")
        if "%" in value:
            value = unquote(value)
        out.append((name, value))
    return out


def verify(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    """True when ``signature`` is Twilio's for this public ``url`` and form ``params``
    (a :class:`Form` for a request; a plain mapping holds one value per name)."""
    if not signature or not auth_token:
        return False
    return RequestValidator(auth_token).validate(url, params, signature)


def parse_status(params: Mapping[str, str], received_at: datetime) -> InboundEvent:
    """A status callback as an event (ValueError when it is not one)."""
    sid, status = params.get("MessageSid"), (params.get("MessageStatus") or "").lower()
    if not sid or not status:
        raise ValueError("not a Twilio status callback: MessageSid and MessageStatus needed")
    return InboundEvent(
        provider="twilio",
        kind=_STATUS.get(status, EventKind.UNKNOWN),
        event_id=f"{sid}:{status}",
        occurred_at=received_at,
        channel="sms",
        provider_message_id=sid,
        recipient=params.get("To"),
        reason=params.get("ErrorCode") or None,
        suppress=_PERMANENT.get(params.get("ErrorCode") or ""),
        raw=dict(params),
    )


def parse_inbound(params: Mapping[str, str], received_at: datetime) -> InboundEvent:
    """An inbound SMS (a reply) as an event; its text is kept as sent."""
    sid = params.get("MessageSid") or params.get("SmsSid")
    if not sid or "From" not in params:
        raise ValueError("not a Twilio inbound message: MessageSid and From needed")
    return InboundEvent(
        provider="twilio",
        kind=EventKind.REPLIED,
        event_id=sid,
        occurred_at=received_at,
        channel="sms",
        provider_message_id=sid,
        recipient=params.get("From"),
        text=params.get("Body", ""),
        raw=dict(params),
    )


def _configure(settings: Settings, local: bool) -> Configured | None:
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
    if not token:
        return None
    if not settings.public_base_url and not local:
        # a URL taken from the request would accept a request signed for any host
        raise ConfigError(
            "CAREFLOW_PUBLIC_BASE_URL is missing: Twilio signs the URL it called, so careflow "
            "serve must know its public address (https://care.example.com); to try it on "
            "this machine only: careflow serve --local"
        )
    signed_on = settings.public_base_url or "the request's Host header (--local)"
    return Configured(
        token,
        f"/webhooks/twilio/status and /inbound, signed URLs on {signed_on}",
    )


def _signed(auth_token: str, posted: Posted, now: datetime) -> bool:
    signature = posted.headers.get(SIGNATURE_HEADER)
    return verify(auth_token, posted.url, form(posted.body), signature)


PROVIDER = WebhookProvider(
    "twilio",
    hooks=(
        Hook(
            "/webhooks/twilio/status",
            lambda posted, at: [parse_status(form(posted.body), at)],
        ),
        Hook(
            "/webhooks/twilio/inbound",
            lambda posted, at: [parse_inbound(form(posted.body), at)],
            Answer(200, EMPTY_TWIML, "text/xml"),
        ),
    ),
    configure=_configure,
    off="CAREFLOW_TWILIO_AUTH_TOKEN is not set",
    ready=lambda auth_token, posted: bool(posted.headers.get(SIGNATURE_HEADER)),
    verify=_signed,
    max_body=MAX_BODY,
)

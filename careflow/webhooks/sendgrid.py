"""SendGrid: the Event Webhook, verified with the Signed Event Webhook.

Verify: SendGrid signs ``timestamp + raw body`` with ECDSA (P-256, SHA-256)
and sends the signature and timestamp in the
``X-Twilio-Email-Event-Webhook-Signature`` and ``...-Timestamp`` headers;
the public key is shown in the SendGrid console. The SDK's ``EventWebhook``
checks the signature; the timestamp must also be recent (``tolerance``) so
a captured request cannot be replayed later.

Parse: one POST carries a JSON array of many events. Each has
``sg_event_id`` (the de-duplication key), a unix ``timestamp``, the
recipient ``email`` and ``sg_message_id``, whose part before the first dot
is the ``X-Message-Id`` the send recorded. careflow's ``custom_args``
(``careflow_key``, ``contact_id``) come back as top-level fields. Which
events mean the address is dead for good is SendGrid's to say, and read
here (:func:`_permanent`): a hard bounce yes, a ``blocked`` bounce no.

Receive (:data:`PROVIDER`): on when CAREFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY is
set; a request without both headers is refused unread; a post of many
events can be large (CAREFLOW_SERVE_MAX_BODY_BYTES). Answered 204.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from sendgrid.helpers.eventwebhook import EventWebhook

from careflow.events import EventKind, InboundEvent
from careflow.settings import Settings
from careflow.webhooks import bodies
from careflow.webhooks.registry import Configured, Hook, Posted, WebhookProvider

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_KINDS = {
    "processed": EventKind.QUEUED,
    "deferred": EventKind.DEFERRED,
    "delivered": EventKind.DELIVERED,
    "bounce": EventKind.BOUNCED,
    "blocked": EventKind.BOUNCED,
    "dropped": EventKind.DROPPED,
    "open": EventKind.OPENED,
    "click": EventKind.CLICKED,
    "spamreport": EventKind.SPAM_REPORT,
    "unsubscribe": EventKind.UNSUBSCRIBED,
    "group_unsubscribe": EventKind.UNSUBSCRIBED,
}

#: drop reasons SendGrid documents that are about the address, not the message
_ADDRESS_DROPS = {"bounced address", "unsubscribed address", "spam reporting address", "invalid"}


def verify(
    public_key: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    now: datetime,
    tolerance_seconds: int = 300,
) -> bool:
    """True for a correctly signed, recent request (``now``: the receiver's clock)."""
    if not (public_key and signature and timestamp):
        return False
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now.timestamp() - sent) > tolerance_seconds:
        return False
    try:
        return EventWebhook(public_key).verify_signature(
            body.decode("utf-8"), signature, timestamp
        )
    except (ValueError, UnicodeDecodeError, binascii.Error, InvalidSignature):
        return False


def parse(events: list) -> list[InboundEvent]:
    """The events of one POST (ValueError for something that is not an event array).

    One unreadable element (no ``sg_event_id``, a timestamp that is no time) does
    not cost the others: SendGrid would retry the whole post for a day. It becomes
    a ``rejected`` event with the reason, kept on the timeline and acted on by
    nobody, and its retries are duplicates of it."""
    if not isinstance(events, list):
        raise ValueError("the SendGrid Event Webhook posts a JSON array")
    out = []
    for e in events:
        try:
            out.append(_event(e))
        except (ValueError, TypeError, OverflowError, OSError) as exc:
            out.append(_unreadable(e, exc))
    return out


def _event(e) -> InboundEvent:
    if not isinstance(e, dict) or "event" not in e or "sg_event_id" not in e:
        raise ValueError("a SendGrid event needs 'event' and 'sg_event_id'")
    kind = str(e["event"])
    when = datetime.fromtimestamp(int(e.get("timestamp", 0)), UTC).replace(tzinfo=None)
    message_id = str(e.get("sg_message_id") or "").split(".", 1)[0] or None
    return InboundEvent(
        provider="sendgrid",
        kind=_KINDS.get(kind, EventKind.UNKNOWN),
        event_id=str(e["sg_event_id"]),
        occurred_at=when,
        channel="email",
        provider_message_id=message_id,
        recipient=e.get("email"),
        contact_key=e.get("careflow_key"),
        reason=_reason(e),
        suppress=_permanent(kind, e),
        raw=e,
    )


def _unreadable(e, exc: Exception) -> InboundEvent:
    """An element of the array that is not a readable event, as a ``rejected`` one: its
    own ``sg_event_id`` where it has one, else a digest of it, as its key."""
    given = e.get("sg_event_id") if isinstance(e, dict) else None
    digest = hashlib.sha256(json.dumps(e, sort_keys=True, default=str).encode()).hexdigest()
    return InboundEvent(
        provider="sendgrid",
        kind=EventKind.REJECTED,
        event_id=str(given) if given else f"unreadable:{digest}",
        occurred_at=datetime(1970, 1, 1),
        channel="email",
        reason=f"unreadable: {exc}"[:300],
        raw=e if isinstance(e, dict) else {"element": e},
    )


def _reason(e: dict) -> str | None:
    """Why, in SendGrid's words: a bounce's type ("bounce", "blocked") before its reason."""
    why = str(e.get("reason") or e.get("response") or "") or None
    if e.get("event") == "bounce" and e.get("type"):
        return f"{e['type']}: {why}" if why else str(e["type"])
    return why


def _permanent(kind: str, e: dict) -> str | None:
    """The suppression this event calls for, read as SendGrid defines its events.

    A ``bounce`` of type ``bounce`` is a hard bounce: the address does not exist.
    Type ``blocked`` is the receiving server refusing this message for now
    (reputation, content, rate): SendGrid itself does not suppress it, and
    neither does careflow. A drop suppresses when SendGrid dropped the message
    for the address (already bounced, unsubscribed, reported spam, invalid),
    not when it was the message (its content, a header, a quota).
    """
    if kind == "bounce":
        return "bounced" if str(e.get("type") or "bounce").lower() == "bounce" else None
    if kind == "dropped":
        return "dropped" if str(e.get("reason") or "").lower() in _ADDRESS_DROPS else None
    return None


@dataclass(frozen=True)
class _Key:
    public_key: str
    tolerance_seconds: int


def _configure(settings: Settings, local: bool) -> Configured | None:
    if not settings.sendgrid_webhook_public_key:
        return None
    key = _Key(settings.sendgrid_webhook_public_key, settings.webhook_tolerance_seconds)
    return Configured(key, "/webhooks/sendgrid")


def _ready(key: _Key, posted: Posted) -> bool:
    return bool(posted.headers.get(SIGNATURE_HEADER) and posted.headers.get(TIMESTAMP_HEADER))


def _signed(key: _Key, posted: Posted, now: datetime) -> bool:
    return verify(
        key.public_key,
        posted.body,
        posted.headers.get(SIGNATURE_HEADER),
        posted.headers.get(TIMESTAMP_HEADER),
        now=now,
        tolerance_seconds=key.tolerance_seconds,
    )


PROVIDER = WebhookProvider(
    "sendgrid",
    hooks=(Hook("/webhooks/sendgrid", lambda posted, at: parse(bodies.json_value(posted.body))),),
    configure=_configure,
    off="CAREFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY is not set",
    ready=_ready,
    verify=_signed,
)

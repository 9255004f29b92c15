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
(``careflow_key``, ``contact_id``) come back as top-level fields.
"""

from __future__ import annotations

import binascii
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from sendgrid.helpers.eventwebhook import EventWebhook

from careflow.events import EventKind, InboundEvent

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
    """The events of one POST (ValueError for something that is not an event array)."""
    if not isinstance(events, list):
        raise ValueError("the SendGrid Event Webhook posts a JSON array")
    out = []
    for e in events:
        if not isinstance(e, dict) or "event" not in e or "sg_event_id" not in e:
            raise ValueError("a SendGrid event needs 'event' and 'sg_event_id'")
        kind = str(e["event"])
        when = datetime.fromtimestamp(int(e.get("timestamp", 0)), UTC).replace(tzinfo=None)
        message_id = str(e.get("sg_message_id") or "").split(".", 1)[0] or None
        out.append(
            InboundEvent(
                provider="sendgrid",
                kind=_KINDS.get(kind, EventKind.UNKNOWN),
                event_id=str(e["sg_event_id"]),
                occurred_at=when,
                channel="email",
                provider_message_id=message_id,
                recipient=e.get("email"),
                contact_key=e.get("careflow_key"),
                reason=e.get("reason") or e.get("type") or None,
                raw=e,
            )
        )
    return out

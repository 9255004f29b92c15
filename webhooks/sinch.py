"""Sinch Fax: the fax status callback, verified by a secret path token.

Sinch's Fax API posts the fax object to the ``callbackUrl`` given when the
fax was sent, without a signature careflow could check. So the callback URL
carries a long random token of careflow's own
(``https://care.example.com/webhooks/sinch/<token>``) and a request without
the right token is refused: the URL is the secret, as with any unsigned
webhook, so keep it out of logs and rotate it if it leaks.

Parse: the fax's ``id`` and ``status`` (``COMPLETED``, ``FAILURE``...) make
the event id; ``errorMessage`` explains a failure.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime

from careflow.events import EventKind, InboundEvent

_STATUS = {
    "QUEUED": EventKind.QUEUED,
    "IN_PROGRESS": EventKind.QUEUED,
    "COMPLETED": EventKind.DELIVERED,
    "FAILURE": EventKind.FAILED,
}


def verify(expected_token: str, given_token: str | None) -> bool:
    """Constant-time check of the path token (an empty expected token never matches)."""
    if not expected_token or not given_token:
        return False
    return hmac.compare_digest(expected_token.encode(), given_token.encode())


def parse(payload: Mapping, received_at: datetime) -> InboundEvent:
    """A fax status callback as an event (ValueError when it is not one)."""
    fax = payload.get("fax", payload)
    fax_id, status = fax.get("id"), str(fax.get("status") or "").upper()
    if not fax_id or not status:
        raise ValueError("not a Sinch fax callback: fax id and status needed")
    return InboundEvent(
        provider="sinch",
        kind=_STATUS.get(status, EventKind.UNKNOWN),
        event_id=f"{fax_id}:{status}",
        occurred_at=received_at,
        channel="fax",
        provider_message_id=str(fax_id),
        recipient=fax.get("to"),
        reason=fax.get("errorMessage") or fax.get("errorCode") or None,
        raw=dict(payload),
    )

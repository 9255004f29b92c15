"""Sinch Fax: the fax-completed callback, verified by a secret path token.

Sinch's Fax API v3 posts a ``FAX_COMPLETED`` event to the ``callbackUrl``
given when the fax was sent, without a signature careflow could check. So
the callback URL carries a long random token of careflow's own
(``https://care.example.com/webhooks/sinch/<token>``) and a request without
the right token is refused: the URL is the secret, as with any unsigned
webhook, so keep it out of logs and rotate it if it leaks.

Shape (developers.sinch.com/docs/fax/api-reference/fax/tag/Notifications):
``event`` (``FAX_COMPLETED``; ``INCOMING_FAX`` for a fax someone sent to a
Sinch number), ``eventTime``, ``fax`` (the fax object: ``id``,
``direction``, ``from``, ``to``, ``status``, ``numberOfPages``,
``createTime``, ``completedTime``, ``errorType``, ``errorCode``,
``errorMessage``, ``price``...) and ``file``, the fax document. Sinch posts
it as multipart/form-data (``fax`` a JSON part, ``file`` a PDF part) unless
the fax was sent with ``callbackUrlContentType=application/json``; then it
is one JSON object with ``file`` in base64 and ``fileType``. Either
encoding is decoded into that one mapping (:func:`callback`); the document
is never decoded or kept.

Parse: the fax's ``id`` and ``status`` (``COMPLETED``, ``FAILURE``...) make
the event id; ``errorCode`` and ``errorMessage`` explain a failure; the
time is the fax's ``completedTime`` (Sinch retries a refused callback for
days, so the arrival time can be hours late).

Receive (:data:`PROVIDER`): on when CAREFLOW_SINCH_CALLBACK_TOKEN is set (a
token easy to guess does not start); a request with another token, or in
another content type (415), is refused unread. Sinch attaches the document
in both encodings and it cannot be switched off, so the body bound
(CAREFLOW_SERVE_MAX_BODY_BYTES, 5 MB) counts it: a careflow fax is a text
letter of a few pages, tens of KB each. Answered 204.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

from careflow.events import EventKind, InboundEvent
from careflow.keys import check_secret
from careflow.settings import Settings
from careflow.webhooks import bodies
from careflow.webhooks.registry import Configured, Hook, WebhookProvider

_STATUS = {
    "QUEUED": EventKind.QUEUED,
    "IN_PROGRESS": EventKind.QUEUED,
    "COMPLETED": EventKind.DELIVERED,
    "FAILURE": EventKind.FAILED,
}
#: The callback's fax document: raw in a multipart callback, base64 in a JSON one. Never kept.
DOCUMENT_FIELDS = ("file", "fileType")
#: The two encodings Sinch posts a callback in: multipart/form-data (its default) and
#: application/json (asked for with ``callbackUrlContentType``)
MEDIA_TYPES = ("application/json", "multipart/form-data")
#: Least length of CAREFLOW_SINCH_CALLBACK_TOKEN
MIN_TOKEN = 24


def verify(expected_token: str, given_token: str | None) -> bool:
    """Constant-time check of the path token (an empty expected token never matches)."""
    if not expected_token or not given_token:
        return False
    return hmac.compare_digest(expected_token.encode(), given_token.encode())


def parse(payload: Mapping, received_at: datetime) -> InboundEvent:
    """A fax callback as an event (ValueError when it is not one).

    A fax someone sent to careflow's Sinch number (``INCOMING_FAX``, direction
    ``INBOUND``) is no outcome of a careflow fax: it is kept as ``unknown``."""
    fax = payload.get("fax", payload)
    if not isinstance(fax, Mapping):
        raise ValueError("not a Sinch fax callback: fax is no object")
    fax_id, status = fax.get("id"), str(fax.get("status") or "").upper()
    if not fax_id or not status:
        raise ValueError("not a Sinch fax callback: fax id and status needed")
    inbound = payload.get("event") == "INCOMING_FAX" or fax.get("direction") == "INBOUND"
    return InboundEvent(
        provider="sinch",
        kind=EventKind.UNKNOWN if inbound else _STATUS.get(status, EventKind.UNKNOWN),
        event_id=f"{fax_id}:{status}",
        occurred_at=_time(fax.get("completedTime") or payload.get("eventTime")) or received_at,
        channel="fax",
        provider_message_id=str(fax_id),
        recipient=fax.get("to"),
        reason=_reason(fax),
        raw={k: v for k, v in payload.items() if k not in DOCUMENT_FIELDS},
    )


def callback(content_type: str | None, body: bytes) -> dict:
    """A fax callback in its one shape, whichever encoding it came in: a JSON body as it
    is; a multipart one's fields, its ``fax`` part decoded as JSON and its document part
    left out unread."""
    if bodies.media_type(content_type) == "application/json":
        return bodies.json_value(body)
    fields = dict(bodies.form_fields(content_type, body, skip=DOCUMENT_FIELDS))
    if "fax" in fields:
        fields["fax"] = bodies.json_value(fields["fax"].encode())
    return fields


def _reason(fax: Mapping) -> str | None:
    """``errorType errorCode: errorMessage``, as much of it as the fax has."""
    code = " ".join(str(fax[k]) for k in ("errorType", "errorCode") if fax.get(k) not in (None, ""))
    message = str(fax.get("errorMessage") or "")
    return ": ".join(filter(None, (code, message))) or None


def _time(value) -> datetime | None:
    """An ISO 8601 time (``2026-11-22T09:00:00Z``) as naive UTC; None when blank."""
    if value in (None, ""):
        return None
    at = datetime.fromisoformat(str(value))
    return (at.astimezone(UTC) if at.tzinfo else at).replace(tzinfo=None)


def _configure(settings: Settings, local: bool) -> Configured | None:
    token = settings.sinch_callback_token
    token = token.get_secret_value() if token is not None else ""
    if not token:
        return None
    check_secret(token, "CAREFLOW_SINCH_CALLBACK_TOKEN", min_bytes=MIN_TOKEN)
    return Configured(token, "/webhooks/sinch/<CAREFLOW_SINCH_CALLBACK_TOKEN>")


PROVIDER = WebhookProvider(
    "sinch",
    hooks=(
        Hook(
            "/webhooks/sinch/{token}",
            lambda posted, at: [parse(callback(posted.content_type, posted.body), at)],
        ),
    ),
    configure=_configure,
    off="CAREFLOW_SINCH_CALLBACK_TOKEN is not set",
    # the path token is the whole check: Sinch signs nothing
    ready=lambda token, posted: verify(token, posted.path_params.get("token")),
    verify=lambda token, posted, now: True,
    media_types=MEDIA_TYPES,
)

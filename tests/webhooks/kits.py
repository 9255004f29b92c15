"""How a test posts to each registered webhook provider as that provider does.

The contract suite (tests/webhooks/test_contract.py) runs over every provider
in careflow/webhooks/registry.py; what it cannot know from the registry (the settings
that turn a provider on, how it signs, what it documents it posts) is here,
one :class:`Kit` per provider name. A provider registered without a kit
fails the suite, naming it.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from careflow.webhooks.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.providers.kit import sendgrid_webhook_keys
from tests.service.conftest import PUBLIC, SINCH_TOKEN, TWILIO_TOKEN
from tests.webhooks.payloads import (
    SENDGRID_EVENTS,
    sendgrid_blocked,
    sendgrid_event,
    sid,
    sinch_callback,
    sinch_fax,
    twilio_inbound,
    twilio_status,
)

MOBILE = "+8613812345678"
FAX_NUMBER = "+12025550199"

#: ``sign(route, body, headers, now, forged=) -> (path, headers)``: the path to post to
#: and the headers with the provider's signature; ``forged`` signs with another key
Sign = Callable[..., tuple[str, dict[str, str]]]


@dataclass(frozen=True)
class Example:
    """A request body the provider documents, and how many events it carries."""

    body: bytes
    headers: dict[str, str]
    events: int


@dataclass(frozen=True)
class Kit:
    #: settings (CAREFLOW_*) that turn the provider on
    env: dict[str, str]
    sign: Sign
    #: per route: documented requests
    examples: dict[str, list[Example]]
    #: per route: a body the provider could sign that is no callback of that route
    malformed: dict[str, Example]


def _form(params: dict[str, str]) -> Example:
    body = urllib.parse.urlencode(params).encode()
    return Example(body, {"Content-Type": "application/x-www-form-urlencoded"}, 1)


def _sign_twilio(route: str, body: bytes, headers: dict, now: datetime, *, forged=False):
    params = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
    token = "another-accounts-auth-token-987654" if forged else TWILIO_TOKEN
    signature = RequestValidator(token).compute_signature(f"{PUBLIC}{route}", params)
    return route, {**headers, "X-Twilio-Signature": signature}


TWILIO = Kit(
    env={"CAREFLOW_TWILIO_AUTH_TOKEN": TWILIO_TOKEN},
    sign=_sign_twilio,
    examples={
        "/webhooks/twilio/status": [
            _form(twilio_status(sid("SM", 1), status, MOBILE))
            for status in ("sent", "delivered", "undelivered")
        ],
        "/webhooks/twilio/inbound": [_form(twilio_inbound("Thank you! 谢谢", MOBILE))],
    },
    malformed={
        "/webhooks/twilio/status": _form({"MessageStatus": "delivered", "To": MOBILE}),
        "/webhooks/twilio/inbound": _form({"Body": "no sender", "To": MOBILE}),
    },
)

_SENDGRID_KEYS, _OTHER_KEYS = sendgrid_webhook_keys(), sendgrid_webhook_keys()


def _sign_sendgrid(route: str, body: bytes, headers: dict, now: datetime, *, forged=False):
    private = (_OTHER_KEYS if forged else _SENDGRID_KEYS)[0]
    ts = str(int(now.timestamp()))
    signature = base64.b64encode(private.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256())))
    return route, {**headers, SIGNATURE_HEADER: signature.decode(), TIMESTAMP_HEADER: ts}


def _json(value, events: int) -> Example:
    return Example(json.dumps(value).encode(), {"Content-Type": "application/json"}, events)


_DOCUMENTED_EVENTS = [
    sendgrid_event(kind, f"c{n}@example.com", n) for n, kind in enumerate(SENDGRID_EVENTS)
] + [sendgrid_blocked("blocked@example.com", 99)]

SENDGRID = Kit(
    env={"CAREFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY": _SENDGRID_KEYS[1]},
    sign=_sign_sendgrid,
    examples={
        "/webhooks/sendgrid": [_json(_DOCUMENTED_EVENTS, len(_DOCUMENTED_EVENTS))],
    },
    malformed={"/webhooks/sendgrid": _json({"events": _DOCUMENTED_EVENTS}, 0)},
)


def _sign_sinch(route: str, body: bytes, headers: dict, now: datetime, *, forged=False):
    token = "another-path-token-0123456789abcdef" if forged else SINCH_TOKEN
    return route.replace("{token}", token), headers


def _sinch(fax_id: str, status: str, encoding: str) -> Example:
    return Example(*sinch_callback(sinch_fax(fax_id, status, FAX_NUMBER), encoding), 1)


SINCH = Kit(
    env={"CAREFLOW_SINCH_CALLBACK_TOKEN": SINCH_TOKEN},
    sign=_sign_sinch,
    examples={
        "/webhooks/sinch/{token}": [
            _sinch("01KNPQW6SGZKAZEX8ZX7MCN559", "COMPLETED", "multipart"),
            _sinch("01KNPQW6SGZKAZEX8ZX7MCN560", "FAILURE", "json"),
        ],
    },
    malformed={"/webhooks/sinch/{token}": _json({"event": "FAX_COMPLETED", "fax": "nope"}, 0)},
)

KITS = {"twilio": TWILIO, "sendgrid": SENDGRID, "sinch": SINCH}

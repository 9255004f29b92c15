"""The webhook registry: a provider declared once gets a verified, recorded route."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from careflow.db.models import ContactEvent
from careflow.errors import ConfigError
from careflow.events import EventKind, InboundEvent
from careflow.service.app import create_app
from careflow.settings import load_settings
from careflow.webhooks import registry
from careflow.webhooks.registry import Answer, Configured, Hook, WebhookProvider
from tests.service.asgi import request, running

KEY = "loft-secret-0123456789abcdef"
SIGNATURE = "X-Pigeon-Signature"
RING = {"ring": "NL-2026-0042", "loft": "loft 7", "arrived": "2026-11-22T08:59:00"}


def _signature(key: str, body: bytes) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def _parse(posted, received_at) -> list[InboundEvent]:
    note = json.loads(posted.body)
    return [
        InboundEvent(
            provider="pigeon",
            kind=EventKind.DELIVERED,
            event_id=note["ring"],
            occurred_at=datetime.fromisoformat(note["arrived"]),
            channel="pigeon",
            recipient=note["loft"],
            raw=note,
        )
    ]


@pytest.fixture
def pigeon():
    """A fictitious provider: one registration, no other edit."""
    registry.register(
        WebhookProvider(
            "pigeon",
            hooks=(Hook("/webhooks/pigeon", _parse, Answer(200, "coo", "text/plain")),),
            configure=lambda settings, local: Configured(KEY, "/webhooks/pigeon, HMAC-SHA256"),
            off="never",
            ready=lambda key, posted: SIGNATURE in posted.headers,
            verify=lambda key, posted, now: hmac.compare_digest(
                posted.headers[SIGNATURE], _signature(key, posted.body)
            ),
            max_body=1024,
            media_types=("application/json",),
        )
    )
    yield
    registry.unregister("pigeon")


def test_a_registered_provider_gets_a_verified_recorded_route(
    pigeon, engine, monkeypatch, caplog
):
    # every built-in provider is off (no CAREFLOW_* keys): the pigeon alone is heard
    app = create_app(load_settings(), engine, clock=lambda: datetime(2026, 11, 22, tzinfo=UTC))
    body = json.dumps(RING).encode()
    signed = {"content-type": "application/json", SIGNATURE: _signature(KEY, body)}

    async def scenario():
        async with running(app):
            calls = [await request(app, "POST", "/webhooks/pigeon", headers=signed, chunks=[body])]
            calls.append(await request(app, "POST", "/webhooks/pigeon", headers=signed,
                                       chunks=[body]))  # fmt: skip
            forged = {**signed, SIGNATURE: _signature("another-key", body)}
            calls.append(await request(app, "POST", "/webhooks/pigeon", headers=forged,
                                       chunks=[body]))  # fmt: skip
            unsigned = {"content-type": "application/json"}
            calls.append(await request(app, "POST", "/webhooks/pigeon", headers=unsigned,
                                       chunks=[body]))  # fmt: skip
            calls.append(await request(app, "POST", "/webhooks/pigeon",
                                       headers={**signed, "content-type": "text/plain"},
                                       chunks=[body]))  # fmt: skip
            calls.append(await request(app, "POST", "/webhooks/pigeon", headers=signed,
                                       chunks=[b" " * 1025]))  # fmt: skip
            return calls

    with caplog.at_level(logging.INFO, logger="careflow.serve"):
        calls = asyncio.run(scenario())
    assert [(c.status, c.body) for c in calls[:2]] == [(200, b"coo")] * 2  # a retry too
    assert [c.status for c in calls[2:]] == [403, 403, 415, 413]
    assert calls[3].pulled == calls[4].pulled == 0  # refused before the body was read
    with engine.connect() as conn:
        (event,) = conn.execute(select(ContactEvent)).all()
    assert (event.kind, event.occurred_at) == ("delivered", datetime(2026, 11, 22, 8, 59))
    assert "receiver pigeon: on (/webhooks/pigeon, HMAC-SHA256)" in caplog.messages
    assert "POST /webhooks/pigeon 200" in " ".join(caplog.messages)


def test_a_route_another_provider_serves_cannot_be_registered_twice():
    (twilio,) = [p for p in registry.providers() if p.name == "twilio"]
    with pytest.raises(ConfigError, match="^webhook route /webhooks/twilio/status is already"):
        registry.register(WebhookProvider(
            "copycat", hooks=twilio.hooks[:1], configure=twilio.configure, off="",
            ready=twilio.ready, verify=twilio.verify,
        ))  # fmt: skip
    with pytest.raises(ConfigError, match="^webhook provider 'twilio' is already registered"):
        registry.register(twilio)
    assert "copycat" not in [p.name for p in registry.providers()]

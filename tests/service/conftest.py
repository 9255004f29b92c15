"""`careflow serve` on a loopback port, driven over real HTTP like a provider would."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime

import pytest
import uvicorn

from careflow import db
from careflow.service.app import create_app
from careflow.settings import load_settings
from careflow.unsubscribe import UnsubscribeTokens
from tests.providers.kit import sendgrid_webhook_keys

TWILIO_TOKEN = "twilio-test-auth-token-0123456789"
SINCH_TOKEN = "sinch-path-token-0123456789abcdef"
UNSUB_SECRET = "unsubscribe-secret-for-tests-0123456789abcdef"
PUBLIC = "https://care.example.com"
SHOP_SECRET = "shop-events-secret-0123456789abcdef"
POS_SECRET = "pos-events-secret-0123456789abcdef"


class Clock:
    """A fake clock the service reads (signature tolerance, token expiry)."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def sendgrid_keys():
    return sendgrid_webhook_keys()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, url: str, clock: Clock, settings):
        self.url, self.clock, self.settings = url, clock, settings


@pytest.fixture
def served(db_url, monkeypatch, sendgrid_keys):
    """The service on 127.0.0.1:<free port> with test credentials; yields its URL and clock."""
    monkeypatch.setenv("CAREFLOW_TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    monkeypatch.setenv("CAREFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY", sendgrid_keys[1])
    monkeypatch.setenv("CAREFLOW_SINCH_CALLBACK_TOKEN", SINCH_TOKEN)
    monkeypatch.setenv("CAREFLOW_UNSUBSCRIBE_SECRET", UNSUB_SECRET)
    monkeypatch.setenv("CAREFLOW_PUBLIC_BASE_URL", PUBLIC)
    monkeypatch.setenv("CAREFLOW_SERVE_MAX_BODY_BYTES", "100000")
    monkeypatch.setenv("CAREFLOW_EVENT_SOURCES", f"shop={SHOP_SECRET},pos={POS_SECRET}")
    monkeypatch.setenv("CAREFLOW_EVENT_MAX_BODY_BYTES", "100000")
    settings = load_settings()
    clock = Clock(datetime(2026, 11, 22, 9, 0, tzinfo=UTC))
    emitted: list[dict] = []  # Prefect events, as emit_event would receive them
    app = create_app(
        settings,
        db.engine_for(db_url),
        unsubscribe=UnsubscribeTokens(UNSUB_SECRET),
        clock=clock,
        emitter=emitted.append,
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    # uvicorn sets .started once it listens; wait on it without a fixed sleep
    while not server.started and thread.is_alive():
        started.wait(0.01)
    assert server.started, "careflow serve did not start"
    served = Served(f"http://127.0.0.1:{port}", clock, settings)
    served.emitted = emitted
    yield served
    server.should_exit = True
    thread.join(10)

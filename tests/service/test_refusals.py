"""What the service refuses, and how cheaply: nothing unsigned is read, nothing stalls the loop.

In-process (tests/service/asgi.py), so a test sees how many body chunks the
service took and whether /healthz answers while other requests are held.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from sqlalchemy import create_engine

from careflow.errors import ConfigError
from careflow.service.app import create_app
from careflow.settings import load_settings
from careflow.unsubscribe import UnsubscribeTokens
from careflow.webhooks import bodies, twilio
from careflow.webhooks import sendgrid as sendgrid_hooks
from tests.service.asgi import WAIT, Call, request
from tests.service.conftest import PUBLIC, SINCH_TOKEN, TWILIO_TOKEN, UNSUB_SECRET

MB = 1024 * 1024


@pytest.fixture
def configured(monkeypatch, tmp_path, sendgrid_keys):
    """Every receiver on, as in production; no database writes are needed here."""
    monkeypatch.setenv("CAREFLOW_TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    monkeypatch.setenv("CAREFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY", sendgrid_keys[1])
    monkeypatch.setenv("CAREFLOW_SINCH_CALLBACK_TOKEN", SINCH_TOKEN)
    monkeypatch.setenv("CAREFLOW_PUBLIC_BASE_URL", PUBLIC)
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path / "home"))
    return load_settings()


@pytest.fixture
def app(configured, tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    return create_app(configured, engine, unsubscribe=UnsubscribeTokens(UNSUB_SECRET))


@pytest.fixture
def parsers(monkeypatch):
    """Counts every call of a signature check or body parser the service makes."""
    calls: list[str] = []

    def counting(module, name):
        real = getattr(module, name)

        def spy(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)

    counting(twilio, "verify")
    counting(sendgrid_hooks, "verify")
    counting(bodies, "json_value")
    counting(bodies, "form_fields")
    return calls


FOUR_MB = [b"x" * (64 * 1024)] * 64
UNSIGNED = [
    ("/webhooks/twilio/status", "", {"content-type": "application/x-www-form-urlencoded"}, 403),
    ("/webhooks/twilio/inbound", "", {"content-type": "application/x-www-form-urlencoded"}, 403),
    ("/webhooks/sendgrid", "", {"content-type": "application/json"}, 403),
    ("/webhooks/sinch/not-the-token-0123456789abcdef", "", {}, 403),
    ("/unsubscribe", "token=v2.forged.AAAAAAAAAAAAAAAAAAAAAA", {}, 400),
]


@pytest.mark.parametrize("path, query, headers, status", UNSIGNED, ids=lambda v: str(v)[:24])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_unsigned_request_is_refused_before_a_byte_of_it_is_read(
    app, parsers, path, query, headers, status, declared
):
    """Before: an unsigned 4 MB Twilio form was read and parsed in full (seconds of CPU on
    the event loop) and only then found unsigned."""
    if declared:
        headers = {**headers, "content-length": str(len(FOUR_MB) * len(FOUR_MB[0]))}
    call = asyncio.run(request(app, "POST", path, query=query, headers=headers, chunks=FOUR_MB))
    assert call.status == status
    assert call.pulled == 0 and parsers == []


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_signed_twilio_form_past_its_bound_is_refused_unparsed(app, parsers, declared):
    """Twilio posts a few KB; the bound is 64 KiB, not CAREFLOW_SERVE_MAX_BODY_BYTES (5 MB)."""
    headers = {
        "x-twilio-signature": "c2lnbmVk",
        "content-type": "application/x-www-form-urlencoded",
    }
    chunk = b"x" * (16 * 1024)
    if declared:
        headers["content-length"] = str(twilio.MAX_BODY + 1)
    call = asyncio.run(
        request(app, "POST", "/webhooks/twilio/status", headers=headers, chunks=[chunk] * 64)
    )
    assert call.status == 413
    assert call.pulled == (0 if declared else twilio.MAX_BODY // len(chunk) + 1)
    assert parsers == []


def test_healthz_answers_while_requests_are_held_mid_body_or_being_checked(app, monkeypatch):
    """Before: a large body was verified and parsed on the event loop, and /healthz waited
    behind four of them. Now signature checks and parsing of large bodies run on threads."""
    inside, release = threading.Semaphore(0), threading.Event()

    def slow_verify(*args, **kwargs):  # a signature check that takes as long as the test says
        inside.release()
        release.wait(10)  # only a guard against a stalled loop: the test releases it
        return False

    monkeypatch.setattr(sendgrid_hooks, "verify", slow_verify)
    sendgrid = {"x-twilio-email-event-webhook-signature": "c2ln",
                "x-twilio-email-event-webhook-timestamp": "1795338000"}  # fmt: skip

    async def scenario():
        held = [Call() for _ in range(4)]
        trickling = [
            asyncio.create_task(
                request(app, "POST", "/webhooks/twilio/status", call=call,
                        headers={"x-twilio-signature": "c2ln"}, chunks=[b"a=1", WAIT, b"&b=2"])
            )
            for call in held
        ]  # fmt: skip
        checking = [
            asyncio.create_task(request(app, "POST", "/webhooks/sendgrid", headers=sendgrid,
                                        chunks=[b"[]"]))
            for _ in range(4)
        ]  # fmt: skip
        for call in held:
            await call.waiting.wait()
        for _ in checking:  # every signature check has started (on a thread) and is stuck
            await asyncio.to_thread(inside.acquire)
        health = await request(app, "GET", "/healthz")
        still_busy = not any(task.done() for task in trickling + checking)
        release.set()
        for call in held:
            call.resume.set()
        answers = await asyncio.gather(*trickling, *checking)
        return health, still_busy, [a.status for a in answers]

    health, still_busy, statuses = asyncio.run(scenario())
    assert health.status == 200 and still_busy
    assert statuses == [403] * 8  # forged, every one


def test_a_twilio_receiver_without_its_public_url_does_not_start(configured, tmp_path):
    """Before: the signed URL was rebuilt from the Host header, so a request signed for any
    host was accepted, and behind the documented proxy genuine callbacks failed."""
    settings = configured.model_copy(update={"public_base_url": None})
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ConfigError, match="^CAREFLOW_PUBLIC_BASE_URL is missing.*--local$"):
        create_app(settings, engine)
    create_app(settings, engine, local=True)  # the explicit opt-in for this machine


def test_with_a_public_url_a_request_signed_for_another_host_is_forged(app):
    from twilio.request_validator import RequestValidator

    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    path = "/webhooks/twilio/status"
    for host in ("evil.example", "127.0.0.1:8080"):
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(f"http://{host}{path}", params)
        call = asyncio.run(request(
            app, "POST", path, chunks=[b"MessageSid=SM1&MessageStatus=delivered"],
            headers={"x-twilio-signature": signature, "host": host,
                     "content-type": "application/x-www-form-urlencoded"},
        ))  # fmt: skip
        assert call.status == 403


def test_the_receivers_on_and_off_are_logged_at_start(configured, tmp_path, caplog):
    settings = configured.model_copy(update={"sendgrid_webhook_public_key": None})
    app = create_app(settings, create_engine(f"sqlite:///{tmp_path / 'e.db'}"))

    async def start_and_stop():
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent = []

        async def receive():
            return next(messages)

        async def send(message):
            sent.append(message["type"])

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
        return sent

    with caplog.at_level(logging.INFO, logger="careflow.serve"):
        assert asyncio.run(start_and_stop())[0] == "lifespan.startup.complete"
    lines = [r.getMessage() for r in caplog.records if r.name == "careflow.serve"]
    assert lines == [
        f"receiver twilio: on (/webhooks/twilio/status and /inbound, signed URLs on {PUBLIC})",
        "receiver sendgrid: off (CAREFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY is not set)",
        "receiver sinch: on (/webhooks/sinch/<CAREFLOW_SINCH_CALLBACK_TOKEN>)",
        "receiver unsubscribe: off (neither CAREFLOW_UNSUBSCRIBE_BASE_URL nor "
        "CAREFLOW_UNSUBSCRIBE_SECRET is set)",
        "receiver events: off (CAREFLOW_EVENT_SOURCES is not set)",
    ]
    assert SINCH_TOKEN not in "".join(lines)
    # an unconfigured receiver answers 404
    assert asyncio.run(request(app, "POST", "/webhooks/sendgrid")).status == 404
    assert asyncio.run(request(app, "POST", "/events")).status == 404
    assert asyncio.run(request(app, "GET", "/unsubscribe", query="token=x")).status == 404


def test_a_service_with_nothing_to_receive_does_not_start(tmp_path, monkeypatch):
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="^careflow serve has nothing to receive: twilio: "):
        create_app(load_settings(), create_engine(f"sqlite:///{tmp_path / 'e.db'}"))


@pytest.mark.parametrize("token", ["a" * 24, "abc" * 10, "123456789012345678901234", " " * 30])
def test_a_guessable_sinch_path_token_does_not_start(configured, tmp_path, token):
    """Before: any 24 characters passed, 24 times the same one included."""
    from pydantic import SecretStr

    settings = configured.model_copy(update={"sinch_callback_token": SecretStr(token)})
    with pytest.raises(ConfigError, match="CAREFLOW_SINCH_CALLBACK_TOKEN is too easy to guess"):
        create_app(settings, create_engine(f"sqlite:///{tmp_path / 'e.db'}"))


def test_an_unexpected_error_is_a_bare_500_and_one_log_line(app, monkeypatch, caplog):
    """Before: uvicorn printed the traceback (values included) into the log."""
    from careflow.service import pages

    def broken(*args):
        raise KeyError("+8613812345678")

    monkeypatch.setattr(pages, "invalid", broken)
    with caplog.at_level(logging.INFO, logger="careflow.serve"):
        call = asyncio.run(request(app, "GET", "/unsubscribe", query="token=forged"))
    assert call.status == 500 and call.body == b"internal error"
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage().startswith("unexpected KeyError at ") and error.exc_info is None
    assert "+86138" not in caplog.text

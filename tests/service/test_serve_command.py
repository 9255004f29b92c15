"""`careflow serve` starts only with what it needs, from where the senders take it.

uvicorn.run is replaced by a catcher, so each test gets the app the command
built (or the one line it failed with) without listening on a port.
"""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from careflow import db
from careflow.channels.email import SendGridEmail
from careflow.channels.outbox import OutboxChannel
from careflow.cli.main import main
from careflow.settings import load_settings
from tests.factories import add_customer
from tests.providers.kit import live_settings
from tests.service.asgi import request, running
from tests.service.conftest import PUBLIC, TWILIO_TOKEN, UNSUB_SECRET

BLOCK_KEY = "Blk7mQ2vR9xT4pW8zL3nC6yH1sD5gF0jKe"  # the key as a Prefect block holds it


@pytest.fixture
def serve(monkeypatch, tmp_path):
    """Runs `careflow serve ARGS`; returns (exit code, output, the app it would serve)."""
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'careflow.db'}"
    db.upgrade(url)
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", url)
    for name in (
        "CAREFLOW_UNSUBSCRIBE_SECRET",
        "CAREFLOW_UNSUBSCRIBE_BASE_URL",
        "CAREFLOW_TWILIO_AUTH_TOKEN",
        "CAREFLOW_PUBLIC_BASE_URL",
        "CAREFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY",
        "CAREFLOW_SINCH_CALLBACK_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)  # fmt: skip
    served = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: served.update(app=app, **kwargs))

    def run(*args: str):
        served.clear()
        result = CliRunner().invoke(main, ["serve", *args])
        return result.exit_code, result.output, served.get("app")

    return run


def _one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


@pytest.mark.parametrize("empty", [None, ""], ids=["missing", "empty"])
def test_no_unsubscribe_key_with_the_page_on_stops_the_start(serve, monkeypatch, empty):
    """Before: it started and verified with a random key of its own, so every link failed."""
    monkeypatch.setenv("CAREFLOW_UNSUBSCRIBE_BASE_URL", "https://care.example.com/unsubscribe")
    if empty is not None:
        monkeypatch.setenv("CAREFLOW_UNSUBSCRIBE_SECRET", empty)
    code, output, app = serve()
    assert code == 2 and app is None
    assert "CAREFLOW_UNSUBSCRIBE_SECRET is missing" in _one_error_line(output)


@pytest.mark.parametrize(
    "key, error",
    [(" " * 32, "is missing"), ("k" * 40, "is too easy to guess"),
     ("abcd" * 10, "is too easy to guess"), ("0123456789" * 4, "is too easy to guess")],
)  # fmt: skip
def test_a_blank_or_guessable_unsubscribe_key_stops_the_start(serve, monkeypatch, key, error):
    """Before: 32 spaces passed the length check (a key is read without surrounding space,
    as every credential is, so that one is missing)."""
    monkeypatch.setenv("CAREFLOW_UNSUBSCRIBE_BASE_URL", "https://care.example.com/unsubscribe")
    monkeypatch.setenv("CAREFLOW_UNSUBSCRIBE_SECRET", key)
    code, output, app = serve()
    assert code == 2 and app is None
    assert f"CAREFLOW_UNSUBSCRIBE_SECRET {error}" in _one_error_line(output)
    assert key not in output


def test_the_service_verifies_links_signed_with_a_key_from_a_prefect_block(
    serve, monkeypatch, tmp_path
):
    """Before: the email channel took its key from a Prefect block the service never read."""
    from careflow.channels import credentials

    def careflow_block(field: str, name: str):
        return BLOCK_KEY if field == "unsubscribe_secret" else None

    monkeypatch.setattr(credentials, "load_careflow_block", careflow_block)
    monkeypatch.setenv("CAREFLOW_UNSUBSCRIBE_BASE_URL", "https://care.example.com/unsubscribe")
    sender = SendGridEmail(live_settings(unsubscribe_secret=None,
                                         credentials_from_prefect_blocks=True))  # fmt: skip
    token = sender._unsubscribe.make(1, "winback", "2026")
    code, output, app = serve()
    assert code == 0, output
    add_customer_to(tmp_path)
    call = asyncio.run(request(app, "GET", "/unsubscribe", query=f"token={token}"))
    assert call.status == 200 and "Unsubscribe" in call.body.decode()


def add_customer_to(tmp_path):
    add_customer(db.engine_for(f"sqlite:///{tmp_path / 'careflow.db'}"), 1,
                 email="ann@example.com", locale="en")  # fmt: skip


def test_twilio_without_a_public_url_stops_the_start_unless_local(serve, monkeypatch, tmp_path):
    monkeypatch.setenv("CAREFLOW_TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    code, output, app = serve()
    assert code == 2 and "CAREFLOW_PUBLIC_BASE_URL is missing" in _one_error_line(output)
    code, output, app = serve("--local")
    assert code == 0 and app is not None
    code, output, app = serve("--local", "--host", "0.0.0.0")
    assert code == 2 and "--local listens on this machine only" in _one_error_line(output)
    assert app is None


def test_without_the_page_configured_it_is_off_and_says_why(serve, monkeypatch):
    monkeypatch.setenv("CAREFLOW_TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    monkeypatch.setenv("CAREFLOW_PUBLIC_BASE_URL", PUBLIC)
    code, output, app = serve()
    assert code == 0, output
    assert [str(r) for r in app.state.receivers if not r.on] == [
        "sendgrid: off (CAREFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY is not set)",
        "sinch: off (CAREFLOW_SINCH_CALLBACK_TOKEN is not set)",
        "unsubscribe: off (neither CAREFLOW_UNSUBSCRIBE_BASE_URL nor "
        "CAREFLOW_UNSUBSCRIBE_SECRET is set)",
        "events: off (CAREFLOW_EVENT_SOURCES is not set)",
    ]
    assert asyncio.run(request(app, "GET", "/unsubscribe", query="token=x")).status == 404


def test_local_serves_the_outbox_links_with_the_outbox_key(serve, monkeypatch, tmp_path):
    """The explicit opt-in for this machine: no key configured, the outbox's own is used."""
    settings = load_settings()
    outbox = OutboxChannel.from_settings(settings)
    token = outbox.tokens.make(1, "winback", "2026")
    code, output, app = serve("--local")
    assert code == 0, output
    (page,) = [r for r in app.state.receivers if r.name == "unsubscribe"]
    assert str(page).startswith("unsubscribe: on (/unsubscribe, key from ")
    add_customer_to(tmp_path)
    call = asyncio.run(request(app, "GET", "/unsubscribe", query=f"token={token}"))
    assert call.status == 200
    # with a key configured, sender and service take that one instead
    monkeypatch.setenv("CAREFLOW_UNSUBSCRIBE_SECRET", UNSUB_SECRET)
    code, output, app = serve("--local")
    assert code == 0, output
    call = asyncio.run(request(app, "GET", "/unsubscribe", query=f"token={token}"))
    assert call.status == 400


def test_workers_each_build_the_service_and_a_bad_setting_stops_them_all(serve, monkeypatch):
    """`--workers N` (issue 23): uvicorn starts N processes, each building its own app
    (its engine and writer) by name; --local reaches them; a configuration error
    stops the command before any starts."""
    from careflow.cli.serve import worker_app
    from tests.webhooks.payloads import twilio_signed, twilio_status

    monkeypatch.setenv("CAREFLOW_TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    code, output, app = serve("--workers", "2")
    assert code == 2 and "CAREFLOW_PUBLIC_BASE_URL is missing" in _one_error_line(output)
    assert app is None
    code, output, app = serve("--local", "--workers", "2")
    assert code == 0, output
    assert app == "careflow.cli.serve:worker_app" and "2 worker processes" in output
    each = worker_app()  # what each worker process does: --local came with it
    url = "http://127.0.0.1:8080/webhooks/twilio/status"
    body, headers = twilio_signed(TWILIO_TOKEN, url, twilio_status("SM1", "delivered", "+1"))
    headers["host"] = "127.0.0.1:8080"

    async def post():
        async with running(each):
            return await request(each, "POST", "/webhooks/twilio/status", headers=headers,
                                 chunks=[body])  # fmt: skip

    assert asyncio.run(post()).status == 204
    with db.engine_for(load_settings().effective_database_url).connect() as conn:
        stored = conn.execute(text("SELECT event_id FROM contact_events")).scalars().all()
    assert stored == ["SM1:delivered"]

"""SendGridEmail: request shape, unsubscribe links, configuration, errors.

The tokens themselves are tested in tests/test_unsubscribe.py."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from python_http_client.exceptions import HTTPError

from careflow.channels import email as email_channel
from careflow.channels.email import SendGridEmail
from careflow.channels.email_content import unsubscribe_url
from careflow.errors import ChannelDown, ConfigError, PermanentError, TransientError
from careflow.messages import State
from careflow.unsubscribe import UnsubscribeRequest, UnsubscribeTokens
from tests.providers.fault_server import FaultServer
from tests.providers.kit import SENDGRID_KEY, UNSUB_SECRET, live_settings, make_message


def test_unsubscribe_url_keeps_existing_query() -> None:
    assert unsubscribe_url("https://x.example/u", "T") == "https://x.example/u?token=T"
    assert unsubscribe_url("https://x.example/u?l=zh", "T") == "https://x.example/u?l=zh&token=T"


def _send(server: FaultServer, *messages, **settings):
    with SendGridEmail(live_settings(server.base_url, **settings)) as channel:
        return channel.send_batch(list(messages))


def test_marketing_mail_request(fault_server: FaultServer) -> None:
    message = make_message(7, "email", "Customer7@Example.com")
    before = datetime.now(UTC).replace(microsecond=0)
    [outcome] = _send(fault_server, message, sendgrid_reply_to="help@example.com")
    after = datetime.now(UTC)
    assert outcome.state == State.SENT and outcome.provider_id
    [body] = fault_server.bodies
    assert body["from"] == {"email": "care@example.com", "name": "Lotus & Pine"}
    assert body["reply_to"] == {"email": "help@example.com"}
    assert body["subject"] == "生日快乐"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["categories"] == ["birthday"]
    [person] = body["personalizations"]
    assert person["to"] == [{"email": "Customer7@example.com"}]  # domain normalised
    assert person["custom_args"] == {"careflow_key": message.key, "contact_id": "1007"}
    headers = person["headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(
        r"<(https://care\.example\.com/unsubscribe\?token=(\S+))>", headers["List-Unsubscribe"]
    )
    assert url, headers
    request = UnsubscribeTokens(UNSUB_SECRET).verify(url.group(2))
    assert request == UnsubscribeRequest(7, "birthday", "2026", request.issued_at)
    assert before <= request.issued_at <= after  # issued as the mail was built
    text, html = (c["value"] for c in body["content"])
    assert f"退订: {url.group(1)}" in text  # zh-CN footer
    assert html.endswith("</p></body></html>") and "退订</a>" in html


def test_service_mail_has_no_unsubscribe(fault_server: FaultServer) -> None:
    message = make_message(1, "email", "a@example.com", marketing=False, html=None, locale="en")
    _send(fault_server, message)
    [body] = fault_server.bodies
    assert "headers" not in body["personalizations"][0]
    assert body["content"] == [{"type": "text/plain", "value": message.body}]


def test_template_places_the_link(fault_server: FaultServer) -> None:
    message = make_message(
        1,
        "email",
        "a@example.com",
        locale="en",
        body="Hi! Opt out: %unsubscribe_url%",
        html='<p>Hi! <a href="%unsubscribe_url%">opt out</a></p>',
    )
    _send(fault_server, message)
    text, html = (c["value"] for c in fault_server.bodies[0]["content"])
    assert text.startswith("Hi! Opt out: https://care.example.com/unsubscribe?token=v2.")
    assert "Unsubscribe:" not in text and html.count("token=v2.") == 1


@pytest.mark.parametrize(
    "fields, reason, state",
    [
        ({"to": "not an address"}, "invalid_contact", State.SKIPPED),
        ({"subject": None}, "missing_subject", State.FAILED),
    ],
)
def test_refused_before_sending(fault_server: FaultServer, fields, reason, state) -> None:
    message = make_message(1, "email", **{"to": "a@example.com", **fields})
    [outcome] = _send(fault_server, message)
    assert (outcome.state, outcome.reason) == (state, reason)
    assert not fault_server.attempts


@pytest.mark.parametrize(
    "action, reason, retryable",
    [
        ("http:400:4001", "invalid_contact", False),  # SendGrid names the field
        ("http:413", "provider_rejected", False),
        ("http:403", "auth_failed", True),  # refused credentials: the channel is down
    ],
)
def test_error_answers(
    fault_server: FaultServer, action: str, reason: str, retryable: bool
) -> None:
    message = make_message(1, "email", "a@example.com")
    fault_server.script(message.to, [action])
    try:
        [outcome] = _send(fault_server, message)
    except ChannelDown as down:
        assert reason == "auth_failed"
        [outcome] = down.outcomes
    assert (outcome.state, outcome.reason, outcome.retryable) == (State.FAILED, reason, retryable)
    assert outcome.detail.startswith("sendgrid HTTP")


def test_rate_limit_reset_header(monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_800_000_000.25
    monkeypatch.setattr(email_channel, "time", SimpleNamespace(time=lambda: now))
    for reset, wait in [(now + 3, 3.0), (now - 5, 0.0)]:
        headers = {"X-RateLimit-Reset": str(reset)}  # SendGrid: the window's end, Unix time
        exc = HTTPError(429, "Too Many Requests", b'{"errors":[]}', headers)
        error = SendGridEmail._error(exc)
        assert isinstance(error, TransientError) and error.retry_after == pytest.approx(wait)
    exc = HTTPError(429, "Too Many Requests", b"", {"Retry-After": "7"})
    assert SendGridEmail._error(exc).retry_after == 7
    assert isinstance(SendGridEmail._error(HTTPError(400, "Bad", b"x", {})), PermanentError)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sendgrid_api_key": None}, "CAREFLOW_SENDGRID_API_KEY is missing"),
        ({"sendgrid_api_key": "not-a-key"}, "CAREFLOW_SENDGRID_API_KEY must start with SG."),
        ({"sendgrid_from_email": None}, "CAREFLOW_SENDGRID_FROM_EMAIL is missing"),
        ({"sendgrid_from_email": "care@"}, "CAREFLOW_SENDGRID_FROM_EMAIL is not a valid"),
        ({"sendgrid_reply_to": "x"}, "CAREFLOW_SENDGRID_REPLY_TO is not a valid"),
        ({"sendgrid_api_base_url": "api.sendgrid.com"}, "CAREFLOW_SENDGRID_API_BASE_URL"),
        ({"unsubscribe_base_url": None}, "CAREFLOW_UNSUBSCRIBE_BASE_URL is missing"),
        ({"unsubscribe_secret": None}, "CAREFLOW_UNSUBSCRIBE_SECRET is missing"),
        ({"unsubscribe_secret": ""}, "CAREFLOW_UNSUBSCRIBE_SECRET is missing"),
        ({"unsubscribe_secret": "short"}, "CAREFLOW_UNSUBSCRIBE_SECRET must be at least 32 bytes"),
        ({"unsubscribe_secret": "s" * 31}, "CAREFLOW_UNSUBSCRIBE_SECRET must be at least 32 bytes"),
    ],
)
def test_config_errors_name_the_setting(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        SendGridEmail(live_settings(**overrides))
    assert SENDGRID_KEY not in str(raised.value)


def test_credentials_never_logged(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _send(fault_server, make_message(1, "email", "a@example.com"))
    assert caplog.records
    assert SENDGRID_KEY not in caplog.text and UNSUB_SECRET not in caplog.text

"""Every request careflow sends must satisfy the providers' official OpenAPI specs.

Prism serves twilio_api_v2010.json and tsg_mail_v3.json with ``--errors``:
a request that violates the spec is refused *and* logged as a violation.
The real SDKs send through the real channels; the test then requires that
all were accepted and that Prism's log shows no violation.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from careflow.channels.email import SendGridEmail
from careflow.channels.fax import EmailFaxGateway
from careflow.channels.sms import TwilioSMS
from careflow.messages import State
from tests.providers.kit import (
    SENDGRID_KEY,
    live_settings,
    make_message,
    need_cjk_font,
    recipient_of,
)
from tests.providers.prism import PrismServer

pytestmark = pytest.mark.mockserver

SMS_BODIES = [
    ("生日快乐！本月到店享九折。", "zh-CN", True),  # UCS-2, gets the opt-out line
    ("Happy birthday! 10% off all month at Lotus & Pine.", "en", True),  # GSM-7
    ("Your order #123 [ready] ~ pick up at {store} | €5 voucher", "en", False),  # GSM ext
    ("Geburtstag: 🎂 Überraschung wartet", "de", True),  # emoji: UCS-2 surrogates
]


def _assert_clean(prism: PrismServer, mark: int, expected_requests: int) -> None:
    violations = prism.violations(since=mark)
    assert violations == [], "Prism reported spec violations:\n" + "\n".join(violations)
    assert prism.requests_seen(since=mark) == expected_requests


@pytest.mark.parametrize("sender", ["from_number", "messaging_service"])
def test_sms_batch_satisfies_twilio_spec(prism_twilio: PrismServer, sender: str) -> None:
    overrides: dict[str, object] = {
        "twilio_status_callback_url": "https://care.example.com/hooks/twilio/status"
    }
    if sender == "messaging_service":
        overrides["twilio_messaging_service_sid"] = "MG" + "0123456789abcdef" * 2
    mark = prism_twilio.mark()
    messages = [
        make_message(i, "sms", recipient_of("sms", i), body=body, locale=locale, marketing=mkt)
        for i, (body, locale, mkt) in enumerate(SMS_BODIES * 3)
    ]
    with TwilioSMS(live_settings(prism_twilio.base_url, **overrides)) as channel:
        outcomes = channel.send_batch(messages)
    assert [o.state for o in outcomes] == [State.SENT] * len(messages), outcomes
    assert all(o.provider_id and o.provider_id.startswith(("SM", "MM")) for o in outcomes)
    _assert_clean(prism_twilio, mark, len(messages))


def test_email_batch_satisfies_sendgrid_spec(prism_sendgrid: PrismServer) -> None:
    settings = live_settings(prism_sendgrid.base_url, sendgrid_reply_to="help@example.com")
    messages = [
        make_message(i, "email", recipient_of("email", i), marketing=i % 2 == 0,
                     html=None if i % 3 == 0 else make_message(i, "email", "x").html)
        for i in range(12)
    ]
    mark = prism_sendgrid.mark()
    with SendGridEmail(settings) as channel:
        outcomes = channel.send_batch(messages)
    assert [o.state for o in outcomes] == [State.SENT] * len(messages), outcomes
    _assert_clean(prism_sendgrid, mark, len(messages))


def test_email_fax_gateway_satisfies_sendgrid_spec(prism_sendgrid: PrismServer) -> None:
    need_cjk_font()
    settings = live_settings(prism_sendgrid.base_url, fax_provider="email_gateway")
    messages = [make_message(i, "fax", recipient_of("sms", i)) for i in range(3)]
    mark = prism_sendgrid.mark()
    with EmailFaxGateway(settings) as channel:
        outcomes = channel.send_batch(messages)
    assert [o.state for o in outcomes] == [State.SENT] * 3, outcomes
    _assert_clean(prism_sendgrid, mark, 3)


def test_prism_does_report_violations(prism_sendgrid: PrismServer) -> None:
    """Negative control: a request the spec forbids is refused and logged."""
    mark = prism_sendgrid.mark()
    body = {
        "personalizations": [{"to": [{"email": "a@example.com"}]}],
        "from": {"email": "care@example.com"},
        "subject": "x",
        "content": [{"type": "text/plain", "value": "x"}],
        "custom_args": {"contact_id": 1},  # the spec wants a string here
    }
    request = urllib.request.Request(
        prism_sendgrid.base_url + "/v3/mail/send",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {SENDGRID_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code in (400, 422)
    assert any("custom_args" in line for line in prism_sendgrid.violations(since=mark))

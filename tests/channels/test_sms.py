"""TwilioSMS and SMS segment arithmetic, table-driven."""

from __future__ import annotations

import logging

import pytest

from careflow.channels.sms import TwilioSMS
from careflow.channels.sms_text import SegmentInfo, sms_preview, sms_segments, with_optout
from careflow.errors import ConfigError
from careflow.messages import State
from tests.providers.fault_server import FaultServer
from tests.providers.kit import TWILIO_TOKEN, cn_mobile, live_settings, make_message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", SegmentInfo("GSM-7", 0, 0, 0)),
        ("a" * 160, SegmentInfo("GSM-7", 160, 160, 1)),
        ("a" * 161, SegmentInfo("GSM-7", 161, 161, 2)),
        ("a" * 306, SegmentInfo("GSM-7", 306, 306, 2)),
        ("a" * 307, SegmentInfo("GSM-7", 307, 307, 3)),
        ("@£$¥èéùìòÇ\nØøÅå_ÆæßÉ!?¡¿§äöñüà", SegmentInfo("GSM-7", 30, 30, 1)),
        ("€" * 80, SegmentInfo("GSM-7", 80, 160, 1)),  # extension chars take 2 septets
        ("€" * 81, SegmentInfo("GSM-7", 81, 162, 2)),
        ("{}[]~|^\\", SegmentInfo("GSM-7", 8, 16, 1)),
        # 306 septets fit two parts only if the escape pair could be split: it can't.
        ("a" * 152 + "€" + "a" * 152, SegmentInfo("GSM-7", 305, 306, 3)),
        ("ç", SegmentInfo("UCS-2", 1, 1, 1)),  # only capital Ç is GSM-7
        ("你" * 70, SegmentInfo("UCS-2", 70, 70, 1)),
        ("你" * 71, SegmentInfo("UCS-2", 71, 71, 2)),
        ("你" * 134, SegmentInfo("UCS-2", 134, 134, 2)),
        ("你" * 135, SegmentInfo("UCS-2", 135, 135, 3)),
        ("😀" * 35, SegmentInfo("UCS-2", 35, 70, 1)),  # surrogate pairs: 2 units each
        ("😀" * 36, SegmentInfo("UCS-2", 36, 72, 2)),
        ("a" * 66 + "😀", SegmentInfo("UCS-2", 67, 68, 1)),
        ("a" * 159 + "你", SegmentInfo("UCS-2", 160, 160, 3)),  # one char switches all
    ],
)
def test_segments(text: str, expected: SegmentInfo) -> None:
    assert sms_segments(text) == expected


@pytest.mark.parametrize(
    "body, locale, marketing, optout, expected",
    [
        ("生日快乐！", "zh-CN", True, "回复TD退订", "生日快乐！回复TD退订"),
        ("生日快乐！ ", "zh_CN", True, "回复TD退订", "生日快乐！回复TD退订"),
        ("生日快乐！", "zh-CN", False, "回复TD退订", "生日快乐！"),  # service message
        ("Happy birthday!", "en", True, "回复TD退订", "Happy birthday!"),
        ("生日快乐！回复TD退订", "zh-CN", True, "回复TD退订", "生日快乐！回复TD退订"),
        # a customer's name that reads like the line does not stand in for it
        ("回复TD退订，生日快乐！", "zh-CN", True, "回复TD退订", "回复TD退订，生日快乐！回复TD退订"),
        ("生日快乐！", "zh-CN", True, "", "生日快乐！"),  # disabled
        ("生日快乐！", "zh-CN", True, "拒收请回复R", "生日快乐！拒收请回复R"),
    ],
)
def test_optout_line(body: str, locale: str, marketing: bool, optout: str, expected: str) -> None:
    assert with_optout(body, locale=locale, marketing=marketing, optout_zh=optout) == expected


def test_preview_reports_over_limit() -> None:
    settings = live_settings(sms_max_segments=2)
    fits = sms_preview("你" * 124, locale="zh-CN", marketing=True, settings=settings)
    assert fits.text.endswith("回复TD退订") and fits.info.segments == 2 and fits.problem is None
    over = sms_preview("你" * 130, locale="zh-CN", marketing=True, settings=settings)
    assert not over.within_limit
    assert "3 segments" in over.problem and "CAREFLOW_SMS_MAX_SEGMENTS=2" in over.problem


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"twilio_account_sid": None}, "CAREFLOW_TWILIO_ACCOUNT_SID is missing"),
        ({"twilio_account_sid": "SK" + "0" * 32}, "must start with AC"),
        ({"twilio_auth_token": None}, "CAREFLOW_TWILIO_AUTH_TOKEN is missing"),
        ({"twilio_auth_token": "secret-but-short"}, "CAREFLOW_TWILIO_AUTH_TOKEN is malformed"),
        ({"twilio_from_number": None}, "CAREFLOW_TWILIO_FROM_NUMBER or"),
        ({"twilio_from_number": "12345"}, "CAREFLOW_TWILIO_FROM_NUMBER must be"),
        ({"twilio_messaging_service_sid": "MG123"}, "CAREFLOW_TWILIO_MESSAGING_SERVICE_SID"),
        ({"twilio_status_callback_url": "ftp://x"}, "CAREFLOW_TWILIO_STATUS_CALLBACK_URL"),
        ({"twilio_api_base_url": "localhost:8080"}, "CAREFLOW_TWILIO_API_BASE_URL"),
        ({"sms_default_region": "XX"}, "CAREFLOW_SMS_DEFAULT_REGION"),
    ],
)
def test_config_errors_name_the_setting(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        TwilioSMS(live_settings(**overrides))
    assert TWILIO_TOKEN not in str(raised.value)


@pytest.mark.parametrize(
    "code, reason",
    [(21211, "invalid_contact"), (21614, "invalid_contact"), (21610, "opted_out"),
     (21408, "region_not_enabled"), (21617, "sms_too_long"), (30001, "provider_rejected")],
)
def test_twilio_error_codes(fault_server: FaultServer, code: int, reason: str) -> None:
    message = make_message(1, "sms", cn_mobile(1))
    fault_server.script(message.to, [f"http:400:{code}"])
    with TwilioSMS(live_settings(fault_server.base_url)) as channel:
        [outcome] = channel.send_batch([message])
    assert (outcome.state, outcome.reason, outcome.retryable) == (State.FAILED, reason, False)
    assert f"code={code}" in outcome.detail
    assert fault_server.attempts[message.to] == 1


def test_request_fields(fault_server: FaultServer) -> None:
    settings = live_settings(
        fault_server.base_url, twilio_status_callback_url="https://care.example.com/twilio"
    )
    local = make_message(1, "sms", "138 0013 8000")  # national format, region CN
    with TwilioSMS(settings) as channel:
        [outcome] = channel.send_batch([local])
    assert outcome.state == State.SENT and outcome.provider_id.startswith("SM")
    [sent] = fault_server.bodies
    assert sent["To"] == "+8613800138000"
    assert sent["From"] == "+15005550006"
    assert sent["StatusCallback"] == "https://care.example.com/twilio"
    assert sent["Body"].endswith("回复TD退订")


def test_messaging_service_replaces_from(fault_server: FaultServer) -> None:
    mg = "MG" + "ab" * 16
    settings = live_settings(fault_server.base_url, twilio_messaging_service_sid=mg)
    with TwilioSMS(settings) as channel:
        channel.send_batch([make_message(1, "sms", cn_mobile(1))])
    [sent] = fault_server.bodies
    assert sent["MessagingServiceSid"] == mg and "From" not in sent


def test_too_long_is_not_sent(fault_server: FaultServer) -> None:
    message = make_message(1, "sms", cn_mobile(1), body="你" * 300)
    with TwilioSMS(live_settings(fault_server.base_url)) as channel:
        [outcome] = channel.send_batch([message])
    assert (outcome.state, outcome.reason) == (State.FAILED, "sms_too_long")
    assert "segments" in outcome.detail
    assert fault_server.attempts[message.to] == 0


def test_region_and_edge_hosts_are_rewritten(fault_server: FaultServer) -> None:
    with TwilioSMS(live_settings(fault_server.base_url)) as channel:
        channel.client.region, channel.client.edge = "au1", "sydney"
        [outcome] = channel.send_batch([make_message(1, "sms", cn_mobile(1))])
    assert outcome.state == State.SENT


def test_credentials_never_logged(fault_server: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with TwilioSMS(live_settings(fault_server.base_url)) as channel:
        channel.send_batch([make_message(1, "sms", cn_mobile(1))])
        assert TWILIO_TOKEN not in repr(channel)
    assert caplog.records  # logging did happen
    assert TWILIO_TOKEN not in caplog.text

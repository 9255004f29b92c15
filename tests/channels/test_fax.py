"""Fax: CJK font discovery, the A4 PDF, Sinch Fax requests, the email gateway."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from careflow.channels import fax
from careflow.channels.fax import EmailFaxGateway, SinchFax, find_cjk_font, render_fax_pdf
from careflow.errors import ConfigError
from careflow.messages import State
from tests.providers.fault_server import FaultServer
from tests.providers.kit import cn_mobile, live_settings, make_message, need_cjk_font


@pytest.fixture(autouse=True)
def _font() -> None:
    need_cjk_font()


def test_font_search_finds_chinese_glyphs() -> None:
    font = find_cjk_font()
    assert font.path.is_file()


def test_configured_font_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CAREFLOW_FAX_FONT_PATH: no such file"):
        find_cjk_font(tmp_path / "missing.ttf")


def test_configured_font_must_cover_chinese(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has no Chinese glyphs"):
        find_cjk_font(_latin_only_font(tmp_path))


def _latin_only_font(folder: Path) -> Path:
    """A real font without Chinese glyphs: the CJK font cut down to ASCII."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    cjk = find_cjk_font()
    with TTFont(str(cjk.path), fontNumber=cjk.index) as ttf:
        subsetter = subset.Subsetter(subset.Options())
        subsetter.populate(text="".join(map(chr, range(0x20, 0x7F))))
        subsetter.subset(ttf)
        ttf.save(str(folder / "latin.ttf"))
    return folder / "latin.ttf"


def test_no_font_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fax, "CJK_FONT_CANDIDATES", ())
    monkeypatch.setattr(fax, "_fontconfig_candidate", lambda: None)
    with pytest.raises(ConfigError, match="fonts-wqy-zenhei.*CAREFLOW_FAX_FONT_PATH"):
        SinchFax(live_settings(fax_font_path=None))


def test_pdf_is_a4_with_embedded_cjk_font() -> None:
    """Rendered with the full system font, as in production."""
    pdf = render_fax_pdf("尊敬的王先生：\n" + "感谢您的支持。" * 300, find_cjk_font(), title="生日快乐")
    assert pdf.startswith(b"%PDF-")
    assert b"/MediaBox [0 0 595.28 841.89]" in pdf  # A4 in points
    assert int(re.search(rb"/Count (\d+)", pdf).group(1)) >= 2  # long text flows on
    assert b"/FontFile2" in pdf  # glyphs embedded, not a viewer's substitute
    assert b"<611F>" in pdf  # ToUnicode maps 感 (U+611F): text stays searchable
    assert b"<4E2D>" not in pdf  # 中 is not in the text: only used glyphs are embedded


def test_sinch_request(fault_server: FaultServer) -> None:
    settings = live_settings(
        fault_server.base_url, fax_callback_url="https://care.example.com/hooks/fax"
    )
    with SinchFax(settings) as channel:
        [outcome] = channel.send_batch([make_message(1, "fax", "010 6552 9988")])
    assert outcome.state == State.SENT and outcome.provider_id
    [fields] = fault_server.bodies
    assert fields["to"] == "+861065529988"
    assert fields["from"] == "+12025550123"
    assert fields["callbackUrl"] == "https://care.example.com/hooks/fax"
    # Sinch posts the callback as multipart/form-data unless the fax asks for JSON
    assert fields["callbackUrlContentType"] == "application/json"
    assert fields["file"] > 1000  # bytes of PDF
    [headers] = fault_server.headers
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"key-id:key-secret").decode()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sinch_project_id": None}, "CAREFLOW_SINCH_PROJECT_ID is missing"),
        ({"sinch_project_id": "a/b"}, "CAREFLOW_SINCH_PROJECT_ID must be"),
        ({"sinch_key_id": None}, "CAREFLOW_SINCH_KEY_ID is missing"),
        ({"sinch_key_secret": None}, "CAREFLOW_SINCH_KEY_SECRET is missing"),
        ({"fax_from_number": "0101234"}, "CAREFLOW_FAX_FROM_NUMBER must be"),
        ({"fax_callback_url": "care.example.com"}, "CAREFLOW_FAX_CALLBACK_URL"),
        ({"sinch_fax_api_base_url": "fax.api.sinch.com"}, "CAREFLOW_SINCH_FAX_API_BASE_URL"),
    ],
)
def test_sinch_config_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SinchFax(live_settings(**overrides))


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{e164}@fax.example.net", "+861065529988@fax.example.net"),
        ("{digits}@efax.example.org", "861065529988@efax.example.org"),
    ],
)
def test_gateway_request(fault_server: FaultServer, template: str, expected: str) -> None:
    settings = live_settings(fault_server.base_url, fax_email_gateway_address=template)
    with EmailFaxGateway(settings) as channel:
        [outcome] = channel.send_batch([make_message(1, "fax", "+86 10 6552 9988")])
    assert outcome.state == State.SENT
    [body] = fault_server.bodies
    person = body["personalizations"][0]
    assert person["to"] == [{"email": expected}]
    assert "headers" not in person  # no List-Unsubscribe for a fax machine's mailbox
    [attachment] = body["attachments"]
    assert (attachment["filename"], attachment["type"]) == ("fax.pdf", "application/pdf")
    assert base64.b64decode(attachment["content"]).startswith(b"%PDF-")


@pytest.mark.parametrize(
    "template, message",
    [
        (None, "CAREFLOW_FAX_EMAIL_GATEWAY_ADDRESS is missing"),
        ("fax.example.net", "must contain {e164} or {digits}"),
        ("{e164}@{host}", "may only use {e164} and {digits}"),
    ],
)
def test_gateway_config_errors(template: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        EmailFaxGateway(live_settings(fax_email_gateway_address=template))


def test_gateway_needs_email_credentials() -> None:
    with pytest.raises(ConfigError, match="CAREFLOW_SENDGRID_API_KEY"):
        EmailFaxGateway(live_settings(sendgrid_api_key=None))


def test_invalid_fax_number_is_skipped(fault_server: FaultServer) -> None:
    with SinchFax(live_settings(fault_server.base_url)) as channel:
        outcomes = channel.send_batch(
            [make_message(1, "fax", "12"), make_message(2, "fax", cn_mobile(2))]
        )
    assert [(o.state, o.reason) for o in outcomes] == [
        (State.SKIPPED, "invalid_contact"), (State.SENT, None)
    ]


def test_chinese_lines_never_start_with_closing_punctuation_or_end_with_an_opening_one():
    from careflow.channels.fax import NO_LINE_END, NO_LINE_START, cjk_lines

    def width(s: str) -> float:
        return len(s)  # one unit per character: easy to reason about

    text = "您好，感谢惠顾（本月）。请回复「确认」。"
    lines = cjk_lines(text, 3, width)
    assert "".join(lines) == text
    assert not any(line[0] in NO_LINE_START for line in lines[1:])
    assert not any(line[-1] in NO_LINE_END for line in lines)
    # "，" would start line 2 with a plain greedy break: it hangs on line 1 instead
    assert lines[0] == "您好，"
    # only closing marks may hang past the edge
    assert all(width(line.rstrip("".join(NO_LINE_START))) <= 3 for line in lines)

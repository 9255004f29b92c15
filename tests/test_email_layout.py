"""The HTML email is a finished document, and reads well in a real browser at phone and desktop widths.

CAREFLOW_EMAIL_SCREENSHOTS_DIR=docs/img takes the screenshots in the docs again.
"""

from __future__ import annotations

import email
import os
from datetime import date
from email import policy
from pathlib import Path

import pytest

from careflow.campaigns import list_campaigns, load_campaign
from careflow.channels.outbox import OutboxChannel
from careflow.flows.preview import email_html, segment_sample
from careflow.flows.route import render_message
from careflow.lint import samples_for
from careflow.messages import Message
from careflow.rendering import Renderer
from careflow.settings import PROJECT_ROOT, load_settings
from tests.browser import Chromium, chromium_binary

DAY = date(2026, 11, 22)
CAMPAIGNS = list_campaigns(PROJECT_ROOT / "templates")


def message_for(campaign: str, locale: str, sample: int = 0) -> Message:
    """The email a run renders for a sample customer (route's render step)."""
    settings = load_settings()
    spec = load_campaign(campaign, settings.templates_dir)
    customer = samples_for(locale)[sample].customer
    row = {**segment_sample(spec, DAY), **customer}
    rendered = render_message(spec, Renderer.from_settings(settings), settings, row, "email", DAY)
    return Message(
        contact_id=1,
        campaign=campaign,
        customer_id=customer["id"],
        occasion="2026",
        channel="email",
        to=customer["email"] or "sample@example.com",
        body=rendered.body,
        subject=rendered.subject,
        html=rendered.html,
        locale=locale,
        marketing=spec.marketing,
    )


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
@pytest.mark.parametrize("campaign", CAMPAIGNS)
def test_the_outbox_email_is_a_finished_document(campaign, locale, tmp_path, monkeypatch):
    """It used to be a bare fragment (birthday) or no HTML at all (the other campaigns):
    no document, charset or layout, no sender identity, no unsubscribe footer."""
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path))
    msg = message_for(campaign, locale)
    [outcome] = OutboxChannel.from_settings(load_settings()).send_batch([msg])
    path = tmp_path / "outbox" / outcome.provider_id.removeprefix("outbox:")
    mail = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    html = mail.get_body(("html",)).get_content()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    for part in ('<meta charset="utf-8">', f'<html lang="{locale}"', 'name="viewport"',
                 'name="color-scheme" content="light dark"', "<title>", 'role="presentation"',
                 "Lotus &amp; Pine</strong> · ", "care@example.com"):  # fmt: skip
        assert part in html, part
    footer = html[html.index('class="cf-footer"') :]
    if msg.marketing:
        assert '<a href="http://127.0.0.1:8080/unsubscribe?token=v2.' in footer
        assert "%unsubscribe_url%" not in html
    else:
        assert "unsubscribe" not in html.lower()


@pytest.fixture(scope="module")
def browser():
    binary = chromium_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with Chromium(binary) as b:
        yield b


SHOTS = os.environ.get("CAREFLOW_EMAIL_SCREENSHOTS_DIR")
MEASURE = """(() => {
  const card = document.querySelector('.cf-card'), style = getComputedStyle(card);
  const color = (el, p) => getComputedStyle(el)[p];
  return {scroll: document.documentElement.scrollWidth, view: window.innerWidth,
          card: card.getBoundingClientRect().width, left: card.getBoundingClientRect().left,
          padding: style.paddingLeft, font: style.fontSize,
          page: color(document.body, 'backgroundColor'), cardBg: style.backgroundColor,
          text: color(card.querySelector('p'), 'color'),
          link: [...document.querySelectorAll('a')].map(a => a.textContent)};
})()"""


def page_for(tmp_path: Path, campaign: str, locale: str, sample: int) -> Path:
    path = tmp_path / f"{campaign}-{locale}-{sample}.html"
    path.write_text(email_html(message_for(campaign, locale, sample), load_settings()), "utf-8")
    return path


@pytest.mark.parametrize("campaign, locale", [("winback", "en"), ("birthday", "zh-CN"),
                                              ("vip_care", "en"), ("reorder_reminder", "zh-CN")])  # fmt: skip
def test_one_readable_column_on_a_phone_and_on_a_desktop(browser, tmp_path, campaign, locale):
    long_names = 2  # the sample customer with the longest names
    page = page_for(tmp_path, campaign, locale, long_names)

    browser.open(page, 375, 812, mobile=True)
    phone = browser.evaluate(MEASURE)
    assert phone["view"] == 375
    assert phone["scroll"] <= 375, "nothing sticks out sideways on a phone"
    assert phone["card"] == 375 and phone["padding"] == "20px"
    assert phone["font"] == "16px"

    browser.open(page, 1280, 900, mobile=False)
    desk = browser.evaluate(MEASURE)
    assert desk["card"] == 600 and desk["left"] == (1280 - 600) / 2  # one centred column
    assert desk["padding"] == "40px" and desk["scroll"] <= 1280
    marketing = load_campaign(campaign, PROJECT_ROOT / "templates").marketing
    assert any("订" in t or "Unsubscribe" in t for t in desk["link"]) == marketing


def luminance(css: str) -> float:
    r, g, b = (int(x) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def test_dark_mode_turns_the_page_dark_and_keeps_text_readable(browser, tmp_path):
    page = page_for(tmp_path, "winback", "en", 0)
    browser.open(page, 800, 900, mobile=False)
    light = browser.evaluate(MEASURE)
    browser.open(page, 800, 900, mobile=False, dark=True)
    dark = browser.evaluate(MEASURE)
    assert luminance(light["cardBg"]) > 0.9 and luminance(light["text"]) < 0.2
    assert luminance(dark["cardBg"]) < 0.2 and luminance(dark["page"]) < 0.2
    assert luminance(dark["text"]) > 0.8


def test_screenshots_for_the_docs(browser, tmp_path):
    """docs/img/email-desktop.png and email-phone.png (kept when SHOTS names a folder)."""
    folder = Path(SHOTS) if SHOTS else tmp_path / "shots"
    folder.mkdir(parents=True, exist_ok=True)
    browser.open(page_for(tmp_path, "winback", "en", 0), 1000, 700, mobile=False)
    browser.screenshot(folder / "email-desktop.png")
    browser.open(page_for(tmp_path, "birthday", "zh-CN", 0), 390, 700, mobile=True)
    browser.screenshot(folder / "email-phone.png")
    for name in ("email-desktop.png", "email-phone.png"):
        assert (folder / name).read_bytes().startswith(b"\x89PNG")


def test_the_footer_carries_the_shops_own_address_and_contact(monkeypatch):
    """Regression: the footer kept the demo shop's postal address and phone under the
    user's brand; every shop must change them, so they are settings, not template edits."""
    monkeypatch.setenv("CAREFLOW_POSTAL_ADDRESS", "12 Mill Lane, Bath BA1 1AA, United Kingdom")
    monkeypatch.setenv("CAREFLOW_CONTACT_LINE", "hello@millshop.example · +44 1225 000000")
    for locale in ("en", "zh-CN"):
        html = message_for("winback", locale).html
        assert "12 Mill Lane, Bath BA1 1AA" in html and "hello@millshop.example" in html
        assert "Garden Road" not in html and "花园路" not in html and "5555 0100" not in html


def test_live_marketing_email_refuses_to_start_without_a_postal_address():
    from careflow.errors import ConfigError
    from careflow.flows.campaign import check_campaign
    from tests.providers.kit import live_settings

    settings = live_settings(postal_address=None)
    spec = load_campaign("winback", settings.templates_dir)  # marketing, email first
    with pytest.raises(ConfigError, match="CAREFLOW_POSTAL_ADDRESS is not set"):
        check_campaign(settings, spec, ["email"])
    check_campaign(settings, spec, ["sms"])  # no email: no footer to fill
    care = load_campaign("birthday", settings.templates_dir)
    check_campaign(settings, care, ["email"])  # care email: CAN-SPAM's rule is for marketing

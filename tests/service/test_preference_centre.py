"""The preference centre in `careflow serve` (/p/<token>), over real HTTP.

GET shows and never changes (link scanners prefetch); the form's POST changes, through
careflow/preferences.py apply_change, and confirms. Tokens are signed, expiring and
single-customer: forged, expired, replayed-after-expiry and cross-customer ones get a
clear page and change nothing.
"""

from __future__ import annotations

import base64
import logging
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta

import pytest
import yaml
from sqlalchemy import select

from careflow.db.models import Consent, Preference
from careflow.preferences import PreferenceTokens, token_id
from careflow.service import preference_pages
from careflow.unsubscribe import UnsubscribeTokens
from tests.factories import add_customer
from tests.service.conftest import UNSUB_SECRET


def tokens() -> PreferenceTokens:
    return PreferenceTokens(UnsubscribeTokens(UNSUB_SECRET))


def get(url, headers=None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def post(url, fields: list[tuple[str, str]]) -> tuple[int, str]:
    body = urllib.parse.urlencode(fields).encode()
    req = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def consents(engine) -> dict:
    with engine.connect() as conn:
        return {
            (r.customer_id, r.category, r.channel): (r.granted, r.source)
            for r in conn.execute(select(Consent))
        }


def cadences(engine) -> dict:
    with engine.connect() as conn:
        return {
            r.customer_id: (r.cadence, r.paused_until, r.locale, r.token_id)
            for r in conn.execute(select(Preference))
        }


def test_get_shows_the_effective_state_in_the_customers_language_and_changes_nothing(
    served, engine
):
    add_customer(engine, 1, email="wang@example.com", mobile="+8613800138000",
                 locale="zh-CN", country="CN")
    add_customer(engine, 2, email="ann@example.com", locale="en")
    t1 = tokens().make(1, now=served.clock.now)
    code, page = get(f"{served.url}/p/{t1}")
    assert code == 200
    assert 'lang="zh-CN"' in page and "消息偏好设置" in page
    assert "w***@example.com" in page and "wang@" not in page  # masked
    assert 'name="c.marketing.email"' in page and 'name="c.care.sms"' in page
    assert "订单与服务通知始终发送" in page  # transactional: shown, not switchable
    assert 'name="c.transactional' not in page
    code, page = get(f"{served.url}/p/{tokens().make(2, now=served.clock.now)}")
    assert code == 200 and 'lang="en"' in page and "Stop all marketing" in page
    assert 'name="c.marketing.email" value="on" checked' in page  # opt-out regime: on
    assert consents(engine) == {} and cadences(engine) == {}


def test_post_changes_choices_and_confirms(served, engine, caplog):
    add_customer(engine, 2, email="ann@example.com", mobile="+447911123456", locale="en")
    token = tokens().make(2, now=served.clock.now)
    caplog.set_level(logging.INFO, logger="careflow.serve")
    code, page = post(f"{served.url}/p/{token}", [
        ("shown", "sms,email"), ("c.care.email", "on"), ("c.care.sms", "on"),
        ("c.marketing.email", "on"), ("cadence", "fewer"), ("until", "2026-12-22"),
        ("action", "save"),
    ])
    assert code == 200 and "Your choices are saved" in page
    assert "Offers and news (marketing) · Text messages (SMS): on → off" in page
    assert "Fewer: at most 1 every 14 days" in page
    assert consents(engine) == {(2, "marketing", "sms"): (False, "preference_centre")}
    assert cadences(engine) == {2: ("fewer", None, "en", token_id(token))}
    # the log names the change and the token's id, never the token
    assert token not in caplog.text and token_id(token) in caplog.text
    # the same post again changes nothing and writes nothing
    code, page = post(f"{served.url}/p/{token}", [
        ("shown", "sms,email"), ("c.care.email", "on"), ("c.care.sms", "on"),
        ("c.marketing.email", "on"), ("cadence", "fewer"), ("action", "save"),
    ])
    assert code == 200 and "Nothing changed." in page


def test_pause_until_a_date_is_the_start_of_that_day_in_the_customers_zone(served, engine):
    add_customer(engine, 3, email="li@example.com", locale="zh-CN", time_zone="Asia/Shanghai")
    token = tokens().make(3, now=served.clock.now)
    code, page = post(f"{served.url}/p/{token}", [
        ("shown", "email"), ("c.care.email", "on"), ("c.marketing.email", "on"),
        ("cadence", "paused"), ("until", "2026-12-22"),
    ])
    assert code == 200 and "您的选择已保存" in page and "暂停至指定日期: 2026-12-22" in page
    # midnight in Shanghai is 16:00 UTC the day before
    assert cadences(engine)[3][:2] == ("paused", datetime(2026, 12, 21, 16, 0))
    code, page = get(f"{served.url}/p/{token}")
    assert "优惠与资讯已暂停，至 2026-12-22。" in page


@pytest.mark.parametrize("until", ["2026-11-22", "2028-01-01", "soon", ""])
def test_a_pause_end_out_of_range_is_the_page_again_and_changes_nothing(served, engine, until):
    add_customer(engine, 4, email="bo@example.com", locale="en")
    token = tokens().make(4, now=served.clock.now)
    code, page = post(f"{served.url}/p/{token}", [
        ("shown", "email"), ("cadence", "paused"), ("until", until),
    ])
    assert code == 400 and 'role="alert"' in page and "Choose a date between tomorrow" in page
    assert consents(engine) == {} and cadences(engine) == {}


def test_stop_all_marketing_turns_every_marketing_channel_off_in_one_step(served, engine):
    add_customer(engine, 5, email="cy@example.com", mobile="+447911123555", locale="en")
    token = tokens().make(5, now=served.clock.now)
    code, page = post(f"{served.url}/p/{token}", [("action", "stop_marketing")])
    assert code == 200 and "Offers and news (marketing) · Email: on → off" in page
    assert consents(engine) == {
        (5, "marketing", "sms"): (False, "preference_centre"),
        (5, "marketing", "email"): (False, "preference_centre"),
    }


def _refused(served, token, method):
    url = f"{served.url}/p/{token}"
    if method == "GET":
        return get(url)
    return post(url, [("action", "stop_marketing")])


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_forged_expired_and_cross_customer_tokens_are_refused_with_a_clear_page(
    served, engine, method
):
    add_customer(engine, 6, email="dee@example.com", locale="en")
    add_customer(engine, 7, email="eve@example.com", locale="zh-CN")
    good = tokens().make(6, now=served.clock.now)
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    # cross-customer: customer 6's signature on a token naming customer 7
    raw[8] = 7
    spliced = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    other_key = PreferenceTokens(UnsubscribeTokens("another-secret-for-tests-0123456789abcdef"))
    for bad in (forged, spliced, other_key.make(6, now=served.clock.now), "x" * 31, "%00"):
        code, page = _refused(served, bad, method)
        assert code == 400 and "This link does not work" in page, bad
    # an unsubscribe token is not a preference token, even under the same key
    unsub = UnsubscribeTokens(UNSUB_SECRET).make(6, "winback", now=served.clock.now)
    assert _refused(served, unsub, method)[0] == 400
    # the page answers in the browser's language when the token names nobody
    code, page = get(f"{served.url}/p/{forged}", {"Accept-Language": "zh-CN,zh;q=0.9"})
    assert code == 400 and "此链接无效" in page
    # replayed after expiry: it worked, then 61 days later it does not
    assert _refused(served, good, "GET")[0] == 200
    served.clock.now += timedelta(days=61)
    code, page = _refused(served, good, method)
    assert code == 400 and "the link expired" in page and "60 days" in page
    assert consents(engine) == {} and cadences(engine) == {}


def test_the_form_cannot_name_another_customer(served, engine):
    add_customer(engine, 8, email="fay@example.com", locale="en")
    add_customer(engine, 9, email="gus@example.com", locale="en")
    token = tokens().make(8, now=served.clock.now)
    code, _ = post(f"{served.url}/p/{token}", [
        ("customer_id", "9"), ("customer", "9"), ("action", "stop_marketing")])
    assert code == 200
    assert set(consents(engine)) == {(8, "marketing", "email")}


def test_a_token_is_short_enough_for_an_sms():
    token = tokens().make(2**62, now=datetime(2026, 11, 22))
    assert len(token) == 31 and token.isascii()
    assert tokens().verify(token, now=datetime(2026, 11, 23).astimezone()).customer_id == 2**62


def test_every_locale_file_has_every_key():
    texts = preference_pages.texts()
    assert {"en", "zh-CN"} <= set(texts)
    english = set(yaml.safe_load((preference_pages.LOCALES / "en.yaml").read_text()))
    for tag, words in texts.items():
        assert set(words) == english, tag


@pytest.mark.parametrize(("wanted", "found"), [
    (("zh-CN",), "zh-CN"), (("zh_TW",), "zh-CN"), (("zh",), "zh-CN"), (("en-GB",), "en"),
    (("fr-FR",), "en"), ((None, "fr;q=1,zh-CN;q=0.8"), "zh-CN"), ((None, None), "en"),
])
def test_the_page_speaks_the_customers_language_else_the_browsers(wanted, found):
    assert preference_pages.locale_for(*wanted) == found

"""Replies: keywords by the carriers' rule, in the customer's language."""

from __future__ import annotations

import pytest

from careflow.keywords import classify, language_of


@pytest.mark.parametrize(
    ("text", "locale", "intent"),
    [
        ("STOP", "en", "opt_out"),
        (" stop! ", "en", "opt_out"),
        ("Ｓｔｏｐ", "en", "opt_out"),  # full width
        ("STOPALL", "zh-CN", "opt_out"),  # English keywords work for everyone
        ("Unsubscribe.", None, "opt_out"),
        ("退订", "zh-CN", "opt_out"),
        ("退订。", "zh-CN", "opt_out"),
        ("【退订】", "zh-CN", "opt_out"),
        ("td", "zh-CN", "opt_out"),
        ("T", "zh-CN", "opt_out"),
        ("取消", "zh", "opt_out"),
        ("start", "en", "opt_in"),
        ("UNSTOP", "zh-CN", "opt_in"),
        ("Yes", "en", "opt_in"),
        ("HELP", "en", "help"),
        ("帮助", "zh-CN", "help"),
        # not keywords: a person should read these
        ("T", "en", None),  # a single letter only where it is customary
        ("TD", "en", None),
        ("please don't stop the offers", "en", None),
        ("how do I 退订?", "zh-CN", None),
        ("call me back", "en", None),
        ("", "en", None),
        ("!!!", "en", None),
    ],
)
def test_keywords(text, locale, intent):
    assert classify(text, locale) == intent


@pytest.mark.parametrize(
    ("message", "language"),
    [
        ("【莲松】王先生，会员积分本月到期 https://s.example.com/a1B2 回复TD退订", "zh"),
        ("王先生生日快乐！", "zh"),
        ("Hi Ann, your points expire soon. Reply STOP to opt out", None),
        ("誕生日おめでとうございます", None),  # Japanese: kanji with kana
        ("", None),
        (None, None),
    ],
)
def test_the_language_a_message_was_sent_in(message, language):
    assert language_of(message) == language


def test_a_reply_is_read_with_the_words_of_each_language_given():
    assert classify("TD", None, "zh-CN") == "opt_out"  # the message's, then the customer's
    assert classify("TD", "zh", "en") == "opt_out"
    assert classify("TD", None, "en") is None
    assert classify("stop", None, None) == "opt_out"

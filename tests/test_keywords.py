"""Replies: keywords by the carriers' rule, in the customer's language."""

from __future__ import annotations

import pytest

from careflow.keywords import classify


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

"""Unsubscribe tokens: bound to customer, campaign and occasion; signed; expiring."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from careflow.errors import ConfigError, DataError
from careflow.settings import Settings
from careflow.unsubscribe import UnsubscribeRequest, UnsubscribeTokens

KEY = "Kx9w2QmT7vLp4Rz8Nc1Hb6Yf3Dj5Gs0A"  # 32 characters, as random as a test key gets
SENT = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)  # the fake clock: when the mail went out


@pytest.fixture
def tokens() -> UnsubscribeTokens:
    return UnsubscribeTokens(KEY, max_age=timedelta(days=60))


@pytest.mark.parametrize(
    "campaign, occasion", [("birthday", "2026"), ("win-back:2026", "after-2026-05-06"),
                           ("生日", None)]
)  # fmt: skip
def test_round_trip_names_customer_campaign_occasion_and_issue_time(tokens, campaign, occasion):
    token = tokens.make(42, campaign, occasion, now=SENT)
    assert re.fullmatch(r"v2\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}", token)  # URL-safe as is
    assert tokens.verify(token, now=SENT + timedelta(days=1)) == UnsubscribeRequest(
        42, campaign, occasion, SENT
    )


def test_a_link_works_for_its_whole_lifetime_and_not_a_second_longer(tokens):
    # Before: tokens carried no time and were valid for ever.
    token = tokens.make(42, "birthday", "2026", now=SENT)
    assert tokens.verify(token, now=SENT + timedelta(days=60)).customer_id == 42
    with pytest.raises(DataError, match=r"unsubscribe link expired: issued 2026-11-22, valid for 60"):
        tokens.verify(token, now=SENT + timedelta(days=60, seconds=1))


def test_lifetime_comes_from_settings_and_is_at_least_30_days():
    settings = Settings(_env_file=None, unsubscribe_secret=KEY, unsubscribe_token_max_age_days=45)
    tokens = UnsubscribeTokens.from_settings(settings)
    token = tokens.make(1, "birthday", now=SENT)
    tokens.verify(token, now=SENT + timedelta(days=45))
    with pytest.raises(DataError, match="expired"):
        tokens.verify(token, now=SENT + timedelta(days=46))
    assert Settings(_env_file=None).unsubscribe_token_max_age_days == 60
    with pytest.raises(ConfigError, match="at least 30"):
        UnsubscribeTokens(KEY, max_age=timedelta(days=29))


def test_a_token_from_the_future_is_refused_beyond_clock_skew(tokens):
    token = tokens.make(42, "birthday", now=SENT)
    assert tokens.verify(token, now=SENT - timedelta(minutes=4))  # hosts' clocks disagree a bit
    with pytest.raises(DataError, match="issued in the future"):
        tokens.verify(token, now=SENT - timedelta(hours=1))


def _swap_payload(token: str, tokens: UnsubscribeTokens) -> str:
    other = tokens.make(43, "birthday", "2026", now=SENT).split(".")[1]
    version, _, mac = token.split(".")
    return f"{version}.{other}.{mac}"


@pytest.mark.parametrize(
    "mangle, reason",
    [
        (lambda t, k: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "signature"),
        (_swap_payload, "signature"),  # another customer's payload under this signature
        (lambda t, k: t.replace("v2.", "v1.", 1), "version"),
        (lambda t, k: "garbage", "malformed"),
        (lambda t, k: t + ".x", "malformed"),
        (lambda t, k: t[:-1] + "é", "signature"),  # non-ASCII must not crash the comparison
        (lambda t, k: t.split(".")[0] + ".é." + t.split(".")[2], "signature"),
        (lambda t, k: t + "A" * 2000, "malformed"),
        (lambda t, k: UnsubscribeTokens(KEY[::-1]).make(42, "birthday", now=SENT), "signature"),
    ],
    ids=["mac", "payload-swapped", "version", "garbage", "extra-part", "non-ascii-mac",
         "non-ascii-payload", "too-long", "other-key"],
)  # fmt: skip
def test_tampered_or_foreign_tokens_are_refused(tokens, mangle, reason):
    token = tokens.make(42, "birthday", "2026", now=SENT)
    with pytest.raises(DataError, match=reason):
        tokens.verify(mangle(token, tokens), now=SENT)


def test_tokens_made_before_expiry_existed_are_refused(tokens):
    # v1: customer and campaign only, no issue time; it would be valid for ever.
    with pytest.raises(DataError, match="version 'v1'"):
        tokens.verify("v1.NDI6YmlydGhkYXk.AAAAAAAAAAAAAAAAAAAAAA", now=SENT)


@pytest.mark.parametrize("key", ["short", "k" * 31, b"\x00" * 31, KEY[:31]])
def test_a_short_key_is_a_config_error_naming_the_setting(key):
    with pytest.raises(ConfigError, match="CAREFLOW_UNSUBSCRIBE_SECRET must be at least 32 bytes"):
        UnsubscribeTokens(key)


@pytest.mark.parametrize(
    "key",
    [" " * 32, "k" * 32, "ab" * 16, "0123456789" * 4, "abcdefghijklmnopqrstuvwxyz012345",
     "Password1234" * 3, "\t" * 40, "密钥" * 6, "a" * 31 + "b"],
    ids=["spaces", "one-letter", "two-letters", "digits-repeated", "alphabet", "word-repeated",
         "tabs", "cjk-repeated", "almost-one-letter"],
)  # fmt: skip
def test_a_guessable_key_is_refused_however_long(key):
    """They used to pass: only the length was checked."""
    with pytest.raises(ConfigError, match="CAREFLOW_UNSUBSCRIBE_SECRET is too easy to guess"):
        UnsubscribeTokens(key)


def test_keys_made_as_the_docs_say_are_always_accepted():
    import secrets

    for _ in range(2000):
        UnsubscribeTokens(secrets.token_urlsafe(32))
        UnsubscribeTokens(secrets.token_hex(16))  # 32 hex characters, 128 bits


def test_the_key_is_measured_in_bytes_and_never_shown():
    assert UnsubscribeTokens("春眠不觉晓处处闻啼鸟夜来风")  # 13 characters, 39 bytes
    assert KEY not in repr(UnsubscribeTokens(KEY))
    for empty in (None, ""):
        with pytest.raises(ConfigError, match="CAREFLOW_UNSUBSCRIBE_SECRET is missing"):
            UnsubscribeTokens.from_settings(Settings(_env_file=None), empty)


def _signed(tokens: UnsubscribeTokens, fields) -> str:
    """A token over any payload, signed with the right key (as after a key leak)."""
    payload = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    return f"v2.{payload}.{tokens._mac(f'v2.{payload}')}"


@pytest.mark.parametrize(
    "fields",
    [
        [2**63, "birthday", "2026", 1795339800],  # past the ledger's BIGINT
        [-1, "birthday", "2026", 1795339800],
        [0, "birthday", "2026", 1795339800],
        [10**400, "birthday", "2026", 1795339800],
        [1, "birthday", "2026", 10**20],  # no such instant
        [1, "birthday", "2026", -(10**20)],
        [1, "birthday", "2026", 1.5e300],
        [1, "birthday", "2026", True],
        [True, "birthday", "2026", 1795339800],
        [1, "b" * 65, "2026", 1795339800],  # longer than the ledger's campaign column
        [1, "birthday", "o" * 65, 1795339800],
        [1, "birth\nday", "2026", 1795339800],  # control characters
        [1, "birthday", "20\x0026", 1795339800],
        [1, ["birthday"], "2026", 1795339800],
        [1, "birthday", {"a": 1}, 1795339800],
        [1, "birthday", "2026"],
        {"customer": 1},
        json.loads("[" * 60 + "]" * 60),
    ],
    ids=["id-past-bigint", "id-negative", "id-zero", "id-huge", "issued-far-future",
         "issued-far-past", "issued-float", "issued-bool", "id-bool", "campaign-too-long",
         "occasion-too-long", "campaign-newline", "occasion-nul", "campaign-list",
         "occasion-object", "three-fields", "object", "deep"],
)  # fmt: skip
def test_a_signed_token_with_impossible_values_is_a_data_error(tokens, fields):
    """They used to reach the database or datetime and come back as a 500."""
    with pytest.raises(DataError, match="malformed unsubscribe token"):
        tokens.verify(_signed(tokens, fields), now=SENT)


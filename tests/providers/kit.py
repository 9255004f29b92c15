"""Test data for channel tests: live settings on loopback, messages, recipients."""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest

from careflow.errors import ConfigError
from careflow.messages import Message
from careflow.settings import Settings

TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "f" * 32
SENDGRID_KEY = "SG.test-key.not-a-real-one"
UNSUB_SECRET = "unsubscribe-secret-for-tests-32-bytes+"


def cn_mobile(i: int) -> str:
    """A valid Chinese mobile number, distinct per ``i``."""
    return f"+86138{i:08d}"


# Every Chinese character the channel tests put on a fax page.
FAX_TEST_TEXT = "生日快乐顾客本月到店享九折尊敬的王先生感谢您支持中文测试退订回复莲松商行传真"


@lru_cache(maxsize=1)
def small_cjk_font() -> Path | None:
    """A few-kilobyte subset of the system CJK font, so fax tests render fast.

    The full font takes ~0.3 s to load per PDF (it has ~40,000 glyphs); the
    subset holds ASCII, CJK punctuation and :data:`FAX_TEST_TEXT`. One test
    (tests/channels/test_fax.py) renders with the full font. None when the
    machine has no CJK font.
    """
    from fontTools import subset
    from fontTools.ttLib import TTFont

    from careflow.channels.fax import find_cjk_font

    try:
        font = find_cjk_font()
    except ConfigError:
        return None
    folder = Path(tempfile.mkdtemp(prefix="careflow-test-font-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    text = "".join(map(chr, range(0x20, 0x7F))) + "，。！？：；、（）《》“”" + FAX_TEST_TEXT
    with TTFont(str(font.path), fontNumber=font.index) as ttf:
        subsetter = subset.Subsetter(subset.Options())
        subsetter.populate(text=text)
        subsetter.subset(ttf)
        ttf.save(str(folder / "cjk-subset.ttf"))
    return folder / "cjk-subset.ttf"


def need_cjk_font() -> Path:
    """The small test font; fails when no CJK font is installed (a missing tool is a defect)."""
    path = small_cjk_font()
    if path is None:
        pytest.fail("no CJK font installed (`make test` installs one: .ci/install-tools.sh)")
    return path


def live_settings(base_url: str = "http://127.0.0.1:9", **overrides: object) -> Settings:
    """Settings for live channels against ``base_url`` with test credentials."""
    values: dict[str, object] = {
        "delivery": "live",
        "twilio_account_sid": TWILIO_SID,
        "twilio_auth_token": TWILIO_TOKEN,
        "twilio_from_number": "+15005550006",
        "twilio_api_base_url": base_url,
        "sendgrid_api_key": SENDGRID_KEY,
        "sendgrid_from_email": "care@example.com",
        "sendgrid_from_name": "Lotus & Pine",
        "sendgrid_api_base_url": base_url,
        "unsubscribe_base_url": "https://care.example.com/unsubscribe",
        "postal_address": "1 Test Street, London EC1A 1AA, United Kingdom",
        "unsubscribe_secret": UNSUB_SECRET,
        "sinch_project_id": "test-project",
        "sinch_key_id": "key-id",
        "sinch_key_secret": "key-secret",
        "sinch_fax_api_base_url": base_url,
        "fax_from_number": "+12025550123",
        "fax_email_gateway_address": "{e164}@fax.example.net",
        "fax_font_path": small_cjk_font(),
        "rate_limit_backend": "local",
        "credentials_from_prefect_blocks": False,
        "sms_rate_per_second": 10_000,
        "email_rate_per_second": 10_000,
        "fax_rate_per_second": 10_000,
        "delivery_connect_timeout_seconds": 1.0,
        "delivery_read_timeout_seconds": 5.0,  # generous: CI machines are shared
        "delivery_backoff_base_seconds": 0.01,
        "delivery_backoff_max_seconds": 0.05,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def make_message(i: int, channel: str, to: str, **fields: object) -> Message:
    """A rendered message for customer ``i``."""
    values: dict[str, object] = {
        "contact_id": 1000 + i,
        "campaign": "birthday",
        "customer_id": i,
        "occasion": "2026",
        "channel": channel,
        "to": to,
        "body": f"生日快乐，顾客{i}！本月到店享九折。",
        "subject": "生日快乐",
        "html": f"<html><body><p>生日快乐，顾客{i}！</p></body></html>",
        "locale": "zh-CN",
        "marketing": True,
    }
    values.update(fields)
    return Message(**values)  # type: ignore[arg-type]


def recipient_of(channel: str, i: int) -> str:
    return f"customer{i}@example.com" if channel == "email" else cn_mobile(i)


def sendgrid_webhook_keys():
    """(private key, base64 public key) for the Signed Event Webhook, made fresh per test run."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()

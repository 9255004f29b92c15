"""What a good value of a customer's field is, one value at a time.

The customers import checks a file's columns with these (careflow/importers/customers.py,
once per distinct text), and a sign-up posted to ``POST /events`` checks its profile
with them (careflow/shop_events.py): the same words mean the same everywhere. Each
function returns the value as careflow keeps it, or raises ValueError.
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError

from careflow import registry
from careflow.db.models import Customer

#: ``personal_send_time``: "no" turns send-time optimisation off for the customer (PIPL
#: art. 24's non-personalised option), "yes" back on
SWITCH_WORDS = {
    "yes": True, "y": True, "true": True, "1": True, "on": True, "是": True,
    "no": False, "n": False, "false": False, "0": False, "off": False, "否": False,
}  # fmt: skip

#: the earliest birthday careflow takes
EARLIEST_BIRTHDAY = date(1900, 1, 1)


def length(column: str) -> int | None:
    """The longest text the customers table keeps in ``column`` (None: not a text)."""
    return getattr(Customer.__table__.c[column].type, "length", None)


def channel_names() -> dict[str, str]:
    """The channels a customer may prefer or consent to: every registered content channel."""
    return {c: c for c in registry.content_names()}


def locale(text: str) -> str:
    """A locale Babel knows, written as a BCP 47 tag: zh_cn -> zh-CN.

    The tag is kept as given, not expanded (Babel reads zh_CN as
    zh_Hans_CN): templates are looked up by it, zh-CN then zh.
    """
    parts = text.replace("_", "-").split("-")
    try:
        Locale.parse("_".join(parts))
    except (UnknownLocaleError, ValueError) as exc:
        raise ValueError(text) from exc
    return "-".join(
        [parts[0].lower()]
        + [p.upper() if len(p) <= 3 else p.title() if len(p) == 4 else p for p in parts[1:]]
    )


def zone(text: str) -> str:
    """An IANA time zone (``Asia/Shanghai``)."""
    try:
        ZoneInfo(text)
    except (KeyError, OSError, ValueError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(text) from exc
    return text


def birthday(text: str, today: date) -> date:
    """An ISO date (``1990-11-22``) from 1900 to ``today``."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValueError(text) from None
    if not EARLIEST_BIRTHDAY <= day <= today:
        raise ValueError(text)
    return day

"""Which calendar a customer's birthday is kept on: the one rule, for segments and imports.

A customer's ``birthday_calendar`` says it when it is known: ``solar`` (the
Gregorian date of birth) or ``lunar`` (the Chinese lunar date of birth), set
by ``careflow import customers`` from a ``birthday_calendar`` column. When it
is empty, the default applies: customers whose ``locale`` is one of the
campaign's lunar locales (``DEFAULT_LUNAR_LOCALES``, ``zh``: zh, zh-CN,
zh-TW, zh_HK...; case, spaces and ``_`` for ``-`` do not matter) keep the
lunar calendar, everyone else the solar one. Either way a lunar keeper needs
a date of birth the lunar calendar can place (1900-01-31 to 2099-12-31);
outside it, the solar date is the only one there is.

The birthday segments decide through :func:`keeps_lunar` (careflow/segments/
_calendar.py); the customer import states the default with
:data:`DEFAULT_RULE` and reads the column with :data:`CALENDAR_WORDS`.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import ColumnElement, and_, false, func, or_

from careflow.db.models import Customer

#: the dates of birth the lunar calendar (lunardate) can place
LUNAR_FIRST, LUNAR_LAST = date(1900, 1, 31), date(2099, 12, 31)
SOLAR, LUNAR = "solar", "lunar"
#: locales whose customers keep the lunar calendar unless their own calendar says otherwise
DEFAULT_LUNAR_LOCALES = ("zh",)
#: what a ``birthday_calendar`` cell may say (lower case), and what it means
CALENDAR_WORDS = {
    "solar": SOLAR, "gregorian": SOLAR, "公历": SOLAR, "阳历": SOLAR, "新历": SOLAR,
    "lunar": LUNAR, "chinese": LUNAR, "农历": LUNAR, "阴历": LUNAR, "旧历": LUNAR,
}  # fmt: skip
#: the default in words, for the import report and the docs
DEFAULT_RULE = (
    f"lunar for locales {', '.join(DEFAULT_LUNAR_LOCALES)}* (a campaign's lunar_locales "
    "may change the list), solar for everyone else"
)


def normalise_tag(tag: str) -> str:
    """A locale tag as both sides compare it: trimmed, lower case, ``-`` for ``_``."""
    return str(tag).strip().lower().replace("_", "-")


def locale_tags(tags: list[str]) -> list[str]:
    """A parameter's locale tags normalised, repeats dropped; ValueError for an empty one."""
    cleaned = [normalise_tag(t) for t in tags]
    if not all(cleaned):
        raise ValueError("empty locale tag")
    return list(dict.fromkeys(cleaned))


def keeps_lunar(locales: list[str] | tuple[str, ...]) -> ColumnElement[bool]:
    """True for customers whose birthday is kept on the lunar calendar (see module doc):
    their own calendar when known, else their locale among ``locales``."""
    locale = func.replace(func.lower(func.trim(func.coalesce(Customer.locale, ""))), "_", "-")
    tags = [normalise_tag(t) for t in locales]
    by_locale = or_(*[(locale == t) | locale.like(t + "-%") for t in tags]) if tags else false()
    own = Customer.birthday_calendar
    # never NULL (a NOT of NULL would drop solar keepers from the birthday segment)
    return and_(
        or_(func.coalesce(own, "") == LUNAR, and_(own.is_(None), by_locale)),
        Customer.birthday.between(LUNAR_FIRST, LUNAR_LAST),
    )

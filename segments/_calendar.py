"""Which calendar a customer's birthday is kept on: the one rule both birthday segments share.

A customer keeps the Chinese lunar calendar when their ``locale`` is one of
the campaign's lunar locales (``zh`` covers zh, zh-CN, zh-TW, zh_HK, ZH...:
case, spaces and ``_`` for ``-`` do not matter) *and* their date of birth
lies where the lunar calendar can place it (1900-01-31 to 2099-12-31). Every
other customer with a birthday keeps the solar calendar. ``birthday`` greets
solar keepers on the solar date and lunar keepers on the lunar date (never
both); ``lunar_birthday`` selects the lunar keepers on the lunar date; both
through :func:`keeps_lunar`.

Two campaigns (one on each segment), a locale that changes between a
customer's two dates in a year, or two campaigns given different locale
lists could still greet someone twice. So each birthday segment also leaves
out customers whom a campaign on the *other* segment has already greeted
(or is about to: a deferred greeting) in as-of's year:
:func:`greeted_by_other_calendar`. Within one campaign the ledger's yearly
occasion does the same. Together: at most one birthday greeting a year.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select

from careflow.db.models import Campaign, ContactHistory, Customer

#: the dates of birth the lunar calendar (lunardate) can place
LUNAR_FIRST, LUNAR_LAST = date(1900, 1, 31), date(2099, 12, 31)

#: ledger states of a greeting that went out or will go out without another run deciding
_GREETED = ("sent", "sending", "reserved", "deferred")


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
    """True for customers whose birthday is kept on the lunar calendar (see module doc)."""
    if not locales:
        return false()
    locale = func.replace(func.lower(func.trim(func.coalesce(Customer.locale, ""))), "_", "-")
    tags = [normalise_tag(t) for t in locales]
    return and_(
        or_(*[(locale == t) | locale.like(t + "-%") for t in tags]),
        Customer.birthday.between(LUNAR_FIRST, LUNAR_LAST),
    )


def greeted_by_other_calendar(as_of: date, other_segment: str) -> ColumnElement[bool]:
    """True for customers a campaign on ``other_segment`` greeted in as-of's year, up to as-of.

    Counted by the ledger row's creation time (UTC), so a replay of an
    earlier date sees only what had happened by then.
    """
    ch = ContactHistory.__table__
    start = datetime(as_of.year, 1, 1)
    end = datetime.combine(as_of + timedelta(days=1), time())
    other = select(Campaign.name).where(Campaign.segment == other_segment)
    return exists().where(
        ch.c.customer_id == Customer.id,
        ch.c.campaign.in_(other),
        ch.c.state.in_(_GREETED),
        ch.c.created_at >= start,
        ch.c.created_at < end,
    )


__all__ = ["LUNAR_FIRST", "LUNAR_LAST", "greeted_by_other_calendar", "keeps_lunar", "normalise_tag"]

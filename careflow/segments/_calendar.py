"""Which calendar a customer's birthday is kept on, as both birthday segments use it.

The rule itself is careflow/birthday_calendar.py (the customer import states
it too): a customer's own ``birthday_calendar`` (solar or lunar) when known,
else lunar when their ``locale`` is one of the campaign's lunar locales
(``zh`` covers zh, zh-CN, zh-TW, zh_HK, ZH...), and only for a date of birth
the lunar calendar can place (1900-01-31 to 2099-12-31). Every
other customer with a birthday keeps the solar calendar. ``birthday`` greets
solar keepers on the solar date and lunar keepers on the lunar date (never
both); ``lunar_birthday`` selects the lunar keepers on the lunar date; both
through :func:`keeps_lunar`.

Two campaigns (one on each segment), a locale that changes between a
customer's two dates in a year, or two campaigns given different locale
lists could still greet someone twice. So each birthday segment also leaves
out customers whom a campaign on the *other* segment has already greeted
(or is about to: a deferred greeting) in the customer's own year, in their
time zone: :func:`greeted_by_other_calendar`. Within one campaign the ledger's yearly
occasion does the same. Together: at most one birthday greeting a year.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from sqlalchemy import ColumnElement, case, exists, select

from careflow.birthday_calendar import (
    LUNAR_FIRST,
    LUNAR_LAST,
    keeps_lunar,
    locale_tags,
    normalise_tag,
)
from careflow.db.models import Campaign, ContactHistory, Customer

#: ledger states of a greeting that went out or will go out without another run deciding
_GREETED = ("sent", "sending", "reserved", "deferred")


@lru_cache(maxsize=1)
def known_zones() -> tuple[str, ...]:
    """Every IANA zone name careflow recognises, sorted."""
    return tuple(sorted(available_timezones()))


@lru_cache(maxsize=64)  # each batch of a run builds the select again: the clause is the same
def greeted_by_other_calendar(
    other_segment: str, when: datetime | date, default_zone: str
) -> ColumnElement[bool]:
    """True for customers a campaign on ``other_segment`` greeted in their own local year,
    up to the end of their local day.

    The day a customer is greeted on is their local date at the run's instant
    ``when`` (``birthday``), or the date ``when`` wherever they live
    (``lunar_birthday``); customers with no zone, or one careflow does not
    recognise, live in ``default_zone``. A greeting counts when its ledger row was
    created (UTC) from 1 January of that day's year, midnight *in the customer's
    zone*, to the end of that day: a customer in Shanghai greeted at 07:00 on
    1 January local (23:00 UTC the day before) was greeted in the new year, one in
    New York at 20:00 on 31 December (01:00 UTC the day after) in the old one. A
    replay of an earlier date sees only what had happened by then.
    """
    zone = Customer.time_zone
    groups = _year_to_day(when)
    start, end = _year_to_day_in(when, default_zone)
    start = case(*[(zone.in_(zs), s) for (s, _), zs in groups], else_=start)
    end = case(*[(zone.in_(zs), e) for (_, e), zs in groups], else_=end)
    ch = ContactHistory.__table__
    other = select(Campaign.name).where(Campaign.segment == other_segment)
    return exists().where(
        ch.c.customer_id == Customer.id,
        ch.c.campaign.in_(other),
        ch.c.state.in_(_GREETED),
        ch.c.created_at >= start,
        ch.c.created_at < end,
    )


def _year_to_day(when: datetime | date) -> list[tuple[tuple[datetime, datetime], list[str]]]:
    """Every known zone grouped by its (1 January, end of the day) at ``when``: a few
    dozen groups."""
    groups: dict[tuple[datetime, datetime], list[str]] = {}
    for zone in known_zones():
        groups.setdefault(_year_to_day_in(when, zone), []).append(zone)
    return list(groups.items())


def _year_to_day_in(when: datetime | date, zone: str) -> tuple[datetime, datetime]:
    """(1 January of the greeting day's year, the end of that day), midnights in ``zone``,
    as the ledger stores instants (naive UTC)."""
    tz = ZoneInfo(zone)
    day = when.astimezone(tz).date() if isinstance(when, datetime) else when

    def utc(d: date) -> datetime:
        return datetime.combine(d, time(), tzinfo=tz).astimezone(UTC).replace(tzinfo=None)

    return utc(date(day.year, 1, 1)), utc(day + timedelta(days=1))


__all__ = [
    "LUNAR_FIRST",
    "LUNAR_LAST",
    "greeted_by_other_calendar",
    "keeps_lunar",
    "known_zones",
    "locale_tags",
    "normalise_tag",
]

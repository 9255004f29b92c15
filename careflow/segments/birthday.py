"""birthday: customers whose birthday is today in their own time zone.

"Today" is taken at one instant, ``at``: a run at 09:00 in Shanghai is
already the 23rd in Auckland and still the 22nd in Los Angeles, so each
customer is greeted on their own calendar day. The zone-to-local-date
mapping is worked out here in Python (there are only ~600 IANA zones and at
most three local dates at any instant) and handed to the database as plain
IN lists, so the query runs the same on SQLite and PostgreSQL.

Feb 29 birthdays are greeted on Feb 28 in non-leap years (``feb29_on="mar1"``
moves them to Mar 1). Customers without a usable time zone count in
``default_zone``.

Customers who keep their birthday on the Chinese lunar calendar (their own
``birthday_calendar`` says lunar, or it is empty and their locale is in
``lunar_locales``, default ``zh``; the rule is careflow/birthday_calendar.py) are
greeted on this year's solar date of their lunar birthday instead, on their
own local date too (leap months and missing 30th days as ``lunar_birthday``
handles them), and never on the solar date: one campaign, one greeting a
year for everyone, whichever calendar. ``lunar_locales: []`` makes nobody
lunar by locale (a customer whose own calendar says lunar still is).
Customers a ``lunar_birthday`` campaign already greeted this year are left
out, so running both campaigns greets nobody twice.

Columns: customer_id, birthday, calendar (``solar`` or ``lunar``) and
local_date ('YYYY-MM-DD', the customer's today).
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from sqlalchemy import Select, and_, case, false, literal, not_, or_, select

from careflow.birthday_calendar import DEFAULT_LUNAR_LOCALES
from careflow.db.models import Customer
from careflow.db.sqlfunc import month_day
from careflow.errors import ConfigError
from careflow.segments._calendar import (
    LUNAR_FIRST,
    LUNAR_LAST,
    greeted_by_other_calendar,
    keeps_lunar,
    known_zones,
    locale_tags,
)
from careflow.segments._params import SegmentParams
from careflow.segments._registry import Segment
from careflow.segments.lunar_birthday import birth_dates


class BirthdayParams(SegmentParams):
    """Parameters of ``birthday``."""

    feb29_on: Literal["feb28", "mar1"] = Field(
        "feb28",
        description="Where Feb 29 birthdays fall in non-leap years: feb28 or mar1.",
    )
    default_zone: str = Field(
        "UTC",
        strict=True,
        description="Time zone of customers with no time zone on file, or one careflow "
        "does not recognise.",
        json_schema_extra={"allowed": "an IANA time zone name such as Europe/London or UTC"},
    )

    lunar_locales: list[str] = Field(
        list(DEFAULT_LUNAR_LOCALES),
        description="Customers whose locale starts with one of these keep their birthday on "
        "the lunar calendar and are greeted on its date, unless their own birthday_calendar "
        "says solar; [] makes nobody lunar by locale.",
        json_schema_extra={"allowed": "a list of locale tags such as [zh] or [zh-CN, zh-TW], "
                           "or []"},
    )

    @field_validator("lunar_locales")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        return locale_tags(tags)

    @field_validator("default_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


def local_dates(at: datetime, default_zone: str = "UTC") -> dict[date, list[str]]:
    """Group every IANA zone by its local date at instant ``at``."""
    groups: dict[date, list[str]] = {}
    for zone in known_zones():
        groups.setdefault(at.astimezone(ZoneInfo(zone)).date(), []).append(zone)
    groups.setdefault(at.astimezone(ZoneInfo(default_zone)).date(), [])
    return groups


def birthday_keys(day: date, feb29_on: str = "feb28") -> list[str]:
    """'MM-DD' birthdays celebrated on ``day``."""
    keys = [day.strftime("%m-%d")]
    if not calendar.isleap(day.year):
        if feb29_on == "feb28" and (day.month, day.day) == (2, 28):
            keys.append("02-29")
        if feb29_on == "mar1" and (day.month, day.day) == (3, 1):
            keys.append("02-29")
    return keys


def birthday(
    as_of: date,
    p: BirthdayParams,
    *,
    at: datetime | None = None,
    id_range: tuple[int, int] | None = None,
) -> Select:
    """Customers celebrating their birthday at instant ``at`` (default: noon UTC of as_of),
    on the solar or the lunar calendar (see the module's doc)."""
    feb29_on, default_zone = p.feb29_on, p.default_zone
    if at is None:
        at = datetime.combine(as_of, time(12), tzinfo=UTC)
    elif at.tzinfo is None:
        # a programming error, not a person's: flows pass resolve_as_of's instant
        raise ConfigError("segment 'birthday': the run's instant must carry a time zone")

    known = list(known_zones())
    default_date = at.astimezone(ZoneInfo(default_zone)).date()
    md = month_day(Customer.birthday)
    lunar = keeps_lunar(p.lunar_locales)
    tz_clauses, date_cases, maybe = [], [], []
    for day, zones in local_dates(at, default_zone).items():
        in_zone = Customer.time_zone.in_(zones) if zones else literal(False)
        if day == default_date:
            # customers with no zone, or one we do not recognise, live in default_zone
            in_zone = or_(in_zone, Customer.time_zone.is_(None), Customer.time_zone.not_in(known))
        solar_today = and_(not_(lunar), md.in_(birthday_keys(day, feb29_on)))
        lunar_dates = birth_dates(day) if LUNAR_FIRST <= day <= LUNAR_LAST else ()
        lunar_today = and_(lunar, Customer.birthday.in_(lunar_dates)) if lunar_dates else false()
        tz_clauses.append(and_(in_zone, or_(solar_today, lunar_today)))
        maybe += [md.in_(birthday_keys(day, feb29_on))]
        maybe += [Customer.birthday.in_(lunar_dates)] if lunar_dates else []
        date_cases.append((in_zone, day.isoformat()))

    query = select(
        Customer.id.label("customer_id"),
        Customer.birthday,
        case((lunar, "lunar"), else_="solar").label("calendar"),
        case(*date_cases, else_=default_date.isoformat()).label("local_date"),
    ).where(
        Customer.birthday.is_not(None),
        # first the one cheap test that rules out all but a few in a thousand, so the
        # zone, calendar and earlier-greeting tests run only for those
        or_(*maybe),
        or_(*tz_clauses),
        not_(greeted_by_other_calendar("lunar_birthday", at, default_zone)),
    )
    if id_range is not None:
        query = query.where(Customer.id.between(*id_range))
    return query


SEGMENT = Segment(
    "birthday",
    birthday,
    BirthdayParams,
    "Customers whose birthday is today in their own time zone (solar or lunar).",
)

__all__ = ["SEGMENT", "birthday", "birthday_keys", "local_dates"]

"""lunar_birthday: customers whose Chinese lunar birthday falls on as-of.

Many Chinese customers keep their birthday on the lunar calendar: born on
the 8th day of the 4th lunar month, they celebrate on that lunar date, which
is a different solar date every year. The customer record holds the solar
date of birth (``birthday``); this segment finds the lunar month and day of
that date and greets the customer on this year's solar date of it, using
``lunardate`` (maintained, pure Python, on PyPI; it covers 1900-2099).

Which customers: those whose own ``birthday_calendar`` says lunar, or is
empty and their ``locale`` starts with one of ``locales`` (default ``zh``:
zh, zh-CN, zh-TW, zh_HK...), born where the lunar calendar can place the
date; the rule lives in careflow/birthday_calendar.py. The
``birthday`` segment greets these same customers on the same date (its
``lunar_locales`` has the same default), so the shipped birthday campaign
already greets everyone once a year on their own calendar. This segment is
for a campaign of its own for them (other words, other channels): it leaves
out customers whom a ``birthday`` campaign greeted this year, and
``birthday`` leaves out those it greeted, so nobody is greeted twice in a
year: the customer's own year, in their time zone.

The two gaps of the lunar calendar, and what happens:

- **Leap months.** A lunar year sometimes repeats a month (2025 had two 6th
  months). Someone born in the regular month celebrates in the regular month.
  Someone born in a leap month celebrates in the leap month of the same
  number when the year has one, and otherwise in the regular month of that
  number (the usual custom: most years have no such leap month).
- **Missing 30th days.** Lunar months have 29 or 30 days. Someone born on
  the 30th is greeted on the 29th, the month's last day, in years when their
  month has only 29 days.

How it runs: the calendar work happens in Python when the select is built.
For as-of, it works out which lunar birthdays (month, day, leap or not) are
kept today, then every solar date from 1900 on that is one of them: the
possible dates of birth. The database only matches ``birthday IN (...)``:
about 130 dates, whatever the number of customers. The time of day and the
customer's time zone are not considered: the greeting goes on as-of's date.

Columns: customer_id, birthday, lunar_month, lunar_day, leap_month (the
date of birth in the lunar calendar) and local_date (as-of: use
``occasion: yearly`` or ``daily``).
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import Annotated

from lunardate import LunarDate
from pydantic import Field, field_validator
from sqlalchemy import Boolean, Date, Integer, Select, case, false, literal, not_, select

from careflow.birthday_calendar import DEFAULT_LUNAR_LOCALES
from careflow.db.models import Customer
from careflow.errors import ConfigError
from careflow.segments._calendar import LUNAR_FIRST as FIRST
from careflow.segments._calendar import LUNAR_LAST as LAST
from careflow.segments._calendar import greeted_by_other_calendar, keeps_lunar, locale_tags
from careflow.segments._params import SegmentParams
from careflow.segments._registry import Segment


class LunarBirthdayParams(SegmentParams):
    """Parameters of ``lunar_birthday``."""

    locales: Annotated[list[str], Field(min_length=1)] = Field(
        list(DEFAULT_LUNAR_LOCALES),
        description="Customers whose locale starts with one of these keep lunar birthdays "
        "(and those whose own birthday_calendar says lunar), unless their own says solar.",
        json_schema_extra={"allowed": "a list of locale tags such as [zh] or [zh-CN, zh-TW]"},
    )

    @field_validator("locales")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        return locale_tags(tags)


def _lunar(day: date) -> LunarDate:
    return LunarDate.from_solar_date(day.year, day.month, day.day)


def _solar(year: int, month: int, day: int, leap: bool) -> date | None:
    """The solar date of a lunar date, or None when that lunar date does not exist."""
    try:
        solar = LunarDate(year, month, day, leap).to_solar_date()
    except ValueError:
        return None
    back = _lunar(solar)
    if (back.year, back.month, back.day, bool(back.is_leap_month)) != (year, month, day, leap):
        return None  # lunardate rolls a missing 30th or leap month over: it does not exist
    return solar


def kept_on(day: date) -> list[tuple[int, int, bool]]:
    """The lunar birthdays (month, day, born in a leap month) celebrated on solar ``day``."""
    today = _lunar(day)
    year, month, mday, leap = today.year, today.month, today.day, bool(today.is_leap_month)
    year_has_leap = LunarDate.leap_month_for_year(year) == month
    days = [mday]
    if mday == 29 and _solar(year, month, 30, leap) is None:
        days.append(30)  # born on a 30th this month lacks
    kept = []
    for d in days:
        if leap:
            kept.append((month, d, True))  # the leap month itself
        else:
            kept.append((month, d, False))
            if not year_has_leap:
                kept.append((month, d, True))  # leap-month births, in a year without one
    return kept


@lru_cache(maxsize=64)
def birth_dates(day: date) -> tuple[date, ...]:
    """Every solar date from 1900 to ``day`` whose lunar birthday is celebrated on ``day``."""
    wanted = kept_on(day)
    out = []
    for year in range(FIRST.year, day.year + 1):
        for month, d, leap in wanted:
            if leap and LunarDate.leap_month_for_year(year) != month:
                continue
            solar = _solar(year, month, d, leap)
            if solar is not None and FIRST <= solar <= day:
                out.append(solar)
    return tuple(sorted(set(out)))


def lunar_birthday(
    as_of: date, p: LunarBirthdayParams, *, id_range: tuple[int, int] | None = None
) -> Select:
    """Customers in ``locales`` whose lunar birthday is as-of."""
    if not FIRST <= as_of <= LAST:
        raise ConfigError(
            f"segment 'lunar_birthday': the lunar calendar covers {FIRST.year} to {LAST.year}; "
            f"as-of {as_of.isoformat()} is outside it"
        )
    dates = birth_dates(as_of)
    where = [
        Customer.birthday.in_(dates) if dates else false(),
        keeps_lunar(p.locales),
        # greeted on as-of's date wherever they live; no zone on file: UTC
        not_(greeted_by_other_calendar("birthday", as_of, "UTC")),
    ]
    if id_range is not None:
        where.append(Customer.id.between(*id_range))
    # the lunar date of each possible birth date, for templates ("4th month, 8th day")
    birth = {d: _lunar(d) for d in dates}
    return select(
        Customer.id.label("customer_id"),
        Customer.birthday,
        _column(dates, birth, "month", Integer).label("lunar_month"),
        _column(dates, birth, "day", Integer).label("lunar_day"),
        _column(dates, birth, "is_leap_month", Boolean).label("leap_month"),
        literal(as_of, Date).label("local_date"),
    ).where(*where)


def _column(dates, birth, attr: str, kind):
    """The lunar ``attr`` of each possible birth date, picked by the customer's birthday."""
    if not dates:
        return literal(None, kind)
    return case(
        *[(Customer.birthday == d, literal(_as(getattr(birth[d], attr), kind), kind))
          for d in dates]
    )


def _as(value, kind):
    return bool(value) if kind is Boolean else int(value)


SEGMENT = Segment(
    "lunar_birthday",
    lunar_birthday,
    LunarBirthdayParams,
    "Customers whose Chinese lunar birthday falls on as-of.",
)

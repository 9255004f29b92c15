"""The lunar_birthday segment: greeted on this year's solar date of the lunar birthday,
leap months and missing 30th days included. Expected dates are from published
Chinese calendars (e.g. lunar 4/8, the Buddha's birthday, was 1990-05-02 and is
2026-05-24; 2025 had a leap 6th month starting 2025-07-25)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from careflow import segments
from careflow.errors import ConfigError
from careflow.segments.lunar_birthday import birth_dates
from tests.factories import add_customer, ids, rows


def build(day, **params):
    return segments.build("lunar_birthday", day, params)


def test_greeted_on_this_years_date_of_the_lunar_birthday(engine):
    add_customer(engine, 1, birthday=date(1990, 5, 2), locale="zh-CN")  # lunar 4/8
    add_customer(engine, 2, birthday=date(1990, 5, 2), locale="en")  # keeps the solar date
    add_customer(engine, 3, birthday=date(1990, 5, 2), locale="zh-TW")
    add_customer(engine, 4, birthday=date(1990, 5, 2), locale=None)
    got = rows(engine, build(date(2026, 5, 24)))
    assert set(got) == {1, 3}
    assert (got[1]["lunar_month"], got[1]["lunar_day"], bool(got[1]["leap_month"])) == (4, 8, False)
    assert ids(engine, build(date(2026, 5, 2))) == set()  # the solar date is not it
    assert ids(engine, build(date(2026, 5, 24), locales=["en"])) == {2}


def test_leap_month_births_and_regular_month_births(engine):
    add_customer(engine, 1, birthday=date(2025, 7, 25), locale="zh")  # leap 6th month, day 1
    add_customer(engine, 2, birthday=date(2025, 6, 25), locale="zh")  # regular 6th month, day 1
    # 2026 has no leap 6th month: both on the regular 6/1
    assert ids(engine, build(date(2026, 7, 14))) == {1, 2}
    # 2036 has one: regular births in the regular month, leap births in the leap month
    from lunardate import LunarDate

    regular, leap = LunarDate(2036, 6, 1).to_solar_date(), LunarDate(2036, 6, 1, True).to_solar_date()
    assert ids(engine, build(regular)) == {2} and ids(engine, build(leap)) == {1}


def test_a_30th_is_greeted_on_the_29th_when_the_month_is_short(engine):
    add_customer(engine, 1, birthday=date(1990, 6, 22), locale="zh")  # 5th month, 30th day
    add_customer(engine, 2, birthday=date(1990, 6, 21), locale="zh")  # 5th month, 29th day
    # in 2026 the 5th month has 29 days: both on 2026-07-13
    assert ids(engine, build(date(2026, 7, 13))) == {1, 2}
    assert ids(engine, build(date(2026, 7, 14))) == set()


@pytest.mark.parametrize("born", [date(1990, 5, 2), date(1990, 6, 22), date(2025, 7, 25),
                                  date(1984, 2, 2), date(1991, 2, 14)])
def test_once_every_lunar_year(born):
    """Over every day of a lunar year, a birth date is kept exactly once."""
    from lunardate import LunarDate

    for year in (2026, 2036):
        day, end = LunarDate(year, 1, 1).to_solar_date(), LunarDate(year + 1, 1, 1).to_solar_date()
        kept = []
        while day < end:
            if born in birth_dates(day):
                kept.append(day)
            day += timedelta(days=1)
        assert len(kept) == 1, (born, year, kept)


def test_outside_the_calendar_and_bad_locales():
    with pytest.raises(ConfigError, match="covers 1900 to 2099"):
        build(date(2150, 1, 1))
    with pytest.raises(ConfigError, match="segment 'lunar_birthday': locales must be"):
        build(date(2026, 1, 1), locales=[""])

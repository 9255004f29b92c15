"""One birthday greeting a year, solar or lunar, never both (careflow/segments/_calendar.py).

Before the fix, ``birthday`` greeted every customer with a birthday on the
solar date, and ``lunar_birthday`` greeted the zh customers again on their
lunar date: two greetings a year for everyone who keeps the lunar calendar.
Now ``birthday`` greets each customer on their own calendar's date, and
``lunar_birthday`` the lunar keepers on that same date, each leaving out
whoever a campaign on the other has greeted this year.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from lunardate import LunarDate
from sqlalchemy import insert

from careflow import segments
from careflow.db.models import Campaign, ContactHistory
from tests.factories import add_customer, ids

# locale spellings as imports deliver them, and dates of birth at the lunar calendar's edges
PEOPLE = {
    1: ("zh-CN", date(1990, 5, 2)),  # lunar 4/8: greeted on 2026-05-24
    2: ("en", date(1990, 5, 2)),  # solar: 2026-05-02
    3: ("ZH_cn", date(1985, 11, 25)),  # lunar, however the tag is spelt
    4: (" zh ", date(2000, 2, 29)),  # lunar, born on a solar leap day
    5: (None, date(2000, 2, 29)),  # solar, Feb 29: greeted on Feb 28 in 2026
    6: ("zh-TW", date(1900, 1, 15)),  # before the lunar calendar's first day: solar
    7: ("zh", date(2025, 7, 25)),  # born in the leap 6th month of 2025
    8: ("zha", date(1990, 5, 2)),  # another language that merely starts with zh: solar
    9: ("zh-HK", date(1990, 1, 1)),  # lunar 12/5 (kept in January or February)
}
LUNAR = {1, 3, 4, 7, 9}


def _noon(day: date) -> datetime:
    return datetime.combine(day, time(12), tzinfo=UTC)


def _candidate_days(first: date, last: date) -> list[date]:
    """Each person's solar and lunar dates between ``first`` and ``last`` (Feb 28 for Feb 29):
    the days on which either segment could greet anyone, so the days a double greeting
    would show. Scanning every day of the year says the same, 20 times slower."""
    days = set()
    for _, born in PEOPLE.values():
        for year in (first.year, last.year):
            solar = date(year, 2, 28) if (born.month, born.day) == (2, 29) else None
            days.add(solar or born.replace(year=year))
            lunar = LunarDate.from_solar_date(born.year, born.month, born.day)
            for leap in (False, True):
                with contextlib.suppress(ValueError):  # no such leap month that year
                    days.add(LunarDate(year, lunar.month, lunar.day, leap).to_solar_date())
    return sorted(d for d in days if first <= d <= last)


def _greetings(engine, first: date, last: date) -> dict[str, dict[int, list[date]]]:
    """Who each birthday segment selects, on every candidate day from ``first`` to ``last``."""
    seen: dict[str, dict[int, list[date]]] = {"birthday": {}, "lunar_birthday": {}}
    for day in _candidate_days(first, last):
        for name in seen:
            for cid in ids(engine, segments.build(name, day, {}, at=_noon(day))):
                seen[name].setdefault(cid, []).append(day)
    return seen


def test_each_customer_is_greeted_once_a_year_on_one_calendar(engine):
    for cid, (locale, born) in PEOPLE.items():
        add_customer(engine, cid, locale=locale, birthday=born)
    solar_year = _greetings(engine, date(2026, 1, 1), date(2026, 12, 31))
    solar = set(PEOPLE) - LUNAR
    # solar keepers: once, on the solar date, and never by lunar_birthday
    assert {c: len(d) for c, d in solar_year["birthday"].items() if c in solar} == dict.fromkeys(
        solar, 1
    )
    assert solar_year["birthday"][5] == [date(2026, 2, 28)]
    assert solar_year["birthday"][6] == [date(2026, 1, 15)]
    assert not set(solar_year["lunar_birthday"]) & solar
    # lunar keepers, over a lunar year: once, on the lunar date, by either segment alike
    start = LunarDate(2026, 1, 1).to_solar_date()
    end = LunarDate(2027, 1, 1).to_solar_date() - timedelta(days=1)
    lunar_year = _greetings(engine, start, end)
    kept = {c: d for c, d in lunar_year["birthday"].items() if c in LUNAR}
    assert {c: len(d) for c, d in kept.items()} == dict.fromkeys(LUNAR, 1)
    assert kept[1] == [date(2026, 5, 24)]  # not 2 May, the solar date
    assert {c: d for c, d in lunar_year["lunar_birthday"].items()} == kept
    calendars = {r["customer_id"]: r["calendar"] for r in _rows(engine, date(2026, 5, 24))}
    assert calendars == {1: "lunar"}


def _rows(engine, day: date) -> list[dict]:
    with engine.connect() as conn:
        query = segments.build("birthday", day, {}, at=_noon(day))
        return [dict(r) for r in conn.execute(query).mappings()]


def test_the_locale_list_decides(engine):
    add_customer(engine, 1, locale="zh-TW", birthday=date(1990, 5, 2))
    add_customer(engine, 2, locale="zh-CN", birthday=date(1990, 5, 2))
    solar, lunar = date(2026, 5, 2), date(2026, 5, 24)
    only_tw = {"lunar_locales": ["zh-TW"]}
    assert ids(engine, segments.build("birthday", solar, only_tw, at=_noon(solar))) == {2}
    assert ids(engine, segments.build("birthday", lunar, only_tw, at=_noon(lunar))) == {1}
    assert ids(engine, segments.build("lunar_birthday", lunar, {"locales": ["zh-TW"]})) == {1}
    everyone_solar = {"lunar_locales": []}
    assert ids(engine, segments.build("birthday", solar, everyone_solar, at=_noon(solar))) == {1, 2}
    assert ids(engine, segments.build("birthday", lunar, everyone_solar, at=_noon(lunar))) == set()


def test_a_customers_own_calendar_wins_over_the_locale(engine):
    """zh customers were greeted on their lunar birthday and nothing let a shop say
    otherwise for one of them: their own birthday_calendar decides, the locale only
    when it is empty (careflow/birthday_calendar.py)."""
    add_customer(engine, 1, locale="zh-CN", birthday=date(1990, 5, 2), birthday_calendar="solar")
    add_customer(engine, 2, locale="en", birthday=date(1990, 5, 2), birthday_calendar="lunar")
    add_customer(engine, 3, locale="zh-CN", birthday=date(1990, 5, 2))  # the default: lunar
    add_customer(engine, 4, locale="en", birthday=date(1990, 5, 2))  # the default: solar
    solar, lunar = date(2026, 5, 2), date(2026, 5, 24)
    assert ids(engine, segments.build("birthday", solar, {}, at=_noon(solar))) == {1, 4}
    assert ids(engine, segments.build("birthday", lunar, {}, at=_noon(lunar))) == {2, 3}
    assert ids(engine, segments.build("lunar_birthday", lunar, {})) == {2, 3}
    nobody_by_locale = {"lunar_locales": []}
    assert ids(engine, segments.build("birthday", lunar, nobody_by_locale, at=_noon(lunar))) == {2}


def _greeted(engine, campaign: str, segment: str, cid: int, when: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Campaign.__table__).values(
            name=campaign, segment=segment, created_at=when))  # fmt: skip
        conn.execute(insert(ContactHistory.__table__).values(
            campaign=campaign, customer_id=cid, occasion=str(when.year), state="sent",
            channel="sms", created_at=when, updated_at=when, sent_at=when))  # fmt: skip


def test_a_locale_that_changes_between_the_two_dates_does_not_greet_twice(engine):
    # solar birthday 2 May, lunar 24 May 2026: greeted on 2 May while still "en"
    add_customer(engine, 1, locale="zh-CN", birthday=date(1990, 5, 2))
    _greeted(engine, "birthday", "birthday", 1, datetime(2026, 5, 2, 9))
    # (the birthday campaign itself selects them on 24 May: its yearly occasion, already
    # recorded, keeps it from sending; the lunar campaign must not send either)
    lunar = date(2026, 5, 24)
    assert ids(engine, segments.build("lunar_birthday", lunar, {})) == set()
    # last year and next year count on their own
    assert ids(engine, segments.build("lunar_birthday", date(2025, 5, 5), {})) == {1}
    assert ids(engine, segments.build("lunar_birthday", date(2027, 5, 13), {})) == {1}


def test_a_lunar_greeting_this_year_keeps_the_solar_campaign_away(engine):
    # greeted on the lunar date in March, then the locale became "en"
    add_customer(engine, 1, locale="en", birthday=date(1990, 6, 20))
    _greeted(engine, "lunar_greetings", "lunar_birthday", 1, datetime(2026, 3, 1, 9))
    day = date(2026, 6, 20)
    assert ids(engine, segments.build("birthday", day, {}, at=_noon(day))) == set()
    day = date(2027, 6, 20)
    assert ids(engine, segments.build("birthday", day, {}, at=_noon(day))) == {1}
    # time travel: on a replay of a date before the lunar greeting it had not happened
    with engine.begin() as conn:
        conn.execute(ContactHistory.__table__.update().values(
            created_at=datetime(2026, 6, 21, 9)))  # fmt: skip
    day = date(2026, 6, 20)
    assert ids(engine, segments.build("birthday", day, {}, at=_noon(day))) == {1}


# (zone, when another calendar's campaign greeted them, naive UTC, greeted in local 2027?)
NEW_YEAR = [
    ("Asia/Shanghai", datetime(2026, 12, 31, 23), True),  # 07:00 on 1 January there
    ("Pacific/Kiritimati", datetime(2026, 12, 31, 11), True),  # UTC+14: 01:00 on 1 January
    ("America/New_York", datetime(2027, 1, 1, 1), False),  # 20:00 on 31 December there
    ("Pacific/Honolulu", datetime(2027, 1, 1, 9), False),  # 23:00 on 31 December there
    ("UTC", datetime(2027, 1, 1, 0, 30), True),
    ("UTC", datetime(2026, 12, 31, 23, 30), False),
    (None, datetime(2026, 12, 31, 23, 30), False),  # no zone on file: UTC
]


@pytest.mark.parametrize(("zone", "when", "this_year"), NEW_YEAR)
def test_once_a_year_is_the_customers_own_year_in_their_zone(engine, zone, when, this_year):
    """Regression: the cross-calendar check counted greetings from 1 January UTC, so a
    lunar keeper in Shanghai greeted at 07:00 on New Year's Day (23:00 UTC the day
    before) was greeted again by the solar campaign that year, and one in New York
    greeted on New Year's Eve evening (already 1 January in UTC) was left out the next
    year. The year is the customer's own, in their zone, both ways round."""
    from careflow.segments.lunar_birthday import birth_dates

    add_customer(engine, 1, locale="en", birthday=date(1990, 6, 20), time_zone=zone)
    _greeted(engine, "lunar_greetings", "lunar_birthday", 1, when)
    day = date(2027, 6, 20)
    at = datetime.combine(day, time(12), tzinfo=ZoneInfo(zone or "UTC"))
    assert ids(engine, segments.build("birthday", day, {}, at=at)) == (set() if this_year else {1})

    # the other way round: the solar campaign greeted them, then they kept the lunar date
    lunar_day = date(2027, 1, 5)
    born = next(d for d in birth_dates(lunar_day) if 1950 <= d.year <= 2000)
    add_customer(engine, 2, locale="zh", birthday=born, time_zone=zone)
    _greeted(engine, "birthday_wishes", "birthday", 2, when)
    expected = set() if this_year else {2}
    assert ids(engine, segments.build("lunar_birthday", lunar_day, {})) == expected

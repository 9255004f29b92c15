"""Birthdays in the customer's own time zone, and Feb 29 in non-leap years."""

from datetime import UTC, date, datetime

import pytest

from careflow import segments
from careflow.segments.birthday import birthday_keys
from tests.factories import add_customer, ids, rows


def birthday(as_of: date, *, at: datetime, id_range=None, **params):
    return segments.build("birthday", as_of, params, at=at, id_range=id_range)


def test_local_date_decides_not_utc(engine):
    # 2026-02-28 20:00 UTC is already 1 March in Auckland, still 28 Feb in Los Angeles
    at = datetime(2026, 2, 28, 20, 0, tzinfo=UTC)
    add_customer(engine, 1, time_zone="Pacific/Auckland", birthday=date(1990, 3, 1))
    add_customer(engine, 2, time_zone="America/Los_Angeles", birthday=date(1990, 3, 1))
    add_customer(engine, 3, time_zone="America/Los_Angeles", birthday=date(1985, 2, 28))
    add_customer(engine, 4, time_zone="Pacific/Auckland", birthday=date(1985, 2, 28))
    got = rows(engine, birthday(date(2026, 2, 28), at=at))
    assert set(got) == {1, 3}
    assert got[1]["local_date"] == "2026-03-01" and got[3]["local_date"] == "2026-02-28"


def test_feb29_greeted_on_feb28_in_non_leap_years(engine):
    add_customer(engine, 1, birthday=date(2000, 2, 29))
    add_customer(engine, 2, birthday=date(2001, 3, 1))
    noon = lambda d: datetime(d.year, d.month, d.day, 12, tzinfo=UTC)
    assert ids(engine, birthday(date(2026, 2, 28), at=noon(date(2026, 2, 28)))) == {1}
    assert ids(engine, birthday(date(2026, 3, 1), at=noon(date(2026, 3, 1)))) == {2}
    mar1 = birthday(date(2026, 3, 1), at=noon(date(2026, 3, 1)), feb29_on="mar1")
    assert ids(engine, mar1) == {1, 2}
    # leap year: on the day itself, and not on the 28th
    assert ids(engine, birthday(date(2028, 2, 29), at=noon(date(2028, 2, 29)))) == {1}
    assert ids(engine, birthday(date(2028, 2, 28), at=noon(date(2028, 2, 28)))) == set()


def test_missing_or_unknown_zone_counts_in_default_zone(engine):
    add_customer(engine, 1, time_zone=None, birthday=date(1990, 6, 1))
    add_customer(engine, 2, time_zone="Mars/Olympus_Mons", birthday=date(1990, 6, 1))
    add_customer(engine, 3, time_zone="UTC", birthday=None)
    at = datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert ids(engine, birthday(date(2026, 6, 1), at=at)) == {1, 2}


def test_id_range_limits_the_batch(engine):
    for cid in (1, 2, 3):
        add_customer(engine, cid, birthday=date(1990, 6, 1))
    at = datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert ids(engine, birthday(date(2026, 6, 1), at=at, id_range=(2, 3))) == {2, 3}


@pytest.mark.parametrize(
    "day, keys",
    [
        (date(2026, 2, 28), ["02-28", "02-29"]),
        (date(2028, 2, 28), ["02-28"]),
        (date(2026, 3, 1), ["03-01"]),
    ],
)
def test_birthday_keys(day, keys):
    assert birthday_keys(day) == keys

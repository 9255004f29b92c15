"""The holiday segment and the holiday_greetings campaign."""

from __future__ import annotations

from datetime import date

import pytest

from careflow import segments
from careflow.campaigns import load_campaign, occasion_key
from careflow.errors import ConfigError
from careflow.rendering import Renderer
from careflow.settings import PROJECT_ROOT
from tests.factories import add_customer, rows

SPRING_FESTIVAL_2027 = date(2027, 2, 6)  # 春节, the first of several days off
MID_AUTUMN_2026 = date(2026, 9, 25)


@pytest.fixture
def people(engine):
    countries = {1: "CN", 2: "China", 3: " china ", 4: "GB", 5: "United Kingdom", 6: None,
                 7: "Atlantis", 8: "HK"}
    for cid, country in countries.items():
        add_customer(engine, cid, country=country)
    return engine


def selected(engine, day, **params):
    return rows(engine, segments.build("holiday", day, params))


def test_greeted_on_the_first_day_of_the_holiday_in_their_country(people):
    got = selected(people, SPRING_FESTIVAL_2027)
    # China by code, English name, any case and spaces; Hong Kong has its Lunar New Year
    assert set(got) == {1, 2, 3, 8}
    assert got[1]["holiday"] == "Chinese New Year (Spring Festival)"
    assert got[1]["holiday_local"] == "春节"
    assert str(got[1]["holiday_date"])[:10] == str(got[1]["local_date"])[:10] == "2027-02-06"
    assert selected(people, date(2027, 2, 7)) == {}  # day two of the same holiday


def test_days_before_and_a_chosen_few_holidays(people):
    early = selected(people, date(2027, 2, 3), days_before=3)
    assert set(early) == {1, 2, 3, 8} and str(early[1]["holiday_date"])[:10] == "2027-02-06"
    only_mid_autumn = {"holidays": ["Mid-Autumn", "National Day"]}
    assert set(selected(people, MID_AUTUMN_2026, **only_mid_autumn)) == {1, 2, 3}
    assert selected(people, SPRING_FESTIVAL_2027, **only_mid_autumn) == {}


def test_other_countries_and_the_countries_parameter(people):
    christmas = selected(people, date(2026, 12, 25))
    assert {1, 4, 5, 8} >= set(christmas) >= {4, 5}  # GB by code and by name
    assert christmas[4]["holiday"] == "Christmas Day"
    assert set(selected(people, date(2026, 12, 25), countries=["GB"])) == {4, 5}
    assert selected(people, date(2026, 10, 1), countries=["GB"]) == {}  # China's National Day
    with pytest.raises(ConfigError, match="segment 'holiday': countries must be"):
        segments.build("holiday", date(2026, 12, 25), {"countries": ["XX"]})


def test_a_holiday_name_with_a_quote_reaches_the_template_as_it_is(people):
    """The lookup of greeted countries is written into the SQL as literals: a name
    with an apostrophe must arrive intact, not break the query."""
    new_year = selected(people, date(2027, 1, 1), countries=["GB"])
    assert set(new_year) == {4, 5}
    assert new_year[4]["holiday"] == "New Year's Day"


def test_the_campaign_greets_once_per_holiday_whichever_day_it_runs():
    spec = load_campaign("holiday_greetings", PROJECT_ROOT / "templates")
    assert spec.segment == "holiday" and spec.occasion == "daily"
    row = {"local_date": "2027-02-06"}
    assert occasion_key(spec, row, date(2027, 2, 3)) == occasion_key(spec, row, date(2027, 2, 6))


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_the_holiday_templates_render(locale):
    r = Renderer(PROJECT_ROOT / "templates")
    ctx = {
        "name": "Ann", "brand": "Shop", "campaign": "holiday_greetings",
        "as_of": date(2027, 2, 6), "customer": {"full_name": "Ann Lee", "locale": locale},
        "holiday": "Chinese New Year (Spring Festival)", "holiday_local": "春节",
        "holiday_date": "2027-02-06", "local_date": "2027-02-06", "country": "CN",
    }
    for channel in ("sms", "email"):
        out = r.render("holiday_greetings", channel, locale, ctx)
        assert ("春节" if locale == "zh-CN" else "Spring Festival") in out.body


def test_only_real_holidays_are_occasions_not_days_off_around_them():
    """Regression: China's substituted days off ("Day off (substituted from ...)", 调休)
    were greeted as holidays: six bogus greetings in 2026 for every customer in China.
    The same for other countries' substituted, bridge and additional days off."""
    from datetime import timedelta

    from careflow.segments.holiday import greetings

    day, greeted = date(2026, 1, 1), {}
    while day.year == 2026:
        if found := greetings(day, ("CN",), ()):
            greeted[day] = found["CN"][0]
        day += timedelta(days=1)
    assert greeted == {
        date(2026, 1, 1): "New Year's Day",
        date(2026, 2, 16): "Chinese New Year's Eve",
        date(2026, 2, 17): "Chinese New Year (Spring Festival)",
        date(2026, 4, 5): "Tomb-Sweeping Day",
        date(2026, 5, 1): "Labor Day",
        date(2026, 6, 19): "Dragon Boat Festival",
        date(2026, 9, 25): "Mid-Autumn Festival",
        date(2026, 10, 1): "National Day",
    }
    days_off = {  # country: days the package lists as days off that celebrate nothing
        "RU": date(2025, 5, 2), "VN": date(2025, 5, 2), "HU": date(2025, 5, 2),  # substituted
        "TW": date(2025, 1, 27), "BY": date(2025, 1, 6),
        "AR": date(2025, 5, 2), "TH": date(2025, 6, 2),  # bridge
        "KG": date(2025, 1, 3), "UZ": date(2026, 1, 2),  # additional
        "MY": date(2025, 9, 15), "PH": date(2025, 5, 12), "AI": date(2025, 2, 28),
        "KR": date(2023, 10, 2), "KH": date(2020, 8, 17),  # temporary, replacement
        "CL": date(2025, 9, 17), "GH": date(2020, 5, 25),  # only a generic name
        "ZA": date(2022, 12, 27),  # by presidential decree
    }  # fmt: skip
    for code, off in days_off.items():
        assert greetings(off, (code,), ()) == {}, code
    assert greetings(date(2020, 1, 31), ("CN",), ()) == {}  # the extended Spring Festival
    # later days of one holiday under another name are the same holiday...
    assert greetings(date(2020, 1, 2), ("BW",), ()) == {}  # New Year's Day Holiday
    assert greetings(date(2027, 3, 9), ("AE",), ())["AE"][0] == "Eid al-Fitr (estimated)"
    assert greetings(date(2027, 3, 10), ("AE",), ()) == {}  # Eid al-Fitr Holiday
    # ...and another holiday on such a day is still greeted
    assert greetings(date(2020, 5, 25), ("JO",), ())["JO"][0] == "Independence Day"
    # on its own name's day a holiday is still greeted: Malaysia's Eid, not its extra day
    assert greetings(date(2026, 3, 20), ("MY",), ()) == {}
    assert greetings(date(2026, 3, 21), ("MY",), ())["MY"][0] == "Eid al-Fitr"


def test_observed_days_off_are_not_occasions_the_holiday_is_greeted_on_its_date():
    """The US's Independence Day 2027 falls on a Sunday and is observed on Monday the 5th;
    the UK's Christmas 2027 on a Saturday, observed on the 27th: greeted on the 4th and
    the 25th, the days people celebrate, never again on the day off (docs/policy.md)."""
    from careflow.segments.holiday import greetings

    assert greetings(date(2027, 7, 4), ("US",), ())["US"][0] == "Independence Day"
    assert greetings(date(2027, 7, 5), ("US",), ()) == {}
    assert greetings(date(2027, 12, 25), ("GB",), ())["GB"][0] == "Christmas Day"
    assert greetings(date(2027, 12, 27), ("GB",), ()) == {}
    assert greetings(date(2027, 12, 28), ("GB",), ()) == {}

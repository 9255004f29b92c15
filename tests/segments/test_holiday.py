"""The holiday segment and the holiday_greetings campaign."""

from __future__ import annotations

from datetime import date

import pytest

import segments
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

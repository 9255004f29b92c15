"""Send times in the customer's own zone: quiet hours, country windows, holidays, DST."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from careflow.errors import ConfigError
from careflow.policy.countries import load_countries
from careflow.policy.timing import Hours, blocked_at, easter_sunday, next_allowed

QUIET = Hours.parse("21:00-09:00")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    "zone, now, expected",
    [
        # allowed already: no deferral
        ("Europe/London", utc(2026, 6, 1, 12), utc(2026, 6, 1, 12)),
        # 20:00 UTC is 21:00 BST in London: deferred to 09:00 BST next morning
        ("Europe/London", utc(2026, 6, 1, 20), utc(2026, 6, 2, 8)),
        # Shanghai (UTC+8): 12:00 UTC is 20:00 there, allowed; 13:00 UTC is 21:00, quiet
        ("Asia/Shanghai", utc(2026, 6, 1, 12), utc(2026, 6, 1, 12)),
        ("Asia/Shanghai", utc(2026, 6, 1, 13), utc(2026, 6, 2, 1)),
        # UTC+14 (Line Islands): 12:00 UTC is 02:00 the next local day
        ("Pacific/Kiritimati", utc(2026, 6, 1, 12), utc(2026, 6, 1, 19)),
        # UTC-12 (Etc/GMT+12 is UTC-12): 12:00 UTC is 00:00 the same local day
        ("Etc/GMT+12", utc(2026, 6, 1, 12), utc(2026, 6, 1, 21)),
        # New York on the spring-forward day (2026-03-08, 02:00 -> 03:00): 09:00 is EDT
        ("America/New_York", utc(2026, 3, 8, 5), utc(2026, 3, 8, 13)),
        # ...and on the fall-back day (2026-11-01): 09:00 is EST again
        ("America/New_York", utc(2026, 11, 1, 5), utc(2026, 11, 1, 14)),
    ],
)
def test_quiet_hours_end_at_nine_local_in_every_zone(zone, now, expected):
    assert next_allowed(now, ZoneInfo(zone), QUIET, None) == expected


def test_a_boundary_inside_the_spring_forward_gap_is_the_end_of_the_gap():
    quiet = Hours.parse("22:00-02:30")  # 02:30 does not exist in New York on 2026-03-08
    got = next_allowed(utc(2026, 3, 8, 5), ZoneInfo("America/New_York"), quiet, None)
    assert got == utc(2026, 3, 8, 7)  # 03:00 EDT, the first local time after 02:30


def test_a_boundary_in_the_repeated_hour_is_its_first_occurrence():
    quiet = Hours.parse("21:00-01:30")  # London 2026-10-25 has 01:30 twice
    got = next_allowed(utc(2026, 10, 25, 0, 10), ZoneInfo("Europe/London"), quiet, None)
    assert got == utc(2026, 10, 25, 0, 30)  # 01:30 BST


def test_easter_dates():
    assert [easter_sunday(y) for y in (2000, 2024, 2025, 2026)] == [
        date(2000, 4, 23), date(2024, 3, 31), date(2025, 4, 20), date(2026, 4, 5),
    ]


@pytest.fixture
def fr():
    return load_countries().window("FR", "sms", "marketing")


def test_france_no_marketing_sms_on_sundays_holidays_or_at_night(fr):
    paris = ZoneInfo("Europe/Paris")
    sunday = utc(2026, 6, 7, 10)  # 12:00 in Paris, a Sunday
    assert blocked_at(sunday.astimezone(paris), QUIET, fr).reason == "sending_window"
    assert next_allowed(sunday, paris, QUIET, fr) == utc(2026, 6, 8, 7)  # Monday 09:00
    bastille = utc(2026, 7, 14, 10)
    assert "public holiday" in blocked_at(bastille.astimezone(paris), QUIET, fr).detail
    assert next_allowed(bastille, paris, QUIET, fr) == utc(2026, 7, 15, 7)
    easter_monday = utc(2026, 4, 6, 10)
    assert next_allowed(easter_monday, paris, QUIET, fr) == utc(2026, 4, 7, 7)
    # 20:30 on a Saturday: past the 20:00 window, and Sunday is closed: Monday 09:00
    assert next_allowed(utc(2026, 6, 6, 18, 30), paris, QUIET, fr) == utc(2026, 6, 8, 7)


def test_windows_apply_only_to_their_channels_and_categories():
    countries = load_countries()
    assert countries.window("FR", "email", "marketing") is None
    assert countries.window("FR", "sms", "transactional") is None
    assert countries.window("US", "sms", "marketing").hours == Hours.parse("08:00-21:00")
    assert countries.window("GB", "sms", "marketing") is None


def test_the_country_table_can_be_overridden_and_is_checked(tmp_path):
    path = tmp_path / "countries.yaml"
    path.write_text("FR: null\nDE:\n  window: {days: [mon, tue, wed, thu, fri, sat]}\n")
    countries = load_countries(path)
    assert countries.get("FR") is None and countries.window("DE", "email", "care").days
    path.write_text("DE:\n  window: {hours: '25:00-08:00'}\n")
    with pytest.raises(ConfigError, match=r"DE\.window\.hours") as exc:
        load_countries(path)
    assert "\n" not in str(exc.value)
    path.write_text("DE:\n  window: {public_holidays: true}\n")
    with pytest.raises(ConfigError, match="lists none"):
        load_countries(path)
    path.write_text("Germany: {}\n")
    with pytest.raises(ConfigError, match="not an ISO 3166"):
        load_countries(path)


@pytest.mark.parametrize("text", ["9-5", "21:00-21:00", "24:00-08:00", "nine to five"])
def test_malformed_hours_are_refused(text):
    with pytest.raises(ValueError):
        Hours.parse(text)


@pytest.mark.parametrize(
    "variable, value",
    [("CAREFLOW_QUIET_HOURS", "22-8"), ("CAREFLOW_FREQUENCY_CAP", "2 a week"),
     ("CAREFLOW_CONSENT_REGIME", "maybe"), ("CAREFLOW_FREQUENCY_CAP_CARE", "later")],
)
def test_bad_policy_settings_are_one_line_naming_the_variable(monkeypatch, variable, value):
    from careflow.settings import load_settings

    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable) as exc:
        load_settings()
    assert "\n" not in str(exc.value)

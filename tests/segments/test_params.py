"""Segment parameters: every bad value is one line naming segment, parameter and what
is allowed; good values come back normalised."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from careflow import segments
from careflow.errors import ConfigError

AS_OF = date(2026, 11, 22)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("dormant", {"days": -5}, "days must be a whole number from 1 to 3650 (got -5)"),
        ("dormant", {"days": 0}, "days must be a whole number from 1 to 3650 (got 0)"),
        ("dormant", {"days": 1_000_000}, "days must be a whole number from 1 to 3650"),
        ("dormant", {"days": 10**40}, "days must be a whole number from 1 to 3650"),
        ("dormant", {"days": 180.5}, "days must be a whole number"),
        ("dormant", {"days": "180"}, "days must be a whole number from 1 to 3650 (got '180')"),
        ("dormant", {"days": True}, "days must be a whole number"),
        ("dormant", {"days": float("inf")}, "days must be a whole number"),
        ("dormant", {"days": None}, "days must be a whole number"),
        (
            "dormant",
            {"days": 180, "max_days": 90},
            "max_days must be greater than days, or null (got days=180, max_days=90)",
        ),
        ("dormant", {"dayz": 180}, "unknown parameter 'dayz' (did you mean 'days'?); "
                                   "parameters: days, max_days"),
        ("reorder_due", {"min_purchase_days": 2}, "min_purchase_days must be a whole number "
                                                  "from 3 to 1000 (got 2)"),
        ("reorder_due", {"use_replenishment": "yes"}, "use_replenishment must be true or false"),
        ("birthday", {"feb29_on": "feb30"}, "feb29_on must be one of feb28, mar1 (got 'feb30')"),
        ("birthday", {"default_zone": "Mars/Base"}, "default_zone must be an IANA time zone"),
        ("birthday", {"default_zone": ""}, "default_zone must be an IANA time zone"),
        ("vip", {"tiers": "VIP"}, "tiers must be a list of one or more of VIP, Large, Medium, "
                                  "Small, e.g. [VIP, Large] (got 'VIP')"),
        ("vip", {"tiers": []}, "tiers must be a list of one or more of VIP"),
        ("vip", {"tiers": ["VIP", "Gold"]}, "tiers must be a list of one or more of VIP"),
        ("vip", {"vip_pct": 0}, "vip_pct must be a percentage above 0 and at most 100, "
                                "in steps of 0.01 (got 0)"),
        ("vip", {"medium_pct": 101}, "medium_pct must be a percentage above 0 and at most 100"),
        ("vip", {"vip_pct": 0.001}, "vip_pct must be a percentage above 0 and at most 100, in "
                                    "steps of 0.01 (got 0.001)"),
        ("vip", {"vip_pct": float("nan")}, "vip_pct must be a percentage"),
        ("vip", {"vip_pct": 10, "large_pct": 5}, "the shares are cumulative: need vip_pct <= "
                                                 "large_pct <= medium_pct (got 10.0, 5.0, 20.0)"),
        ("vip", {"window_days": -1}, "window_days must be a whole number from 1 to 3650"),
        ("pyramid", {"currency": "pounds"}, "currency must be a 3-letter currency code"),
        ("pyramid", {"cutoffs": {}}, "cutoffs must be what segments.prepare returns"),
        ("pyramid", {"cutoffs": {"buyers": 3}}, "cutoffs must be what segments.prepare returns"),
        ("pyramid", {"tiers": ["VIP"]}, "unknown parameter 'tiers'; parameters: window_days, "
                                        "vip_pct, large_pct, medium_pct, currency"),
    ],
)
def test_bad_parameter_is_one_line_naming_segment_parameter_and_what_is_allowed(
    name, params, message
):
    attempts = [
        lambda: segments.validate_params(name, params),
        lambda: segments.build(name, AS_OF, params),
    ]
    for attempt in attempts:
        with pytest.raises(ConfigError) as err:
            attempt()
        text = str(err.value)
        assert text.startswith(f"segment {name!r}: ")
        assert message in text
        assert "\n" not in text and len(text) < 300


def test_several_problems_are_all_named_on_one_line():
    with pytest.raises(ConfigError) as err:
        segments.validate_params("vip", {"tiers": "VIP", "window_days": 0, "colour": "red"})
    text = str(err.value)
    assert "tiers must be" in text and "window_days must be" in text and "'colour'" in text
    assert "\n" not in text


def test_parameters_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"segment 'dormant': parameters must be a mapping"):
        segments.validate_params("dormant", ["days", 5])


def test_unknown_segment():
    with pytest.raises(ConfigError, match="unknown segment 'loyal'; known segments: birthday"):
        segments.validate_params("loyal", {})


def test_good_parameters_come_back_normalised_with_defaults():
    assert segments.validate_params("dormant", {"days": 90}) == {"days": 90, "max_days": None}
    assert segments.validate_params("vip", {"tiers": ("Large", "VIP", "Large"), "currency": "gbp"}) == {
        "window_days": 365,
        "vip_pct": 1.0,
        "large_pct": 5.0,
        "medium_pct": 20.0,
        "currency": "GBP",
        "tiers": ["Large", "VIP"],
    }
    # the campaigns shipped in templates/ are valid as written
    assert segments.validate_params("vip", {"tiers": ["VIP", "Large"], "window_days": 365})
    assert segments.validate_params("reorder_due", {"min_purchase_days": 3})


@pytest.mark.parametrize("day", [date(1, 1, 1), date(1899, 12, 31), date(2201, 1, 1),
                                 date(9999, 12, 31)])
@pytest.mark.parametrize("name", sorted(segments.names()))
def test_as_of_outside_the_supported_dates_is_a_config_error(name, day):
    with pytest.raises(ConfigError, match=r"as-of date .* is outside the dates careflow works "
                                          r"with: 1900-01-01 to 2200-12-31"):
        segments.build(name, day)


@pytest.mark.parametrize("name", sorted(segments.names()))
def test_the_widest_windows_at_the_ends_of_the_range_build(name):
    """The largest day counts at the first and last supported dates do not overflow."""
    from careflow.segments.clv import customer_history, encode_members

    no_members = encode_members(pd.DataFrame(columns=["customer_id"]))
    widest = {"dormant": {"days": 3649, "max_days": 3650}, "vip": {"window_days": 3650},
              "pyramid": {"window_days": 3650},
              "clv": {"window_days": 3650, "horizon_days": 3650, "members": no_members}
              }.get(name, {})
    for day in (date(1900, 1, 1), date(2200, 12, 31)):
        if name == "lunar_birthday":  # lunardate covers 1900-2099: a clear error beyond
            with pytest.raises(ConfigError, match="the lunar calendar covers 1900 to 2099"):
                segments.build(name, day, widest)
            continue
        segments.build(name, day, widest).compile()
        if name == "clv":  # its dates are counted where prepare reads the orders
            customer_history(day, 3650, None).compile()

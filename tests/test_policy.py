"""The policy stage: consent, channel preference and address checks per customer."""

import pytest

from careflow.policy import PolicyContext, evaluate, opt_in_channels, phone_region


def decide(c, channels, consent, *, consent_required, default_region, now=None, config=None):
    """The policy table's decision, from the context the route builds (careflow/flows/route.py
    ``apply_policy``)."""
    return evaluate(
        PolicyContext(
            customer=c,
            channels=list(channels),
            now=now,
            consent=consent,
            consent_required=consent_required,
            opt_in_channels=(
                opt_in_channels(config, c.get("country"), channels) if config else frozenset()
            ),
            default_region=default_region,
            config=config,
        )
    )


def customer(**kw):
    return {"id": 1, "mobile": None, "email": None, "fax": None, "country": None, **kw}


def test_first_usable_channel_in_preference_order():
    c = customer(mobile="13812345678", email="a@example.com")
    assert decide(c, ["sms", "email"], {}, consent_required=False, default_region="CN").channel == "sms"
    assert decide(c, ["email", "sms"], {}, consent_required=False, default_region="CN").channel == "email"


def test_malformed_number_falls_through_to_email_but_is_reported_when_nothing_works():
    c = customer(mobile="n/a", email="a@example.com")
    d = decide(c, ["sms", "email"], {}, consent_required=False, default_region="CN")
    assert (d.channel, d.address) == ("email", "a@example.com")
    d = decide(customer(mobile="n/a"), ["sms", "email"], {}, consent_required=False, default_region="CN")
    assert d.skip_reason == "invalid_contact" and "n/a" in d.detail


def test_explicit_opt_out_always_wins():
    c = customer(mobile="13812345678")
    d = decide(c, ["sms"], {"sms": False}, consent_required=False, default_region="CN")
    assert d.skip_reason == "opted_out"


def test_consent_required_needs_a_recorded_opt_in():
    c = customer(mobile="13812345678", email="a@example.com")
    d = decide(c, ["sms", "email"], {}, consent_required=True, default_region="CN")
    assert d.skip_reason == "no_consent"
    d = decide(c, ["sms", "email"], {"email": True}, consent_required=True, default_region="CN")
    assert d.channel == "email"


@pytest.mark.parametrize(
    "country, region",
    [("GB", "GB"), ("United Kingdom", "GB"), ("france", "FR"), ("EIRE", "IE"), (None, "CN"),
     ("Atlantis", "CN")],
)
def test_phone_region_from_country_codes_and_names(country, region):
    assert phone_region(country, "CN") == region


def test_national_number_read_in_the_customers_country():
    d = decide(customer(mobile="020 7946 0018", country="United Kingdom"), ["sms"], {},
               consent_required=False, default_region="CN")
    assert d.address == "+442079460018"


# --- the contact policy table (docs/policy.md) -----------------------------------------
from datetime import UTC, datetime  # noqa: E402

from careflow.policy.config import PolicyConfig  # noqa: E402
from careflow.policy.countries import load_countries  # noqa: E402
from careflow.policy.timing import Hours  # noqa: E402


def config(**kw):
    base = dict(category="marketing", quiet_hours=Hours.parse("21:00-09:00"),
                countries=load_countries(), sending_windows=True, prefer_customer_channel=True)
    return PolicyConfig(**{**base, **kw})


def run(c, channels=("sms", "email"), consent=None, now=datetime(2026, 6, 1, 12, tzinfo=UTC), **kw):
    return decide(c, list(channels), consent or {}, consent_required=False, default_region="CN",
                  now=now, config=config(**kw))


def test_preferred_channel_first_then_the_campaigns_order_as_fallbacks():
    c = customer(mobile="13812345678", email="a@example.com", fax="+861012345678",
                 preferred_channel="email", time_zone="Asia/Shanghai")
    d = run(c, ["sms", "fax", "email"])
    assert d.channel == "email" and [o.channel for o in d.options] == ["email", "sms", "fax"]
    assert run(c, ["sms", "fax", "email"], prefer_customer_channel=False).channel == "sms"
    # never a channel without consent, preferred or not
    d = run(c, ["sms", "fax", "email"], consent={"email": False})
    assert [o.channel for o in d.options] == ["sms", "fax"]


def test_opt_in_regime_needs_a_recorded_yes_per_channel():
    c = customer(mobile="13812345678", email="a@example.com", time_zone="UTC")
    assert run(c, consent_regime="opt_in").skip_reason == "no_consent"
    assert run(c, consent={"email": True}, consent_regime="opt_in").channel == "email"
    # transactional messages never need an opt-in, but an explicit no still counts
    assert run(c, consent_regime="opt_in", category="transactional").channel == "sms"
    d = run(c, consent={"sms": False, "email": False}, category="transactional")
    assert d.skip_reason == "opted_out"


def test_by_country_follows_the_table_and_asks_for_an_opt_in_elsewhere():
    us = customer(mobile="+12125550123", email="a@example.com", country="US", time_zone="UTC")
    d = run(us, consent_regime="by_country")  # US: texts need an opt-in, email may go
    assert d.channel == "email"
    hk = customer(mobile="+85291234567", country="HK", time_zone="UTC")
    assert run(hk, consent_regime="by_country").channel == "sms"  # HK: opt-out regime
    nowhere = customer(mobile="+85291234567", country="Atlantis", time_zone="UTC")
    assert run(nowhere, consent_regime="by_country").skip_reason == "no_consent"


def test_quiet_hours_defer_in_the_customers_zone_and_say_until_when():
    c = customer(mobile="+442079460018", country="GB", time_zone="Europe/London")
    d = run(c, now=datetime(2026, 6, 1, 22, tzinfo=UTC))  # 23:00 in London
    assert d.action == "defer" and d.skip_reason == "quiet_hours"
    assert d.until == datetime(2026, 6, 2, 8, tzinfo=UTC)
    assert "quiet hours 21:00-09:00" in d.detail and "2026-06-02 09:00 Europe/London" in d.detail
    assert d.channel == "sms" and d.address == "+442079460018"  # the address it will use


def test_customers_without_a_zone_use_the_business_zone():
    c = customer(mobile="+442079460018", time_zone=None)
    d = run(c, now=datetime(2026, 6, 1, 14, tzinfo=UTC), business_zone="Asia/Shanghai")
    assert d.action == "defer" and d.until == datetime(2026, 6, 2, 1, tzinfo=UTC)
    assert run(c, now=datetime(2026, 6, 1, 14, tzinfo=UTC)).action == "send"  # UTC: 14:00


def test_country_window_defers_marketing_sms_not_email_or_transactional():
    c = customer(mobile="+33612345678", email="a@example.fr", country="FR",
                 time_zone="Europe/Paris")
    sunday = datetime(2026, 6, 7, 10, tzinfo=UTC)
    d = run(c, now=sunday)
    assert (d.action, d.skip_reason) == ("defer", "sending_window") and "Sundays" in d.detail
    assert run(c, ["email"], now=sunday).action == "send"
    assert run(c, now=sunday, category="transactional").action == "send"
    assert run(c, now=sunday, sending_windows=False).action == "send"

"""The policy stage: consent, channel preference and address checks per customer."""

import pytest

from careflow.policy import decide, phone_region


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

"""Policy settings: defaults in settings (CAREFLOW_*), per campaign in campaign.yaml.

``CampaignPolicy`` is the ``policy:`` block of a campaign.yaml (every field
optional); :func:`resolve` merges it over the settings into the
:class:`PolicyConfig` one run uses. Both are validated when a run starts,
so a typo is one line naming the file or variable, not a failure mid-run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from careflow.policy.countries import Countries, load_countries
from careflow.policy.timing import Hours

Category = Literal["care", "marketing", "transactional"]
Regime = Literal["opt_out", "opt_in", "by_country"]
WhenCapped = Literal["defer", "skip", "bypass"]

_CAP = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*d(ays?)?\s*$")


def parse_quiet_hours(value: str | None) -> Hours | None:
    """``"21:00-09:00"``, or ``off``/empty for none; ValueError otherwise."""
    if value is None or str(value).strip().lower() in ("", "off", "none", "false"):
        return None
    return Hours.parse(str(value))


def parse_cap(value: str | None) -> tuple[int, int] | None:
    """``"2/7d"`` -> (2, 7): at most 2 messages per rolling 7 days; ``off`` for none."""
    if value is None or str(value).strip().lower() in ("", "off", "none", "false"):
        return None
    m = _CAP.match(str(value))
    if not m or int(m.group(2)) < 1 or int(m.group(2)) > 366:
        raise ValueError(f"{value!r} is not a cap such as 2/7d (messages / days, 1-366 days)")
    return int(m.group(1)), int(m.group(2))


def parse_share(value):
    """``0.1``, ``"10%"`` or ``"0.1"`` -> 0.1 (range checks are the field's); others unchanged."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a share such as 0.1 or 10%") from None
    return value


class FrequencyCapSpec(BaseModel):
    """``frequency_cap: {max: 2, days: 7, per: customer}`` in a campaign.yaml."""

    model_config = {"extra": "forbid"}

    max: int = Field(ge=0, le=1000)
    days: int = Field(ge=1, le=366)
    per: Literal["customer", "channel"] = "customer"


class SendTimeSpec(BaseModel):
    """``send_time: {optimise: true, fixed_share: 0.2}`` in a campaign.yaml's policy: move
    each message to the customer's best hour (careflow/policy/send_time.py)."""

    model_config = {"extra": "forbid"}

    optimise: bool = False
    #: share of the customers sent at the campaign's own time, to prove the gain:
    #: 0.2 or "20%" (at least 5%, so the comparison can tell something)
    fixed_share: float = Field(default=0.2, ge=0.05, le=0.5)
    #: how many of the shop's "typical" events a customer's own history is mixed with
    #: (Dirichlet prior weight, docs/policy.md says why 10)
    prior_weight: float = Field(default=10.0, gt=0, le=1000)
    #: a message is moved at most this many hours after the run
    window_hours: int = Field(default=24, ge=1, le=24)
    #: how far back orders, replies and clicks count
    history_days: int = Field(default=730, ge=30, le=3660)

    @field_validator("fixed_share", mode="before")
    @classmethod
    def _share(cls, value):
        return parse_share(value)


class CampaignPolicy(BaseModel):
    """The ``policy:`` block of a campaign.yaml; anything left out comes from settings."""

    model_config = {"extra": "forbid"}

    consent: Regime | None = None
    quiet_hours: str | None = None  # "21:00-09:00" or "off"
    sending_windows: bool | None = None
    frequency_cap: FrequencyCapSpec | Literal["off"] | None = None
    when_capped: WhenCapped | None = None
    one_per_address: bool | None = None
    prefer_customer_channel: bool | None = None
    #: share held out per occasion: 0.1 or "10%"; 0 disables (careflow/policy/holdout.py)
    holdout: float | None = Field(default=None, ge=0, le=0.5)
    #: send-time optimisation (off unless ``optimise: true``)
    send_time: SendTimeSpec | None = None

    @field_validator("holdout", mode="before")
    @classmethod
    def _share(cls, value):
        return parse_share(value)

    @field_validator("quiet_hours", mode="before")
    @classmethod
    def _hours(cls, value):
        if value is False:
            return "off"
        if value is not None:
            parse_quiet_hours(str(value))
        return value


@dataclass(frozen=True)
class CapRule:
    """At most ``limit`` messages of the ``counted`` categories per rolling ``days``."""

    limit: int
    days: int
    per_channel: bool = False
    counted: tuple[str, ...] = ("marketing",)

    def __str__(self) -> str:
        what = "/".join(self.counted)
        scope = " per channel" if self.per_channel else ""
        return f"at most {self.limit} {what} message(s) per {self.days} days{scope}"


@dataclass(frozen=True)
class PolicyConfig:
    """Everything the policy stage needs to know about one campaign's run."""

    category: str = "marketing"
    consent_regime: str = "opt_out"
    quiet_hours: Hours | None = None
    business_zone: str = "UTC"
    countries: Countries = field(default_factory=Countries)
    sending_windows: bool = False
    cap: CapRule | None = None
    when_capped: str = "bypass"
    one_per_address: bool = False
    prefer_customer_channel: bool = False
    holdout: float = 0.0  # share of the customers it would contact held out per occasion
    #: send-time optimisation, when the campaign opts in (None: off)
    send_time: SendTimeSpec | None = None


def when_capped_by_category(settings) -> dict[str, str]:
    return {
        "marketing": settings.frequency_cap_marketing,
        "care": settings.frequency_cap_care,
        "transactional": settings.frequency_cap_transactional,
    }


def resolve(settings, spec) -> PolicyConfig:
    """The policy one run of ``spec`` uses: its campaign.yaml over the settings.

    Messages of every category whose ``when capped`` is not ``bypass`` count
    towards the cap, whichever campaign sent them.
    """
    p: CampaignPolicy = spec.policy
    by_category = when_capped_by_category(settings)
    counted = tuple(c for c, action in by_category.items() if action != "bypass")
    if p.frequency_cap == "off":
        limits = None
    elif p.frequency_cap is not None:
        limits = (p.frequency_cap.max, p.frequency_cap.days)
    else:
        limits = parse_cap(settings.frequency_cap)
    per = (
        p.frequency_cap.per
        if isinstance(p.frequency_cap, FrequencyCapSpec)
        else settings.frequency_cap_per
    )
    when_capped = p.when_capped or by_category[spec.category]
    cap = None
    if limits is not None and when_capped != "bypass":
        if spec.category not in counted:  # a campaign capped on its own counts its category
            counted += (spec.category,)
        cap = CapRule(limits[0], limits[1], per == "channel", counted)
    quiet = p.quiet_hours if p.quiet_hours is not None else settings.quiet_hours
    regime = p.consent or settings.consent_regime
    if regime == "opt_out" and settings.consent_required:  # the older setting's spelling
        regime = "opt_in"
    return PolicyConfig(
        category=spec.category,
        consent_regime=regime,
        quiet_hours=parse_quiet_hours(quiet),
        business_zone=settings.time_zone,
        countries=load_countries(settings.country_rules_file),
        sending_windows=(
            p.sending_windows if p.sending_windows is not None else settings.sending_windows
        ),
        cap=cap,
        when_capped=when_capped,
        one_per_address=(
            p.one_per_address if p.one_per_address is not None else settings.one_message_per_address
        ),
        prefer_customer_channel=(
            p.prefer_customer_channel
            if p.prefer_customer_channel is not None
            else settings.prefer_customer_channel
        ),
        holdout=p.holdout if p.holdout is not None else settings.holdout,
        send_time=p.send_time if p.send_time is not None and p.send_time.optimise else None,
    )

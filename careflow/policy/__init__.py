"""The contact policy stage: may we contact this customer, now, on which channel, where?

Runs between selection and rendering, as an ordered list of small rules
(a firewall's table). Each rule sees the customer, the campaign, the run's
instant and what is known about the customer (consents, and later the
ledger history), and the channel options still open. It either narrows the
options or returns a final :class:`Decision`; the first final decision
wins, and a customer who passes every rule is sent on the first option
left. Adding a rule is one class and one line in :data:`DEFAULT_RULES`.

Decisions a rule can return:
- ``send`` on a channel and normalised address;
- ``skip(reason)``: not this time; a later run decides again;
- ``defer(until)``: not now, at ``until`` (quiet hours, caps);
- ``hold(reason)``: a person must look first (the ledger marks it failed,
  not retryable, until ``careflow retry``).

Skip reasons (recorded in the ledger and counted in reports):
- ``opted_out``, ``bounced``, ``spam_report``, ``unsubscribed``, ``dropped``: the
  address is suppressed (careflow/responses.py records why)
- ``opted_out``: the customer could only be reached on channels they opted out of
- ``no_consent``: CAREFLOW_CONSENT_REQUIRED is on and no opt-in is recorded
- ``no_contact``: no address on file for any usable channel
- ``invalid_contact``: addresses on file, but none is usable (detail says why)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Literal, Protocol

from babel import Locale

from careflow import registry
from careflow.addresses import normalize_email, normalize_phone
from careflow.errors import InvalidContact

Action = Literal["send", "skip", "defer", "hold"]


@dataclass(frozen=True)
class Decision:
    """What the policy stage decided for one customer."""

    customer_id: int
    channel: str | None = None
    address: str | None = None
    skip_reason: str | None = None
    detail: str | None = None
    action: Action = "send"
    until: datetime | None = None

    @classmethod
    def skip(cls, customer_id: int, reason: str, detail: str | None = None) -> Decision:
        return cls(customer_id, skip_reason=reason, detail=detail, action="skip")

    @classmethod
    def defer(cls, customer_id: int, until: datetime, reason: str, detail: str | None = None):
        return cls(customer_id, skip_reason=reason, detail=detail, action="defer", until=until)

    @classmethod
    def hold(cls, customer_id: int, reason: str, detail: str | None = None) -> Decision:
        return cls(customer_id, skip_reason=reason, detail=detail, action="hold")


@dataclass(frozen=True)
class Option:
    """A channel still open for this customer, with its address once checked."""

    channel: str
    address: str | None = None


@dataclass(frozen=True)
class PolicyContext:
    """What every rule may look at for one customer."""

    customer: dict
    channels: Sequence[str]  # the campaign's preference order (or the run's override)
    now: datetime | None
    consent: dict[str, bool] = field(default_factory=dict)
    consent_required: bool = False
    default_region: str = "CN"
    marketing: bool = True
    history: Sequence[dict] = ()
    #: (channel, address) -> reason, for addresses that must receive nothing
    suppressed: Mapping[tuple[str, str], str] = field(default_factory=dict)

    @property
    def customer_id(self) -> int:
        return self.customer["id"]


class Rule(Protocol):
    """One line of the policy table."""

    name: str

    def apply(self, ctx: PolicyContext, options: list[Option]) -> list[Option] | Decision: ...


@lru_cache(maxsize=1)
def _country_codes() -> dict[str, str]:
    names = {name.lower(): code for code, name in Locale("en").territories.items()}
    names.update({"uk": "GB", "usa": "US", "eire": "IE", "rsa": "ZA"})
    return names


def phone_region(country: str | None, default_region: str) -> str:
    """Region to read a national-format number in: the customer's country, else the default."""
    if country:
        c = country.strip()
        if len(c) == 2 and c.isalpha():
            return c.upper()
        return _country_codes().get(c.lower(), default_region)
    return default_region


def normalize_address(channel: str, raw: str, *, country: str | None, default_region: str) -> str:
    """``raw`` as ``channel`` needs it, by the address kind its registry entry declares."""
    kind = registry.get(channel).address_kind
    if kind == "email":
        return normalize_email(raw)
    if kind == "phone":
        return normalize_phone(raw, phone_region(country, default_region))
    return raw.strip()


class ConsentRule:
    """Only channels the customer has not refused (or, opt-in regimes, has agreed to)."""

    name = "consent"

    def apply(self, ctx: PolicyContext, options: list[Option]) -> list[Option] | Decision:
        # an explicit opt-out always wins; no record means the regime's default
        allowed = [o for o in options if ctx.consent.get(o.channel, not ctx.consent_required)]
        if allowed:
            return allowed
        refused_all = ctx.consent_required and not any(ctx.consent.values())
        return Decision.skip(
            ctx.customer_id,
            "no_consent" if refused_all else "opted_out",
            f"channels: {', '.join(ctx.channels)}",
        )


class ContactPointRule:
    """Only channels with a usable address on file, normalised for the provider."""

    name = "contact_point"

    def apply(self, ctx: PolicyContext, options: list[Option]) -> list[Option] | Decision:
        usable, problems = [], []
        for o in options:
            raw = ctx.customer.get(registry.get(o.channel).contact_field or "")
            if raw is None or not str(raw).strip():
                continue
            try:
                address = normalize_address(
                    o.channel,
                    str(raw),
                    country=ctx.customer.get("country"),
                    default_region=ctx.default_region,
                )
            except InvalidContact as exc:
                problems.append(f"{o.channel}: {exc}")
                continue
            usable.append(Option(o.channel, address))
        if usable:
            return usable
        cid = ctx.customer_id
        if problems:
            return Decision.skip(cid, "invalid_contact", "; ".join(problems))
        open_channels = {o.channel for o in options}
        blocked = [
            ch
            for ch in ctx.channels
            if ch not in open_channels and ctx.customer.get(registry.get(ch).contact_field or "")
        ]
        if blocked:  # reachable only where they said no
            return Decision.skip(cid, "opted_out", f"opted out of {'/'.join(blocked)}")
        return Decision.skip(
            cid, "no_contact", f"no {'/'.join(o.channel for o in options)} on file"
        )


class SuppressionRule:
    """Never an address that opted out, bounced hard or reported spam (careflow/responses.py)."""

    name = "suppression"

    def apply(self, ctx: PolicyContext, options: list[Option]) -> list[Option] | Decision:
        if not ctx.suppressed:
            return options
        open_ = [o for o in options if (o.channel, o.address) not in ctx.suppressed]
        if open_:
            return open_
        first = options[0]
        reason = ctx.suppressed[(first.channel, first.address)]
        return Decision.skip(
            ctx.customer_id,
            reason,
            "; ".join(f"{o.channel} {ctx.suppressed[(o.channel, o.address)]}" for o in options),
        )


#: The policy table, in order. Quiet hours and frequency caps slot in after these.
DEFAULT_RULES: tuple[Rule, ...] = (ConsentRule(), ContactPointRule(), SuppressionRule())


def evaluate(ctx: PolicyContext, rules: Sequence[Rule] = DEFAULT_RULES) -> Decision:
    """Run the policy table for one customer; the first final decision wins."""
    options = [Option(ch) for ch in ctx.channels]
    for rule in rules:
        verdict = rule.apply(ctx, options)
        if isinstance(verdict, Decision):
            return verdict
        options = verdict
    first = options[0]
    return Decision(ctx.customer_id, channel=first.channel, address=first.address)


def decide(
    customer: dict,
    channels: Sequence[str],
    consent: dict[str, bool],
    *,
    consent_required: bool,
    default_region: str,
    now: datetime | None = None,
    rules: Sequence[Rule] = DEFAULT_RULES,
) -> Decision:
    """Pick the first channel in ``channels`` the customer may and can receive."""
    ctx = PolicyContext(
        customer=customer,
        channels=list(channels),
        now=now,
        consent=consent,
        consent_required=consent_required,
        default_region=default_region,
    )
    return evaluate(ctx, rules)

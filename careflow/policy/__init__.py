"""The contact policy stage: may we contact this customer, now, on which channel, where?

Runs between selection and rendering, as an ordered list of small rules
(a firewall's table). Each rule sees the customer, the campaign's policy
(:class:`careflow.policy.config.PolicyConfig`), the run's instant and what
is known about the customer (consents, suppressed addresses), and the
channel options still open. It either narrows or reorders the options or
returns a final :class:`Decision`; the first final decision wins, and a
customer who passes every rule is sent on the first option left, the
others kept as fallbacks. Adding a rule is one class and one line in
:data:`DEFAULT_RULES`. docs/policy.md explains each rule with an example.

The table, in order:
1. channel preference: the customer's preferred channel first, then the
   campaign's order;
2. consent, per channel and the campaign's category, under the regime in
   force (opt-out, opt-in, or by country);
3. contact points: an address on file, normalised for the channel;
4. suppression: never an address that opted out, bounced or complained;
4b. cadence: what the customer chose in the preference centre, for marketing:
   paused until a date (skipped), or fewer messages (deferred until a slot
   frees), careflow/policy/cadence.py;
5. holdout: a fixed share of the customers the campaign would contact is
   held out of this occasion, to measure what contact changes
   (careflow/policy/holdout.py; the rule needs the occasion, so the route
   works occasions out before the policy);
6. best hour (campaigns with ``send_time: {optimise: true}``): the message
   is moved later, to the customer's best hour, where quiet hours and the
   sending window allow it then (careflow/policy/send_time.py);
7. send time: quiet hours and the country's sending window, in the
   customer's own zone; outside them the message is deferred.

Two decisions need every other message, so the ledger makes them when it
reserves the message, atomically (careflow/ledger/state.py ``claim``): one
message per address per occasion (shared phones and emails) and frequency
caps across campaigns.

Decisions:
- ``send`` on a channel and normalised address (fallbacks in ``options``);
- ``skip(reason)``: not this time; a later run decides again;
- ``defer(until)``: not now, at ``until``; the ledger keeps it ``deferred``
  and a later run or the follow-up flow sends it once due;
- ``held_out``: in the campaign's holdout group for this occasion: recorded
  ``held_out``, never contacted for it (final, like ``sent``).

Reasons (recorded in the ledger, counted per reason in run reports):
- skipped ``opted_out``: the customer said no on every channel they could be reached on
  (also ``bounced``, ``spam_report``, ``unsubscribed``, ``dropped``: the address is suppressed)
- skipped ``no_consent``: the regime needs an opt-in for this category and none is recorded
- skipped ``no_contact`` / ``invalid_contact``: no usable address
- skipped ``shared_address``: another customer at the same address got this occasion's message
- skipped or deferred ``frequency_cap``: the customer had enough messages lately
- deferred ``quiet_hours`` / ``sending_window``: not at this local time; sent later
- deferred ``best_hour``: moved to the customer's best hour (send-time optimisation)
- skipped ``no_send_time``: the rules leave no allowed time in the next year
- skipped ``paused``: the customer paused marketing until a date (preference centre)
- deferred ``fewer``: the customer asked for fewer marketing messages (preference centre)
- held_out ``holdout``: kept out of this occasion to compare with those contacted
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from careflow import registry
from careflow.addresses import normalize_email, normalize_phone
from careflow.errors import InvalidContact
from careflow.policy.cadence import Cadence
from careflow.policy.cadence import verdict as cadence_verdict
from careflow.policy.config import PolicyConfig
from careflow.policy.countries import country_code
from careflow.policy.holdout import holdout_draw
from careflow.policy.send_time import (
    BEST,
    FIXED,
    FIXED_DETAIL,
    SWITCHED_OFF_DETAIL,
    SendTimeFacts,
    arm_of,
    best_hour,
    next_local_hour,
    own_events,
)
from careflow.policy.timing import blocked_at, describe_local, next_allowed, zone_of

Action = Literal["send", "skip", "defer", "held_out"]


@dataclass(frozen=True)
class Option:
    """A channel still open for this customer, with its address once checked."""

    channel: str
    address: str | None = None


@dataclass(frozen=True)
class Decision:
    """What the policy stage decided for one customer."""

    customer_id: int
    channel: str | None = None
    address: str | None = None
    skip_reason: str | None = None
    detail: str | None = None
    action: Action = "send"
    until: datetime | None = None  # defer: aware UTC
    #: every usable option in preference order (sends and deferrals): the first is
    #: ``channel``/``address``, the rest are fallbacks if its address is taken
    options: tuple[Option, ...] = ()
    #: send-time optimisation's arm for this message (``best``/``fixed``), kept on its
    #: ledger row; None when the campaign does not optimise or the customer switched it off
    send_time_arm: str | None = None

    @classmethod
    def skip(cls, customer_id: int, reason: str, detail: str | None = None) -> Decision:
        return cls(customer_id, skip_reason=reason, detail=detail, action="skip")

    @classmethod
    def defer(
        cls,
        customer_id: int,
        until: datetime,
        reason: str,
        detail: str | None = None,
        options: Sequence[Option] = (),
    ) -> Decision:
        first = options[0] if options else Option(None)  # type: ignore[arg-type]
        return cls(
            customer_id,
            channel=first.channel,
            address=first.address,
            skip_reason=reason,
            detail=detail,
            action="defer",
            until=until,
            options=tuple(options),
        )

    @classmethod
    def held_out(
        cls,
        customer_id: int,
        detail: str,
        options: Sequence[Option] = (),
        until: datetime | None = None,
    ) -> Decision:
        """In the holdout group: not contacted for this occasion. ``options`` are what
        it would have been sent on and ``until`` when, had the send time deferred it
        (shown by previews and kept for the report, never used to send)."""
        first = options[0] if options else Option(None)  # type: ignore[arg-type]
        return cls(
            customer_id,
            channel=first.channel,
            address=first.address,
            skip_reason="holdout",
            detail=detail,
            action="held_out",
            until=until,
            options=tuple(options),
        )


@dataclass(frozen=True)
class PolicyContext:
    """What every rule may look at for one customer."""

    customer: dict
    channels: Sequence[str]  # the campaign's preference order (or the run's override)
    now: datetime | None
    #: channel -> the customer's latest decision for this campaign's category (or the channel)
    consent: dict[str, bool] = field(default_factory=dict)
    consent_required: bool = False  # every channel needs an opt-in
    #: channels that need an opt-in for this customer (regime, country, category)
    opt_in_channels: frozenset[str] = frozenset()
    default_region: str = "CN"
    marketing: bool = True
    #: (channel, address) -> reason, for addresses that must receive nothing
    suppressed: Mapping[tuple[str, str], str] = field(default_factory=dict)
    config: PolicyConfig | None = None
    #: the message's ledger key beyond the customer (the holdout draws on it); a check
    #: without a campaign leaves them out and holds nobody out
    campaign: str = ""
    occasion: str | None = None
    #: the customer's send-hour history, when the campaign optimises send times
    send_time: SendTimeFacts | None = None
    #: the customer's cadence from the preference centre (None: normal)
    cadence: Cadence | None = None

    @property
    def customer_id(self) -> int:
        return self.customer["id"]

    def needs_opt_in(self, channel: str) -> bool:
        return self.consent_required or channel in self.opt_in_channels


class Rule(Protocol):
    """One line of the policy table."""

    name: str

    def apply(self, ctx: PolicyContext, options: list[Option]) -> list[Option] | Decision: ...


def phone_region(country: str | None, default_region: str) -> str:
    """Region to read a national-format number in: the customer's country, else the default."""
    return country_code(country) or default_region


def normalize_address(channel: str, raw: str, *, country: str | None, default_region: str) -> str:
    """``raw`` as ``channel`` needs it, by the address kind its registry entry declares."""
    kind = registry.get(channel).address_kind
    if kind == "email":
        return normalize_email(raw)
    if kind == "phone":
        return normalize_phone(raw, phone_region(country, default_region))
    return raw.strip()


def opt_in_channels(config: PolicyConfig, country: str | None, channels: Sequence[str]):
    """The channels on which this customer needs a recorded opt-in for the campaign's category.

    Transactional messages never need one (an explicit no still counts);
    ``by_country`` follows the country table, and an unlisted country or
    channel needs an opt-in.
    """
    if config.category == "transactional" or config.consent_regime == "opt_out":
        return frozenset()
    if config.consent_regime == "opt_in":
        return frozenset(channels)
    rules = config.countries.get(country_code(country))
    regimes = rules.consent if rules else {}
    return frozenset(ch for ch in channels if regimes.get(ch, "opt_in") == "opt_in")


class ChannelPreferenceRule:
    """The customer's preferred channel first (when the campaign uses it), then the campaign's
    order: the fallbacks. A journey's send step with ``last_answered`` has its segment
    give the channel the customer last replied or clicked on (``last_answered``): that
    one goes first, before any preference."""

    name = "channel_preference"

    def apply(self, ctx: PolicyContext, options: list[Option]) -> list[Option] | Decision:
        answered = (ctx.customer.get("last_answered") or "").strip().lower()
        if answered:
            first = [o for o in options if o.channel == answered]
            return first + [o for o in options if o.channel != answered]
        if ctx.config is None or not ctx.config.prefer_customer_channel:
            return options
        preferred = (ctx.customer.get("preferred_channel") or "").strip().lower()
        first = [o for o in options if o.channel == preferred]
        return first + [o for o in options if o.channel != preferred]


class ConsentRule:
    """Only channels the customer has not refused (or, where an opt-in is needed, agreed to)."""

    name = "consent"

    def apply(self, ctx: PolicyContext, options: list[Option]) -> list[Option] | Decision:
        # an explicit decision always wins; no record means the regime's default
        allowed = [
            o for o in options if ctx.consent.get(o.channel, not ctx.needs_opt_in(o.channel))
        ]
        if allowed:
            return allowed
        refused = [o.channel for o in options if ctx.consent.get(o.channel) is False]
        category = ctx.config.category if ctx.config else "marketing"
        if refused and len(refused) == len(options):
            return Decision.skip(ctx.customer_id, "opted_out", f"opted out of {'/'.join(refused)}")
        unasked = [o.channel for o in options if o.channel not in refused]
        return Decision.skip(
            ctx.customer_id,
            "no_consent",
            f"no opt-in recorded for {category} on {'/'.join(unasked)}, and one is needed"
            + (f"; opted out of {'/'.join(refused)}" if refused else ""),
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
        refused = [ch for ch in blocked if ctx.consent.get(ch) is False]
        if refused:  # reachable only where they said no
            return Decision.skip(cid, "opted_out", f"opted out of {'/'.join(refused)}")
        if blocked:  # reachable only where an opt-in is needed and none is recorded
            return Decision.skip(
                cid, "no_consent", f"reachable only on {'/'.join(blocked)}, with no opt-in"
            )
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


class CadenceRule:
    """What the customer chose in the preference centre about how often we write: paused
    until a date (skipped ``paused``) or fewer messages (deferred ``fewer`` until a slot
    frees), for marketing (careflow/policy/cadence.py). After the rules that decide whether
    the customer can be reached, before the holdout: a customer who paused is not one
    the campaign would contact, so is not drawn."""

    name = "cadence"

    def apply(self, ctx: PolicyContext, options: list[Option]) -> list[Option] | Decision:
        category = ctx.config.category if ctx.config else "marketing"
        found = cadence_verdict(ctx.cadence, category, ctx.now)
        if found is None:
            return options
        action, reason, detail, until = found
        if action == "skip":
            return Decision.skip(ctx.customer_id, reason, detail)
        return Decision.defer(ctx.customer_id, until, reason, detail, options)


class HoldoutRule:
    """A fixed share of the customers the campaign would contact is held out of this occasion:
    recorded ``held_out`` and left alone, so the report can compare them with those contacted
    (careflow/policy/holdout.py draws them; careflow/uplift.py compares)."""

    name = "holdout"

    def apply(self, ctx: PolicyContext, options: list[Option]) -> list[Option] | Decision:
        share = ctx.config.holdout if ctx.config else 0.0
        if not share or ctx.occasion is None:
            return options
        draw = holdout_draw(ctx.campaign, ctx.customer_id, ctx.occasion)
        if draw >= share:
            return options
        detail = (
            f"in the {share:.0%} holdout of {ctx.campaign} for occasion {ctx.occasion} "
            f"(draw {draw:.4f} < {share:g}): not contacted, compared with those who are"
        )
        # when the message would have gone out had it not been held out: a contacted twin
        # in quiet hours waits too, so the report compares them once both times have come
        # (at their best hour, when the campaign optimises send times)
        timed = BestHourRule().apply(ctx, options)
        if not isinstance(timed, Decision):
            timed = SendTimeRule().apply(ctx, options)
        until = timed.until if isinstance(timed, Decision) else None
        if until is not None:
            detail += f"; it would have been sent at {until:%Y-%m-%d %H:%M} UTC"
        return Decision.held_out(ctx.customer_id, detail, options, until)


class SendTimeRule:
    """Quiet hours and the country's sending window, in the customer's own zone (the business
    zone when they have none): outside them the message is deferred to the next allowed time."""

    name = "send_time"

    def apply(self, ctx: PolicyContext, options: list[Option]) -> list[Option] | Decision:
        config = ctx.config
        if config is None or ctx.now is None:
            return options
        channel = options[0].channel
        window = None
        if config.sending_windows:
            window = config.countries.window(
                country_code(ctx.customer.get("country")), channel, config.category
            )
        if config.quiet_hours is None and window is None:
            return options
        zone, note = zone_of(ctx.customer.get("time_zone"), config.business_zone)
        local = ctx.now.astimezone(zone)
        why = blocked_at(local, config.quiet_hours, window)
        if why is None:
            return options
        until = next_allowed(ctx.now, zone, config.quiet_hours, window)
        detail = f"{why.detail}: it is {local:%a %H:%M} there" + (f" ({note})" if note else "")
        if until is None:
            return Decision.skip(
                ctx.customer_id, "no_send_time", f"{detail}; no allowed time in the next year"
            )
        return Decision.defer(
            ctx.customer_id,
            until,
            why.reason,
            f"{detail}; sending at {describe_local(until, zone)}",
            options,
        )


class BestHourRule:
    """Send-time optimisation (module docs): moves ``not_before`` later, to the customer's
    best hour, where quiet hours and sending windows allow it; the comparison group, the
    switched-off and what is already timed go by :class:`SendTimeRule` as before."""

    name = "best_hour"

    def apply(self, ctx: PolicyContext, options: list[Option]) -> list[Option] | Decision:
        spec = ctx.config.send_time if ctx.config else None
        facts = ctx.send_time
        if spec is None or facts is None or ctx.now is None or facts.timed or not ctx.campaign:
            return options
        at_fixed = SendTimeRule().apply(ctx, options)

        def fixed(why: str, arm: str | None) -> Decision:
            if isinstance(at_fixed, Decision):
                if at_fixed.action != "defer":
                    return at_fixed
                return replace(at_fixed, detail=f"{at_fixed.detail}; {why}", send_time_arm=arm)
            return Decision(
                ctx.customer_id,
                channel=options[0].channel,
                address=options[0].address,
                detail=why,
                options=tuple(options),
                send_time_arm=arm,
            )

        if ctx.customer.get("personal_send_time") is False:
            return fixed(SWITCHED_OFF_DETAIL, None)
        if arm_of(ctx.campaign, ctx.customer_id, spec.fixed_share) == FIXED:
            return fixed(FIXED_DETAIL, FIXED)
        found = best_hour(facts.counts, facts.shop, spec.prior_weight)
        if found.hour is None:
            return fixed("no best hour: the shop has no orders, replies or clicks yet", BEST)
        zone, _ = zone_of(ctx.customer.get("time_zone"), ctx.config.business_zone)
        whose = "their" if found.events else "the shop's"
        why = f"{whose} best hour {found.hour:02d}:00 {zone} (from {own_events(found.events)})"
        now = ctx.now.astimezone(UTC)
        latest = now + timedelta(hours=spec.window_hours)
        target = next_local_hour(now, zone, found.hour)
        at_target = SendTimeRule().apply(replace(ctx, now=target), options)
        until, moved = target, None
        if isinstance(at_target, Decision):
            until, moved = at_target.until, at_target.detail
        if until is None or until > latest:
            return fixed(f"{why} is not allowed within {spec.window_hours} h of the run", BEST)
        if until <= now:
            return fixed(f"{why}: it is that hour now", BEST)
        detail = f"{why}; sending at {describe_local(until, zone)}"
        if moved:
            detail += f"; moved from {found.hour:02d}:00 by {moved.split(': it is')[0]}"
        return replace(
            Decision.defer(ctx.customer_id, until, "best_hour", detail, options),
            send_time_arm=BEST,
        )


#: The policy table, in order.
DEFAULT_RULES: tuple[Rule, ...] = (
    ChannelPreferenceRule(),
    ConsentRule(),
    ContactPointRule(),
    SuppressionRule(),
    CadenceRule(),
    HoldoutRule(),
    BestHourRule(),
    SendTimeRule(),
)


def evaluate(ctx: PolicyContext, rules: Sequence[Rule] = DEFAULT_RULES) -> Decision:
    """Run the policy table for one customer; the first final decision wins."""
    options = [Option(ch) for ch in ctx.channels]
    for rule in rules:
        verdict = rule.apply(ctx, options)
        if isinstance(verdict, Decision):
            return verdict
        options = verdict
    first = options[0]
    return Decision(
        ctx.customer_id, channel=first.channel, address=first.address, options=tuple(options)
    )


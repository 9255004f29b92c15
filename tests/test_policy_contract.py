"""The contract every rule of the policy table honours (careflow/policy/__init__.py).

Parametrised over ``DEFAULT_RULES`` itself, so a rule added to the table is checked
without touching this file. Given a context built the way the route builds it
(careflow/flows/route.py ``apply_policy``) and the channel options still open, a rule

- returns a non-empty list drawn only from the options it was given (reordered or
  narrowed; an address only where it had none, and then the customer's own address on
  file for that channel), or a final ``Decision`` for this customer of a known action,
  with a reason for anything but a send, its options again drawn from those given, and
  for a defer an ``until`` later than the context's now;
- gives the same answer for the same input;
- leaves its inputs (the customer row, consents, suppressions, the options) untouched;
- takes an odd customer row (missing fields, None values, unknown zone or country)
  without raising.
"""

import copy
import typing
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from careflow import registry
from careflow.errors import InvalidContact
from careflow.policy import (
    DEFAULT_RULES,
    Action,
    Decision,
    Option,
    PolicyContext,
    normalize_address,
    opt_in_channels,
)
from careflow.policy.cadence import Cadence
from careflow.policy.config import PolicyConfig, SendTimeSpec
from careflow.policy.countries import load_countries
from careflow.policy.send_time import SendTimeFacts
from careflow.policy.timing import Hours

CHANNELS = ("sms", "email", "fax")
NOON = datetime(2026, 6, 1, 12, tzinfo=UTC)
LATE = datetime(2026, 6, 1, 22, tzinfo=UTC)  # quiet hours in London and Paris
SUNDAY = datetime(2026, 6, 7, 10, tzinfo=UTC)  # no marketing texts in France
NOON_NAIVE = datetime(2026, 5, 30, 12)  # two days before NOON, as the ledger keeps instants


def config(**kw) -> PolicyConfig:
    base = dict(category="marketing", quiet_hours=Hours.parse("21:00-09:00"),
                countries=load_countries(), sending_windows=True, prefer_customer_channel=True,
                holdout=0.5)
    return PolicyConfig(**{**base, **kw})


def context(row, *, now=NOON, consent=None, suppressed=None, channels=CHANNELS,
            occasion="2026", cadence=None, **policy) -> PolicyContext:
    """A context as ``apply_policy`` builds it for a campaign with a policy block."""
    cfg = config(**policy)
    return PolicyContext(
        customer=row,
        channels=list(channels),
        now=now,
        consent=consent or {},
        consent_required=False,
        opt_in_channels=opt_in_channels(cfg, row.get("country"), list(channels)),
        default_region="CN",
        marketing=cfg.category == "marketing",
        suppressed=suppressed or {},
        config=cfg,
        campaign="contract",
        occasion=occasion,
        cadence=cadence,
    )


LONDON = {"id": 1, "mobile": "+442079460018", "email": "a@Example.COM", "fax": None,
          "country": "GB", "time_zone": "Europe/London", "preferred_channel": "email"}
PARIS = {"id": 2, "mobile": "+33612345678", "email": "b@example.fr", "fax": "+33142685300",
         "country": "FR", "time_zone": "Europe/Paris", "preferred_channel": "sms"}
ODD_ROWS = {
    "only_an_id": {"id": 3},
    "all_none": {"id": 4, "mobile": None, "email": None, "fax": None, "country": None,
                 "time_zone": None, "preferred_channel": None},
    "blank_and_unknown": {"id": 5, "mobile": "  ", "email": "", "fax": "n/a",
                          "country": "Atlantis", "time_zone": "Mars/Olympus",
                          "preferred_channel": "  Pigeon "},
    "malformed_addresses": {"id": 6, "mobile": "n/a", "email": "not an email",
                            "country": "", "time_zone": ""},
}

#: send-time optimisation: a history at 19:00 and a flat shop
OPTIMISE = SendTimeSpec(optimise=True)
EVENINGS = SendTimeFacts(tuple(5 if h == 19 else 0 for h in range(24)), (1,) * 24)


def optimised(row, facts=EVENINGS, **kw) -> PolicyContext:
    return replace(context(row, send_time=OPTIMISE, **kw), send_time=facts)


CONTEXTS = {
    "london_noon": lambda: context(LONDON),
    "london_late": lambda: context(LONDON, now=LATE),
    "london_no_holdout": lambda: context(LONDON, now=LATE, holdout=0.0),
    "london_opted_out_of_email": lambda: context(LONDON, consent={"email": False}),
    "london_opted_out_everywhere": lambda: context(
        LONDON, consent={"sms": False, "email": False, "fax": False}),
    "london_opt_in_regime": lambda: context(LONDON, consent_regime="opt_in"),
    "london_email_suppressed": lambda: context(
        LONDON, suppressed={("email", "a@example.com"): "bounced"}),
    "london_all_suppressed": lambda: context(
        LONDON, holdout=0.0,
        suppressed={("email", "a@example.com"): "bounced", ("sms", "+442079460018"): "opted_out"}),
    "paris_sunday": lambda: context(PARIS, now=SUNDAY, holdout=0.0),
    "paris_sunday_held_out_maybe": lambda: context(PARIS, now=SUNDAY, holdout=0.5),
    "paris_transactional": lambda: context(PARIS, category="transactional", now=LATE),
    "paris_no_now": lambda: context(PARIS, now=None),
    "paris_no_occasion": lambda: context(PARIS, occasion=None),
    "paris_by_country": lambda: context(PARIS, consent_regime="by_country"),
    "london_best_hour": lambda: optimised(LONDON, holdout=0.0),
    "london_late_best_hour": lambda: optimised(LONDON, now=LATE, holdout=0.0),
    "paris_sunday_best_hour": lambda: optimised(PARIS, now=SUNDAY, holdout=0.0),
    "paris_best_hour_timed": lambda: optimised(
        PARIS, facts=replace(EVENINGS, timed=True), holdout=0.0),
    "paris_best_hour_switched_off": lambda: optimised(
        {**PARIS, "personal_send_time": False}, holdout=0.0),
    "london_paused": lambda: context(
        LONDON, cadence=Cadence("paused", datetime(2026, 7, 1))),
    "london_pause_over": lambda: context(
        LONDON, now=LATE, cadence=Cadence("paused", datetime(2026, 5, 1))),
    "london_fewer_one_sent": lambda: context(
        LONDON, holdout=0.0, cadence=Cadence("fewer", None, (("winback", "sms", NOON_NAIVE),))),
    "london_fewer_one_sending": lambda: context(
        LONDON, cadence=Cadence("fewer", None, (("winback", "email", None),))),
    "paris_paused_care": lambda: context(
        PARIS, category="care", cadence=Cadence("paused", datetime(2026, 7, 1))),
    **{f"odd_{name}": (lambda row=row: context(row, now=LATE)) for name, row in ODD_ROWS.items()},
    **{f"odd_{name}_best_hour": (lambda row=row: optimised(row, holdout=0.0))
       for name, row in ODD_ROWS.items()},
    **{f"odd_{name}_opt_in": (lambda row=row: context(row, consent_regime="opt_in"))
       for name, row in ODD_ROWS.items()},
}

KNOWN_ACTIONS = set(typing.get_args(Action))


def inputs_for(rule, ctx: PolicyContext) -> list[list[Option]]:
    """The option lists ``rule`` can be handed: the campaign's channels as they start, and
    what the rules before it in the table leave open (when they leave a list)."""
    lists = [[Option(ch) for ch in ctx.channels]]
    options = lists[0]
    for earlier in DEFAULT_RULES[: DEFAULT_RULES.index(rule)]:
        verdict = earlier.apply(ctx, options)
        if isinstance(verdict, Decision):
            return lists
        options = verdict
    if options != lists[0]:
        lists.append(options)
    return lists


def own_address(ctx: PolicyContext, channel: str) -> str | None:
    """The customer's address on file for ``channel``, as the channel needs it."""
    raw = ctx.customer.get(registry.get(channel).contact_field or "")
    try:
        return normalize_address(channel, str(raw), country=ctx.customer.get("country"),
                                 default_region=ctx.default_region) if raw else None
    except InvalidContact:
        return None


def contract_violations(ctx: PolicyContext, given: list[Option], verdict) -> list[str]:
    """What is wrong with ``verdict``, a rule's answer to ``ctx`` and ``given``."""
    problems = []

    def drawn_from_given(options, what):
        by_channel = {o.channel: o for o in given}
        for o in options:
            if o.channel not in by_channel:
                problems.append(f"{what}: channel {o.channel!r} was not among the options given")
            elif o.address != by_channel[o.channel].address and not (
                by_channel[o.channel].address is None and o.address == own_address(ctx, o.channel)
            ):
                problems.append(f"{what}: address {o.address!r} on {o.channel} is not one given "
                                "nor the customer's own")
        if len({o.channel for o in options}) != len(options):
            problems.append(f"{what}: a channel appears twice")

    if isinstance(verdict, list):
        if not verdict:
            problems.append("an empty list: a rule that leaves nothing open must decide")
        drawn_from_given(verdict, "list")
        return problems
    if not isinstance(verdict, Decision):
        return [f"neither a list of options nor a Decision: {verdict!r}"]
    if verdict.customer_id != ctx.customer_id:
        problems.append(f"a decision for customer {verdict.customer_id}, not {ctx.customer_id}")
    if verdict.action not in KNOWN_ACTIONS:
        problems.append(f"unknown action {verdict.action!r}")
    if verdict.action != "send" and not (verdict.skip_reason or "").strip():
        problems.append(f"a {verdict.action} without a reason")
    if verdict.action in ("defer", "held_out", "send") and verdict.channel is not None:
        drawn_from_given([Option(verdict.channel, verdict.address)], "decision")
    drawn_from_given(list(verdict.options), "decision options")
    if verdict.action == "defer" and verdict.until is None:
        problems.append("a defer without an until")
    if verdict.until is not None and ctx.now is not None and verdict.until <= ctx.now:
        problems.append(f"until {verdict.until} is not later than now ({ctx.now})")
    return problems


def cases() -> list:
    return [pytest.param(rule, make, id=f"{rule.name}-{name}")
            for rule in DEFAULT_RULES for name, make in CONTEXTS.items()]


@pytest.mark.parametrize("rule, make", cases())
def test_every_rule_honours_the_contract(rule, make):
    ctx = make()
    for given in inputs_for(rule, ctx):
        before_ctx, before_given = copy.deepcopy(ctx), copy.deepcopy(given)
        verdict = rule.apply(ctx, given)
        assert contract_violations(ctx, before_given, verdict) == []
        # untouched inputs: the row, consents, suppressions and the options handed in
        assert ctx == before_ctx and given == before_given
        # the same input, the same answer (a fresh context too: no state kept between calls)
        assert rule.apply(ctx, list(given)) == verdict
        assert rule.apply(make(), list(given)) == verdict


def test_the_suite_covers_every_rule_of_the_table():
    covered = {p.values[0].name for p in cases()}
    assert covered == {rule.name for rule in DEFAULT_RULES}
    assert len({rule.name for rule in DEFAULT_RULES}) == len(DEFAULT_RULES)  # ids stay unique
    # every rule is checked at least once where it returns options and where it decides
    for rule in DEFAULT_RULES:
        kinds = {
            type(rule.apply(ctx, given)).__name__
            for ctx in (make() for make in CONTEXTS.values())
            for given in inputs_for(rule, ctx)
        }
        assert "list" in kinds, rule.name
        if rule.name != "channel_preference":  # it only ever reorders
            assert "Decision" in kinds, rule.name


class _AddsAChannel:
    name = "adds_a_channel"

    def apply(self, ctx, options):
        return [*options, Option("outbox", "somewhere")]


class _DefersToThePast:
    name = "defers_to_the_past"

    def apply(self, ctx, options):
        return Decision.defer(ctx.customer_id, ctx.now, "quiet_hours", options=options)


class _SkipsWithoutAReason:
    name = "skips_without_a_reason"

    def apply(self, ctx, options):
        return Decision.skip(ctx.customer_id, "")


class _InventsAnAddress:
    name = "invents_an_address"

    def apply(self, ctx, options):
        return [replace(o, address="+8613800000000") for o in options]


@pytest.mark.parametrize(
    "rule, complaint",
    [(_AddsAChannel(), "channel 'outbox' was not among the options given"),
     (_DefersToThePast(), "not later than now"),
     (_SkipsWithoutAReason(), "a skip without a reason"),
     (_InventsAnAddress(), "is not one given nor the customer's own")],
)
def test_the_contract_catches_a_rule_that_breaks_it(rule, complaint):
    ctx = CONTEXTS["london_noon"]()
    given = [Option(ch) for ch in ctx.channels]
    problems = contract_violations(ctx, given, rule.apply(ctx, given))
    assert any(complaint in p for p in problems), problems

"""The whole route for one batch of customers, as small step functions.

    select -> occasion -> policy -> reserve -> render -> send -> record

The occasion (the ledger key) comes before the policy because one policy
rule, the holdout, draws on it: who is held out is a property of
(campaign, customer, occasion), docs/policy.md.

This is the only module that knows every step: :func:`process_batch` is the route,
one named step a line, and careflow/flows/preview.py takes the same steps for one
customer. careflow/flows/campaign.py wraps a batch in a Prefect task that gets the
run as one value (:class:`RunPlan`) and its id range; a batch's process builds its
:class:`Route` from the run with :meth:`Route.for_run`, the one builder. It is free
of Prefect so a test, a Dask worker or a script can run it as is.

A dry run is this same route with a ledger that only reads
(``DryRunLedger``) and a channel that records instead of sending
(``careflow.channels.recorder``): every decision a real run makes (contact history,
policy, rendering, the channel's own checks) is made, and only the send
and the writes are skipped. So a dry run after a real run says 0.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Protocol

from sqlalchemy import Date, DateTime, Engine, String, select, type_coerce
from sqlalchemy.exc import OperationalError

from careflow import db, outcome_journal, registry, segments, send_hours
from careflow.addresses import mask_address
from careflow.campaigns import CampaignSpec, enrich, last_purchase_day, occasion_key
from careflow.channels import Channel, closing_channel, get_channel
from careflow.channels.credentials import unsubscribe_tokens
from careflow.channels.email_content import PREFERENCE_CATEGORIES, preferences_base
from careflow.channels.outbox import LOCAL_UNSUBSCRIBE
from careflow.channels.recorder import RecordingChannel
from careflow.clock import start_of_day
from careflow.contact_limits import CapCheck, Intent
from careflow.db.models import Consent, Customer, Suppression
from careflow.errors import (
    CareflowError,
    ChannelDown,
    RecipientError,
    TemplateError,
    Unsendable,
)
from careflow.experiment_decisions import winner_of
from careflow.ledger import Claim, ContactLedger, DryRunLedger, SendRules, unstorable
from careflow.messages import Message, Outcome, State
from careflow.policy import (
    Decision,
    PolicyContext,
    SendTimeRule,
    evaluate,
    opt_in_channels,
)
from careflow.policy.cadence import CADENCE_CATEGORY
from careflow.policy.config import PolicyConfig
from careflow.policy.config import resolve as resolve_policy
from careflow.policy.send_time import SendTimeFacts
from careflow.preferences import PreferenceTokens, load_cadences, preferences_url
from careflow.rendering import Rendered, Renderer
from careflow.settings import Settings
from careflow.template_env import greeting_name
from careflow.unsubscribe import PREFERENCES_PLACEHOLDER
from careflow.variants import template_source

CUSTOMER_COLUMNS = list(Customer.__table__.c)

#: ``factory(channel name) -> Channel``: what delivers this run's messages
ChannelFactory = Callable[[str], Channel]

#: examples of each policy reason kept in a run's summary
DECISIONS_PER_REASON = 3

#: how far ahead of the requests it starts a channel marks messages sending, in seconds
#: of its rate: at 10/s two messages ahead, below 4/s none (``SendingMarks``)
MARK_AHEAD_SECONDS = 0.25

#: longest pause between two tries of a ledger write that delivered outcomes wait for
OUTAGE_PAUSE_MAX_SECONDS = 30.0

log = logging.getLogger(__name__)


class RunStopped(CareflowError):
    """The run was asked to stop (SIGTERM, Ctrl-C, a cancelled flow run)."""


@dataclass
class BatchResult:
    """Counts for one batch; merged into the run's summary."""

    selected: int = 0
    sent: int = 0
    skipped: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    already: Counter = field(default_factory=Counter)
    would_send: Counter = field(default_factory=Counter)  # dry runs: per channel
    deferred: Counter = field(default_factory=Counter)  # per reason: sent later, once
    held_out: int = 0  # the holdout group: recorded, never contacted for the occasion
    samples: list = field(default_factory=list)
    #: a few policy decisions per reason, with their detail (deferred until when, capped by what)
    decisions: list = field(default_factory=list)
    #: a channel that could deliver nothing more (ChannelDown), in one line: the run stops
    fault: str | None = None

    def merge(self, other: BatchResult, max_samples: int = 5) -> None:
        self.selected += other.selected
        self.sent += other.sent
        self.held_out += other.held_out
        self.fault = self.fault or other.fault
        for name in ("skipped", "failed", "already", "would_send", "deferred"):
            getattr(self, name).update(getattr(other, name))
        self.samples.extend(other.samples[: max(0, max_samples - len(self.samples))])
        for d in other.decisions:
            self.note_decision(d)

    def note_decision(self, d: dict) -> None:
        """Keep up to DECISIONS_PER_REASON examples of each reason."""
        if sum(x["reason"] == d["reason"] for x in self.decisions) < DECISIONS_PER_REASON:
            self.decisions.append(d)

    def as_dict(self) -> dict:
        return {
            "selected": self.selected,
            "sent": self.sent,
            "skipped": dict(self.skipped),
            "failed": dict(self.failed),
            "already": dict(self.already),
            "would_send": dict(self.would_send),
            "deferred": dict(self.deferred),
            "held_out": self.held_out,
            "samples": self.samples,
            "decisions": self.decisions,
            "fault": self.fault,
        }

    @classmethod
    def from_dict(cls, d: dict) -> BatchResult:
        return cls(
            selected=d["selected"],
            sent=d["sent"],
            skipped=Counter(d["skipped"]),
            failed=Counter(d["failed"]),
            already=Counter(d["already"]),
            would_send=Counter(d["would_send"]),
            deferred=Counter(d.get("deferred", {})),
            held_out=d.get("held_out", 0),
            samples=list(d["samples"]),
            decisions=list(d.get("decisions", [])),
            fault=d.get("fault"),
        )


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """One run, as plain data: everything its batches need besides their id range.

    A flow makes it once per run (careflow/flows/campaign.py, deferred.py; ``open_run``
    adds the prepared segment parameters) and it is all a batch task receives
    besides ``lo`` and ``hi``: frozen and picklable, so
    Prefect can walk it and a Dask worker gets its own copy. What cannot travel (the
    engine, the ledger, the renderer, the channels, the stop) the batch's process
    builds from it (:meth:`Route.for_run`). A new run option is one field here, read
    where it is used (``route.run``); tests/flows/test_run_plan.py shows one reaching a
    batch.
    """

    spec: CampaignSpec
    run_id: str
    as_of: date  # the day the segment selects for
    at: datetime  # the instant the run selects as of
    settings: Settings
    #: the one channel the run is limited to (``--channel``): kept on the rows it claims,
    #: so what it defers goes by that channel later (``channels`` is then just it)
    only_channel: str | None = None
    dry_run: bool = False
    #: prepared segment parameters (``careflow.segments.prepare``); None: the campaign's own
    params: dict | None = None
    #: the instant the policy judges send times, caps and due deferrals at; ``at`` unless
    #: given: a real run's batch passes the real clock (careflow/flows/campaign.py
    #: ``run_batch``), the follow-up flow selects as of an earlier run's instant and
    #: decides now
    now: datetime | None = None
    #: the follow-up flow: only customers whose deferred message is due
    deferred_only: bool = False
    #: send-time optimisation's prior: the shop's orders, replies and clicks per local
    #: hour, read once per run (``open_run``; careflow/send_hours.py); None: not read
    shop_send_hours: tuple[int, ...] | None = None

    @property
    def channels(self) -> list[str]:
        """The channels in preference order this run: the campaign's, or ``only_channel``."""
        return [self.only_channel] if self.only_channel else list(self.spec.channels)

    @property
    def policy_now(self) -> datetime:
        return self.now or self.at


class StopFlag(Protocol):
    """A run's stop request as a batch sees it: the flow's ``threading.Event`` in its own
    process, the run's row elsewhere (careflow/flows/campaign.py ``RunStopFlag``)."""

    def is_set(self) -> bool: ...


@dataclass
class Route:
    """What a batch's process builds from its run (:meth:`for_run`): the database, the
    ledger, the renderer, the channels, the policy and the stop."""

    run: RunPlan
    engine: Engine
    ledger: ContactLedger
    renderer: Renderer
    channel_factory: ChannelFactory
    #: the campaign's contact policy, from the run's settings and campaign.yaml
    policy: PolicyConfig | None = None
    stop: StopFlag | None = None
    #: customer id -> their preference centre's URL (:func:`preference_links`)
    preference_link: Callable[[int], str] | None = None

    @classmethod
    def for_run(
        cls, run: RunPlan, stop: StopFlag | None = None, engine: Engine | None = None
    ) -> Route:
        """The one way a route is built: a run's batches, preview, test sends and tests.

        A dry run gets a ledger that only reads and a channel that records
        (module docs); ``engine`` is one the caller already holds (preview's),
        else the run's database.
        """
        settings = run.settings
        engine = engine or db.engine_for(settings.effective_database_url)
        if run.dry_run:
            ledger = DryRunLedger(engine, settings.reservation_lease_seconds)

            def factory(name: str) -> Channel:
                return RecordingChannel()
        else:
            ledger = ContactLedger(engine, settings.reservation_lease_seconds)

            def factory(name: str) -> Channel:
                return get_channel(name, settings)

        return cls(
            run=run,
            engine=engine,
            ledger=ledger,
            renderer=Renderer.from_settings(settings),
            channel_factory=factory,
            policy=resolve_policy(settings, run.spec),
            stop=stop,
            preference_link=preference_links(settings),
        )

    def check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise RunStopped(f"run {self.run.run_id} of {self.run.spec.name} was asked to stop")

    def stop_requested(self) -> bool:
        """Whether the run was asked to stop; False when that cannot be read (a stop
        flag kept on the run's row, during a database outage)."""
        try:
            return self.stop is not None and self.stop.is_set()
        except OperationalError:
            return False


@dataclass
class Candidate:
    """One selected customer on its way through the route."""

    row: dict
    decision: Decision | None = None
    key: tuple[int, str] | None = None
    problem: str | None = None  # unreadable data in the customer's row

    @property
    def customer_id(self) -> int:
        return self.row["id"]


# --- select --------------------------------------------------------------------------
def _raw(col):
    """Dates read as the database holds them, so one unreadable value (SQLite keeps
    any text) is that customer's problem, not an error for the whole batch."""
    if isinstance(col.type, Date | DateTime):
        return type_coerce(col, String).label(col.name)
    return col


def segment_select(spec: CampaignSpec, as_of: date, at: datetime, id_range, params=None):
    """The campaign's segment joined to the customer record, for one id range.

    ``params`` (from ``careflow.segments.prepare``) replaces the campaign's parameters."""
    params = spec.parameters if params is None else params
    seg = segments.build(spec.segment, as_of, params, at=at, id_range=id_range)
    sub = seg.subquery("seg")
    names = {c.name for c in CUSTOMER_COLUMNS}
    context = [c for c in sub.c if c.name != "customer_id" and c.name not in names]
    return (
        select(*[_raw(c) for c in CUSTOMER_COLUMNS], *[_raw(c) for c in context])
        .join(sub, sub.c.customer_id == Customer.id)
        .order_by(Customer.id)
    )


def _typed(row: dict) -> tuple[dict, str | None]:
    """``row`` with date columns parsed; the first unreadable one is named in the problem."""
    out, problem = dict(row), None
    for name, value in row.items():
        if not isinstance(value, str) or name not in _DATE_COLUMNS:
            continue
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            out[name] = None
            problem = problem or f"{name}: {value[:40]!r} is not a valid date"
            continue
        out[name] = parsed.date() if name in _DAY_COLUMNS else parsed
    return out, problem


_DAY_COLUMNS = {c.name for c in CUSTOMER_COLUMNS if isinstance(c.type, Date)} | {"birthday"}
_DATE_COLUMNS = _DAY_COLUMNS | {c.name for c in CUSTOMER_COLUMNS if isinstance(c.type, DateTime)}


#: the segment columns a ledger key is made of (careflow.campaigns.occasion_key)
OCCASION_COLUMNS = ("local_date", "last_purchase_on")


def select_candidates(route: Route, id_range: tuple[int, int]) -> list[Candidate]:
    """Step 1: the segment's customers in ``id_range``, each with its row as data."""
    run = route.run
    query = segment_select(run.spec, run.as_of, run.at, id_range, run.params)
    return _candidates(route.engine, query)


def select_keys(route: Route, id_range: tuple[int, int]) -> list[Candidate]:
    """Step 1, first look: the segment's customers in ``id_range`` with only what their
    ledger key needs, so a batch whose messages are all settled (a re-run) reads no
    customer record."""
    run = route.run
    seg = segments.build(
        run.spec.segment, run.as_of, run.params, at=run.at, id_range=id_range
    ).subquery("seg")
    columns = [_raw(seg.c[name]) for name in OCCASION_COLUMNS if name in seg.c]
    query = select(seg.c.customer_id.label("id"), *columns).order_by(seg.c.customer_id)
    return _candidates(route.engine, query)


def _candidates(engine: Engine, query) -> list[Candidate]:
    with engine.connect() as conn:
        result = conn.execute(query)
        names = list(result.keys())  # once, not a mapping object per row
        rows = [dict(zip(names, r, strict=True)) for r in result.all()]
    out = []
    for r in rows:
        row, problem = _typed(r)
        out.append(Candidate(row, problem=problem))
    return out


def load_consents(
    engine: Engine, id_range, category: str | None = None
) -> dict[int, dict[str, bool]]:
    """customer -> channel -> consent for ``category``: of the channel-wide (``all``) and the
    category's decision, the later one; a tie goes to the category's, the more specific."""
    out: dict[int, dict[str, bool]] = defaultdict(dict)
    latest: dict[tuple[int, str], tuple] = {}
    categories = ["all"] + ([category] if category else [])
    with engine.connect() as conn:
        for r in conn.execute(
            select(
                Consent.customer_id,
                Consent.channel,
                Consent.category,
                Consent.granted,
                Consent.updated_at,
            ).where(Consent.customer_id.between(*id_range), Consent.category.in_(categories))
        ):
            rank = (r.updated_at, r.category != "all")
            key = (r.customer_id, r.channel)
            if key not in latest or rank > latest[key]:
                latest[key] = rank
                out[r.customer_id][r.channel] = bool(r.granted)
    return out


# --- occasion and policy ---------------------------------------------------------------
def apply_policy(route: Route, candidates: Sequence[Candidate], id_range) -> None:
    """Step 3: the policy table decides channel and address (or skip/defer/held out).

    Candidates need their occasion first (:func:`assign_occasions`): the
    holdout rule draws on the ledger key. One whose occasion could not be
    worked out keeps that decision (skipped: invalid_data).

    Suppressed addresses are looked up for every option the table left
    open (the pick and its fallbacks), in one query per batch; only
    customers who hit one are decided again, so they fall back to their
    next channel where they have one.
    """
    config, run = route.policy, route.run
    channels = run.channels
    category = config.category if config else None
    consents = load_consents(route.engine, id_range, category)
    timing = send_time_facts(route, candidates, id_range)
    cadences = (
        load_cadences(route.engine, [c.customer_id for c in candidates], run.policy_now)
        if category == CADENCE_CATEGORY
        else {}
    )
    contexts = {}
    for c in candidates:
        if c.problem:
            c.decision = Decision.skip(c.customer_id, "invalid_data", c.problem)
            continue
        if c.decision is not None:  # decided before the policy: an unreadable occasion
            continue
        contexts[c.customer_id] = ctx = PolicyContext(
            customer=c.row,
            channels=channels,
            now=run.policy_now,
            consent=consents.get(c.customer_id, {}),
            consent_required=run.settings.consent_required and config is None,
            opt_in_channels=(
                opt_in_channels(config, c.row.get("country"), channels)
                if config
                else frozenset()
            ),
            default_region=run.settings.sms_default_region,
            marketing=run.spec.marketing,
            config=config,
            campaign=run.spec.name,
            occasion=c.key[1] if c.key else None,
            send_time=timing.get(c.customer_id),
            cadence=cadences.get(c.customer_id),
        )
        c.decision = evaluate(ctx)
    options = {(o.channel, o.address) for c in candidates for o in c.decision.options}
    suppressed = load_suppressions(route.engine, options)
    if not suppressed:
        return
    for c in candidates:
        if c.customer_id in contexts and any(
            (o.channel, o.address) in suppressed for o in c.decision.options
        ):
            c.decision = evaluate(replace(contexts[c.customer_id], suppressed=suppressed))


def send_time_facts(
    route: Route, candidates: Sequence[Candidate], id_range
) -> dict[int, SendTimeFacts]:
    """customer id -> what the best-hour rule needs (careflow/policy/send_time.py), when the
    campaign optimises send times: the batch's histories in one query, the run's shop
    pattern (read here only when the run was not opened with it: a preview, a test), and
    which messages were timed once already (one ledger read)."""
    config, run = route.policy, route.run
    spec = config.send_time if config else None
    wanted = [c for c in candidates if not c.problem and c.decision is None and c.key]
    if spec is None or not wanted:
        return {}
    now = run.policy_now
    shop = run.shop_send_hours
    if shop is None:
        shop = send_hours.shop_hours(route.engine, config.business_zone, now, spec.history_days)
    zones = {c.customer_id: c.row.get("time_zone") for c in wanted}
    own = send_hours.customer_hours(
        route.engine, id_range, zones, config.business_zone, now, spec.history_days
    )
    timed = route.ledger.timed_keys(run.spec.name, [c.key for c in wanted])
    return {
        c.customer_id: SendTimeFacts(own.get(c.customer_id), shop, c.key in timed)
        for c in wanted
    }


def load_suppressions(engine: Engine, addresses) -> dict[tuple[str, str], str]:
    """Which of these (channel, address) pairs are suppressed, and why."""
    out: dict[tuple[str, str], str] = {}
    by_channel: dict[str, list[str]] = defaultdict(list)
    for channel, address in addresses:
        by_channel[channel].append(address)
    with engine.connect() as conn:
        for channel, found in by_channel.items():
            for start in range(0, len(found), 1000):
                for r in conn.execute(
                    select(Suppression.address, Suppression.reason).where(
                        Suppression.channel == channel,
                        Suppression.address.in_(found[start : start + 1000]),
                    )
                ):
                    out[(channel, r.address)] = r.reason
    return out


def assign_occasions(route: Route, candidates: Sequence[Candidate]) -> None:
    """Step 2: the ledger key of each message: one per customer per occasion."""
    for c in candidates:
        try:
            occasion = occasion_key(route.run.spec, c.row, route.run.as_of)
        except (ValueError, TypeError) as exc:  # a malformed date in the segment's columns
            occasion = route.run.as_of.isoformat()
            if c.decision is None or c.decision.action in ("send", "defer"):
                c.decision = Decision.skip(c.customer_id, "invalid_data", str(exc)[:200])
        c.key = (c.customer_id, occasion)


def select_occasions(
    route: Route, id_range: tuple[int, int], only: set[int] | None = None
) -> list[Candidate]:
    """Steps 1 and 2: the segment's customers in ``id_range`` (of them, those in ``only``
    when it is given), each with its row and its ledger key."""
    if only is not None and not only:
        return []
    candidates = select_candidates(route, id_range)
    if only is not None:
        candidates = [c for c in candidates if c.customer_id in only]
    assign_occasions(route, candidates)
    return candidates


def drop_settled(route: Route, candidates: list[Candidate], result: BatchResult) -> list[Candidate]:
    """Candidates whose message for this occasion is settled (sent, failed for good,
    deferred and not yet due), counted as already done and left out: one read instead
    of the policy's checks and a claim for each, which is what makes a re-run cheap.

    Only a shortcut: the claim makes the same decision for any key left in, and rows
    in progress (reserved, sending) stay in for the claim to handle.
    """
    run = route.run
    found = route.ledger.peek(run.spec.name, [c.key for c in candidates], run.policy_now)
    settled = {k: s for k, s in found.items() if s not in (State.RESERVED, State.SENDING)}
    if not settled:
        return candidates
    for state in settled.values():
        result.already[state] += 1
    return [c for c in candidates if c.key not in settled]


def drop_limited(
    route: Route, candidates: list[Candidate], result: BatchResult
) -> list[Candidate]:
    """Candidates whose deferred message is limited to another channel than this run's
    (deferred by a ``--channel`` run), counted as already deferred and left to the
    follow-up, which sends each on its channel (careflow/flows/deferred.py)."""
    if not candidates:
        return candidates
    limits = route.ledger.channel_limits(route.run.spec.name, [c.key for c in candidates])
    other = {k for k, only in limits.items() if only != route.run.only_channel}
    result.already[State.DEFERRED] += len(other)
    return [c for c in candidates if c.key not in other]


# --- reserve ---------------------------------------------------------------------------
def send_rules(route: Route) -> SendRules:
    """What the claim checks for this campaign: shared addresses and its frequency cap."""
    config = route.policy
    if config is None:
        return SendRules()
    cap = None
    if config.cap is not None:
        c = config.cap
        cap = CapCheck(c.limit, c.days, c.per_channel, c.counted)
    return SendRules(config.category, cap, config.one_per_address)


def _intent(route: Route, c: Candidate) -> Intent:
    since = None
    if route.run.spec.occasion == "last_purchase":  # a purchase day is the shop's (its zone)
        last = last_purchase_day(c.row)
        day = last.date() if isinstance(last, datetime) else last
        since = start_of_day(day, route.run.settings.time_zone)
    return Intent(tuple((o.channel, o.address) for o in c.decision.options), since)


def reserve(route: Route, candidates: Sequence[Candidate]) -> Claim:
    """Step 4: claim each candidate's ledger row; for sends, the ledger also holds the
    address (one message per address per occasion) and a frequency-cap slot, atomically.

    Candidates the claim owns but cannot send get their decision here: skipped
    as ``shared_address``, or ``frequency_cap`` (skipped or deferred as the
    campaign says); a send whose first address was taken moves to its fallback.
    """
    intents = {
        c.key: _intent(route, c)
        for c in candidates
        if c.decision.action == "send" and c.decision.options
    }
    claim = route.ledger.claim(
        route.run.spec.name,
        route.run.run_id,
        [c.key for c in candidates],
        now=route.run.policy_now,
        intents=intents,
        rules=send_rules(route),
        selected_at=route.run.at,
        only_channel=route.run.only_channel,
    )
    for c in candidates:
        if c.key not in claim.owned or c.key not in intents:
            continue
        d = c.decision
        if c.key in claim.chosen:
            channel, address = claim.chosen[c.key]
            if (channel, address) != (d.channel, d.address):
                c.decision = replace(d, channel=channel, address=address)
        elif c.key in claim.shared:
            e = claim.shared[c.key]
            c.decision = Decision.skip(
                c.customer_id,
                "shared_address",
                f"customer {e.customer_id} shares this {e.channel or 'address'} and has this "
                f"occasion's message ({e.describe()})",
            )
        elif c.key in claim.capped:
            c.decision = _capped_decision(route, c, claim.capped[c.key])
    return claim


def _capped_decision(route: Route, c: Candidate, capped) -> Decision:
    config = route.policy
    counted = "; ".join(e.describe() for e in capped.earlier[:5])
    detail = f"{config.cap}: {len(capped.earlier)} already ({counted})"
    if config.when_capped != "defer" or capped.free_at is None:
        return Decision.skip(c.customer_id, "frequency_cap", detail)
    # when a slot frees, and the customer's send time allows it then
    free_at = capped.free_at.replace(tzinfo=UTC)
    ctx = PolicyContext(customer=c.row, channels=route.run.channels, now=free_at, config=config)
    timed = SendTimeRule().apply(ctx, list(c.decision.options))
    until = timed.until if isinstance(timed, Decision) and timed.until else free_at
    return Decision.defer(
        c.customer_id,
        until,
        "frequency_cap",
        f"{detail}; sending at {until:%Y-%m-%d %H:%M} UTC",
        c.decision.options,
    )


# --- render ----------------------------------------------------------------------------
def template_context(spec: CampaignSpec, row: dict, as_of: date, settings: Settings) -> dict:
    customer = {c.name: row.get(c.name) for c in CUSTOMER_COLUMNS}
    return {
        **enrich({k: v for k, v in row.items() if k not in customer}),
        "customer": customer,
        "name": greeting_name(customer),
        "brand": settings.brand_name,
        # the email layout's footer; unset, the layout keeps the demo shop's
        **({"sender_address": settings.postal_address} if settings.postal_address else {}),
        **({"sender_contact": settings.contact_line} if settings.contact_line else {}),
        "campaign": spec.name,
        "as_of": as_of,
    }


def render_request(
    spec: CampaignSpec,
    settings: Settings,
    row: dict,
    channel: str,
    as_of: date,
    variant: str | None = None,
):
    """What the renderer needs for one customer's message (``Renderer.render_many``): the
    campaign's templates, or those of its experiment's ``variant``."""
    source = template_source(spec.name, variant, spec.experiment)
    return source, channel, row.get("locale"), template_context(spec, row, as_of, settings)


def variants_of(route: Route, owned: Sequence[tuple[Candidate, int]]) -> dict[int, str]:
    """contact id -> the experiment variant each owned message renders: the one its ledger
    row already has, else the experiment's winner once decided
    (careflow/experiment_decisions.py), else the one drawn for the customer
    (careflow/variants.py). Read per batch: a decision taken while a run goes on counts
    from its next batch."""
    experiment = route.run.spec.experiment
    if experiment is None or not owned:
        return {}
    name = route.run.spec.name
    winner = winner_of(route.engine, name)
    if winner not in experiment.names:  # none yet, or campaign.yaml has dropped it since
        winner = None
    if winner is not None:
        drawn = {cid: winner for _, cid in owned}
    elif experiment.strata:
        default = route.run.settings.default_locale
        parts = {"locale": lambda c: c.row.get("locale") or default,
                 "channel": lambda c: c.decision.channel}  # fmt: skip
        members = [
            (c.customer_id, tuple(parts[s](c) for s in experiment.strata)) for c, _ in owned
        ]
        assigned = experiment.assign_within(name, members)
        drawn = {cid: assigned[c.customer_id] for c, cid in owned}
    else:
        drawn = {cid: experiment.variant_of(name, c.customer_id) for c, cid in owned}
    return route.ledger.keep_variants(drawn)


def finish_message(
    spec: CampaignSpec,
    settings: Settings,
    row: dict,
    channel: str,
    rendered: Rendered | TemplateError,
) -> Rendered:
    """The message exactly as it will go out, whatever the delivery mode.

    The channel's registry entry finishes it (an SMS gets its opt-out line
    and length check) here rather than only in the live channel, so the
    outbox, a dry run and the ledger hold the text a customer would receive.
    Raises Unsendable with the reason the ledger records.
    """
    if isinstance(rendered, TemplateError):
        raise Unsendable("template_error", str(rendered))
    locale = row.get("locale") or settings.default_locale
    entry = registry.get(channel)
    limit = entry.max_subject_chars
    if limit and rendered.subject and len(rendered.subject) > limit:
        raise Unsendable(
            "subject_too_long", f"subject has {len(rendered.subject)} characters; limit {limit}"
        )
    if entry.finish is not None:
        rendered = entry.finish(
            rendered, locale=locale, marketing=spec.marketing, settings=settings
        )
    # what the ledger could not record as sent must never go out (careflow.ledger.unstorable)
    problem = unstorable(subject=rendered.subject, body=rendered.body)
    if problem:
        raise Unsendable("invalid_content", problem)
    return rendered


def render_message(
    spec: CampaignSpec,
    renderer: Renderer,
    settings: Settings,
    row: dict,
    channel: str,
    as_of: date,
    variant: str | None = None,
) -> Rendered:
    """One customer's message (of the experiment's ``variant``: the control when None),
    rendered (in a render worker) and finished; raises Unsendable with the reason the
    ledger records (test sends)."""
    request = render_request(spec, settings, row, channel, as_of, variant)
    (rendered,) = renderer.render_many([request])
    return finish_message(spec, settings, row, channel, rendered)


def render_messages(
    route: Route, owned: Sequence[tuple[Candidate, int]]
) -> list[Message | RecipientError]:
    """Step 5: render each owned candidate into the Message its channel will send, or the
    RecipientError that says why it cannot go out. The batch's messages go to one render
    worker together (careflow/render_worker.py), which a stop or a runaway template
    cannot hold up: the run's stop is checked while waiting on it."""
    run = route.run
    variants = variants_of(route, owned)
    requests = [
        render_request(
            run.spec, run.settings, c.row, c.decision.channel, run.as_of, variants.get(cid)
        )
        for c, cid in owned
    ]
    out: list[Message | RecipientError] = []
    rendered = route.renderer.render_many(requests, route.check_stop)
    for (c, contact_id), r in zip(owned, rendered, strict=True):
        try:
            out.append(build_message(route, c, contact_id, r))
        except RecipientError as exc:
            out.append(exc)
    return out


def preference_links(settings: Settings) -> Callable[[int], str]:
    """customer id -> the URL of their preference centre (careflow/preferences.py), signed
    with the unsubscribe key, which is looked up on first use (only a template that asks
    for the link needs it). Unsendable when no link can be made: no key, or an
    unsubscribe URL that is not careflow serve's own ``/unsubscribe``."""
    made: dict = {}

    def link(customer_id: int) -> str:
        if not made:
            outbox = settings.delivery == "outbox"
            unsubscribe = settings.unsubscribe_base_url or (LOCAL_UNSUBSCRIBE if outbox else "")
            base = preferences_base(unsubscribe) if unsubscribe else None
            if base is None:
                raise Unsendable(
                    "no_preferences_link",
                    "the template asks for %preferences_url%: set CAREFLOW_UNSUBSCRIBE_BASE_URL "
                    "to careflow serve's /unsubscribe address",
                )
            try:
                tokens = unsubscribe_tokens(settings, local=outbox)
            except CareflowError as exc:
                raise Unsendable("no_preferences_link", str(exc)) from None
            made.update(base=base, tokens=PreferenceTokens(tokens))
        return preferences_url(made["base"], made["tokens"].make(customer_id))

    return link


def with_preference_link(
    route: Route, customer_id: int, rendered: Rendered | TemplateError
) -> Rendered | TemplateError:
    """``rendered`` with the template's ``%preferences_url%`` filled: the customer's own
    link for marketing and care, nothing for transactional messages. Before the channel
    finishes the message, so an SMS's length check counts the link."""
    if isinstance(rendered, TemplateError):
        return rendered
    parts = (rendered.body, rendered.subject or "", rendered.html or "")
    if not any(PREFERENCES_PLACEHOLDER in part for part in parts):
        return rendered
    url = ""
    if route.run.spec.category in PREFERENCE_CATEGORIES and route.preference_link is not None:
        url = route.preference_link(customer_id)

    def fill(text: str | None, escaped: bool = False) -> str | None:
        if text is None:
            return None
        return text.replace(PREFERENCES_PLACEHOLDER, html.escape(url) if escaped else url)

    return replace(
        rendered,
        body=fill(rendered.body),
        subject=fill(rendered.subject),
        html=fill(rendered.html, escaped=True),
    )


def build_message(
    route: Route, c: Candidate, contact_id: int, rendered: Rendered | TemplateError
) -> Message:
    """One owned candidate's rendered message, finished into the Message its channel sends."""
    d = c.decision
    rendered = with_preference_link(route, c.customer_id, rendered)
    rendered = finish_message(route.run.spec, route.run.settings, c.row, d.channel, rendered)
    problem = unstorable(recipient=d.address)  # the ledger keeps it as sent (finish_message)
    if problem:
        raise Unsendable("invalid_content", problem)
    return Message(
        contact_id=contact_id,
        campaign=route.run.spec.name,
        customer_id=c.customer_id,
        occasion=c.key[1],
        channel=d.channel,
        to=d.address,
        body=rendered.body,
        subject=rendered.subject,
        html=rendered.html,
        locale=c.row.get("locale") or route.run.settings.default_locale,
        marketing=route.run.spec.marketing,
        category=route.run.spec.category,
    )


def policy_outcome(contact_id: int, d: Decision) -> Outcome:
    """The ledger outcome of a decision not to send now: a deferral keeps its due time
    (the ledger's ``deferred`` state); a skip is decided again by the next run."""
    if d.action == "held_out":
        return Outcome.held_out(contact_id, d.detail, d.until)
    if d.action == "defer" and d.until is not None:
        return Outcome.deferred(contact_id, d.skip_reason, d.until, d.detail)
    return Outcome.skipped(contact_id, d.skip_reason, d.detail)


def decision_note(c: Candidate) -> dict:
    """One policy decision as the run summary keeps it (a few per reason)."""
    d = c.decision
    return {
        "customer_id": c.customer_id,
        # who, for the marketer reading the summary; never an address or a number
        "name": c.row.get("full_name"),
        "ref": c.row.get("external_ref"),
        "action": d.action,
        "reason": d.skip_reason,
        "channel": d.channel,
        "until": d.until.astimezone(UTC).isoformat(timespec="minutes") if d.until else None,
        "detail": d.detail or "",
    }


# --- the batch -------------------------------------------------------------------------
def process_batch(route: Route, id_range: tuple[int, int]) -> BatchResult:
    """Run the whole route for the campaign's customers in ``id_range``."""
    route.check_stop()  # a batch starting after the stop must not reserve anyone
    result = BatchResult()
    candidates = open_candidates(route, id_range, result)  # steps 1-2, less what is settled
    if not candidates:  # all settled (a re-run): no consents to read, nothing to claim
        return result
    claim = decide(route, candidates, id_range)  # steps 3-4
    count_claimed(route, claim, result)
    outcomes, channel_of = deliver(route, candidates, claim, result)  # steps 5-7
    count_outcomes(route, outcomes, result, channel_of)
    return result


def open_candidates(
    route: Route, id_range: tuple[int, int], result: BatchResult
) -> list[Candidate]:
    """Steps 1 and 2 for a batch: its customers with their ledger keys, less those whose
    message is settled (:func:`drop_settled`) or, deferred by a ``--channel`` run, left
    to the follow-up (:func:`drop_limited`); ``result`` counts what was selected and
    what is already done. The follow-up flow's batch takes only due deferred messages."""
    if route.run.deferred_only:
        candidates = _due_only(route, id_range)
        result.selected = len(candidates)
        return drop_settled(route, candidates, result)
    # keys first: settled messages drop out before any customer record is read
    keyed = select_keys(route, id_range)
    assign_occasions(route, keyed)
    open_keys = drop_limited(route, drop_settled(route, keyed, result), result)
    wanted = {c.customer_id for c in open_keys}
    candidates = select_occasions(route, id_range, wanted)
    result.selected = len(keyed) - len(open_keys) + len(candidates)
    return candidates


def decide(route: Route, candidates: list[Candidate], id_range: tuple[int, int]) -> Claim:
    """Steps 3 and 4: the policy decides each candidate's channel and address (or not to
    send now), then the claim reserves the ledger rows this run now owns and applies the
    rules that count other messages (a dry run's ledger only reads). The ledger, not the
    batch, decides what still needs sending. Preview takes these steps for one customer."""
    apply_policy(route, candidates, id_range)
    return reserve(route, candidates)


def count_claimed(route: Route, claim: Claim, result: BatchResult) -> None:
    """What the claim found handled (or being handled) by others, counted as already
    done. Rows an earlier attempt left in 'sending' may have reached the customer: they
    are settled as failed: interrupted rather than left hanging or sent again."""
    for state in claim.already.values():
        result.already["in_progress" if state in (State.RESERVED, State.SENDING) else state] += 1
    sending = [k for k, state in claim.already.items() if state == State.SENDING]
    run = route.run
    interrupted = route.ledger.resolve_interrupted(run.spec.name, sending, run.run_id)
    if interrupted:
        result.already["in_progress"] -= interrupted
        result.failed["interrupted"] += interrupted


def deliver(
    route: Route, candidates: list[Candidate], claim: Claim, result: BatchResult
) -> tuple[list[Outcome], dict[int, str]]:
    """Steps 5-7 for the rows the claim gave this run: (their outcomes, the channel each
    message went to).

    A stop, or a channel that can deliver nothing more (``ChannelDown``), ends it
    early: what went out before counts, and what the batch still holds is counted
    as ``skipped: run_stopped``, which the flow makes of it (it gives those rows
    back to the next run).
    """
    outcomes: list[Outcome] = []
    channel_of: dict[int, str] = {}
    lost_before = result.already["in_progress"]
    try:
        owned = record_decisions(route, candidates, claim, result, outcomes)
        by_channel = render_owned(route, owned, result, outcomes)
        channel_of.update((m.contact_id, m.channel) for ms in by_channel.values() for m in ms)
        send_rendered(route, by_channel, result, outcomes)
    except (RunStopped, ChannelDown) as exc:
        if isinstance(exc, ChannelDown):
            outcomes += exc.outcomes
            result.fault = str(exc)
        lost = result.already["in_progress"] - lost_before
        held = len(claim.owned) - len({o.contact_id for o in outcomes}) - lost
        result.skipped["run_stopped"] += held
    return outcomes, channel_of


def record_decisions(
    route: Route,
    candidates: list[Candidate],
    claim: Claim,
    result: BatchResult,
    outcomes: list[Outcome],
) -> list[tuple[Candidate, int]]:
    """The owned rows the policy decided not to send now (skip, defer, held out),
    recorded first so nothing is left hanging; returns the owned sends with their
    contact ids. ``outcomes`` grows by what is recorded."""
    owned: list[tuple[Candidate, int]] = []
    holding: dict[int, dict] = {}  # deferred rows keep the address they will use
    decided: list[Outcome] = []
    timed: dict[int, tuple[str, str | None]] = {}  # send-time arms, and why a send goes now
    for c in candidates:
        contact_id = claim.owned.get(c.key)
        if contact_id is None:
            continue  # another run handled (or is handling) this customer's occasion
        d = c.decision
        if d.send_time_arm is not None or (d.action == "send" and d.detail):
            timed[contact_id] = (d.send_time_arm, d.detail if d.action == "send" else None)
        if c.decision.action == "send":
            owned.append((c, contact_id))
            continue
        decided.append(policy_outcome(contact_id, c.decision))
        if c.decision.action == "defer" and c.decision.address:
            holding[contact_id] = {"channel": c.decision.channel, "recipient": c.decision.address}
        result.note_decision(decision_note(c))
    route.ledger.keep_send_times(timed)
    route.ledger.record(decided, route.run.run_id, holding)
    outcomes += decided
    return owned


def render_owned(
    route: Route,
    owned: list[tuple[Candidate, int]],
    result: BatchResult,
    outcomes: list[Outcome],
) -> dict[str, list[Message]]:
    """Step 5 for the owned sends: their messages by channel. What cannot go out is
    recorded as that recipient's ``failed`` with the reason (``outcomes`` grows by it);
    a dry run keeps a few samples of both."""
    by_channel: dict[str, list[Message]] = defaultdict(list)
    unsendable: list[Outcome] = []
    dry_run = route.run.dry_run
    for (c, contact_id), msg in zip(owned, render_messages(route, owned), strict=True):
        if isinstance(msg, RecipientError):
            unsendable.append(Outcome.failed(contact_id, msg.reason, detail=msg.detail))
            if dry_run:
                _sample(result, c, None, msg.detail)
            continue
        by_channel[msg.channel].append(msg)
        if dry_run:
            _sample(result, c, msg.subject or msg.body, None)
    route.ledger.record(unsendable, route.run.run_id)
    outcomes += unsendable
    return by_channel


def send_rendered(
    route: Route,
    by_channel: dict[str, list[Message]],
    result: BatchResult,
    outcomes: list[Outcome],
) -> None:
    """Steps 6 and 7: each channel's messages sent and recorded in chunks
    (:func:`send_chunk`), the stop checked between chunks; ``outcomes`` grows as they
    settle, and rows lost to another run meanwhile are counted as in progress."""
    for name, messages in by_channel.items():
        with closing_channel(route.channel_factory(name)) as channel:
            size = getattr(channel, "send_chunk_size", None) or route.run.settings.send_chunk_size
            for start in range(0, len(messages), size):
                route.check_stop()
                chunk = messages[start : start + size]
                sent, lost = send_chunk(route, channel, name, chunk)
                outcomes.extend(sent)
                result.already["in_progress"] += lost


def count_outcomes(
    route: Route, outcomes: list[Outcome], result: BatchResult, channel_of: dict[int, str]
) -> None:
    """The batch's outcomes counted into ``result`` (a dry run's sends as would-send)."""
    for o in outcomes:
        if o.state == State.SENT and route.run.dry_run:  # handed to the recorder: would go out
            result.would_send[channel_of[o.contact_id]] += 1
        elif o.state == State.SENT:
            result.sent += 1
        elif o.state == State.SKIPPED:
            result.skipped[o.reason] += 1
        elif o.state == State.DEFERRED:
            result.deferred[o.reason] += 1
        elif o.state == State.HELD_OUT:
            result.held_out += 1
        else:
            result.failed[o.reason] += 1
    result.already += Counter()  # drop zero counts
    result.skipped += Counter()


def _due_only(route: Route, id_range: tuple[int, int]) -> list[Candidate]:
    """The follow-up flow's candidates: those whose deferred message is due now. A due
    message whose customer the segment no longer selects is skipped (the next run of the
    campaign decides about them again)."""
    run, ledger = route.run, route.ledger
    due = ledger.due_keys(run.spec.name, run.at, id_range, run.policy_now, run.only_channel)
    candidates = select_occasions(route, id_range, {cid for cid, _ in due})
    kept = [c for c in candidates if c.key in due]
    gone = due - {c.key for c in kept}
    if gone:  # a dead run's message in flight stays in doubt; the rest is skipped
        ledger.resolve_interrupted(run.spec.name, sorted(gone), run.run_id)
        ledger.settle_deferred(
            run.spec.name,
            sorted(gone),
            "no_longer_selected",
            f"segment {run.spec.segment} no longer selects this customer as of "
            f"{run.at:%Y-%m-%d %H:%M %Z}",
        )
    for c in kept:
        c.decision = None
    return kept


class SendingMarks:
    """Moves a chunk's messages to ``sending`` as its channel starts their requests.

    The channel (careflow/channels/delivery.py, ``Starts``) calls :meth:`mark` for a
    request after its rate-limit slot, before the request: one ledger write
    marks those messages and the next few of the chunk in order, as many as
    the channel's rate starts in ``MARK_AHEAD_SECONDS`` (none below 4 a
    second), so the writes stay few at high rates and a crash at a slow rate
    leaves in doubt only requests that started. :meth:`owned` answers the
    requests that were marked ahead without a write.

    A ledger that cannot be written stops the marking: the messages asked for
    are not this run's to send (the channel leaves them unsent), ``error``
    keeps the database's error for the route to raise once the chunk's
    outcomes are recorded.
    """

    def __init__(
        self,
        route: Route,
        channel_name: str,
        ids: list[int],
        rate: float,
        texts: dict[int, tuple] | None = None,
    ):
        self.ledger, self.channel_name, self.run_id = route.ledger, channel_name, route.run.run_id
        self.texts = texts  # kept with each mark (ContactLedger.mark_sending)
        self.ahead = int(rate * MARK_AHEAD_SECONDS)
        self._order, self._next = ids, 0
        self.asked: set[int] = set()  # marked, or tried
        self.mine: set[int] = set()  # moved to sending for this run
        self.error: OperationalError | None = None
        #: asked for, but withheld by the ledger: the customer said no meanwhile
        self.held: dict[int, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def owned(self, contact_ids: Sequence[int]) -> set[int] | None:
        if all(i in self.asked for i in contact_ids):
            return {i for i in contact_ids if i in self.mine}
        return None

    def mark(self, contact_ids: Sequence[int]) -> set[int]:
        with self._lock:
            asked = self.asked
            want = [i for i in contact_ids if i not in asked]
            if want and self.error is None:
                wanted = set(want)
                while len(want) - len(wanted) < self.ahead and self._next < len(self._order):
                    i = self._order[self._next]
                    self._next += 1
                    if i not in asked and i not in wanted:
                        want.append(i)
                try:
                    self.mine |= self.ledger.mark_sending(
                        want, self.channel_name, self.run_id, self.texts, self.held
                    )
                except OperationalError as exc:
                    self.error = exc
            asked.update(want)
            return {i for i in contact_ids if i in self.mine}


def send_chunk(
    route: Route, channel: Channel, channel_name: str, messages: list[Message]
) -> tuple[list[Outcome], int]:
    """Mark sending, send, record, for one chunk; returns (outcomes, rows lost to another run).

    A channel that marks its own requests (``marks_sending``, the live ones) is
    handed :class:`SendingMarks`; for the others (the outbox, writing local files)
    the whole chunk is marked just before it is handed over. Either way a crash
    leaves in doubt at most what was handed over, and a stalled run sends only
    the rows its mark actually moved (another run may have taken the rest).

    ChannelDown (the channel can deliver nothing more) comes through once the
    outcomes it carries are recorded and the messages it never started are back in
    ``reserved``, for the flow to release to the next run.
    """
    ledger, run_id = route.ledger, route.run.run_id
    ids = [m.contact_id for m in messages]
    texts = None  # what reconciliation finds a message in doubt by (careflow/channels/base.py)
    if getattr(channel, "matched_by_text", False):
        texts = {m.contact_id: (m.to, m.subject, m.body) for m in messages}
    marks = None
    held: dict[int, tuple[str, str]] = {}  # withheld by the ledger: the customer said no
    if getattr(channel, "marks_sending", False):
        marks = SendingMarks(route, channel_name, ids, channel.configured_rate, texts)
        held = marks.held
        to_send = messages
    else:
        mine = ledger.mark_sending(ids, channel_name, run_id, texts, held)
        to_send = [m for m in messages if m.contact_id in mine]
        if not to_send:
            return _withheld(held), len(messages) - len(held)
    down: ChannelDown | None = None
    try:
        sent = channel.send_batch(to_send, marks) if marks else channel.send_batch(to_send)
    except ChannelDown as exc:
        down, sent = exc, list(exc.outcomes)
    except Exception as exc:  # a channel bug: outcome unknown, so never resend what started
        detail = f"{type(exc).__name__}: {exc}"
        sent = [
            Outcome.failed(
                m.contact_id,
                "channel_error",
                retryable=marks is not None and m.contact_id not in marks.asked,
                detail=detail,
            )
            for m in to_send
        ]
    lost: set[int] = set()
    if marks is not None:  # requested ids the ledger did not give this run are not its own
        mine, lost = marks.mine, marks.asked - marks.mine - set(held)
        sent = [o for o in sent if o.contact_id not in lost and o.contact_id not in held]

    answered = {o.contact_id for o in sent}
    if down is None:
        sent += [
            Outcome.failed(cid, "no_outcome", detail="channel returned none")
            for cid in mine - answered
        ]
    details = {
        m.contact_id: {
            "channel": m.channel,
            "recipient": m.to,
            "subject": m.subject,
            "body": m.body,
        }
        for m in to_send
        if m.contact_id not in lost
    }
    record_delivered(route, sent, details)
    if down is not None:
        ledger.unmark_sending(sorted(mine - answered), run_id)
        down.outcomes = sent
        raise down
    if marks is not None and marks.error is not None:
        raise marks.error
    not_mine = len(messages) - len(to_send) + len(lost)
    if marks is None:  # the chunk was marked at once: what it withheld was never to send
        not_mine -= len(held)
    return sent + _withheld(held), not_mine


def _withheld(held: dict[int, tuple[str, str]]) -> list[Outcome]:
    """The ledger recorded these skipped as it marked the chunk (the customer said no
    meanwhile, careflow/ledger/withheld.py): their outcomes, for the counts."""
    return [Outcome.skipped(cid, reason, detail) for cid, (reason, detail) in held.items()]


def record_delivered(route: Route, outcomes: list[Outcome], details: dict) -> None:
    """Record a chunk's outcomes, whatever the database does meanwhile.

    When the ledger's own retries are exhausted, the outcomes go to a journal
    file under the run's home (careflow/outcome_journal.py) and the write is
    tried again, with a warning each time, until the database is back or the
    run is stopped; a file left behind is written by the next run.
    """
    try:
        route.ledger.record(outcomes, route.run.run_id, details)
        return
    except OperationalError as exc:
        error = exc
    home = route.run.settings.home
    kept = outcome_journal.keep(home, route.run.run_id, outcomes, details)
    delivered = sum(o.state == State.SENT for o in outcomes)
    started, pause = time.monotonic(), 1.0
    while True:
        log.warning(
            "DATABASE UNAVAILABLE for %.0fs (%s): %d outcome(s), %d of them delivered, "
            "kept in %s; writing them again in %.0fs",
            time.monotonic() - started,
            type(error.orig or error).__name__,
            len(outcomes),
            delivered,
            kept,
            pause,
        )
        if _stopped_within(route, pause):
            log.warning(
                "run stopped while the database was away: %s stays for the next run to write",
                kept,
            )
            return
        try:
            route.ledger.record(outcomes, route.run.run_id, details)
        except OperationalError as exc:
            error, pause = exc, min(OUTAGE_PAUSE_MAX_SECONDS, pause * 2)
            continue
        outcome_journal.forget(kept)
        log.warning("database back: the %d kept outcome(s) are recorded", len(outcomes))
        return


def _stopped_within(route: Route, seconds: float) -> bool:
    """Wait ``seconds``, or less if the run is stopped meanwhile; whether it was."""
    if isinstance(route.stop, threading.Event):
        return route.stop.wait(seconds)
    time.sleep(seconds)
    return route.stop_requested()


def _sample(result: BatchResult, c: Candidate, text: str | None, error: str | None):
    if len(result.samples) < 5:
        d = c.decision
        result.samples.append(
            {
                "customer_id": c.customer_id,
                "channel": d.channel,
                "to": mask_address(d.address),  # summaries land in artifacts and the runs table
                "text": text,
                "error": error,
                # why it goes at this hour (send-time optimisation), when the policy said
                "send_time": d.detail if d.action == "send" else None,
            }
        )

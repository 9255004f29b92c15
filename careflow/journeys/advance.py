"""Entering customers into a journey and moving them along it: set work in SQL, one
batch of claimed positions at a time.

A position (``journey_positions``) is due when its ``due_at`` has come. An
advancer *claims* due positions of one id range with a lease
(``claimed_by``/``claim_until``, like the ledger's reservations: a claim whose
lease has passed is anybody's), checks the journey's exit rules, runs each
position's step and writes, in one transaction per batch, a ``journey_steps``
row per executed visit (unique per journey, customer, entry key, step and
visit) and the position's next step, for the rows it still holds. So each
step happens once, whichever of two advancers gets there first, and an
advancer that dies leaves its claims to the next once the lease passes.

Send steps are not run here: the caller hands in ``send`` (careflow/flows/journey.py),
which runs the route for the positions this claim holds on a send step. What
the position does next is read from the ledger row of that message afterwards
(final: on to the next step; deferred: wait for its send time; anything else:
try again later), so a crash between the send and the move never sends twice:
the next advancer finds the ledger row final and only moves on.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    BigInteger,
    Engine,
    Integer,
    String,
    bindparam,
    column,
    func,
    literal,
    or_,
    select,
    update,
)

from careflow import segments
from careflow.clock import period_key
from careflow.db import sqlfunc
from careflow.db.models import (
    ContactEvent,
    ContactHistory,
    Customer,
    Journey,
    JourneyPosition,
    JourneyStepRecord,
    Order,
)
from careflow.db.sqlfunc import among, id_chunks, id_ranges
from careflow.journey_spec import (
    ENTRY_STEP,
    BranchStep,
    ExitStep,
    JourneySpec,
    NotifyOwnerStep,
    SendStep,
    SplitStep,
    WaitForStep,
    WaitStep,
    step_campaign_name,
)
from careflow.journeys.events import Facts, kinds_of, load_facts, naive, wake_waiting
from careflow.ledger.plans import insert_rows, unnested
from careflow.policy.holdout import holdout_draw
from careflow.settings import Settings
from careflow.shop_events import PROVIDER as SHOP

log = logging.getLogger(__name__)

P = JourneyPosition.__table__.c
S = JourneyStepRecord.__table__
CH = ContactHistory.__table__.c
POSITIONS = JourneyPosition.__table__

#: ledger states after which a send step is over (a skip by a stopping run is not: the
#: message goes back to the next run, so the step is tried again)
FINAL = ("sent", "failed", "skipped", "held_out")
RELEASED = ("run_stopped", "run_failed")
#: rounds of claim-and-step one batch runs: a step that leads straight on (a branch, a
#: split, a send that settles at once) is taken in the same advance
MAX_ROUNDS = 25

#: ``send(spec, step, claim, id_range, now)``: run the route for the positions ``claim``
#: holds on ``step`` (careflow/flows/journey.py)
SendFn = Callable[[JourneySpec, SendStep, str, tuple[int, int], datetime], None]
#: ``stop()``: whether the advance's run was asked to stop (careflow/flows/journey.py)
StopFn = Callable[[], bool]

_LOCAL = ("locale", "grade", "country", "owner", "preferred_channel", "time_zone")


@dataclass(frozen=True)
class Position:
    id: int
    customer_id: int
    entry_key: str
    entered_on: date
    entered_at: datetime
    version: str
    step: str
    visit: int
    state: str
    due_at: datetime | None
    waiting_for: str | None
    waiting_since: datetime | None
    arrived_at: datetime


@dataclass
class Done:
    """The visit is over: record it and go to ``goto`` (None: the journey ends)."""

    pos: Position
    outcome: str
    goto: str | None
    reason: str | None = None
    detail: str | None = None
    #: the state a position that goes nowhere ends in
    end: str = "done"


@dataclass
class Stay:
    """The visit goes on: wait until ``due_at``."""

    pos: Position
    state: str
    due_at: datetime
    waiting_for: str | None = None


@dataclass
class Tally:
    """What one advance did: counts by outcome, entries, exits by reason."""

    entered: int = 0
    steps: Counter = field(default_factory=Counter)
    exits: Counter = field(default_factory=Counter)
    waiting: int = 0
    stranded: int = 0

    def merge(self, other: Tally) -> None:
        self.entered += other.entered
        self.steps.update(other.steps)
        self.exits.update(other.exits)
        self.waiting += other.waiting
        self.stranded += other.stranded

    def as_dict(self) -> dict:
        return {
            "entered": self.entered,
            "steps": dict(self.steps),
            "exits": dict(self.exits),
            "waiting": self.waiting,
            "stranded": self.stranded,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Tally:
        return cls(
            d["entered"], Counter(d["steps"]), Counter(d["exits"]), d["waiting"], d["stranded"]
        )



def _entry_key(spec: JourneySpec, day: date) -> str:
    if spec.once == "forever":
        return "once"
    if spec.every_days is not None:
        return day.isoformat()
    return period_key(spec.once, day)  # type: ignore[arg-type]


def _position_values(spec: JourneySpec, now: datetime) -> dict:
    return {
        "journey": spec.name,
        "version": spec.version,
        "step": ENTRY_STEP,
        "visit": 1,
        "state": "active",
        "due_at": now,
        "arrived_at": now,
        "entered_at": now,
        "updated_at": now,
    }


def note_journey(engine: Engine, spec: JourneySpec, now: datetime) -> None:
    """Record the journey and the version being advanced."""
    now = naive(now)
    with engine.begin() as conn:
        conn.execute(
            sqlfunc.insert(conn, Journey.__table__)
            .values(name=spec.name, version=spec.version, updated_at=now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        conn.execute(
            update(Journey.__table__)
            .where(Journey.name == spec.name)
            .values(version=spec.version, updated_at=now)
        )


def enter_segment(
    engine: Engine, spec: JourneySpec, as_of: date, at: datetime, now: datetime
) -> int:
    """Enter the customers the journey's segment selects as of ``as_of``, each at most once
    per entry key (one INSERT ... SELECT; a key already there is left alone). Returns
    how many entered."""
    entry = spec.entry
    now = naive(now)
    key = _entry_key(spec, as_of)
    with engine.connect() as conn:
        params = segments.prepare(entry.segment, conn, as_of, entry.parameters)
    seg = segments.build(entry.segment, as_of, params, at=at).subquery("seg")
    values = {**_position_values(spec, now), "entry_key": key, "entered_on": as_of}
    columns = ["customer_id", *values]
    # (a WHERE keeps SQLite from reading ON CONFLICT as part of the SELECT's join)
    query = select(seg.c.customer_id, *[literal(v) for v in values.values()]).where(
        seg.c.customer_id.is_not(None)
    )
    if spec.every_days is not None:
        recent = select(P.id).where(
            P.journey == spec.name,
            P.customer_id == seg.c.customer_id,
            P.entered_on > as_of - timedelta(days=spec.every_days),
        )
        query = query.where(~recent.exists())
    with engine.begin() as conn:
        stmt = (
            sqlfunc.insert(conn, POSITIONS)
            .from_select(columns, query)
            .on_conflict_do_nothing(index_elements=["journey", "customer_id", "entry_key"])
        )
        conn.execute(stmt)
        # (SQLite reports no row count for INSERT ... SELECT; the new rows are on the
        # entry step, which the step index finds without walking the whole journey)
        return conn.execute(
            select(func.count()).where(
                P.journey == spec.name, P.step == ENTRY_STEP, P.state == "active",
                P.entered_at == now,
            )
        ).scalar_one()  # fmt: skip


#: an event entry reads events (or orders) by id. Ids are handed out when a row is
#: inserted and become visible when its transaction commits, so a lower id can appear
#: after a higher one has been read: entries re-read every id above ``entry_read_from``,
#: which only passes an id once it was seen this long ago (a transaction that inserts
#: events or orders and stays open longer may have its rows missed). Re-reading is
#: harmless: entering is idempotent on (journey, customer, entry key).
ENTRY_SETTLE = timedelta(minutes=15)
#: event rows read per query when entering
ENTRY_PAGE = 50_000


@dataclass(frozen=True)
class EntryMark:
    """How far a journey has read its entry events: ids up to ``read_from`` are settled;
    ``seen`` was the newest id at ``seen_at``."""

    source: str
    read_from: int
    seen: int
    seen_at: datetime


def _entry_source(event: str):
    return Order.__table__ if event == "ordered" else ContactEvent.__table__


def entry_read_from(conn, journey: str) -> int | None:
    """The id up to which a journey's entry events are settled (None before its first look)."""
    return conn.execute(select(Journey.entry_read_from).where(Journey.name == journey)).scalar()


def _entry_mark(engine: Engine, spec: JourneySpec, now: datetime) -> EntryMark:
    """The journey's mark on its entry events' table; a journey that looks at that table for
    the first time (new, or its entry changed) starts from the newest row: nothing that
    happened before enters."""
    table = _entry_source(spec.entry.event)
    note_journey(engine, spec, now)
    with engine.begin() as conn:
        row = conn.execute(
            select(
                Journey.entry_source, Journey.entry_read_from, Journey.entry_seen,
                Journey.entry_seen_at,
            ).where(Journey.name == spec.name)
        ).one()  # fmt: skip
        if row.entry_source == table.name:
            return EntryMark(table.name, row.entry_read_from, row.entry_seen, row.entry_seen_at)
        newest = conn.execute(select(func.max(table.c.id))).scalar() or 0
        conn.execute(
            update(Journey.__table__)
            .where(Journey.name == spec.name)
            .values(entry_source=table.name, entry_read_from=newest, entry_seen=newest,
                    entry_seen_at=now)
        )  # fmt: skip
    return EntryMark(table.name, newest, newest, now)


def _settle_mark(engine: Engine, journey: str, mark: EntryMark, newest: int, now: datetime):
    """After reading every visible id above ``mark.read_from``: what was newest
    ENTRY_SETTLE ago is settled, and ``newest`` starts its wait. Compare-and-set: an
    advancer beside this one that settled first is left alone."""
    if now - mark.seen_at < ENTRY_SETTLE:
        return
    with engine.begin() as conn:
        conn.execute(
            update(Journey.__table__)
            .where(
                Journey.name == journey,
                Journey.entry_source == mark.source,
                Journey.entry_read_from == mark.read_from,
                Journey.entry_seen_at == mark.seen_at,
            )
            .values(entry_read_from=max(mark.read_from, mark.seen),
                    entry_seen=max(mark.seen, newest), entry_seen_at=now)
        )  # fmt: skip


def enter_events(engine: Engine, spec: JourneySpec, settings: Settings, now: datetime) -> int:
    """Enter the customers who did the journey's entry event since it started looking
    (every event above its settled mark, see ENTRY_SETTLE). Returns how many entered."""
    now = naive(now)
    mark = _entry_mark(engine, spec, now)
    cursor, entered = mark.read_from, 0
    while True:
        page = _entry_events(engine, spec.entry.event, cursor, settings.time_zone)
        if page:
            entered += _enter_days(engine, spec, page, now)
            cursor = page[-1][0]
        if len(page) < ENTRY_PAGE:
            break
    _settle_mark(engine, spec.name, mark, cursor, now)
    return entered


def _entry_events(engine: Engine, event: str, after: int, shop_zone: str) -> list:
    """(id, customer, day) of the next ENTRY_PAGE entry events above id ``after``; the day
    is the shop's (orders keep its clock; contact events are UTC)."""
    zone = ZoneInfo(shop_zone)
    with engine.connect() as conn:
        if event == "ordered":
            found = conn.execute(
                select(Order.id, Order.customer_id, Order.ordered_at)
                .where(Order.id > after, Order.quiet.is_not(True))  # old, posted late
                .order_by(Order.id)
                .limit(ENTRY_PAGE)
            ).all()
            return [(r.id, r.customer_id, r.ordered_at.date()) for r in found]
        found = conn.execute(
            select(ContactEvent.id, ContactEvent.customer_id, ContactEvent.occurred_at)
            .where(
                ContactEvent.id > after,
                ContactEvent.customer_id.is_not(None),
                ContactEvent.kind.in_(kinds_of(event)),
                # the shop's event older than its age rule, not a backfill: nothing enters
                or_(
                    ContactEvent.provider != SHOP,
                    ContactEvent.payload["triggers"].as_boolean().is_not(False),
                ),
            )
            .order_by(ContactEvent.id)
            .limit(ENTRY_PAGE)
        ).all()
    return [
        (r.id, r.customer_id, r.occurred_at.replace(tzinfo=UTC).astimezone(zone).date())
        for r in found
    ]


def _enter_days(engine: Engine, spec: JourneySpec, days: list, now: datetime) -> int:
    """Enter each (id, customer, day) once per entry key."""
    rows: dict[tuple[int, str], dict] = {}
    for _, cid, day in days:
        key = _entry_key(spec, day)
        rows.setdefault((cid, key), {
            **_position_values(spec, now), "customer_id": cid, "entry_key": key,
            "entered_on": day,
        })  # fmt: skip
    entered = 0
    with engine.begin() as conn:
        if spec.every_days is not None:
            recent = {
                (r.customer_id, r.entered_on)
                for r in conn.execute(
                    select(P.customer_id, P.entered_on).where(
                        P.journey == spec.name,
                        P.customer_id.in_({cid for cid, _ in rows}),
                        P.entered_on > min(d for *_, d in days) - timedelta(spec.every_days),
                    )
                )
            }
            keep = {}
            for (cid, key), row in sorted(rows.items(), key=lambda kv: kv[1]["entered_on"]):
                day = row["entered_on"]
                if any(c == cid and day - timedelta(spec.every_days) < d <= day
                       for c, d in recent):  # fmt: skip
                    continue
                keep[(cid, key)] = row
                recent.add((cid, day))
            rows = keep
        stmt = sqlfunc.insert(conn, POSITIONS).on_conflict_do_nothing(
            index_elements=["journey", "customer_id", "entry_key"]
        )
        for row in rows.values():  # (counted by RETURNING: psycopg's rowcount here is -1)
            entered += len(conn.execute(stmt.values(**row).returning(POSITIONS.c.id)).all())
    return entered


# --- claiming ----------------------------------------------------------------------------
def claim(
    engine: Engine,
    journey: str,
    id_range: tuple[int, int],
    now: datetime,
    token: str,
    lease: timedelta,
    limit: int,
) -> list[Position]:
    """Take up to ``limit`` due positions of ``journey`` in ``id_range`` for ``token``: those
    nobody holds, or whose holder's lease has passed. Two advancers never both take one
    (SQLite's write lock; PostgreSQL re-checks the lease on the locked row, and skips rows
    another advancer is taking)."""
    now = naive(now)
    free = (P.claim_until.is_(None)) | (P.claim_until < now)
    due = select(P.id).where(
        P.journey == journey,
        P.state.in_(("active", "waiting")),
        P.due_at <= now,
        P.customer_id.between(*id_range),
        free,
    ).order_by(P.due_at, P.id).limit(limit)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        conn.execute(
            update(POSITIONS)
            .where(P.id.in_(due.scalar_subquery()), free)
            .values(claimed_by=token, claim_until=now + lease)
        )
        rows = conn.execute(
            select(*[POSITIONS.c[f] for f in Position.__dataclass_fields__])
            # (through the range: the journey alone walked every position it has)
            .where(P.claimed_by == token, P.journey == journey,
                   P.customer_id.between(*id_range))
            .order_by(P.customer_id, P.id)
        ).all()
    return [Position(**r._mapping) for r in rows]


# --- the steps ---------------------------------------------------------------------------
def _zone(name: str | None, fallback: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or fallback)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(fallback)


def wait_end(step: WaitStep, arrived: datetime, zone: ZoneInfo) -> datetime:
    """When a wait that began at ``arrived`` (naive UTC) ends (naive UTC): after its
    duration, or at the first ``until`` time of day in ``zone`` at or after it."""
    if step.until is None:
        return arrived + step.duration
    hour, minute = map(int, step.until.split(":"))
    local = arrived.replace(tzinfo=UTC).astimezone(zone)
    day = local.date()
    while True:
        target = datetime.combine(day, time(hour, minute), tzinfo=zone)
        # a time skipped by a clock change resolves past it (fold=0): still a real instant
        target_utc = target.astimezone(UTC).replace(tzinfo=None)
        if target_utc >= arrived:
            return target_utc
        day += timedelta(days=1)


def _matches(cond, customer: dict, member: Callable[[str, dict], set[int]]) -> bool:
    for name in _LOCAL:
        wanted = getattr(cond, name)
        if wanted is None:
            continue
        value = (customer.get(name) or "").strip()
        if name == "locale":
            if not any(value == w or value.startswith(f"{w}-") for w in wanted):
                return False
        elif value.lower() not in {w.lower() for w in wanted}:
            return False
    if cond.segment is not None:
        return customer["id"] in member(cond.segment.name, cond.segment.parameters)
    return True


def split_path(spec: JourneySpec, step: SplitStep, pos: Position) -> str:
    """The path a customer takes at a split: a fixed draw on journey, step, customer and
    entry, salted apart from the holdout's."""
    draw = holdout_draw(f"journey-split:{spec.name}:{step.id}", pos.customer_id, pos.entry_key)
    edge = 0.0
    for path in step.paths:
        edge += path.share
        if draw < edge:
            return path.goto
    return step.paths[-1].goto


def is_held_out(spec: JourneySpec, share: float, pos: Position) -> bool:
    """The journey's holdout, drawn once at entry on journey, customer and entry key."""
    draw = holdout_draw(f"journey:{spec.name}", pos.customer_id, pos.entry_key)
    return share > 0 and draw < share


class _Batch:
    """One claimed batch: the facts, customers and segment memberships its steps read."""

    def __init__(self, engine, spec, settings, positions, now):
        self.engine, self.spec, self.settings, self.now = engine, spec, settings, now
        ids = sorted({p.customer_id for p in positions})
        self.range = (ids[0], ids[-1])
        wanted = set(spec.exit_on)
        for s in spec.steps:
            if isinstance(s, WaitForStep):
                wanted.update(s.event)
        since = min(min(p.entered_at, p.waiting_since or p.entered_at) for p in positions)
        self.facts: Facts = load_facts(
            engine, ids, wanted, since, settings.time_zone, spec.name
        )
        with engine.connect() as conn:
            self.customers = {
                r.id: dict(r._mapping)
                for r in conn.execute(
                    select(Customer.id, *[Customer.__table__.c[n] for n in _LOCAL]).where(
                        among(conn, Customer.id, ids)
                    )
                )
            }
        self._members: dict[str, set[int]] = {}

    def member(self, segment: str, params: dict) -> set[int]:
        key = f"{segment}:{sorted(params.items())!r}"
        if key not in self._members:
            zone = ZoneInfo(self.settings.time_zone)
            at = self.now.replace(tzinfo=UTC)
            as_of = at.astimezone(zone).date()
            with self.engine.connect() as conn:
                prepared = segments.prepare(segment, conn, as_of, params)
                query = segments.build(segment, as_of, prepared, at=at, id_range=self.range)
                sub = query.subquery()
                self._members[key] = set(conn.execute(select(sub.c.customer_id)).scalars())
        return self._members[key]


def _step_once(b: _Batch, pos: Position, share: float) -> Done | Stay:
    """What a due position's step does now (not send steps: :func:`_send_steps`)."""
    spec, now = b.spec, b.now
    if pos.step == ENTRY_STEP:
        if is_held_out(spec, share, pos):
            return Done(pos, "held_out", None, "holdout", f"held out ({share:.0%})", "held_out")
        return Done(pos, "entered", spec.steps[0].id)
    step = spec.step(pos.step)
    customer = b.customers.get(pos.customer_id, {"id": pos.customer_id})
    if isinstance(step, WaitStep):
        zone = _zone(customer.get("time_zone"), b.settings.time_zone)
        end = wait_end(step, pos.arrived_at, zone)
        if now >= end:
            detail = f"until {end:%Y-%m-%d %H:%M} UTC"
            return Done(pos, "waited", spec.next_of(step.id), None, detail)
        return Stay(pos, "waiting", end, "time")
    if isinstance(step, WaitForStep):
        end = pos.arrived_at + step.window
        since = pos.waiting_since or pos.arrived_at
        hit = b.facts.first(pos.customer_id, step.event, since, min(now, end))
        if hit is not None:
            what, when = hit
            already = " (already when the customer arrived)" if when <= pos.arrived_at else ""
            return Done(pos, "happened", step.then or spec.following(step.id), what,
                        f"{what} at {when:%Y-%m-%d %H:%M} UTC{already}")  # fmt: skip
        if now >= end:
            return Done(pos, "timed_out", step.otherwise or spec.following(step.id), None,
                        f"no {'/'.join(step.event)} within {step.within}")  # fmt: skip
        return Stay(pos, "waiting", end, ",".join(step.event))
    if isinstance(step, BranchStep):
        for i, case in enumerate(step.cases, start=1):
            if _matches(case.when, customer, b.member):
                return Done(pos, "branched", case.goto, f"case {i}")
        return Done(pos, "branched", step.default or spec.following(step.id), "default")
    if isinstance(step, SplitStep):
        return Done(pos, "split", split_path(spec, step, pos))
    if isinstance(step, NotifyOwnerStep):
        owner = customer.get("owner")
        return Done(pos, "notified", spec.next_of(step.id), owner or "no_owner", step.note)
    if isinstance(step, ExitStep):
        return Done(pos, "ended", None, f"step {step.id}", None, "done")
    raise AssertionError(step)


def _ledger_rows(engine: Engine, campaign: str, keys: Sequence[tuple[int, str]]) -> dict:
    """(customer_id, occasion) -> the ledger row of a journey step's message."""
    out = {}
    ids = sorted({c for c, _ in keys})
    wanted = set(keys)
    with engine.connect() as conn:
        for part in id_chunks(conn, ids):
            for r in conn.execute(
                select(CH.customer_id, CH.occasion, CH.state, CH.reason, CH.detail,
                       CH.not_before)
                .where(CH.campaign == campaign, among(conn, CH.customer_id, part))
            ):  # fmt: skip
                if (r.customer_id, r.occasion) in wanted:
                    out[(r.customer_id, r.occasion)] = r
    return out


def _send_steps(
    b: _Batch, positions: list[Position], token: str, send: SendFn, stop: StopFn | None = None
) -> list:
    """Run ``send`` for each send step's claimed positions; each position's next move
    comes from its message's ledger row. A position whose message a stopping run did
    not send stays due as it was: its run gives the message back (``release``) and the
    next advance takes both at once."""
    out: list[Done | Stay] = []
    by_step: dict[str, list[Position]] = defaultdict(list)
    for pos in positions:
        by_step[pos.step].append(pos)
    retry = b.now + timedelta(seconds=b.settings.reservation_lease_seconds)
    for step_id, group in by_step.items():
        step = b.spec.step(step_id)
        campaign = step_campaign_name(b.spec.name, step_id)
        keys = {pos.id: (pos.customer_id, pos.entered_on.isoformat()) for pos in group}
        rows = _ledger_rows(b.engine, campaign, list(keys.values()))
        if any(not _final(rows.get(k)) for k in keys.values()):
            ids = [pos.customer_id for pos in group]
            send(b.spec, step, token, (min(ids), max(ids)), b.now.replace(tzinfo=UTC))
            rows = _ledger_rows(b.engine, campaign, list(keys.values()))
        for pos in group:
            row = rows.get(keys[pos.id])
            if _final(row):
                out.append(Done(pos, row.state, b.spec.next_of(step_id), row.reason,
                                (row.detail or "")[:300] or None))  # fmt: skip
            elif row is not None and row.state == "deferred" and row.not_before:
                out.append(Stay(pos, "waiting", max(row.not_before, b.now), "message"))
            elif stop is not None and stop():
                out.append(Stay(pos, pos.state, pos.due_at or b.now, pos.waiting_for))
            else:  # not reached, in progress, or released by a stopping run: again later
                out.append(Stay(pos, pos.state, retry, pos.waiting_for))
    return out


def _final(row) -> bool:
    if row is None or row.state not in FINAL:
        return False
    return not (row.state == "skipped" and row.reason in RELEASED)


def _exit_of(b: _Batch, pos: Position) -> Done | None:
    """The first exit rule that holds for the position since it entered."""
    if not b.spec.exit_on:
        return None
    hit = b.facts.first(pos.customer_id, b.spec.exit_on, pos.entered_at, b.now)
    if hit is None:
        return None
    what, when = hit
    return Done(pos, "exited", None, what, f"{what} at {when:%Y-%m-%d %H:%M} UTC", "exited")


def _version_move(spec: JourneySpec, pos: Position, ids: set[str]) -> Done | bool | None:
    """A position of another version: its step's new place (``moved:``), or False when
    the new version has no such step and no map for it (it stays where it is)."""
    if pos.step in ids or pos.step == ENTRY_STEP:
        return None
    if pos.step in spec.moved:
        target = spec.moved[pos.step]
        return Done(pos, "moved", target, "new_version", f"to {target} in {spec.version}")
    return False


def step_batch(
    engine: Engine,
    spec: JourneySpec,
    settings: Settings,
    positions: list[Position],
    now: datetime,
    token: str,
    send: SendFn,
    stop: StopFn | None = None,
) -> Tally:
    """Run the due step of each claimed position and record what happened."""
    tally = Tally()
    if not positions:
        return tally
    now = naive(now)
    b = _Batch(engine, spec, settings, positions, now)
    share = settings.holdout if spec.holdout is None else spec.holdout
    ids = {s.id for s in spec.steps}
    moves: list[Done | Stay] = []
    sending: list[Position] = []
    for pos in positions:
        moved = _version_move(spec, pos, ids)
        if moved is False:
            tally.stranded += 1
            moves.append(Stay(pos, pos.state, now + timedelta(hours=1), pos.waiting_for))
            continue
        if moved is not None:
            moves.append(moved)
            continue
        gone = _exit_of(b, pos)
        if gone is not None:
            moves.append(gone)
        elif pos.step != ENTRY_STEP and isinstance(spec.step(pos.step), SendStep):
            sending.append(pos)
        else:
            moves.append(_step_once(b, pos, share))
    if sending:
        moves += _send_steps(b, sending, token, send, stop)
    _apply(engine, spec, token, now, moves, settings, tally)
    return tally


def _apply(engine, spec, token, now, moves, settings, tally: Tally) -> None:
    """Write the batch's moves for the positions ``token`` still holds, in one transaction:
    a step row per finished visit, then each position's new place."""
    lease = timedelta(seconds=settings.reservation_lease_seconds)
    ids = [m.pos.id for m in moves]
    with engine.begin() as conn:
        owned = _renew(conn, ids, token, now + lease)
        moves = [m for m in moves if m.pos.id in owned]
        steps = {s.id for s in spec.steps}
        done = [m for m in moves if isinstance(m, Done)]
        visits = _visits(conn, spec.name, done)
        step_rows, updates = [], []
        version = spec.version  # (a hash of the step graph: once, not per position)
        for m in moves:
            pos = m.pos
            # a position stranded on a deleted step keeps the version it came from
            kept = pos.step == ENTRY_STEP or pos.step in steps or isinstance(m, Done)
            # (_MOVE_COLUMNS: where it is; its step, visit, state, due_at, waiting_for,
            # waiting_since, arrived_at, exit_reason and version now)
            where = (pos.id, pos.step, pos.visit)
            v = version if kept else pos.version
            if isinstance(m, Stay):
                tally.waiting += m.state == "waiting"
                updates.append((*where, pos.step, pos.visit, m.state, m.due_at, m.waiting_for,
                                pos.waiting_since, pos.arrived_at, None, v))  # fmt: skip
                continue
            tally.steps[m.outcome] += 1
            if m.outcome == "entered":
                tally.entered += 1
            if m.end == "exited":
                tally.exits[m.reason] += 1
            step_rows.append((
                spec.name, pos.customer_id, pos.entry_key, pos.step, pos.visit, pos.version,
                m.outcome, _cut(m.reason, 64), m.detail, m.goto, now,
            ))  # fmt: skip
            if m.goto is None:
                reason = _cut(m.reason if m.end != "held_out" else None, 64)
                updates.append((*where, pos.step, pos.visit, m.end, None, None,
                                pos.waiting_since, pos.arrived_at, reason, v))  # fmt: skip
                continue
            key = (pos.customer_id, pos.entry_key, m.goto)
            visits[key] = visits.get(key, 0) + 1
            updates.append((*where, m.goto, visits[key], "active", now, None,
                            pos.arrived_at, now, None, v))  # fmt: skip
        insert_rows(conn, S, _STEP_COLUMNS, step_rows)
        _move(conn, updates, now)


#: a step row as :func:`_apply` writes it
_STEP_COLUMNS = [
    S.c[n] for n in ("journey", "customer_id", "entry_key", "step", "visit", "version",
                     "outcome", "reason", "detail", "next_step", "at")
]  # fmt: skip
#: a position's move as :func:`_apply` writes it: found by id at its step and visit
#: (``b_``), the rest its new place
_MOVE_COLUMNS = [
    column("b_id", BigInteger), column("b_step", String), column("b_visit", Integer),
    *[POSITIONS.c[n] for n in ("step", "visit", "state", "due_at", "waiting_for",
                               "waiting_since", "arrived_at", "exit_reason", "version")],
]  # fmt: skip


def _renew(conn, ids: list[int], token: str, until: datetime) -> set[int]:
    """Renew the claim of ``token`` on the positions ``ids`` that it still holds; those ids.
    Renewing takes the rows' locks until the transaction ends. One UPDATE ... RETURNING
    (PostgreSQL: over an array of the ids; SQLite: per 1,000)."""
    owned: set[int] = set()
    for part in id_chunks(conn, ids):
        owned.update(conn.execute(
            update(POSITIONS).where(among(conn, P.id, part), P.claimed_by == token)
            .values(claim_until=until).returning(P.id)
        ).scalars())  # fmt: skip
    return owned


def _move(conn, rows: list[tuple], now: datetime) -> None:
    """Each position of ``rows`` (:data:`_MOVE_COLUMNS`) still at its step and visit to
    its new place, its claim put down. PostgreSQL: one UPDATE ... FROM unnest(arrays)
    (psycopg runs an executemany one row at a time); SQLite: an executemany."""
    if not rows:
        return
    names = [c.name for c in _MOVE_COLUMNS]
    fixed = {"updated_at": now, "claimed_by": None, "claim_until": None}
    if conn.dialect.name != "postgresql":
        conn.execute(
            update(POSITIONS)
            .where(P.id == bindparam("b_id"), P.step == bindparam("b_step"),
                   P.visit == bindparam("b_visit"))
            .values({**{n: bindparam(f"n_{n}") for n in names[3:]}, **fixed}),
            [{(n if n.startswith("b_") else f"n_{n}"): v for n, v in zip(names, row, strict=True)}
             for row in rows],
        )  # fmt: skip
        return
    w = unnested(_MOVE_COLUMNS, rows, "w")
    conn.execute(
        update(POSITIONS)
        .where(P.id == w.c.b_id, P.step == w.c.b_step, P.visit == w.c.b_visit)
        .values({**{n: w.c[n] for n in names[3:]}, **fixed})
    )


def _cut(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else value


def _visits(conn, journey: str, done: list[Done]) -> dict[tuple[int, str, str], int]:
    """(customer, entry key, step) -> visits so far, for the steps these moves go to."""
    targets = {(m.pos.customer_id, m.pos.entry_key, m.goto) for m in done if m.goto}
    if not targets:
        return {}
    ids = sorted({t[0] for t in targets})
    out: dict[tuple[int, str, str], int] = {}
    for part in id_chunks(conn, ids):
        for r in conn.execute(
            select(S.c.customer_id, S.c.entry_key, S.c.step, func.max(S.c.visit))
            .where(S.c.journey == journey, among(conn, S.c.customer_id, part))
            .group_by(S.c.customer_id, S.c.entry_key, S.c.step)
        ):
            key = (r[0], r[1], r[2])
            if key in targets:
                out[key] = r[3]
    return out


# --- one advance -------------------------------------------------------------------------
def new_token(run_id: str | None = None) -> str:
    """A claim's token: ``<run id>:<random>`` for an advance recorded as a run (its
    claims can be found and given back when it stops: :func:`release_claims`)."""
    if run_id is not None:
        return f"{run_id}:{uuid.uuid4().hex[:8]}"
    return f"journey-{uuid.uuid4().hex[:16]}"


def release_claims(engine: Engine, journey: str, run_id: str) -> int:
    """Give back the positions a stopped run's claims still hold (batches that did not
    put them down in time): due as they were, for the next advance at once instead of
    after the lease. Returns how many. A batch of that run still going writes nothing
    more for them (its moves are kept only for positions its claim holds)."""
    with engine.begin() as conn:
        return conn.execute(
            update(POSITIONS)
            .where(
                P.journey == journey,
                P.state.in_(("active", "waiting")),
                P.claimed_by.like(f"{run_id}:%"),
            )
            .values(claimed_by=None, claim_until=None)
        ).rowcount


def advance_range(
    engine: Engine,
    spec: JourneySpec,
    settings: Settings,
    id_range: tuple[int, int],
    now: datetime,
    send: SendFn,
    token: str | None = None,
    *,
    run_id: str | None = None,
    stop: StopFn | None = None,
) -> Tally:
    """Claim and step the due positions of ``id_range`` until none is due (at most
    ``MAX_ROUNDS`` rounds: a step that leads straight on is taken in the same advance).
    ``run_id``: the run whose claims these are (:func:`new_token`); ``stop``: asked
    between rounds and after each send, a stopping run claims nothing more."""
    tally = Tally()
    lease = timedelta(seconds=settings.reservation_lease_seconds)
    for _ in range(MAX_ROUNDS):
        if stop is not None and stop():
            break
        token_now = token or new_token(run_id)
        got = claim(engine, spec.name, id_range, now, token_now, lease, settings.batch_size)
        if not got:
            break
        tally.merge(step_batch(engine, spec, settings, got, now, token_now, send, stop))
    return tally


def plan_ranges(engine: Engine, journey: str, now: datetime, batch_size: int) -> list:
    """Customer-id ranges of at most ``batch_size`` due positions each (as campaign runs
    plan their batches: every ``batch_size``-th id is a boundary)."""
    due = select(P.customer_id).where(
        P.journey == journey, P.state.in_(("active", "waiting")), P.due_at <= naive(now)
    )
    return id_ranges(engine, due, batch_size)


def enter(engine: Engine, spec: JourneySpec, settings: Settings, now: datetime) -> int:
    """Today's entries: the segment as of the shop's today, or the events since the last
    look. Returns how many entered."""
    if spec.entry.event is not None:
        return enter_events(engine, spec, settings, now)
    note_journey(engine, spec, now)
    at = now.astimezone(UTC)
    as_of = at.astimezone(ZoneInfo(settings.time_zone)).date()
    return enter_segment(engine, spec, as_of, at, now)


def wake(
    engine: Engine, spec: JourneySpec, settings: Settings, now: datetime, customers=None
) -> int:
    """Positions waiting for an event that has come, or waiting (any step) when one of the
    journey's ``exit_on`` has come, are due now (of ``customers`` only, if given)."""
    waited = [e for s in spec.steps if isinstance(s, WaitForStep) for e in s.event]
    return wake_waiting(engine, spec.name, now, settings.time_zone, spec.exit_on, customers,
                        waited)  # fmt: skip


# --- what the journey looks like ---------------------------------------------------------
def status(engine: Engine, spec: JourneySpec, now: datetime) -> dict:
    """Customers per step and state, when the waiting are due, exits by reason, the
    holdout and the owner's list: what ``careflow journey status`` shows."""
    now = naive(now)
    with engine.connect() as conn:
        per = conn.execute(
            select(P.step, P.state, func.count(), func.min(P.due_at), func.max(P.due_at))
            .where(P.journey == spec.name)
            .group_by(P.step, P.state)
        ).all()
        exits = conn.execute(
            select(P.exit_reason, func.count())
            .where(P.journey == spec.name, P.state == "exited")
            .group_by(P.exit_reason)
        ).all()
        outcomes = conn.execute(
            select(S.c.step, S.c.outcome, func.count())
            .where(S.c.journey == spec.name)
            .group_by(S.c.step, S.c.outcome)
        ).all()
        versions = conn.execute(
            select(P.version, func.count())
            .where(P.journey == spec.name, P.state.in_(("active", "waiting")))
            .group_by(P.version)
        ).all()
    order = {ENTRY_STEP: -1} | {s.id: i for i, s in enumerate(spec.steps)}
    steps = []
    for step, state, n, first, last in sorted(per, key=lambda r: (order.get(r[0], 99), r[1])):
        steps.append({"step": step, "state": state, "customers": n,
                      "first_due": first, "last_due": last})  # fmt: skip
    done = defaultdict(dict)
    for step, outcome, n in outcomes:
        done[step][outcome] = n
    return {
        "journey": spec.name,
        "version": spec.version,
        "now": now,
        "positions": steps,
        "exits": {reason or "": n for reason, n in exits},
        "outcomes": {s: done[s] for s in sorted(done, key=lambda s: order.get(s, 99))},
        "versions": {v: n for v, n in versions},
    }


def waiting_on(engine: Engine, journey: str) -> dict[str, int]:
    """Customers in flight per step (active or waiting): what a new version must keep."""
    with engine.connect() as conn:
        return {
            step: n
            for step, n in conn.execute(
                select(P.step, func.count())
                .where(P.journey == journey, P.state.in_(("active", "waiting")))
                .group_by(P.step)
            )
        }


__all__ = [
    "Position",
    "SendFn",
    "Tally",
    "advance_range",
    "claim",
    "enter",
    "enter_events",
    "enter_segment",
    "plan_ranges",
    "release_claims",
    "status",
    "step_batch",
    "wait_end",
    "waiting_on",
    "wake",
]


"""What a journey did over a run of days, counted from its rows: what ``careflow journey
simulate`` reports (careflow/flows/journey_simulate.py runs the days on a scratch copy).

The counts are read from the rows the days wrote (step rows, the ledger rows of
its send steps, positions), above the ids that were there when the days began
(``Marks``): the same reading applies to a simulation's copy and to a real
database advanced over the same days, which is how the two are compared
(tests/journeys/test_simulate.py). Everything is grouped in SQL; only the
deferrals are looked at after each advance (a deferred message that is sent later
leaves no trace of its wait in its row).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select

from careflow.db.models import ContactHistory, Customer, JourneyPosition, JourneyStepRecord
from careflow.journey_spec import ENTRY_STEP, JourneySpec, SendStep, step_campaign_name
from careflow.journeys.advance import status
from careflow.journeys.events import naive
from careflow.tables import text_table

S = JourneyStepRecord.__table__.c
CH = ContactHistory.__table__.c
P = JourneyPosition.__table__.c


@dataclass(frozen=True)
class Marks:
    """The newest step row and ledger row before the days began."""

    steps: int
    ledger: int


def newest_step(engine: Engine) -> int:
    """The id of the newest step row (0: none)."""
    with engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.max(S.id), 0))).scalar_one()


def marks(engine: Engine) -> Marks:
    with engine.connect() as conn:
        return Marks(
            conn.execute(select(func.coalesce(func.max(S.id), 0))).scalar_one(),
            conn.execute(select(func.coalesce(func.max(CH.id), 0))).scalar_one(),
        )


class Recorder:
    """Counts a journey's days: ``after_advance`` after each advance, ``result`` at the end."""

    def __init__(self, engine: Engine, spec: JourneySpec, shop_zone: str, since: Marks):
        self.engine = engine
        self.spec = spec
        self.zone = shop_zone
        self.since = since
        self.campaigns = {step_campaign_name(spec.name, s.id): s.id
                          for s in spec.steps if isinstance(s, SendStep)}  # fmt: skip
        #: ledger id -> (step, reason) of every message seen deferred
        self.deferred: dict[int, tuple[str, str]] = {}
        self.events: Counter = Counter()  # shop day -> scenario events recorded
        self.advances = 0
        self.first: datetime | None = None

    def after_advance(self, at: datetime, events: int = 0) -> None:
        self.advances += 1
        self.first = self.first or naive(at)
        self.events[self._day(naive(at))] += events
        if not self.campaigns:
            return
        with self.engine.connect() as conn:
            for rid, campaign, reason in conn.execute(
                select(CH.id, CH.campaign, CH.reason).where(
                    CH.id > self.since.ledger,
                    CH.campaign.in_(list(self.campaigns)),
                    CH.state == "deferred",
                )
            ):
                self.deferred.setdefault(rid, (self.campaigns[campaign], reason or ""))

    def _day(self, at: datetime) -> str:
        return at.replace(tzinfo=UTC).astimezone(ZoneInfo(self.zone)).date().isoformat()

    def result(self, end: datetime) -> dict:
        """Everything the report shows, as plain data (the --json output)."""
        spec, since = self.spec, self.since
        with self.engine.connect() as conn:
            step_rows = conn.execute(
                select(S.at, S.step, S.outcome, S.reason, func.count())
                .where(S.journey == spec.name, S.id > since.steps)
                .group_by(S.at, S.step, S.outcome, S.reason)
            ).all()
            ledger = conn.execute(
                select(CH.campaign, CH.state, CH.reason, CH.channel, func.count())
                .where(CH.id > since.ledger, CH.campaign.in_(list(self.campaigns)))
                .group_by(CH.campaign, CH.state, CH.reason, CH.channel)
            ).all() if self.campaigns else []  # fmt: skip
            zone = func.coalesce(Customer.time_zone, self.zone)
            hours = conn.execute(
                select(S.at, zone, func.count())
                .join(Customer, Customer.id == S.customer_id)
                .where(S.journey == spec.name, S.id > since.steps, S.outcome == "sent")
                .group_by(S.at, zone)
            ).all()
        days: dict[str, Counter] = defaultdict(Counter)
        outcomes: dict[str, Counter] = defaultdict(Counter)
        exits: Counter = Counter()
        for at, step, outcome, reason, n in step_rows:
            day = days[self._day(at)]
            outcomes[step][outcome] += n
            if step == ENTRY_STEP:
                day["entered"] += n
                day["held_out"] += n if outcome == "held_out" else 0
            elif outcome == "sent":
                day[f"sent {step}"] += n
            elif outcome == "notified":
                day["notified"] += n
            if outcome == "exited":
                exits[reason or ""] += n
                day["exited"] += n
        for day, n in self.events.items():
            days[day]["events"] += n
        sends: dict[str, dict] = {}
        for campaign, state, reason, channel, n in ledger:
            step = self.campaigns[campaign]
            entry = sends.setdefault(step, {"states": Counter(), "channels": Counter(),
                                            "skipped": Counter(), "failed": Counter()})  # fmt: skip
            entry["states"][state] += n
            if state == "sent":
                entry["channels"][channel or ""] += n
            if state in ("skipped", "failed"):
                entry[state][reason or ""] += n
        local_hours: Counter = Counter()
        for at, tz, n in hours:
            try:
                where = ZoneInfo(tz)
            except (KeyError, ValueError):
                where = ZoneInfo(self.zone)
            local_hours[at.replace(tzinfo=UTC).astimezone(where).hour] += n
        deferrals: dict[str, Counter] = defaultdict(Counter)
        for step, reason in self.deferred.values():
            deferrals[step][reason] += 1
        # a cap met by a campaign the shop lets wait (marketing, by default) defers the
        # message until a slot frees; one that may not wait skips it
        caps = {step: s["skipped"].get("frequency_cap", 0)
                + deferrals.get(step, Counter()).get("frequency_cap", 0)
                for step, s in sends.items()}  # fmt: skip
        st = status(self.engine, spec, end)
        order = {ENTRY_STEP: -1} | {s.id: i for i, s in enumerate(spec.steps)}
        return {
            "journey": spec.name,
            "version": spec.version,
            "from": self.first.isoformat(timespec="minutes") if self.first else None,
            "to": naive(end).isoformat(timespec="minutes"),
            "advances": self.advances,
            "days": {d: dict(days[d]) for d in sorted(days)},
            "entered": sum(c["entered"] for c in days.values()),
            "held_out": sum(c["held_out"] for c in days.values()),
            "outcomes": {s: dict(outcomes[s])
                         for s in sorted(outcomes, key=lambda s: order.get(s, 99))},
            "sends": {step: {k: dict(v) for k, v in s.items()} for step, s in sends.items()},
            "sent_by_local_hour": {f"{h:02d}": local_hours[h] for h in sorted(local_hours)},
            "deferrals": {step: dict(c) for step, c in deferrals.items()},
            "cap_collisions": {step: n for step, n in caps.items() if n},
            "exits": dict(exits),
            "end": [
                {"step": r["step"], "state": r["state"], "customers": r["customers"]}
                for r in st["positions"]
            ],
        }  # fmt: skip


def report_text(result: dict, *, short: bool = False) -> str:
    """The result as tables a terminal shows at a glance (``short``: the days and the
    customers per step at the end only)."""
    lines = [f"journey {result['journey']} (version {result['version']}): {result['advances']}"
             f" advances from {result['from']} to {result['to']} UTC"]  # fmt: skip
    lines.append(f"entered {result['entered']} (held out {result['held_out']}), "
                 f"exits: {_pairs(result['exits']) or 'none'}")  # fmt: skip
    days = result["days"]
    if days:
        sends = sorted({k for d in days.values() for k in d if k.startswith("sent ")})
        cols = ["entered", *sends, "notified", "exited", "events"]
        rows = [[day, *[str(c.get(k, 0) or "") for k in cols]] for day, c in days.items()]
        lines += ["", text_table(["day", *cols], rows)]
    if result["sends"] and not short:
        rows = []
        for step, s in result["sends"].items():
            states = s["states"]
            rows.append([
                step, str(states.get("sent", 0)), _pairs(s["channels"]),
                str(sum(n for why, n in result["deferrals"].get(step, {}).items()
                        if why != "frequency_cap")),
                str(result["cap_collisions"].get(step, 0)),
                _pairs({k: v for k, v in s["skipped"].items() if k != "frequency_cap"}),
                _pairs(s["failed"]), str(states.get("deferred", 0)),
            ])  # fmt: skip
        head = ["send step", "sent", "by channel", "deferred", "capped", "skipped", "failed",
                "still deferred"]  # fmt: skip
        lines += ["", text_table(head, rows)]
    if result["sent_by_local_hour"] and not short:
        lines += ["", "sent by the customer's local hour: "
                  + ", ".join(f"{h}h {n}" for h, n in result["sent_by_local_hour"].items())]
    if result["end"]:
        lines += ["", "customers per step at the end:",
                  text_table(["step", "state", "customers"],
                             [[r["step"], r["state"], str(r["customers"])]
                              for r in result["end"]])]  # fmt: skip
    return "\n".join(lines)


def _pairs(counts: dict) -> str:
    return ", ".join(f"{k or '?'} {v}" for k, v in sorted(counts.items()) if v)


__all__ = ["Marks", "Recorder", "marks", "newest_step", "next_due", "report_text"]


def next_due(engine: Engine, journey: str, after: datetime) -> datetime | None:
    """The first instant after ``after`` a position of ``journey`` is due (aware UTC)."""
    with engine.connect() as conn:
        found = conn.execute(
            select(func.min(P.due_at)).where(
                P.journey == journey,
                P.state.in_(("active", "waiting")),
                P.due_at > naive(after),
            )
        ).scalar()
    return found.replace(tzinfo=UTC) if found else None

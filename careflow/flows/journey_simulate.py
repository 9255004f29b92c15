"""``careflow journey simulate``: a journey advanced over days that have not come, on a
scratch copy of the database, with the customers' simulated responses.

Why a copy and not the dry-run ledger: a dry run rehearses one run, and its
holds stand in for the rows that run would write. A journey over 90 days is
90 advances, each reading what the ones before wrote: positions that moved,
messages sent (caps, shared addresses, "sent, so wait for the answer"), replies
and orders that drive waits and exits, customers who entered and so are not
entered again. Standing in for all of that would be a second implementation of
advancing, and its numbers would drift from the real one's. So the days run the
real code (entering, waking, claiming, the whole route of every send step, the
step rows) against a copy (careflow/db/scratch.py: a file on SQLite, a schema of
its own on PostgreSQL), every message built as the outbox would write it but no
file written (``outbox_files``), and the copy is dropped at the end. The real
database is only read, once, to copy it.

The days are advances at ``at`` (the shop's local time) every ``every`` (a day by
default), from ``start`` to ``end``, and between them at each instant a position
falls due (a message deferred by quiet hours or a cap, a wait's end), on the
five-minute grid the deployment advances on: so a deferred message goes when
the deployment would send it, not at the next day's advance. What only a
response wakes (a ``wait_for`` answered) moves at the next of those advances,
where the deployment's trigger moves it within a minute; ``--every`` finer
brings the two closer. Before each advance the scenario's events that happened
by then are recorded (careflow/journeys/scenario.py), as a real shop's
responses would be by then. Advancing the real database at the same
instants with the same scenario recorded gives the same numbers
(tests/journeys/test_simulate.py).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from careflow import db, progress
from careflow.db.scratch import scratch_copy
from careflow.errors import ConfigError
from careflow.flows.journey import advance_journeys
from careflow.journey_spec import load_journey, parse_duration
from careflow.journeys import diagram
from careflow.journeys.scenario import (
    Scenario,
    check_customers,
    load_scenario,
    record_due,
    widest,
)
from careflow.journeys.simulation import Recorder, marks, newest_step, next_due
from careflow.settings import Settings, load_settings

#: advances one simulation makes at most (ten years of days)
MAX_ADVANCES = 3660
#: the deployment's schedule: journey-advance every five minutes (prefect.yaml)
GRID = timedelta(minutes=5)
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def instants(start: date, end: date, at: str, every: str, zone: str) -> list[datetime]:
    """The instants (aware UTC) to advance at: ``at`` local time on ``start``, then every
    ``every`` up to the end of ``end`` (whole days keep the local time across clock
    changes)."""
    m = _CLOCK.match(at or "")
    if not m:
        raise ConfigError(f"--at {at!r} is not a time of day such as 10:00")
    try:
        step = parse_duration(every)
    except ValueError as exc:
        raise ConfigError(f"--every {every!r}: {exc}") from None
    if step <= timedelta():
        raise ConfigError(f"--every {every!r} must be longer than nothing")
    if end < start:
        raise ConfigError(f"--to {end} is before --from {start}")
    tz = ZoneInfo(zone)
    local = time(int(m.group(1)), int(m.group(2)))
    stop = datetime.combine(end + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)
    out = []
    if step % timedelta(days=1) == timedelta():
        day = start
        while day <= end and len(out) <= MAX_ADVANCES:
            out.append(datetime.combine(day, local, tzinfo=tz).astimezone(UTC))
            day += timedelta(days=step.days)
    else:
        t = datetime.combine(start, local, tzinfo=tz).astimezone(UTC)
        while t < stop and len(out) <= MAX_ADVANCES:
            out.append(t)
            t += step
    if len(out) > MAX_ADVANCES:
        raise ConfigError(f"that is more than {MAX_ADVANCES} advances: a shorter span or "
                          "a longer --every")  # fmt: skip
    return out


def simulate_journey(
    journey: str,
    start: date,
    end: date,
    *,
    events: Path | None = None,
    at: str = "10:00",
    every: str = "1 day",
    settings: Settings | None = None,
) -> dict:
    """Advance ``journey`` at each of ``instants(...)`` on a scratch copy, with the
    scenario in ``events`` recorded as it happens; what it did (journeys/simulation.py),
    with the end's Mermaid diagram under ``mermaid``. The real database is not written."""
    settings = settings or load_settings()
    spec = load_journey(journey, settings.templates_dir)
    scenario = load_scenario(events, spec) if events else Scenario()
    when = instants(start, end, at, every, settings.time_zone)
    url = settings.effective_database_url
    db.ensure_schema(db.engine_for(url))
    check_customers(db.engine_for(url), scenario, str(events))
    currency = scenario.currency or settings.main_currency or "GBP"
    with scratch_copy(url) as copy_url:
        # every message built as the outbox would write it, no file written
        sim = settings.model_copy(update={
            "database_url": copy_url, "delivery": "outbox", "outbox_files": False,
        })  # fmt: skip
        copy = db.engine_for(copy_url)
        recorder = Recorder(copy, spec, settings.time_zone, marks(copy))
        advanced = _advance_days(journey, spec, scenario, copy, sim, when, recorder, currency)
        result = recorder.result(when[-1])
        result["advanced_at"] = [t.isoformat(timespec="minutes") for t in advanced]
        result["mermaid"] = diagram.mermaid(spec, diagram.live_counts(copy, spec))
    return result


def _advance_days(journey, spec, scenario, copy, sim, when, recorder, currency) -> list:
    """Advance at each instant of ``when`` and, between them, at every instant a position
    is due (a deferred message's send time, a wait's end), on the deployment's
    five-minute grid; the scenario's events recorded before each advance."""
    advanced, before, i = [], None, 0
    now = when[0]
    # (instant, newest step row after the advance at it): the scenario reads the step
    # rows of its window by id, not the whole journey's each time
    reach, newest = widest(scenario), [(when[0] - timedelta(days=36600), 0)]
    while True:
        floor = 0
        if before is not None:
            floor = max(top for at, top in newest if at < before - reach)
        recorded = record_due(copy, spec, scenario, now, since=before, above_id=floor,
                              shop_zone=sim.time_zone, currency=currency)  # fmt: skip
        advance_journeys(journey, as_of=now, settings=sim)
        recorder.after_advance(now, recorded)
        newest.append((now, newest_step(copy)))
        advanced.append(now)
        before = now
        while i < len(when) and when[i] <= now:
            i += 1
        progress.report("simulated days", i, len(when))
        due = next_due(copy, journey, now)
        due = due and on_grid(due)
        if due is not None and due <= when[-1] and (i == len(when) or due < when[i]):
            now = due
        elif i < len(when):
            now = when[i]
        else:
            return advanced


def on_grid(instant: datetime) -> datetime:
    """The first instant of the deployment's five-minute schedule at or after ``instant``."""
    floor = instant.replace(second=0, microsecond=0, minute=instant.minute - instant.minute % 5)
    return floor if floor == instant else floor + GRID


__all__ = ["instants", "on_grid", "simulate_journey"]

"""Journeys at production size: 1M customers in a journey, 100,000 of them due at once.

    python -m bench.journeys                            # SQLite, a fresh 1M-customer shop
    python -m bench.journeys --dialect postgresql       # the same on PostgreSQL
    python -m bench.journeys --url sqlite:////tmp/shop.db   # a shop bench/shop.py made
    python -m bench.journeys --url ... --simulate 90    # also: 90 simulated days (lapsing_journey)
    python -m bench.journeys --quick                    # seconds: 3,000 customers (tests)
    python -m bench.journeys --url ... --concurrency 1 4   # the advance once per setting

In one process:

1. the shop (bench/shop.py; or ``--url`` reuses one) and its purchase facts;
2. every customer put into the bench journey below, in SQL: one position each and
   the step row of its entry; a tenth of them (``--due``) due now, spread over
   the id range on a mix of steps: entering (held out or on to the first send),
   a send step, a ``wait_for`` that timed out (a branch, then a send or the
   owner's list), a wait that ended (the owner's list, then the exit). The rest
   wait days ahead;
3. one real advance at that instant: ``careflow.flows.journey.advance_journeys``,
   the code the journey-advance flow runs (entry query, wake, plan, batches of
   CAREFLOW_BATCH_SIZE claimed positions, each send step through the whole route
   to the outbox), without Prefect's orchestration; its batches ``--concurrency``
   at once on threads, as the flow's task runner runs them (default: the flow's
   CAREFLOW_BATCH_CONCURRENCY, 1 on SQLite, 4 on PostgreSQL); seconds, due
   positions per second, step visits per second and a per-stage split (summed
   over the batches: concurrent batches overlap). Several values: the positions
   are put in again and the advance run once per value, in the same process;
4. checks: each due position ran its due step exactly once (one step row at that
   instant for it, none for the others), one ledger row per message, and the same
   advance again runs nothing;
5. ``--simulate DAYS``: ``careflow journey simulate lapsing_journey`` over DAYS
   days from the shop's day with its scenario (the demo's), on the same shop:
   seconds for the scratch copy and for the days, each advance's seconds (CPU) and
   step visits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.fixtures import send_times_off

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
send_times_off()

JOURNEY = "bench_steps"
SPEC = """\
description: The bench's journey (bench/journeys.py)
category: marketing
entry:
  segment: dormant
  parameters: {days: 90, max_days: 180}
once: every 180 days
holdout: 10%
exit_on: [ordered, opted_out]
steps:
  - {id: hello, type: send, channels: [sms]}
  - id: answer
    type: wait_for
    event: [ordered, replied]
    within: 3 days
    then: thanks
    else: check
  - id: check
    type: branch
    cases:
      - when: {country: [CN]}
        goto: call
    default: nudge
  - {id: nudge, type: send, channels: [sms]}
  - {id: pause, type: wait, days: 7}
  - {id: call, type: notify_owner, note: No answer to two messages}
  - {id: thanks, type: exit}
"""
#: the instant of the advance: ten days after the shop's day, noon UTC
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
#: (step, state, waiting_for, hours since arrival) of the due positions, by
#: (customer id // step) % 10: the mix of one busy advance
MIX = (
    ("_entry", "active", None, 0),
    ("_entry", "active", None, 0),
    ("hello", "active", None, 1),
    ("hello", "active", None, 1),
    ("answer", "waiting", "ordered,replied", 73),
    ("answer", "waiting", "ordered,replied", 73),
    ("answer", "waiting", "ordered,replied", 73),
    ("pause", "waiting", "time", 169),
    ("pause", "waiting", "time", 169),
    ("pause", "waiting", "time", 169),
)
#: a position that is not due: waiting on ``pause``, due this many hours ahead
AHEAD = 5 * 24


def run(
    url: str,
    customers: int,
    due: int,
    simulate: int | None,
    advance: bool = True,
    concurrency: list[int | None] | None = None,
) -> dict:
    from careflow import db, purchase_facts

    engine = db.engine_for(url)
    out: dict = {"dialect": engine.dialect.name}
    t0 = time.perf_counter()
    out["facts_refreshed"] = purchase_facts.refresh(engine)
    out["facts_refresh_s"] = round(time.perf_counter() - t0, 1)
    home = Path(tempfile.mkdtemp(prefix="careflow-bench-journeys-"))
    templates = home / "templates"
    try:
        _templates(templates)
        os.environ.update(
            CAREFLOW_DATABASE_URL=url, CAREFLOW_HOME=str(home),
            CAREFLOW_TEMPLATES_DIR=str(templates), CAREFLOW_DELIVERY="outbox",
            CAREFLOW_OUTBOX_DIR=str(home / "outbox"),
        )  # fmt: skip
        if simulate:  # first: on the shop as it came
            out["simulate"] = _simulate(simulate)
        if not advance:
            return out
        out["advances"] = []
        for n in concurrency or [None]:
            positions = _put_in(engine, customers, due)
            out["advances"].append({"positions": positions,
                                    **_advance(engine, positions, n)})  # fmt: skip
        # (the first, as before several could be asked for)
        out["advance"] = out["advances"][0]
        out["positions"] = out["advance"]["positions"]
        return out
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _templates(root: Path) -> None:
    from careflow.settings import PROJECT_ROOT

    shutil.copytree(PROJECT_ROOT / "templates", root)
    folder = root / JOURNEY
    folder.mkdir()
    (folder / "journey.yaml").write_text(SPEC)
    for step in ("hello", "nudge"):
        (folder / f"{step}.sms.en.j2").write_text(f"{step}: hello {{{{ name }}}}")
        (folder / f"{step}.sms.zh-CN.j2").write_text(f"{step}: 你好 {{{{ name }}}}")


def _put_in(engine, customers: int, due: int) -> dict:
    """Every customer in the journey, in SQL; ``due`` of them due at NOW on MIX."""
    from sqlalchemy import case, delete, func, insert, literal, select

    from careflow import channels  # noqa: F401 - registers the built-in channels
    from careflow.db.models import ContactHistory, Customer, JourneyPosition, JourneyStepRecord
    from careflow.journey_spec import load_journey, step_campaign_name
    from careflow.journeys.advance import note_journey
    from careflow.settings import load_settings

    spec = load_journey(JOURNEY, load_settings().templates_dir)
    now = NOW.replace(tzinfo=None)
    stride = max(1, customers // due)
    P, S = JourneyPosition.__table__, JourneyStepRecord.__table__
    cid = Customer.__table__.c.id
    kind = (cid // stride) % len(MIX)
    is_due = cid % stride == 0

    def pick(values, other):
        return case(
            *[(is_due & (kind == i), literal(v)) for i, v in enumerate(values)], else_=other
        )

    arrived = [now - timedelta(hours=h) for *_, h in MIX]
    # a position that entered at its arrival, but a wait's entered with the send before
    entered = [a - timedelta(hours=73) if s == "pause" else a for (s, *_), a in
               zip(MIX, arrived, strict=True)]  # fmt: skip
    later = now - timedelta(hours=48)
    cols = {
        "journey": literal(JOURNEY),
        "customer_id": cid,
        "version": literal(spec.version),
        "step": pick([s for s, *_ in MIX], literal("pause")),
        "visit": literal(1),
        "state": pick([st for _, st, *_ in MIX], literal("waiting")),
        "waiting_for": pick([w for _, _, w, _ in MIX], literal("time")),
        "arrived_at": pick(arrived, literal(later)),
        "waiting_since": pick(arrived, literal(later)),
        "due_at": pick(arrived, literal(now + timedelta(hours=AHEAD))),
        "entered_at": pick(entered, literal(later - timedelta(hours=73))),
        "updated_at": literal(now),
    }
    note_journey(engine, spec, NOW)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(delete(S).where(S.c.journey == JOURNEY))
        conn.execute(delete(P).where(P.c.journey == JOURNEY))
        # (a shop used before: its messages go, or this advance's would be settled already)
        conn.execute(delete(ContactHistory).where(ContactHistory.campaign.in_(
            [step_campaign_name(JOURNEY, s) for s in ("hello", "nudge")])))  # fmt: skip
        for day in sorted({e.date() for e in [*entered, later - timedelta(hours=73)]}):
            # one INSERT ... SELECT per entry day (its key and occasion)
            on_day = [i for i, e in enumerate(entered) if e.date() == day]
            chosen = is_due & kind.in_(on_day)
            if (later - timedelta(hours=73)).date() == day:
                chosen = chosen | ~is_due
            conn.execute(insert(P).from_select(
                [*cols, "entry_key", "entered_on"],
                select(*cols.values(), literal(day.isoformat()), literal(day))
                .where(cid <= customers, chosen),
            ))  # fmt: skip
        # the entry's step row of everyone past it
        p = P.c
        conn.execute(insert(S).from_select(
            ["journey", "customer_id", "entry_key", "step", "visit", "version", "outcome",
             "next_step", "at"],
            select(p.journey, p.customer_id, p.entry_key, literal("_entry"), literal(1),
                   p.version, literal("entered"), literal("hello"), p.entered_at)
            .where(p.journey == JOURNEY, p.step != "_entry"),
        ))  # fmt: skip
        due_now = (p.journey == JOURNEY) & (p.due_at <= now)
        per_step = dict(conn.execute(
            select(p.step, func.count()).where(due_now).group_by(p.step)
        ).all())  # fmt: skip
        kinds = (p.customer_id // stride) % len(MIX)
        per_kind = dict(conn.execute(
            select(kinds, func.count()).where(due_now).group_by(kinds)
        ).all())  # fmt: skip
        total = conn.execute(select(func.count()).where(p.journey == JOURNEY)).scalar_one()
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE journey_positions")
            conn.exec_driver_sql("VACUUM ANALYZE journey_steps")
    return {"in_journey": total, "due": sum(per_step.values()), "due_per_step": per_step,
            "due_per_kind": per_kind, "stride": stride,
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


@contextmanager
def _stages(split: dict):
    """Time the advance's stages by wrapping its functions (no change to the code)."""
    from careflow.flows import journey as flow
    from careflow.journeys import advance

    wrapped = {
        "enter (entry query)": (advance, "enter"),
        "wake": (advance, "wake"),
        "plan batches": (advance, "plan_ranges"),
        "claim": (advance, "claim"),
        "read facts and customers": (advance, "_Batch"),
        "send steps (ledger reads + route)": (advance, "_send_steps"),
        "route (send)": (flow, "_send_step"),
        "write steps and moves": (advance, "_apply"),
    }
    saved = {}
    lock = threading.Lock()  # (batches on threads)
    for label, (module, name) in wrapped.items():
        fn = getattr(module, name)
        saved[(module, name)] = fn

        def timed(*a, _fn=fn, _label=label, **kw):
            t0 = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                took = time.perf_counter() - t0
                with lock:
                    split[_label] += took

        setattr(module, name, timed)
    try:
        yield
    finally:
        for (module, name), fn in saved.items():
            setattr(module, name, fn)


def _advance(engine, positions: dict, concurrency: int | None = None) -> dict:
    """One advance at NOW, its batches ``concurrency`` at once (default: the flow's)."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import func, select

    from careflow.db.models import ContactHistory, JourneyStepRecord
    from careflow.flows.journey import advance_batch, advance_journeys
    from careflow.settings import load_settings

    S, CH = JourneyStepRecord.__table__.c, ContactHistory.__table__.c
    settings = load_settings()
    if concurrency is None:
        concurrency = settings.effective_batch_concurrency
    before_steps, before_ledger = _tops(engine)
    split: dict = defaultdict(float)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    # the flow's thread task runner: ``submit`` hands it a batch, advance_one waits on each
    with _stages(split), ThreadPoolExecutor(concurrency) as pool:
        submit = None if concurrency == 1 else (lambda *a: pool.submit(advance_batch, *a))
        t0, cpu0 = time.perf_counter(), time.process_time()
        (summary,) = advance_journeys(JOURNEY, as_of=NOW, settings=settings, submit=submit)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    t0 = time.perf_counter()
    (again,) = advance_journeys(JOURNEY, as_of=NOW, settings=settings)
    again_s = time.perf_counter() - t0
    now = NOW.replace(tzinfo=None)
    stride = positions["stride"]
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).where(S.id > before_steps)).scalar_one()
        # each due position's due step: one step row at NOW, visit 1, per customer of
        # its group (the steps that follow in the same advance have rows of their own)
        kind = (S.customer_id // stride) % len(MIX)
        ran = {}
        for i, (step, *_) in enumerate(MIX):
            ran[i] = conn.execute(
                select(func.count(), func.count(func.distinct(S.customer_id))).where(
                    S.id > before_steps, S.at == now, S.visit == 1, S.step == step,
                    S.customer_id % stride == 0, kind == i,
                )
            ).one()  # fmt: skip
        strays = conn.execute(
            select(func.count()).where(S.id > before_steps, S.customer_id % stride != 0)
        ).scalar_one()
        ledger = conn.execute(
            select(CH.campaign, func.count(), func.count(func.distinct(CH.customer_id)))
            .where(CH.id > before_ledger).group_by(CH.campaign)
        ).all()  # fmt: skip
        sent_steps = conn.execute(
            select(S.step, func.count())
            .where(S.id > before_steps, S.step.in_(("hello", "nudge")))
            .group_by(S.step)
        ).all()  # fmt: skip
    checks = {
        "each due position ran its due step once": all(
            tuple(ran[i]) == (n, n) for i, n in positions["due_per_kind"].items()
        ),
        "no step for a position not due": strays == 0,
        "one ledger row per message, each step's": all(n == d for _, n, d in ledger)
        and {c.rsplit("__", 1)[1]: n for c, n, _ in ledger} == dict(sent_steps),
        "the same advance again runs no step": sum(again["steps"].values()) == 0,
    }
    return {
        "concurrency": concurrency,
        "load_before": load,
        "load_after": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "seconds": round(seconds, 1),
        # this process's CPU (rendering runs in a worker process of its own: not counted)
        "cpu_s": round(cpu, 1),
        "due_positions_per_s": round(positions["due"] / seconds),
        "step_rows": rows,
        "step_rows_per_s": round(rows / seconds),
        "messages": sum(n for _, n, _ in ledger),
        "batches": summary["batches"],
        "steps": summary["steps"],
        "stages_s": {k: round(v, 1) for k, v in split.items()},
        "again_s": round(again_s, 1),
        "checks": checks,
    }


def _tops(engine) -> tuple[int, int]:
    from careflow.journeys.simulation import marks

    m = marks(engine)
    return m.steps, m.ledger


def _simulate(days: int) -> dict:
    from bench.shop import AS_OF
    from careflow.db import scratch
    from careflow.flows.journey_simulate import simulate_journey
    from careflow.settings import PROJECT_ROOT

    took: dict = {}
    inner = scratch.scratch_copy

    @contextmanager
    def timed_copy(*a, **kw):
        t0 = time.perf_counter()
        with inner(*a, **kw) as copy:
            took["copy_s"] = round(time.perf_counter() - t0, 1)
            yield copy
            t0 = time.perf_counter()
        took["drop_s"] = round(time.perf_counter() - t0, 1)

    from careflow.flows import journey_simulate

    journey_simulate.scratch_copy = timed_copy
    # the shop's own send times, as `careflow journey simulate` would run them (quiet
    # hours and caps defer messages: advances at their send times between the days)
    off = {k: os.environ.pop(k) for k in ("CAREFLOW_QUIET_HOURS", "CAREFLOW_SENDING_WINDOWS")
           if k in os.environ}  # fmt: skip
    start = AS_OF + timedelta(days=1)
    per_advance: list = []
    advance_journeys = journey_simulate.advance_journeys

    def timed_advance(*a, **kw):
        t0, cpu0 = time.perf_counter(), time.process_time()
        (summary,) = advance_journeys(*a, **kw)
        per_advance.append((time.perf_counter() - t0, time.process_time() - cpu0,
                            sum(summary["steps"].values()), summary["at"]))  # fmt: skip
        return [summary]

    journey_simulate.advance_journeys = timed_advance
    split: dict = defaultdict(float)
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        with _stages(split):
            result = simulate_journey(
                "lapsing_journey", start, start + timedelta(days=days - 1),
                events=PROJECT_ROOT / "templates" / "lapsing_journey" / "scenario.yaml",
            )  # fmt: skip
    finally:
        journey_simulate.advance_journeys = advance_journeys
        journey_simulate.scratch_copy = inner
        os.environ.update(off)
    seconds = time.perf_counter() - t0
    sent = sum(s["states"].get("sent", 0) for s in result["sends"].values())
    return {
        "days": days,
        "from": start.isoformat(),
        "seconds": round(seconds, 1),
        "cpu_s": round(time.process_time() - cpu0, 1),
        **took,
        "advances": result["advances"],
        "entered": result["entered"],
        "sent": sent,
        "exits": sum(result["exits"].values()),
        "advances_s": round(sum(w for w, *_ in per_advance), 1),
        "advances_cpu_s": round(sum(c for _, c, *_ in per_advance), 1),
        "first_advance_s": round(per_advance[0][0], 1) if per_advance else None,
        "step_rows": sum(n for _, _, n, _ in per_advance),
        "stages_s": {k: round(v, 1) for k, v in split.items()},
        # each advance: (instant, seconds, CPU seconds, step visits)
        "per_advance": [(at, round(w, 1), round(c, 1), n) for w, c, n, at in per_advance],
    }


def render(r: dict) -> str:
    lines = [f"Measured {r['when']} on {r['machine']}, load average {r['load']}.", ""]
    for a in r.get("advances", []):
        lines += _render_advance(r, a)
    lines += _render_simulate(r)
    return "\n".join(lines)


def _render_advance(r: dict, a: dict) -> list[str]:
    p = a["positions"]
    return [
        f"Shop: {r['customers']:,} customers on {r['dialect']}; {p['in_journey']:,} in the "
        f"journey, {p['due']:,} due ({', '.join(f'{k} {v:,}' for k, v in sorted(p['due_per_step'].items()))}).",  # noqa: E501
        "",
        f"| one advance of the due positions, {a['concurrency']} batch(es) at once | |",
        "| --- | ---: |",
        f"| load average before, after | {a['load_before']}; {a['load_after']} |",
        f"| seconds (CPU of this process) | {a['seconds']} ({a.get('cpu_s')}) |",
        f"| due positions per second | {a['due_positions_per_s']:,} |",
        f"| step visits written (per second) | {a['step_rows']:,} ({a['step_rows_per_s']:,}/s) |",
        f"| messages through the route | {a['messages']:,} |",
        f"| batches | {a['batches']} |",
        f"| the same advance again | {a['again_s']} s |",
        "",
        "| stage (summed over the batches) | seconds |",
        "| --- | ---: |",
        *[f"| {k} | {v} |" for k, v in a["stages_s"].items()],
        "",
        *[f"- {'ok' if ok else 'FAILED'}: {what}" for what, ok in a["checks"].items()],
        "",
    ]


def _render_simulate(r: dict) -> list[str]:
    lines = []
    if "simulate" in r:
        s = r["simulate"]
        lines += [
            "",
            f"Simulated {s['days']} days of lapsing_journey from {s['from']}: {s['seconds']} s "
            f"({s['cpu_s']} s CPU), of which the copy {s.get('copy_s')} s and its drop "
            f"{s.get('drop_s')} s; {s['advances']} advances, {s['entered']:,} entered, "
            f"{s['sent']:,} sent, {s['exits']:,} exits; the advances {s['advances_s']} s "
            f"({s['advances_cpu_s']} s CPU, the first {s['first_advance_s']} s), "
            f"{s['step_rows']:,} step visits.",
            "",
            "| stage, over the simulated days | seconds |",
            "| --- | ---: |",
            *[f"| {k} | {v} |" for k, v in s["stages_s"].items()],
            "",
            "| advance at | seconds (CPU) | step visits |",
            "| --- | ---: | ---: |",
            *[f"| {at} | {w} ({c}) | {n:,} |" for at, w, c, n in s.get("per_advance", [])],
        ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dialect", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--url", help="a shop bench/shop.py made (else a fresh one is made "
                        "and dropped)")  # fmt: skip
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, help="due positions (default: a tenth)")
    parser.add_argument("--simulate", type=int, metavar="DAYS",
                        help="also simulate lapsing_journey over DAYS days")  # fmt: skip
    parser.add_argument("--simulate-only", action="store_true",
                        help="only the simulation, not the advance of the due positions")
    parser.add_argument("--quick", action="store_true", help="3,000 customers: seconds")
    parser.add_argument("--concurrency", type=int, nargs="+", metavar="N",
                        help="batches at once (default: the flow's, CAREFLOW_BATCH_"
                        "CONCURRENCY: 1 on SQLite, 4 on PostgreSQL); several: one advance "
                        "each")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.customers = 3_000
    due = args.due or args.customers // 10
    cleanup = None
    url = args.url
    if url is None:
        from bench.fixtures import fresh_database
        from bench.shop import generate

        url, cleanup = fresh_database(args.dialect)
    try:
        shop = {}
        if args.url is None:
            shop = generate(url, args.customers, 5 * args.customers, quiet=True)
        else:
            from careflow import db

            db.upgrade(url)
        result = {
            "when": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}",
            "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
            "customers": args.customers,
            "shop": shop,
            **run(url, args.customers, due, args.simulate, not args.simulate_only,
                  args.concurrency),
        }
    finally:
        if cleanup:
            cleanup()
        elif args.url is None and url.startswith("sqlite"):
            shutil.rmtree(Path(url.removeprefix("sqlite:///")).parent, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    print(render(result))
    if any(not all(a["checks"].values()) for a in result.get("advances", [])):
        raise SystemExit("a check failed")


if __name__ == "__main__":
    main()

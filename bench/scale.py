"""careflow at production size: 1M customers, 5M orders, one command per database.

    python -m bench.scale                       # 1M customers / 5M orders, SQLite
    python -m bench.scale --dialect postgresql  # the same shop on PostgreSQL
    python -m bench.scale --quick               # seconds: 3,000 customers (CI runs this)

In one process and one run, per stage:

1. the shop, generated (bench/shop.py) and its purchase facts refreshed;
2. each segment selected once for everyone (``careflow.segments.prepare`` + a count); vip as a
   daily run finds it, with the pyramid's kept window a day behind (its first
   build is timed on its own);
3. the win-back campaign end to end through the real Prefect flow on the
   outbox channel as SMS (select, policy, reserve, render, write, record):
   messages per second and the process's peak memory;
4. the same occasion run again: it must send nothing, and how long it takes;
5. the naive design on a slice, one Prefect task per message, for the ratio;
6. holiday greetings to every customer on Christmas Day, and again (``--no-everyone``
   leaves it out): the million-recipient run, its peak memory and its re-run.

HTTP channels against a loopback provider are bench/http_throughput.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from bench.fixtures import send_times_off

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
send_times_off()

SEGMENTS = ("birthday", "dormant", "reorder_due", "vip", "contact_due", "holiday")
#: the shop's customers are British: the holiday segment is timed on Christmas Day
CHRISTMAS = date(2026, 12, 25)


def run(dialect: str, customers: int, orders: int, naive_sample: int, everyone: bool) -> dict:
    from bench.fixtures import fresh_database
    from bench.shop import AS_OF, generate

    url, cleanup = fresh_database(dialect)
    home = Path(tempfile.mkdtemp(prefix="careflow-scale-"))
    os.environ.update(CAREFLOW_DATABASE_URL=url, CAREFLOW_HOME=str(home))
    try:
        out: dict = {"dialect": dialect, **generate(url, customers, orders, quiet=True)}
        out |= _facts(url)
        out["segments"] = _segments(url, AS_OF)
        out |= _outbox_runs(url, AS_OF, naive_sample, everyone)
        return out
    finally:
        cleanup()


def _facts(url: str) -> dict:
    from careflow import db, purchase_facts

    t0 = time.perf_counter()
    n = purchase_facts.refresh(db.engine_for(url))
    return {"facts_refreshed": n, "facts_refresh_s": round(time.perf_counter() - t0, 2)}


def _segments(url: str, as_of) -> dict:
    from careflow import db, purchase_windows, segments

    engine = db.engine_for(url)
    # The pyramid's window is kept (careflow/purchase_windows.py): built once, like the
    # purchase facts, then moved a day at a time. Time the build, then vip as a daily
    # run sees it: the window a day behind.
    t0 = time.perf_counter()
    purchase_windows.bring_to(engine, as_of - timedelta(days=1), 365, None)
    out = {"pyramid window built": {"seconds": round(time.perf_counter() - t0, 2)}}
    for name in SEGMENTS:
        with engine.connect() as conn:
            t0 = time.perf_counter()
            day = CHRISTMAS if name == "holiday" else as_of
            params = segments.prepare(name, conn, day)
            n = segments.count(conn, segments.build(name, day, params))
        out[name] = {"selected": n, "seconds": round(time.perf_counter() - t0, 2)}
    return out


def _outbox_runs(url: str, as_of, naive_sample: int, everyone: bool) -> dict:
    from prefect import flow
    from sqlalchemy import delete, select

    from careflow import db
    from careflow.db.models import ContactHistory
    from careflow.flows.campaign import process_batch_task
    from careflow.flows.route import BatchResult, RunPlan

    engine = db.engine_for(url)

    @flow(name="bench-warm-up")
    def warm_up():
        return 1

    warm_up()  # the local Prefect API starts before anything is timed

    # the naive design first, on the first customers win-back selects
    from careflow import segments

    winback = segments.build("dormant", as_of, {"days": 180}).subquery()
    with engine.connect() as conn:
        ids = list(
            conn.execute(
                select(winback.c.customer_id).order_by(winback.c.customer_id).limit(naive_sample)
            ).scalars()
        )

    @flow(name="bench-task-per-message")
    def per_message(ids: list[int]):
        from careflow.campaigns import load_campaign
        from careflow.clock import resolve_as_of
        from careflow.settings import load_settings

        settings = load_settings().model_copy(update={"delivery": "outbox"})
        day, at = resolve_as_of(as_of, settings.time_zone)
        spec = load_campaign("winback", settings.templates_dir)
        run = RunPlan(
            spec=spec,
            run_id="naive",
            as_of=day,
            at=at,
            settings=settings,
            only_channel="sms",
            params={"days": 180},
        )
        futures = [process_batch_task.submit(run, cid, cid) for cid in ids]
        total = BatchResult()
        for f in futures:
            total.merge(BatchResult.from_dict(f.result()))
        return total.selected

    t0 = time.perf_counter()
    done = per_message(ids)
    naive_rate = done / (time.perf_counter() - t0)
    with engine.begin() as conn:  # the real run starts from an empty ledger
        conn.execute(delete(ContactHistory))

    out = {"naive": {"customers": done, "customers_per_s": round(naive_rate, 1)}}
    out["run"], out["rerun"] = _first_and_again(engine, "winback", as_of)
    out["naive"]["ratio"] = round(out["run"]["customers_per_s"] / naive_rate, 1)
    if everyone:  # holiday greetings to every customer: the million-recipient run
        out["everyone"], out["everyone_rerun"] = _first_and_again(
            engine, "holiday_greetings", CHRISTMAS
        )
    return out


def _first_and_again(engine, campaign: str, as_of) -> tuple[dict, dict]:
    """The campaign end to end on the outbox, then the same occasion again."""
    from sqlalchemy import func, select

    from careflow.db.models import ContactHistory
    from careflow.flows.campaign import campaign_flow

    t0 = time.perf_counter()
    first = campaign_flow(campaign, as_of=as_of, channel="sms", allow_past=True)
    first_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    again = campaign_flow(campaign, as_of=as_of, channel="sms", allow_past=True)
    again_s = time.perf_counter() - t0
    with engine.connect() as conn:
        ledger_rows = conn.execute(
            select(func.count()).where(ContactHistory.campaign == campaign)
        ).scalar_one()
    run = {
        "campaign": campaign,
        "selected": first["selected"],
        "sent": first["sent"],
        "skipped": first["skipped"],
        "deferred": first["deferred"],
        "held_out": first["held_out"],
        "ledger_rows": ledger_rows,
        "seconds": round(first_s, 1),
        "customers_per_s": round(first["selected"] / first_s),
        "sent_per_s": round(first["sent"] / first_s),
        "peak_rss_mb": round(peak_mb),
    }
    return run, {"sent": again["sent"], "seconds": round(again_s, 1)}


def render(r: dict) -> str:
    lines = [
        f"Measured {r['when']} on {r['machine']}.",
        "",
        f"Shop: {r['customers']:,} customers, {r['orders']:,} orders, {r['lines']:,} lines on "
        f"{r['dialect']}, loaded in {r['load_s']} s; purchase facts for "
        f"{r['facts_refreshed']:,} customers in {r['facts_refresh_s']} s.",
        "",
        "| segment | selected | seconds (prepare + select everyone) |",
        "| --- | ---: | ---: |",
    ]
    lines += [
        f"| {name} | {v.get('selected', 0):,} | {v['seconds']} |"
        for name, v in r["segments"].items()
    ]
    naive = r["naive"]
    runs = [(r["run"], r["rerun"])]
    if "everyone" in r:
        runs.append((r["everyone"], r["everyone_rerun"]))
    for run, rerun in runs:
        lines += [
            "",
            f"| {run['campaign']} on the outbox, SMS | |",
            "| --- | ---: |",
            f"| customers selected | {run['selected']:,} |",
            f"| sent / held out / skipped / deferred | {run['sent']:,} / {run['held_out']:,} / "
            f"{sum(run['skipped'].values()):,} / {sum(run['deferred'].values()):,} |",
            f"| seconds | {run['seconds']} |",
            f"| customers settled per second | {run['customers_per_s']:,} |",
            f"| messages sent per second | {run['sent_per_s']:,} |",
            f"| peak memory of the process so far | {run['peak_rss_mb']:,} MB |",
            f"| re-run of the same occasion | {rerun['seconds']} s, {rerun['sent']} sent |",
        ]
    lines += [
        "",
        f"One task per message ({naive['customers']} win-back customers): "
        f"{naive['customers_per_s']} customers/s; batched: {naive['ratio']}x that.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dialect", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=5_000_000)
    parser.add_argument("--naive-sample", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="3,000 customers: seconds")
    parser.add_argument(
        "--everyone",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also greet every customer on Christmas Day (the million-recipient run)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.customers, args.orders, args.naive_sample = 3_000, 15_000, 20
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        **run(args.dialect, args.customers, args.orders, args.naive_sample, args.everyone),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    print(render(result))


if __name__ == "__main__":
    main()

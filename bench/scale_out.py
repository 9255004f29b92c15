"""Scale-out: one campaign's batches on one process's threads, then on Dask worker processes.

    python -m bench.scale_out --dialect postgresql      # a 1M-customer shop, win-back
    python -m bench.scale_out --url postgresql+psycopg://127.0.0.1/shop   # a shop already made
    python -m bench.scale_out --quick                   # seconds: 3,000 customers (tests)

The same occasion runs end to end on the outbox once per runner, each time from an
empty ledger (the campaign's rows deleted, then VACUUM ANALYZE on PostgreSQL, so each
run starts with the statistics a first run has):

- ``threads``: the default, batches on CAREFLOW_BATCH_CONCURRENCY threads of the
  flow's own process;
- ``dask NxT``: prefect-dask's task runner on a LocalCluster of N worker processes
  with T batches each (CAREFLOW_TASK_RUNNER=dask, careflow/flows/runners.py).

Each run must settle every selected customer exactly once; the figures are seconds
and customers settled per second, and the ratio to threads in the same invocation.
On a 2-core machine the database shares the cores with the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from bench.fixtures import send_times_off

# as bench/scale.py: the local Prefect server tries no network, and logs what matters
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
send_times_off()

#: (label, environment) per runner, in the order they run
RUNNERS = (
    ("threads", {"CAREFLOW_TASK_RUNNER": "threads"}),
    (
        "dask 2x2",
        {
            "CAREFLOW_TASK_RUNNER": "dask",
            "CAREFLOW_DASK_WORKERS": "2",
            "CAREFLOW_DASK_THREADS_PER_WORKER": "2",
        },
    ),
)
CAMPAIGN = "winback"


def run(url: str, batch_size: int | None) -> dict:
    from bench.shop import AS_OF
    from careflow import db
    from careflow.flows.campaign import campaign_flow

    engine = db.engine_for(url)
    out: dict = {"campaign": CAMPAIGN, "runs": []}
    for label, env in RUNNERS:
        _empty_ledger(engine)
        home = tempfile.mkdtemp(prefix="careflow-scale-out-")
        os.environ.update(env, CAREFLOW_HOME=home)
        if batch_size:
            os.environ["CAREFLOW_BATCH_SIZE"] = str(batch_size)
        t0 = time.perf_counter()
        summary = campaign_flow(CAMPAIGN, as_of=AS_OF, channel="sms", allow_past=True)
        seconds = time.perf_counter() - t0
        settled = _settled(engine)
        out["runs"].append(
            {
                "runner": label,
                "selected": summary["selected"],
                "sent": summary["sent"],
                "ledger_rows": settled["rows"],
                "keys": settled["keys"],
                "seconds": round(seconds, 1),
                "customers_per_s": round(summary["selected"] / seconds),
            }
        )
    base = out["runs"][0]["customers_per_s"]
    for r in out["runs"]:
        r["vs_threads"] = round(r["customers_per_s"] / base, 2)
    return out


def _empty_ledger(engine) -> None:
    from sqlalchemy import delete, text

    from careflow.db.models import ContactHistory, Run

    with engine.begin() as conn:
        conn.execute(delete(ContactHistory).where(ContactHistory.campaign == CAMPAIGN))
        conn.execute(delete(Run).where(Run.campaign == CAMPAIGN))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE contact_history"))


def _settled(engine) -> dict:
    """Ledger rows of the campaign and distinct keys among them (equal: exactly once)."""
    from sqlalchemy import func, select

    from careflow.db.models import ContactHistory as CH

    mine = CH.campaign == CAMPAIGN
    keys = select(CH.customer_id, CH.occasion).where(mine).distinct().subquery()
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).where(mine)).scalar_one()
        distinct = conn.execute(select(func.count()).select_from(keys)).scalar_one()
    return {"rows": rows, "keys": distinct}


def render(r: dict) -> str:
    lines = [
        f"Measured {r['when']} on {r['machine']}; {r['shop']}.",
        "",
        f"| {r['campaign']} on the outbox, SMS | selected | sent | seconds | customers/s "
        "| vs threads |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {x['runner']} | {x['selected']:,} | {x['sent']:,} | {x['seconds']} "
        f"| {x['customers_per_s']:,} | {x['vs_threads']} |"
        for x in r["runs"]
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dialect", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--url", help="a database that already holds a shop (bench/shop.py)")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=5_000_000)
    parser.add_argument("--batch-size", type=int, help="customers per batch (the default)")
    parser.add_argument("--quick", action="store_true", help="3,000 customers: seconds")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.customers, args.orders, args.batch_size = 3_000, 15_000, 250
    cleanup = None
    url = args.url
    if url is None:
        from bench.fixtures import fresh_database
        from bench.scale import _facts
        from bench.shop import generate

        url, cleanup = fresh_database(args.dialect)
        generate(url, args.customers, args.orders, quiet=True)
        _facts(url)
    os.environ["CAREFLOW_DATABASE_URL"] = url
    try:
        from sqlalchemy import func, select

        from careflow import db
        from careflow.db.models import Customer

        with db.engine_for(url).connect() as conn:
            customers = conn.execute(select(func.count()).select_from(Customer)).scalar_one()
        result = {
            "when": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}",
            "shop": f"{customers:,} customers on {db.engine_for(url).dialect.name}",
            **run(url, args.batch_size),
        }
    finally:
        if cleanup:
            cleanup()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    print(render(result))


if __name__ == "__main__":
    main()

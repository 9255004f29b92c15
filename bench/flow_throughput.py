"""Messages per second through a real Prefect flow: batched tasks vs one task per message.

Both designs run the same route (select, policy, render, reserve, outbox,
record) on the same shop, in the same process, against the same local
Prefect API, so their ratio is what the design is worth.
"""

from __future__ import annotations

import os
import time
from datetime import date

from bench.fixtures import fresh_database, populate, send_times_off

AS_OF = date(2026, 11, 22)


def run(customers: int = 5_000, per_message_sample: int = 300) -> dict:
    url, cleanup = fresh_database("sqlite")
    home = url.removeprefix("sqlite:///").rsplit("/", 1)[0]
    os.environ.update(CAREFLOW_DATABASE_URL=url, CAREFLOW_HOME=home)
    send_times_off()
    from careflow.settings import load_settings

    try:
        populate(url, customers, 0, AS_OF, birthday_today=True)
        from prefect import flow

        from careflow.campaigns import load_campaign
        from careflow.flows.campaign import process_batch_task
        from careflow.flows.care import birthday
        from careflow.flows.route import RunPlan

        @flow(name="bench-warm-up")
        def warm_up():
            return 1

        warm_up()  # start the local API before timing anything

        # A dry run makes every decision the real run will, its holds in the
        # database (careflow/ledger/dry_run.py) instead of ledger rows.
        t0 = time.perf_counter()
        rehearsal = birthday(as_of=AS_OF, allow_past=True, dry_run=True)
        dry_s = time.perf_counter() - t0
        would_send = sum(rehearsal["would_send"].values())

        t0 = time.perf_counter()
        summary = birthday(as_of=AS_OF, allow_past=True)
        batched_s = time.perf_counter() - t0
        assert summary["sent"] == would_send, (summary["sent"], would_send)

        @flow(name="bench-task-per-message")
        def per_message(ids: list[int]):
            settings = load_settings()
            run = RunPlan(
                spec=load_campaign("birthday", settings.templates_dir),
                run_id="per-message",
                as_of=AS_OF,
                at=_noon(),
                settings=settings,
            )
            futures = [process_batch_task.submit(run, cid, cid) for cid in ids]
            results = [f.result() for f in futures]
            failed = [r for res in results for r in res["failed"].items()]
            # those the holdout keeps out are decided, not sent: the route ran for them too
            return sum(r["sent"] + r["held_out"] for r in results), failed

        # The first run sent everyone: a second campaign name would need new
        # templates, so clear the ledger for the sample instead.
        _clear_ledger(url)
        t0 = time.perf_counter()
        sent, failed = per_message(list(range(1, per_message_sample + 1)))
        per_message_s = time.perf_counter() - t0
        assert sent == per_message_sample, (sent, failed)
        batched_rate = customers / batched_s
        per_message_rate = per_message_sample / per_message_s
        return {
            "customers": customers,
            "batch_size": load_settings().batch_size,
            "batched_msgs_per_s": round(batched_rate),
            "task_per_message_msgs_per_s": round(per_message_rate, 1),
            "ratio": round(batched_rate / per_message_rate, 1),
            "dry_run_msgs_per_s": round(customers / dry_s),
            "dry_run_vs_real": round(batched_s / dry_s, 2),
        }
    finally:
        cleanup()


def _noon():
    from datetime import UTC, datetime
    from datetime import time as dtime

    return datetime.combine(AS_OF, dtime(12), tzinfo=UTC)


def _clear_ledger(url):
    from sqlalchemy import delete

    from careflow import db
    from careflow.db.models import ContactHistory

    with db.engine_for(url).begin() as conn:
        conn.execute(delete(ContactHistory))

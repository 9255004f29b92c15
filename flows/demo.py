"""``careflow demo``: seed the embedded default and run the four care campaigns."""

from __future__ import annotations

from datetime import date

import click
from sqlalchemy import func, select

from careflow import db
from careflow.db.models import Customer
from careflow.report import summary_table
from careflow.settings import get_settings


def run_demo(*, customers: int, as_of: str | None, reseed: bool, seed_only: bool) -> list[dict]:
    settings = get_settings()
    url = settings.effective_database_url
    if reseed and url.startswith("sqlite:///"):
        from pathlib import Path

        db.engine_for.cache_clear()
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    db.upgrade(url)
    engine = db.engine_for(url)
    day = date.fromisoformat(as_of[:10]) if as_of else date.today()
    with engine.connect() as conn:
        existing = conn.execute(select(func.count(Customer.id))).scalar_one()
    if existing:
        click.echo(
            f"demo data: {existing} customers already in {engine.url} (--reseed to start over)"
        )
    else:
        from careflow.demo_data import seed_demo

        click.echo(f"seeding {customers} demo customers with two years of orders up to {day} ...")
        counts = seed_demo(engine, as_of=day, customers=customers)
        click.echo("  " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if seed_only:
        return []

    from flows.care import CARE_FLOWS

    click.echo(
        f"running {len(CARE_FLOWS)} care campaigns as of {day} on the "
        f"{settings.delivery} channel (Prefect's local API starts on first use) ..."
    )
    summaries = [fn(as_of=day.isoformat()) for fn in CARE_FLOWS.values()]
    click.echo("")
    click.echo(summary_table(summaries))
    again = sum(s["already"].get("sent", 0) for s in summaries)
    if again:
        click.echo(
            f"\n{again} message(s) were already sent for these occasions earlier: not sent again."
        )
    if settings.delivery == "outbox":
        click.echo(f"\nmessages written to {settings.effective_outbox_dir}/<campaign>/<channel>/")
    click.echo(
        "next: `careflow report last`, `careflow history <customer id>`, "
        "`careflow preview birthday --customer <id>`"
    )
    return summaries

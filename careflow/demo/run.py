"""``careflow demo``: seed the embedded default and run the four care campaigns."""

from __future__ import annotations

import os
import sys
from datetime import date

import click
from sqlalchemy import func, select

from careflow import db
from careflow.clock import resolve_as_of
from careflow.db.models import ContactHistory, Customer
from careflow.report import summary_table
from careflow.safe_text import for_terminal
from careflow.settings import load_settings
from careflow.tables import shorten


def run_demo(*, customers: int, as_of: str | None, reseed: bool, seed_only: bool) -> list[dict]:
    settings = load_settings()
    # the runs' own reading of --as-of: a bad or out-of-range date stops before any seeding
    day = resolve_as_of(as_of, settings.time_zone)[0] if as_of else date.today()
    url = settings.effective_database_url
    if reseed and url.startswith("sqlite:///"):
        from pathlib import Path

        db.engines.dispose(url)  # its connections closed before its files go
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    if reseed:  # a new shop: the old shop's messages must not linger in the outbox
        import shutil

        shutil.rmtree(settings.effective_outbox_dir, ignore_errors=True)
    db.upgrade(url)
    engine = db.engine_for(url)
    with engine.connect() as conn:
        existing = conn.execute(select(func.count(Customer.id))).scalar_one()
    if existing:
        click.echo(
            f"demo data: {existing} customers already in {db.shown_url(engine.url)} "
            "(--reseed to start over)"
        )
    else:
        from careflow.demo.data import seed_demo

        click.echo(f"seeding {customers} demo customers with two years of orders up to {day} ...")
        counts = seed_demo(engine, as_of=day, customers=customers)
        click.echo("  " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if seed_only:
        return []

    from careflow.flows.care import CARE_FLOWS

    click.echo(
        f"running {len(CARE_FLOWS)} care campaigns as of {day} on the "
        f"{settings.delivery} channel (Prefect's local API starts on first use) ..."
    )
    # the demo's shop is built around its as-of date, so a past one is meant
    summaries = [fn(as_of=day.isoformat(), allow_past=True) for fn in CARE_FLOWS.values()]
    click.echo("")
    click.echo(summary_table(summaries))
    again = sum(s["already"].get("sent", 0) for s in summaries)
    if again:
        click.echo(
            f"\n{again} message(s) were already sent for these occasions earlier: not sent again."
        )
    click.echo("\none message from each campaign:")
    for row in _examples(engine, [s["campaign"] for s in summaries]):
        click.echo(  # the demo may run on a shop's own customers: their text is data
            for_terminal(
                f"  {row.campaign:17} #{row.customer_id:<6} {row.channel:5} {row.recipient}: "
                f"{shorten(row.subject or row.body or '', 70)}"
            )
        )
    if settings.delivery == "outbox":
        click.echo(f"\nevery message is in {settings.effective_outbox_dir}/<campaign>/<channel>/")
        _hear_back(engine, settings)
        _compare_with_holdout(engine, settings, [s["campaign"] for s in summaries])
        _experiments(engine, settings, [s["campaign"] for s in summaries])
    prog = sys.argv[0] if "/" in sys.argv[0] else "careflow"
    prog = os.path.relpath(prog) if os.path.isabs(prog) else prog
    who, birthday = _look_around(engine, day)
    click.echo("\nnext, on this data:")
    click.echo(f"  {prog} report last")
    click.echo(f"  {prog} report responses")
    click.echo(f"  {prog} report uplift winback")
    click.echo(f"  {prog} report experiment winback")
    if who:
        click.echo(f"  {prog} history {who}")
    if birthday:
        click.echo(f"  {prog} preview birthday --customer {birthday} --as-of {day}")
    return summaries


def _hear_back(engine, settings) -> None:
    """The responses a real shop would get, simulated through the live ingestion code."""
    from careflow.demo.responses import simulate_responses
    from careflow.report import response_summary, responses_table

    click.echo("\nhearing back (simulated provider callbacks, through careflow serve's own code):")
    simulate_responses(
        engine, window_days=settings.attribution_window_days, shop_zone=settings.time_zone
    )
    click.echo(responses_table(response_summary(engine)))


def _compare_with_holdout(engine, settings, campaigns: list[str]) -> None:
    """Does contact pay? Each campaign's contacted customers against its held-out ones."""
    from careflow.uplift import uplift_overview, uplift_report

    reports = [
        uplift_report(
            engine,
            name,
            window_days=settings.attribution_window_days,
            shop_zone=settings.time_zone,
        )
        for name in campaigns
    ]
    if not any(r["groups"]["held_out"]["customers"] for r in reports):
        return
    click.echo(
        f"\ndid contact pay? customers held out of each campaign ({settings.holdout:.0%}, "
        f"drawn at random) against those contacted, orders within "
        f"{settings.attribution_window_days} days:"
    )
    click.echo(uplift_overview(reports))
    biggest = max(reports, key=lambda r: r["groups"]["held_out"]["customers"])
    click.echo(f"{biggest['campaign']}: {biggest['verdict']}")
    waiting = sum(sum(r["waiting"].values()) for r in reports)
    if waiting:
        click.echo(
            f"({waiting} customers in quiet hours join the comparison once their morning has "
            "come and their deferred messages are sent: `careflow deferred send`)"
        )


def _experiments(engine, settings, campaigns: list[str]) -> None:
    """The A/B tests among the campaigns: which variant pays more, so far."""
    from careflow.campaigns import load_campaign
    from careflow.experiment_report import experiment_report, experiment_table

    for name in campaigns:
        spec = load_campaign(name, settings.templates_dir)
        if spec.experiment is None:
            continue
        found = experiment_report(
            engine,
            spec,
            window_days=settings.attribution_window_days,
            shop_zone=settings.time_zone,
            baseline=settings.uplift_baseline_conversion,
        )
        click.echo(f"\nwhich message pays more? {experiment_table(found)}")


def _look_around(engine, day) -> tuple[int | None, int | None]:
    """A customer with a story to tell (a reply or opt-out), and one with a birthday today."""
    from careflow.db.models import ContactEvent

    with engine.connect() as conn:
        who = conn.execute(
            select(ContactEvent.customer_id)
            .where(
                ContactEvent.kind.in_(["opted_out", "replied"]),
                ContactEvent.customer_id.is_not(None),
            )
            .order_by(ContactEvent.id)
            .limit(1)
        ).scalar()
        if who is None:
            who = conn.execute(
                select(ContactHistory.customer_id)
                .where(ContactHistory.state == "sent")
                .order_by(ContactHistory.id)
                .limit(1)
            ).scalar()
        birthday = conn.execute(
            select(ContactHistory.customer_id)
            .where(ContactHistory.campaign == "birthday", ContactHistory.state == "sent")
            .order_by(ContactHistory.id)
            .limit(1)
        ).scalar()
    return who, birthday


def _examples(engine, campaigns: list[str]) -> list:
    """The latest sent message of each campaign, to show what was sent."""
    with engine.connect() as conn:
        return [
            row
            for name in campaigns
            if (
                row := conn.execute(
                    select(ContactHistory)
                    .where(ContactHistory.campaign == name, ContactHistory.state == "sent")
                    .order_by(ContactHistory.id.desc())
                    .limit(1)
                ).first()
            )
        ]

"""``careflow demo``: seed the embedded default, run the four care campaigns and advance
one journey."""

from __future__ import annotations

import os
import sys
from datetime import UTC, date, datetime, timedelta

import click
from sqlalchemy import func, select

from careflow import clock, db
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
    _advance_journey(engine, settings, day)
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
    if _journey_here(settings):
        click.echo(f"  {prog} journey status {DEMO_JOURNEY}")
        click.echo(f"  {prog} journey show {DEMO_JOURNEY} --mermaid")
        scenario = settings.templates_dir / DEMO_JOURNEY / "scenario.yaml"
        if scenario.is_file():
            shown = os.path.relpath(scenario) if scenario.is_absolute() else scenario
            click.echo(f"  {prog} journey simulate {DEMO_JOURNEY} --from {day + timedelta(days=1)} "
                       f"--to {day + timedelta(days=90)} --events {shown}")  # fmt: skip
    if who:
        click.echo(f"  {prog} history {who}")
    if birthday:
        click.echo(f"  {prog} preview birthday --customer {birthday} --as-of {day}")
    return summaries


#: the journey the demo advances once (templates/lapsing_journey/journey.yaml)
DEMO_JOURNEY = "lapsing_journey"


def _journey_here(settings) -> bool:
    """A shop's own templates folder may not have the demo's journey."""
    from careflow.journey_spec import list_journeys

    return DEMO_JOURNEY in list_journeys(settings.templates_dir)


def _advance_journey(engine, settings, day: date) -> None:
    """One advance of the demo's journey on the demo's day, at the real clock's time of
    day (as the campaigns judge send times), and what it did, step by step."""
    from careflow.flows.journey import journey_advance
    from careflow.journey_spec import load_journey
    from careflow.journeys.advance import status
    from careflow.tables import text_table

    if not _journey_here(settings):
        return
    spec = load_journey(DEMO_JOURNEY, settings.templates_dir)
    now = clock.now().astimezone(UTC)
    at = datetime.combine(day, now.time(), tzinfo=UTC).replace(second=0, microsecond=0)
    click.echo(f"\nadvancing the journey {DEMO_JOURNEY} once ({spec.description.lower()}):")
    (summary,) = journey_advance(journey=DEMO_JOURNEY, as_of=at)
    st = status(engine, spec, at)
    held = summary["steps"].get("held_out", 0)
    click.echo(f"  {summary['new_entries']} customer(s) entered, {held} of them held out "
               "(the journey's comparison group: nothing is sent to them)")  # fmt: skip
    for step, outcomes in st["outcomes"].items():
        if step == "_entry":
            continue
        done = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
        click.echo(f"  step {step}: {done}{_channels(engine, spec.name, step)}")
    rows = [[r["step"], _state(spec, r), str(r["customers"]), _when(r)]
            for r in st["positions"] if r["state"] in ("active", "waiting")]  # fmt: skip
    if rows:
        click.echo("  where they are now:")
        table = text_table(["step", "state", "customers", "until (UTC)"], rows)
        click.echo("\n".join("    " + line for line in table.splitlines()))
    click.echo("  (the next advances, every 5 minutes when deployed, take each on when their "
               "wait ends or they answer)")  # fmt: skip
    _simulate_journey(settings, day)


#: the days after the demo's day its journey is simulated over
SIMULATED_DAYS = 14


def _simulate_journey(settings, day: date) -> None:
    """The journey's next days, simulated on a copy of the demo's database with the
    responses in its scenario.yaml: a line per day, then the customers per step."""
    from careflow.flows.journey_simulate import simulate_journey
    from careflow.journeys.simulation import report_text

    scenario = settings.templates_dir / DEMO_JOURNEY / "scenario.yaml"
    if not scenario.is_file():
        return
    start, end = day + timedelta(days=1), day + timedelta(days=SIMULATED_DAYS)
    click.echo(f"\nthe journey's next {SIMULATED_DAYS} days, simulated with the responses in "
               f"templates/{DEMO_JOURNEY}/scenario.yaml (on a copy: nothing written, "
               "nothing sent):")  # fmt: skip
    result = simulate_journey(DEMO_JOURNEY, start, end, events=scenario, settings=settings)
    text = report_text(result, short=True)
    click.echo("\n".join("  " + line if line else "" for line in text.splitlines()))


def _channels(engine, journey: str, step: str) -> str:
    """`` (sms 12, email 3)``: the channels a send step's messages went by."""
    from careflow.journey_spec import step_campaign_name

    with engine.connect() as conn:
        rows = conn.execute(
            select(ContactHistory.channel, func.count())
            .where(
                ContactHistory.campaign == step_campaign_name(journey, step),
                ContactHistory.state == "sent",
            )
            .group_by(ContactHistory.channel)
            .order_by(func.count().desc())
        ).all()
    return f" (sent by {', '.join(f'{ch} {n}' for ch, n in rows)})" if rows else ""


def _state(spec, row: dict) -> str:
    from careflow.journey_spec import SendStep, WaitForStep

    if row["state"] == "active" or row["step"] not in {s.id for s in spec.steps}:
        return "due" if row["state"] == "active" else "waiting"
    step = spec.step(row["step"])
    if isinstance(step, SendStep):
        return "message waits for its send time"
    if isinstance(step, WaitForStep):
        return f"waiting for {' or '.join(step.event)}"
    return "waiting"


def _when(row: dict) -> str:
    first, last = row["first_due"], row["last_due"]
    if first is None:
        return ""
    if first == last or last is None:
        return f"{first:%Y-%m-%d %H:%M}"
    return f"{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M}"


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
    from careflow.experiment_report import experiment_table, report_for

    for name in campaigns:
        spec = load_campaign(name, settings.templates_dir)
        if spec.experiment is None:
            continue
        found = report_for(engine, spec, settings)
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

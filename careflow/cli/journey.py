"""``careflow journey``: journeys in templates/, where their customers stand, advancing."""

from __future__ import annotations

import json
from pathlib import Path

import click

from careflow.cli.common import _as_of_option, _echo, _engine, _progress_bars, _settings
from careflow.progress import listening


@click.group()
def journey():
    """Multi-step journeys (templates/<journey>/journey.yaml): list, show, status, advance,
    simulate."""


@journey.command("list")
def journey_list():
    """Every journey in templates/: its entry, steps and version."""
    from careflow.journey_spec import list_journeys, load_journey
    from careflow.tables import text_table

    s = _settings()
    names = list_journeys(s.templates_dir)
    if not names:
        _echo(f"no journeys in {s.templates_dir}")
        return
    rows = []
    for name in names:
        spec = load_journey(name, s.templates_dir)
        e = spec.entry
        entry = f"segment {e.segment}" if e.segment else f"event {e.event}"
        rows.append([name, spec.category, entry, spec.once, str(len(spec.steps)), spec.version])
    _echo(text_table(["journey", "category", "entry", "once", "steps", "version"], rows))


@journey.command("show")
@click.argument("name")
@click.option("--mermaid", is_flag=True,
              help="Print the journey as a Mermaid flowchart with live counts per step.")
def journey_show(name, mermaid):
    """A journey's steps in order, each with where it leads."""
    from careflow.journey_spec import load_journey, step_campaign_name

    spec = load_journey(name, _settings().templates_dir)
    if mermaid:
        from careflow.journeys.diagram import live_counts
        from careflow.journeys.diagram import mermaid as flowchart

        _echo(flowchart(spec, live_counts(_engine(), spec)), nl=False)
        return
    entry = (f"segment {spec.entry.segment} {spec.entry.parameters or ''}".strip()
             if spec.entry.segment else f"event {spec.entry.event}")  # fmt: skip
    holdout = "settings (CAREFLOW_HOLDOUT)" if spec.holdout is None else f"{spec.holdout:.0%}"
    _echo(f"{spec.name} (version {spec.version}, {spec.category}): {spec.description}")
    _echo(f"entry: {entry}; once: {spec.once}; holdout: {holdout}")
    _echo(f"exit on: {', '.join(spec.exit_on) or 'nothing'}")
    for i, step in enumerate(spec.steps, start=1):
        leads = ", ".join(spec.successors(step.id)) or "end"
        what = step.type
        if step.type == "send":
            what += f" {'/'.join(step.channels)} as {step_campaign_name(spec.name, step.id)}"
        elif step.type == "wait":
            what += f" until {step.until} local" if step.until else f" {step.duration}"
        elif step.type == "wait_for":
            what += f" {'/'.join(step.event)} within {step.within}"
        _echo(f"{i:>3}. {step.id}: {what} -> {leads}")


@journey.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def journey_status(name, as_json):
    """Customers per step and state, waiting until when, step outcomes and exits by reason,
    and whether the journey pays: its customers' conversions and revenue against its
    holdout's, with the difference and its 95% interval."""
    from careflow import clock
    from careflow.journey_spec import load_journey
    from careflow.journeys import holdout
    from careflow.journeys.advance import status
    from careflow.tables import text_table

    settings = _settings()
    spec = load_journey(name, settings.templates_dir)
    engine = _engine()
    st = status(engine, spec, clock.now())
    st["holdout"] = holdout.journey_uplift(engine, spec, settings)
    if as_json:
        _echo(json.dumps(st, indent=2, ensure_ascii=False, default=str))
        return
    _echo(f"{spec.name} version {spec.version}")
    if not st["positions"]:
        _echo("nobody has entered yet")
        return

    def when(value):
        return f"{value:%Y-%m-%d %H:%M}" if value else ""

    _echo(text_table(
        ["step", "state", "customers", "next due (UTC)", "last due (UTC)"],
        [[r["step"], r["state"], str(r["customers"]), when(r["first_due"]),
          when(r["last_due"])] for r in st["positions"]],
    ))  # fmt: skip
    outcomes = [[step, outcome, str(n)] for step, d in st["outcomes"].items()
                for outcome, n in sorted(d.items())]  # fmt: skip
    if outcomes:
        _echo()
        _echo(text_table(["step", "outcome", "customers"], outcomes))
    if st["exits"]:
        _echo()
        _echo(text_table(["exited on", "customers"],
                         [[k, str(v)] for k, v in sorted(st["exits"].items())]))  # fmt: skip
    _echo()
    _echo(holdout.table(st["holdout"]))


@journey.command("advance")
@click.argument("name", required=False)
@_as_of_option
@click.option("--dry-run", is_flag=True, help="Say what is due per step; change nothing.")
def journey_advance_cmd(name, as_of, dry_run):
    """Enter customers and move the due ones a step on (every journey, or NAME), once.

    The deployment `journey-advance-every-5-minutes` in prefect.yaml does this on a
    schedule; --as-of advances at another instant (default now).
    """
    from careflow.flows.journey import due_now, journey_advance
    from careflow.tables import text_table

    if dry_run:
        rows = [[d["journey"], step, str(n)] for d in due_now(name, as_of)
                for step, n in d["due"].items()]  # fmt: skip
        _echo(text_table(["journey", "step", "due"], rows) if rows else "nothing is due")
        return
    _engine()
    summaries = journey_advance(journey=name, as_of=as_of)
    _echo(text_table(
        ["journey", "entered", "steps", "exits", "waiting"],
        [[s["journey"], str(s["new_entries"]),
          ", ".join(f"{k} {v}" for k, v in sorted(s["steps"].items())) or "-",
          ", ".join(f"{k} {v}" for k, v in sorted(s["exits"].items())) or "-",
          str(s["waiting"])] for s in summaries],
    ))  # fmt: skip


@journey.command("simulate")
@click.argument("name")
@click.option("--from", "start", required=True, metavar="DATE",
              help="First day to advance on (YYYY-MM-DD, the shop's calendar).")
@click.option("--to", "end", required=True, metavar="DATE", help="Last day (YYYY-MM-DD).")
@click.option("--events", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A scenario file: the customers' simulated responses (docs/journeys.md).")
@click.option("--at", "at", default="10:00", show_default=True,
              help="The shop's local time of each day's advance.")
@click.option("--every", default="1 day", show_default=True,
              help="Advance this often (e.g. '6 hours'); the deployment advances every 5 minutes.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--mermaid", is_flag=True, help="Also print the end state as a Mermaid flowchart.")
def journey_simulate(name, start, end, events, at, every, as_json, mermaid):
    """Advance NAME day by day from --from to --to on a scratch copy of the database, with
    the scenario's simulated responses: entries, sends per step and local hour,
    deferrals, cap collisions, exits, customers per step. Nothing is written to the
    database; nothing is sent."""
    from careflow.flows.journey_simulate import simulate_journey
    from careflow.journeys.simulation import report_text

    first, last = _day("--from", start), _day("--to", end)
    _engine()
    with _progress_bars() as bar, listening(bar):
        result = simulate_journey(name, first, last, events=events, at=at, every=every,
                                  settings=_settings())  # fmt: skip
    if as_json:
        _echo(json.dumps(result, indent=2, ensure_ascii=False, default=str))
        return
    _echo(report_text(result))
    if mermaid:
        _echo()
        _echo(result["mermaid"], nl=False)
    _echo("\n(simulated on a copy of the database: nothing was written and nothing sent)")


def _day(option: str, value: str):
    from datetime import date

    from careflow.errors import ConfigError

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} {value!r} is not a date such as 2026-06-01") from None

"""The ``careflow`` command: a thin skin over library calls.

Every command has --help; tests/test_cli.py checks each one is documented
in the README.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from careflow.errors import CareflowError

# Prefect's local server can take >20 s to start on a busy machine (its default limit).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# One line per task run drowns the flow's own progress lines in a terminal;
# the Prefect UI still shows every task run.
os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "WARNING")


def _settings():
    from careflow.settings import get_settings

    return get_settings()


def _engine(migrate: bool = False):
    from careflow import db

    url = _settings().effective_database_url
    if migrate:
        db.upgrade(url)
    engine = db.engine_for(url)
    db.ensure_schema(engine)
    return engine


def _parse_params(pairs: tuple[str, ...]) -> dict:
    """key=value pairs; values are read as YAML so 180 is a number and [a, b] a list."""
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--param")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


class CareflowGroup(click.Group):
    """Turns careflow's own errors into one readable line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CareflowError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=CareflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="careflow")
def main():
    """careflow: customer-care campaigns (birthday, reorder reminder, win-back, VIP care).

    Configure with CAREFLOW_* environment variables (see README); by default
    everything runs on a local SQLite file and the outbox channel.
    """


# --- db ---------------------------------------------------------------------
@main.group()
def db():
    """Database schema commands."""


@db.command("upgrade")
def db_upgrade():
    """Create or migrate the careflow tables in CAREFLOW_DATABASE_URL."""
    from careflow import db as cdb

    url = _settings().effective_database_url
    cdb.upgrade(url)
    click.echo(f"database is up to date: {cdb.engine_for(url).url.render_as_string()}")


# --- data in ----------------------------------------------------------------
@main.command()
@click.option("--customers", default=10_000, show_default=True, help="How many demo customers.")
@click.option("--as-of", default=None, help="Date the demo runs on (default: today).")
@click.option("--reseed", is_flag=True, help="Wipe the demo database and seed it again.")
@click.option("--seed-only", is_flag=True, help="Seed the data but run no campaigns.")
def demo(customers, as_of, reseed, seed_only):
    """Seed demo customers and run the four care campaigns on the outbox.

    Safe to run again: the data is seeded once, and a second run the same
    day sends nothing new (the ledger says who already got what).
    """
    from demo.run import run_demo

    run_demo(customers=customers, as_of=as_of, reseed=reseed, seed_only=seed_only)


@main.group("import")
def import_():
    """Load data from files."""


_encoding_option = click.option(
    "--encoding",
    default=None,
    metavar="NAME",
    help="The file's encoding, e.g. cp1252 or latin-1. Default: UTF-8, or what a byte "
    "order mark says; a file that is not stops with the line that shows it.",
)


def _map_option(fields: str, default: str):
    return click.option(
        "--map",
        "mapping",
        multiple=True,
        metavar="FIELD=COLUMN",
        help=f"Column for a field: {fields}. Default: {default}.",
    )


def _mapping(pairs: tuple[str, ...]) -> dict[str, str] | None:
    fields = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair[:60]!r} is not FIELD=COLUMN", param_hint="--map")
        k, v = pair.split("=", 1)
        fields[k.strip()] = v.strip()
    return fields or None


_file_argument = click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


@import_.command("orders")
@_file_argument
@_map_option(
    "invoice, sku, description, quantity, ordered_at, unit_price, customer, country",
    "the UCI Online Retail columns",
)
@click.option("--currency", default="GBP", show_default=True, help="Currency of the amounts.")
@_encoding_option
def import_orders(file, mapping, currency, encoding):
    """Import a transactions CSV (or .csv.gz): customers, products, orders, lines.

    Cancellations (invoice C...) and non-positive quantities are not
    purchases; rows that cannot be read or are out of bounds are listed with
    their line numbers and the rest is loaded; a row repeated exactly loads once.
    """
    from importers.orders import import_orders as run_import

    report = run_import(
        _engine(migrate=True), file, mapping=_mapping(mapping), currency=currency, encoding=encoding
    )
    click.echo(report.summary())


@import_.command("customers")
@_file_argument
@_map_option(
    "ref, full_name, given_name, family_name, mobile, email, fax, locale, time_zone, "
    "birthday, grade, owner, country, preferred_channel",
    "columns named like the fields",
)
@_encoding_option
def import_customers(file, mapping, encoding):
    """Import customers from a CSV: contacts, locale, time zone, birthday and more.

    Matched by ref: a new ref creates a customer, a known one is updated
    with the fields its row fills in (an empty cell changes nothing). Bad
    rows are listed with their line numbers and the rest is loaded.
    """
    from importers.customers import import_customers as run_import

    report = run_import(_engine(migrate=True), file, mapping=_mapping(mapping), encoding=encoding)
    click.echo(report.summary())


@import_.command("consents")
@_file_argument
@_map_option("customer, channel, granted, source, when", "columns named like the fields")
@_encoding_option
def import_consents(file, mapping, encoding):
    """Import consent decisions from a CSV: customer ref, channel, granted, source, when.

    The latest decision per customer and channel wins, and one older than
    what careflow holds is not applied. Bad rows (an unknown customer, a
    channel that is not sms/email/fax) are listed with their line numbers.
    """
    from importers.consents import import_consents as run_import

    report = run_import(_engine(migrate=True), file, mapping=_mapping(mapping), encoding=encoding)
    click.echo(report.summary())


# --- segments ------------------------------------------------------------------
@main.group()
def segment():
    """Inspect segments: who a campaign would select."""


_as_of_option = click.option(
    "--as-of", default=None, help="Date (YYYY-MM-DD) or ISO date-time; default: now."
)
_param_option = click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Segment parameter, e.g. days=365 (repeatable).",
)


def _segment_select(name, as_of, params):
    import segments
    from careflow.clock import resolve_as_of

    day, at = resolve_as_of(as_of, _settings().time_zone)
    return segments.build(name, day, _parse_params(params), at=at)


@segment.command("count")
@click.argument("name")
@_as_of_option
@_param_option
def segment_count(name, as_of, params):
    """How many customers are in segment NAME (birthday, reorder_due, dormant, vip, pyramid)."""
    import segments

    engine = _engine()
    query = _segment_select(name, as_of, params)
    with engine.connect() as conn:
        click.echo(segments.count(conn, query))


@segment.command("list")
@click.argument("name")
@_as_of_option
@_param_option
@click.option("--limit", default=20, show_default=True, help="Rows to show (0: all).")
def segment_list(name, as_of, params, limit):
    """List customers in segment NAME: who they are, and the segment's columns."""
    from sqlalchemy import select

    from careflow.db.models import Customer
    from careflow.money import with_amounts
    from careflow.report import text_table

    engine = _engine()
    seg = _segment_select(name, as_of, params).subquery("seg")
    query = (
        select(
            seg.c.customer_id,
            Customer.external_ref.label("ref"),
            Customer.full_name.label("name"),
            *[c for c in seg.c if c.name != "customer_id"],
        )
        .join(Customer, Customer.id == seg.c.customer_id)
        .order_by(seg.c.customer_id)
    )
    if limit:
        query = query.limit(limit)
    with engine.connect() as conn:
        result = conn.execute(query)
        # money columns (monetary_minor) shown as amounts (monetary), as templates see them
        cols = list(with_amounts(dict.fromkeys(result.keys())))
        shown = [with_amounts(r) for r in result.mappings()]
    rows = [["" if v is None else str(v) for v in r.values()] for r in shown]
    click.echo(text_table(cols, rows))


# --- campaigns --------------------------------------------------------------
@main.command("campaigns")
def campaigns_cmd():
    """List the campaigns defined under templates/."""
    from careflow.campaigns import list_campaigns, load_campaign

    s = _settings()
    for name in list_campaigns(s.templates_dir):
        spec = load_campaign(name, s.templates_dir)
        click.echo(f"{name:18} {spec.segment:12} {'/'.join(spec.channels):15} {spec.description}")


@main.command()
@click.argument("campaign")
@click.option("--customer", "customer_id", type=int, required=True, help="Customer id.")
@_as_of_option
@click.option(
    "--channel",
    type=click.Choice(["sms", "email", "fax"]),
    default=None,
    help="Preview this channel instead of the one the customer would get.",
)
def preview(campaign, customer_id, as_of, channel):
    """Show the message CUSTOMER would get from CAMPAIGN, without sending anything."""
    from flows.preview import preview_message

    click.echo(preview_message(_engine(), campaign, customer_id, as_of, channel))


@main.command()
@click.argument("campaign")
@_as_of_option
@click.option("--dry-run", is_flag=True, help="Select and render, but send and record nothing.")
@click.option(
    "--channel",
    type=click.Choice(["sms", "email", "fax", "outbox"]),
    default=None,
    help="Use this channel for everyone this run (outbox: deliver to the local outbox).",
)
def run(campaign, as_of, dry_run, channel):
    """Run CAMPAIGN now as a Prefect flow and print its summary."""
    from careflow.clock import resolve_as_of
    from careflow.report import summary_table
    from flows.campaign import campaign_flow
    from flows.care import CARE_FLOWS

    _engine()  # fail fast on an unmigrated database, before Prefect starts
    if as_of:
        resolve_as_of(as_of, _settings().time_zone)  # a clear error for a malformed date
    fn = CARE_FLOWS.get(campaign)
    summary = (
        fn(as_of=as_of, channel=channel, dry_run=dry_run)
        if fn
        else campaign_flow(campaign=campaign, as_of=as_of, channel=channel, dry_run=dry_run)
    )
    click.echo(summary_table([summary]))
    if summary["already"].get("sent"):
        click.echo(
            f"{summary['already']['sent']} customer(s) already got this occasion's "
            "message earlier: not sent again."
        )
    if dry_run and summary["samples"]:
        click.echo("\nsamples:")
        for s in summary["samples"]:
            click.echo(f"  #{s['customer_id']} {s['channel']} {s['to']}: {s['text'] or s['error']}")


@main.command()
@click.argument("customer_id", type=int)
@click.option("--limit", default=50, show_default=True)
def history(customer_id, limit):
    """Show CUSTOMER's contact history: every message and what happened to it."""
    from careflow.ledger import ContactLedger

    rows = ContactLedger(_engine()).history(customer_id, limit)
    if not rows:
        click.echo(f"no contact history for customer {customer_id}")
        return
    for r in rows:
        when = (r["sent_at"] or r["updated_at"]).isoformat(sep=" ", timespec="minutes")
        state = r["state"] + (f" ({r['reason']})" if r["reason"] else "")
        click.echo(f"{when}  {r['campaign']:17} {r['occasion']:17} {r['channel'] or '-':6} {state}")
        if r["body"]:
            click.echo(f"    {r['body'].splitlines()[0][:100]}")
        if r["detail"]:
            click.echo(f"    why: {r['detail'][:200]}")
        for e in r["events"]:
            click.echo(f"    {e['occurred_at']:%Y-%m-%d %H:%M}  {e['kind']}")


@main.command()
@click.argument("campaign")
@click.option("--reason", required=True, help="Failure reason to release, e.g. interrupted.")
@click.option("--customer", "customer_id", type=int, default=None, help="Only this customer.")
def retry(campaign, reason, customer_id):
    """Let the next run of CAMPAIGN send failed messages with REASON again.

    careflow never resends a message that may have gone out (reason
    `interrupted`) on its own; after checking the provider's logs, this is
    how a person says "send it".
    """
    from careflow.ledger import ContactLedger

    n = ContactLedger(_engine()).allow_retry(campaign, reason, customer_id)
    click.echo(
        f"{n} failed message(s) of {campaign} with reason {reason} will be tried again "
        "by the next run"
    )


@main.group()
def report():
    """Reports on campaign runs."""


@report.command("last")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--include-dry-runs", is_flag=True, help="Also consider dry runs.")
def report_last(as_json, include_dry_runs):
    """The latest run of each campaign: selected, sent, skipped and failed by reason."""
    from careflow.report import last_runs, summary_table

    runs = last_runs(_engine(), include_dry_runs)
    if as_json:
        click.echo(json.dumps(runs, indent=2, ensure_ascii=False, default=str))
    elif not runs:
        click.echo("no campaign has run yet: try `careflow demo` or `careflow run birthday`")
    else:
        click.echo(summary_table(runs))


if __name__ == "__main__":
    main()

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

import channels  # noqa: F401 - registers the built-in channels
from careflow import registry
from careflow.errors import CareflowError

# Prefect's local server can take >20 s to start on a busy machine (its default limit).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# One line per task run drowns the flow's own progress lines in a terminal;
# the Prefect UI still shows every task run.
os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "WARNING")


def _settings():
    from careflow.settings import load_settings

    return load_settings()


def _engine(migrate: bool = False):
    from careflow import db

    url = _settings().effective_database_url
    if migrate:
        db.upgrade(url)
    engine = db.engine_for(url)
    db.ensure_schema(engine)
    return engine


def _parse_params(pairs: tuple[str, ...]) -> dict:
    """key=value pairs; values are read as YAML so 180 is a number and [a, b] a list.

    The segment checks the values; here only the shape of each pair can be wrong.
    """
    import yaml

    from careflow.errors import ConfigError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param {pair!r} is not KEY=VALUE, e.g. --param days=365")
        if key in out:
            raise ConfigError(f"--param {key} is given twice; give each parameter once")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(
                f"--param {key}: {value!r} is not a value; write a number, a word, "
                "true/false, or a list such as [VIP, Large]"
            ) from None
    return out


class ChannelChoice(click.Choice):
    """A choice of registered channels, read when asked (a channel registered later counts)."""

    def __init__(self, content_only: bool = False):
        self.content_only = content_only
        super().__init__([])

    @property
    def choices(self):
        return registry.content_names() if self.content_only else registry.names()

    @choices.setter
    def choices(self, value):
        pass


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
    before = cdb.current_revision(url)
    cdb.upgrade(url)
    after = cdb.current_revision(url)
    where = cdb.engine_for(url).url.render_as_string()  # the password stays hidden
    if before is None:
        click.echo(f"created careflow's tables (migration {after}): {where}")
    elif before != after:
        click.echo(f"migrated from {before} to {after}: {where}")
    else:
        click.echo(f"already up to date (migration {after}): {where}")


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

    engine = _engine(migrate=True)
    report = run_import(
        engine, file, mapping=_mapping(mapping), currency=currency, encoding=encoding
    )
    click.echo(report.summary())
    _attribute(engine)


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


def _attribute(engine) -> None:
    """Orders that follow a delivered message become its conversions (docs/responses.md)."""
    from careflow.responses import attribute_orders

    settings = _settings()
    n = attribute_orders(engine, settings.attribution_window_days, settings.time_zone)
    if n:
        click.echo(f"{n} order(s) attributed to a delivered message as conversions")


# --- segments ------------------------------------------------------------------
@main.group()
def segment():
    """Inspect segments: who a campaign would select.

    Segments: birthday, lunar_birthday, holiday, reorder_due, dormant, vip,
    pyramid, clv. `careflow segment params NAME` lists a segment's parameters
    (set them with --param KEY=VALUE here, or under `parameters:` in a
    campaign.yaml).
    """


_as_of_option = click.option(
    "--as-of",
    default=None,
    help="Date (YYYY-MM-DD) or ISO date-time, 1900-01-01 to 2200-12-31; default: now.",
)
_param_option = click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Segment parameter, e.g. days=365 (repeatable).",
)


def _segment_select(name, as_of, params, engine=None):
    import segments
    from careflow.clock import resolve_as_of

    day, at = resolve_as_of(as_of, _settings().time_zone)
    params = _parse_params(params)
    if name in segments.NEEDS_PREPARE:  # e.g. clv: a model fitted on every customer first
        with (engine or _engine()).connect() as conn:
            params = segments.prepare(name, conn, day, params)
    return segments.build(name, day, params, at=at)


@segment.command("count")
@click.argument("name")
@_as_of_option
@_param_option
def segment_count(name, as_of, params):
    """How many customers are in segment NAME (see `careflow segment --help`)."""
    import segments

    engine = _engine()
    query = _segment_select(name, as_of, params, engine)
    with engine.connect() as conn:
        click.echo(segments.count(conn, query))


@segment.command("params")
@click.argument("name", required=False)
def segment_params(name):
    """The parameters of segment NAME (or of every segment): allowed values, default, meaning."""
    import yaml

    import segments

    names = [name] if name else list(segments.SEGMENTS)
    listed = {seg: segments.describe_params(seg) for seg in names}  # unknown NAME: error first
    for seg, params in listed.items():
        click.echo(f"{seg}:")
        for p in params:
            # the default as one would write it after --param KEY=
            default = yaml.safe_dump(p["default"], default_flow_style=True)
            default = default.removesuffix("\n").removesuffix("\n...")
            click.echo(f"  {p['name']}  {p['allowed']}; default {default}")
            click.echo(f"      {p['description']}")


@segment.command("list")
@click.argument("name")
@_as_of_option
@_param_option
@click.option(
    "--limit",
    type=int,
    default=None,
    help="Rows to show (0: all). Default: 20 for text, all for json and csv.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "csv"]),
    default="text",
    show_default=True,
    help="json and csv carry every column the segment computes, for a spreadsheet or a "
    "script.",
)
def segment_list(name, as_of, params, limit, fmt):
    """List customers in segment NAME: who they are, and every column the segment computes.

    Money columns are shown as amounts in the row's currency (as templates see
    them); json and csv print every row unless --limit says otherwise.
    """
    import csv
    import io

    from sqlalchemy import select

    from careflow.db.models import Customer
    from careflow.money import with_amounts
    from careflow.report import text_table

    engine = _engine()
    seg = _segment_select(name, as_of, params, engine).subquery("seg")
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
    if limit is None:
        limit = 20 if fmt == "text" else 0
    if limit:
        query = query.limit(limit)
    with engine.connect() as conn:
        result = conn.execute(query)
        # money columns (monetary_minor) shown as amounts (monetary), as templates see them
        cols = list(with_amounts(dict.fromkeys(result.keys())))
        shown = [with_amounts(r) for r in result.mappings()]
    if fmt == "json":
        plain = [{k: _plain(v) for k, v in r.items()} for r in shown]
        click.echo(json.dumps(plain, indent=2, ensure_ascii=False))
        return
    rows = [["" if v is None else str(_plain(v)) for v in r.values()] for r in shown]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([cols, *rows])
        click.echo(out.getvalue(), nl=False)
        return
    click.echo(text_table(cols, rows))


def _plain(value):
    """A value as JSON and CSV carry it: amounts as exact decimal text, dates as ISO."""
    from datetime import date
    from decimal import Decimal

    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


# --- campaigns --------------------------------------------------------------
@main.command("campaigns")
def campaigns_cmd():
    """List the campaigns defined under templates/."""
    from careflow.campaigns import campaign_folder_problems, list_campaigns, load_campaign

    s = _settings()
    for name in list_campaigns(s.templates_dir):
        spec = load_campaign(name, s.templates_dir)
        click.echo(f"{name:18} {spec.segment:12} {'/'.join(spec.channels):15} {spec.description}")
    for problem in campaign_folder_problems(s.templates_dir):
        click.secho(f"warning: {problem}", fg="yellow", err=True)


@main.command()
@click.argument("campaign")
@click.option("--customer", "customer_id", type=int, required=True, help="Customer id.")
@_as_of_option
@click.option(
    "--channel",
    type=ChannelChoice(content_only=True),
    default=None,
    help="Preview this channel instead of the one the customer would get.",
)
def preview(campaign, customer_id, as_of, channel):
    """Show the message CUSTOMER would get from CAMPAIGN, without sending anything."""
    from flows.preview import preview_message

    click.echo(preview_message(_engine(), campaign, customer_id, as_of, channel, _settings()))


@main.command()
@click.argument("campaign")
@_as_of_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Make every decision a real run would (contact history, policy, rendering); "
    "send and record nothing.",
)
@click.option(
    "--channel",
    type=ChannelChoice(),
    default=None,
    help="Use this channel for everyone this run (outbox: deliver to the local outbox).",
)
@click.option(
    "--allow-past",
    is_flag=True,
    help="Confirm a real run dated before today: it sends now what was meant for then.",
)
def run(campaign, as_of, dry_run, channel, allow_past):
    """Run CAMPAIGN now as a Prefect flow and print its summary.

    Ctrl-C (or SIGTERM) stops a run cleanly: messages not yet sent are left
    for the next run, and any in doubt are recorded as interrupted.
    """
    from careflow.campaigns import load_campaign

    # A misspelt campaign fails here, in one line, before Prefect is even imported.
    spec = load_campaign(campaign, _settings().templates_dir)
    from careflow.clock import resolve_as_of
    from careflow.report import summary_table
    from flows.campaign import campaign_flow, check_not_backdated, preflight
    from flows.care import CARE_FLOWS

    settings = _settings()
    _engine()  # fail fast on an unmigrated database, before Prefect starts
    if as_of:  # a clear error for a malformed or back-dated date, before Prefect starts
        day, _ = resolve_as_of(as_of, settings.time_zone)
        check_not_backdated(day, settings.time_zone, dry_run, allow_past)
    preflight(settings, spec, channel)  # parameters, templates, credentials: one line each
    from prefect import tags

    fn = CARE_FLOWS.get(campaign)
    kwargs = {"as_of": as_of, "channel": channel, "dry_run": dry_run, "allow_past": allow_past}
    labels = [f"campaign:{campaign}"] + ([f"channel:{channel}"] if channel else [])
    with tags(*labels, *(["dry-run"] if dry_run else [])):  # the flow run's tags in the UI
        summary = fn(**kwargs) if fn else campaign_flow(campaign=campaign, **kwargs)
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
@click.option("--limit", default=50, show_default=True, help="The latest N entries (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(customer_id, limit, as_json):
    """Show CUSTOMER's timeline: messages, delivery, replies, opt-outs, bounces and orders."""
    from careflow.ledger import timeline

    items = timeline(_engine(), customer_id, limit)
    if as_json:
        click.echo(json.dumps(items, indent=2, ensure_ascii=False, default=str))
        return
    if not items:
        click.echo(f"no contact history for customer {customer_id}")
        return
    for i in items:
        where = " ".join(x for x in (i["campaign"], i["channel"]) if x)
        click.echo(f"{i['at']:%Y-%m-%d %H:%M}  {i['what']:24} {where}")
        if i["text"]:
            click.echo(f"    {i['text']}")
        if i["detail"]:
            click.echo(f"    why: {i['detail'][:200]}")


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
    from careflow.errors import ConfigError
    from careflow.ledger import ContactLedger

    ledger = ContactLedger(_engine())
    reasons = ledger.failure_reasons(campaign)
    if reason not in reasons:
        known = ", ".join(f"{r} ({n})" for r, n in sorted(reasons.items())) or "none"
        raise ConfigError(
            f"no failed message of {campaign} has reason {reason!r}; failed ones by reason: {known}"
        )
    n = ledger.allow_retry(campaign, reason, customer_id)
    click.echo(
        f"{n} failed message(s) of {campaign} with reason {reason} will be tried again "
        "by the next run"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
def serve(host, port):
    """Receive delivery status, replies, opt-outs and unsubscribes (docs/responses.md).

    Runs until stopped. Put it behind your HTTPS reverse proxy and set
    CAREFLOW_PUBLIC_BASE_URL to the URL providers call.
    """
    import logging

    import uvicorn

    from service.app import create_app

    settings = _settings()
    app = create_app(settings, _engine())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    click.echo(f"careflow serve on http://{host}:{port} (public: {settings.public_base_url})")
    # uvicorn's access log prints query strings (unsubscribe tokens): ours prints paths only
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")


@main.group()
def report():
    """Reports: campaign runs, responses, and the customer pyramid with RFM scores."""


@report.command("runs")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Only runs started on or after this date (YYYY-MM-DD); default: all.",
)
@click.option("--limit", default=50, show_default=True, help="Most runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report_runs(since, limit, as_json):
    """Every run, newest first: when, as of, channel, status (failed and stopped too), counts."""
    from careflow.report import runs_since, runs_table

    runs = runs_since(_engine(), since, limit)
    if as_json:
        click.echo(json.dumps(runs, indent=2, ensure_ascii=False))
    elif not runs:
        click.echo("no runs yet: try `careflow demo` or `careflow run birthday`")
    else:
        click.echo(runs_table(runs))


@report.command("responses")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Only messages sent on or after this date (YYYY-MM-DD).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report_responses(since, as_json):
    """Per campaign: sent, delivered, replied, opted out, bounced, converted and revenue."""
    from careflow.report import response_summary, responses_table
    from careflow.responses import attribute_orders

    settings, engine = _settings(), _engine()
    attribute_orders(engine, settings.attribution_window_days, settings.time_zone)
    rows = response_summary(engine, since)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif not rows:
        click.echo("nothing sent yet: try `careflow demo`")
    else:
        click.echo(responses_table(rows))


def _day(value: str | None, option: str):
    """A YYYY-MM-DD option as a date (None stays None); one line when it is not one."""
    from datetime import date

    from careflow.clock import check_in_range
    from careflow.errors import ConfigError

    if value is None:
        return None
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"{option} {value!r} is not a date (YYYY-MM-DD)") from None
    check_in_range(day, option)
    return day


def _writing(path: Path, write):
    """Run ``write``; a file system refusal is one line naming the path."""
    from careflow.errors import ConfigError

    try:
        return write()
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


_REPORT_FORMATS = ("text", "json", "csv", "markdown", "html")


@report.command("pyramid")
@_as_of_option
@click.option(
    "--previous",
    default=None,
    help="Earlier date to measure tier movement against (YYYY-MM-DD); default: 90 days "
    "before --as-of.",
)
@_param_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(_REPORT_FORMATS),
    default="text",
    show_default=True,
    help="text, json or markdown print the report; csv writes one file per table into a "
    "folder; html writes one page with charts.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write: a file (html, or text/json/markdown instead of printing) or a "
    "folder (csv). Default for html: pyramid-DATE.html, for csv: pyramid-DATE/.",
)
@click.option(
    "--customers",
    is_flag=True,
    help="Also list every customer whose tier changed (text, json).",
)
def report_pyramid(as_of, previous, params, fmt, output, customers):
    """The customer pyramid and RFM scores: tiers, revenue shares, cut-offs, RFM grid, movement.

    --param sets the pyramid segment's parameters (window_days, vip_pct,
    large_pct, medium_pct, currency), as for `careflow segment list pyramid`.
    """
    from careflow.clock import resolve_as_of
    from insight import render
    from insight.pyramid import pyramid_report

    day, _ = resolve_as_of(as_of, _settings().time_zone)
    report = pyramid_report(
        _engine(), day, previous=_day(previous, "--previous"), params=_parse_params(params)
    )
    stem = f"pyramid-{day.isoformat()}"
    if fmt == "csv":
        folder = output or Path(stem)
        written = _writing(folder, lambda: render.write_csv(report, folder))
        click.echo(f"wrote {len(written)} tables to {folder}/: "
                   + ", ".join(p.name for p in written))
        return
    if fmt == "html":
        from insight.html import as_html

        path = output or Path(f"{stem}.html")
        _writing(path, lambda: path.write_text(as_html(report), encoding="utf-8"))
        click.echo(f"wrote {path} ({report.buyers:,} buyers as of {day.isoformat()})")
        return
    text = {
        "text": lambda: render.as_text(report, customers),
        "json": lambda: render.as_json(report, customers),
        "markdown": lambda: render.as_markdown(report),
    }[fmt]()
    if output:
        _writing(output, lambda: output.write_text(text + "\n", encoding="utf-8"))
        click.echo(f"wrote {output}")
    else:
        click.echo(text)


@report.command("clv")
@_as_of_option
@_param_option
@click.option(
    "--draws",
    type=click.IntRange(0, 1000),
    default=30,
    show_default=True,
    help="Bootstrap refits for the intervals (0: none, fastest).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "csv"]),
    default="text",
    show_default=True,
    help="csv writes matrix.csv, customers.csv and fit.json into a folder.",
)
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="File (text, json) or folder (csv; default clv-DATE/) to write to.")
@click.option("--customers", "top", type=int, default=10, show_default=True,
              help="Customers to list by predicted value (0: all); json lists all with 0.")
def report_clv(as_of, params, draws, fmt, output, top):
    """Customer value: spent in the window, and predicted (BG/NBD x Gamma-Gamma) with intervals.

    Per customer P(alive), expected purchases and predicted value over the
    horizon, each with a bootstrap interval; and the value matrix (retain,
    develop, maintain, convert_or_let_go) the clv segment selects by. --param
    takes the clv segment's parameters (window_days, horizon_days,
    current_high_pct, future_high_pct, currency). See docs/insight.md.
    """
    from careflow.clock import resolve_as_of
    from insight import clv

    day, _ = resolve_as_of(as_of, _settings().time_zone)
    report = clv.clv_report(_engine(), day, params=_parse_params(params), draws=draws)
    if fmt == "csv":
        folder = output or Path(f"clv-{day.isoformat()}")
        written = _writing(folder, lambda: clv.write_csv(report, folder))
        click.echo(f"wrote {', '.join(p.name for p in written)} to {folder}/")
        return
    text = clv.as_json(report, top == 0) if fmt == "json" else clv.as_text(report, top)
    if output:
        _writing(output, lambda: output.write_text(text + "\n", encoding="utf-8"))
        click.echo(f"wrote {output}")
    else:
        click.echo(text)


@report.command("replies")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Only replies from this date (YYYY-MM-DD).",
)
@click.option("--owner", default=None, help="Only this owner's customers.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report_replies(since, owner, as_json):
    """Replies a person should read (not STOP/退订), by the customer's owner."""
    from careflow.report import replies_by_owner, shorten

    replies = replies_by_owner(_engine(), since, owner)
    if as_json:
        click.echo(json.dumps(replies, indent=2, ensure_ascii=False))
        return
    if not replies:
        click.echo("no replies waiting for a person")
    for who, items in replies.items():
        click.echo(f"{who}: {len(items)} repl{'y' if len(items) == 1 else 'ies'}")
        for r in items:
            click.echo(
                f"  {r['at']}  #{r['customer_id']} {r['name'] or ''} ({r['campaign'] or '-'}): "
                f"{shorten(r['text'] or '', 80)}"
            )


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

"""The ``careflow`` command: a thin skin over library calls.

Every command has --help; tests/test_cli.py checks each one is documented
in the README.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy.exc import DBAPIError

import channels  # noqa: F401 - registers the built-in channels
from careflow import registry
from careflow.errors import CareflowError

# Prefect's local server can take >20 s to start on a busy machine (its default limit).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# The local server Prefect starts for a run sends usage telemetry unless told not to:
# offline (a CRM's database machine often is) each attempt printed an ERROR, and its
# heartbeat a "database is locked" traceback from the server's SQLite, in the middle
# of a run. A user who wants it sets the variable.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# One line per task run drowns the flow's own progress lines in a terminal;
# the Prefect UI still shows every task run.
os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "WARNING")


def _echo(text: object = "", **style) -> None:
    """Print careflow's output: names, replies and providers' messages are data, and any
    control or bidi character they carry is written out (``\\u001b``) instead of reaching
    the terminal (careflow/safe_text.py). Takes ``click.secho``'s arguments."""
    from careflow.safe_text import for_terminal

    click.secho(for_terminal(text, lines=True), **style)


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


@contextmanager
def _progress_bars():
    """A listener drawing one progress bar per stage on stderr, in a terminal only.

    Piped or captured output stays as it was: no bars, no control characters.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    bars = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    tasks: dict[str, int] = {}

    def listener(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield listener


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


#: the largest id or count careflow's databases hold (a signed 64-bit integer)
LARGEST = 2**63 - 1


class WholeNumber(click.ParamType):
    """An id or a count, ``minimum`` to LARGEST: anything else is a one-line error, never a
    number the database cannot take (a traceback) or a negative LIMIT (all rows on SQLite,
    an error on PostgreSQL)."""

    name = "integer"

    def __init__(self, minimum: int = 0):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"{str(value)[:40]!r} is not a whole number", param, ctx)
        if not self.minimum <= number <= LARGEST:
            self.fail(f"{number} is not from {self.minimum} to {LARGEST}", param, ctx)
        return number


ID, COUNT = WholeNumber(1), WholeNumber(0)


class CareflowGroup(click.Group):
    """Turns careflow's own errors, and a mistyped argument, into one line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CareflowError as exc:
            _echo(f"error: {exc}", fg="red", err=True)  # may quote a file's or a customer's text
            sys.exit(2)
        except DBAPIError as exc:  # a query the database refused: e.g. a sum past 64 bits
            reason = " ".join(str(exc.orig or exc).split())[:200]
            _echo(f"error: the database refused careflow's query: {reason}", fg="red", err=True)
            sys.exit(2)
        except click.UsageError as exc:
            if isinstance(exc, click.exceptions.NoArgsIsHelpError):
                raise
            command = exc.ctx.command_path if exc.ctx else "careflow"
            _echo(f"error: {exc.format_message()} (`{command} --help` says more)", err=True)
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
    where = cdb.shown_url(cdb.engine_for(url).url)  # the password stays hidden
    if before is None:
        _echo(f"created careflow's tables (migration {after}): {where}")
    elif before != after:
        _echo(f"migrated from {before} to {after}: {where}")
    else:
        _echo(f"already up to date (migration {after}): {where}")
    from careflow import purchase_facts

    refreshed = purchase_facts.refresh(cdb.engine_for(url), warn=click.echo)
    if refreshed:
        _echo(f"purchase facts brought up to date for {refreshed:,} customer(s)")


# --- data in ----------------------------------------------------------------
@main.command()
@click.option(
    "--customers", type=WholeNumber(1), default=10_000, show_default=True,
    help="How many demo customers.",
)
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
    names = {"read": "rows read", "orders": "orders loaded", "lines": "order lines loaded"}
    with _progress_bars() as bar:
        report = run_import(
            engine,
            file,
            mapping=_mapping(mapping),
            currency=currency,
            encoding=encoding,
            progress=lambda stage, done, total: bar(names.get(stage, stage), done, total),
        )
    _echo(report.summary())
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
    _echo(report.summary())


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
    _echo(report.summary())


def _attribute(engine) -> None:
    """Orders that follow a delivered message become its conversions (docs/responses.md)."""
    from careflow.responses import attribute_orders

    settings = _settings()
    n = attribute_orders(engine, settings.attribution_window_days, settings.time_zone)
    if n:
        _echo(f"{n} order(s) attributed to a delivered message as conversions")


# --- segments ------------------------------------------------------------------
@main.group()
def segment():
    """Inspect segments: who a campaign would select.

    `careflow segment params` lists every segment, whom it selects and its
    parameters (set them with --param KEY=VALUE here, or under `parameters:`
    in a campaign.yaml).
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


def _format_option(help: str):
    """``--format text|json|csv`` (as ``fmt``); ``help`` says what json and csv give."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "json", "csv"]),
        default="text",
        show_default=True,
        help=help,
    )


def _segment_select(name, as_of, params, engine=None):
    import segments
    from careflow.clock import resolve_as_of
    from careflow.money import check_stored_amounts

    day, at = resolve_as_of(as_of, _settings().time_zone)
    params = _parse_params(params)
    with (engine or _engine()).connect() as conn:
        check_stored_amounts(conn)  # segments sum orders: one line naming an absurd amount
        if segments.get(name).needs_prepare:  # e.g. clv: a model fitted on every customer first
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
        _echo(segments.count(conn, query))


@segment.command("params")
@click.argument("name", required=False)
def segment_params(name):
    """The parameters of segment NAME (or of every segment): allowed values, default, meaning."""
    import yaml

    import segments

    names = [name] if name else segments.names()
    listed = {seg: segments.describe_params(seg) for seg in names}  # unknown NAME: error first
    about = segments.describe_segments()
    for seg, params in listed.items():
        _echo(f"{seg}: {about[seg]}")
        for p in params:
            # the default as one would write it after --param KEY=
            default = yaml.safe_dump(p["default"], default_flow_style=True)
            default = default.removesuffix("\n").removesuffix("\n...")
            _echo(f"  {p['name']}  {p['allowed']}; default {default}")
            _echo(f"      {p['description']}")


@segment.command("list")
@click.argument("name")
@_as_of_option
@_param_option
@click.option(
    "--limit",
    type=COUNT,
    default=None,
    help="Rows to show (0: all). Default: 20 for text, all for json and csv.",
)
@_format_option(
    "json and csv carry every column the segment computes, for a spreadsheet or a script."
)
def segment_list(name, as_of, params, limit, fmt):
    """List customers in segment NAME: who they are, and every column the segment computes.

    Money columns are shown as amounts in the row's currency (as templates see
    them); json and csv print every row unless --limit says otherwise.
    """
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
        _echo(json.dumps(plain, indent=2, ensure_ascii=False))
        return
    rows = [["" if v is None else str(_plain(v)) for v in r.values()] for r in shown]
    if fmt == "csv":
        from careflow.csv_export import csv_text

        click.echo(csv_text(cols, rows), nl=False)  # cells made safe by the writer
        return
    _echo(text_table(cols, rows))


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
@click.option(
    "--prefect-yaml",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Deployments file holding the schedules. Default: prefect.yaml of this checkout.",
)
def campaigns_cmd(prefect_yaml):
    """List the campaigns in templates/ with their schedule and next run.

    Schedules come from prefect.yaml (`definitions: schedules:`), which
    `prefect deploy --all` applies; a schedule paused in the Prefect UI
    still shows its next run here.
    """
    from datetime import UTC, datetime

    from careflow.campaigns import campaign_folder_problems, list_campaigns, load_campaign
    from careflow.report import text_table
    from careflow.settings import PROJECT_ROOT
    from flows.schedules import campaign_schedules

    s = _settings()
    names = list_campaigns(s.templates_dir)
    path = prefect_yaml or PROJECT_ROOT / "prefect.yaml"
    schedules = []
    if prefect_yaml is not None or path.is_file():
        schedules = campaign_schedules(path, set(names), datetime.now(UTC))
    rows = []
    for name in names:
        spec = load_campaign(name, s.templates_dir)
        mine = [x for x in schedules if x.campaign == name]
        rows.append(
            [
                name,
                spec.segment,
                "/".join(spec.channels),
                "; ".join(f"{x.rule} {x.timezone}" for x in mine) or "not scheduled",
                "; ".join(x.next_run_text() for x in mine) or "-",
                spec.description,
            ]
        )
    _echo(
        text_table(["campaign", "segment", "channels", "schedule", "next run", "what"], rows)
    )
    if not path.is_file():
        _echo(f"(no {path}: schedules not shown)")
    for problem in campaign_folder_problems(s.templates_dir):
        _echo(f"warning: {problem}", fg="yellow", err=True)


@main.command()
@click.argument("campaigns", nargs=-1)
def lint(campaigns):
    """Check every template of every campaign (or just CAMPAIGNS) before anyone gets it.

    Renders each template in each of the campaign's locales for sample
    customers (every field filled in, only the required ones, long names)
    and reports every problem at once as FILE:LINE: REASON: syntax errors,
    variables a campaign does not have, values printed as None, an SMS over
    CAREFLOW_SMS_MAX_SEGMENTS, broken HTML, a locale variant missing, a
    channel in campaign.yaml without templates. Exit code 1 when there are
    problems, 0 when there are none.
    """
    from careflow.clock import resolve_as_of
    from careflow.lint import lint_templates
    from flows.preview import sample_context

    settings = _settings()
    day, _ = resolve_as_of(None, settings.time_zone)
    report = lint_templates(
        settings, lambda spec, sample: sample_context(spec, sample, day, settings), campaigns
    )
    for problem in report.problems:
        _echo(problem.describe())
    if report.problems:
        _echo(f"{len(report.problems)} problem(s)", fg="red", err=True)
        sys.exit(1)
    _echo(
        f"templates OK: {report.campaigns} campaign(s), {report.templates} template file(s), "
        f"{report.renders} renders for sample customers"
    )


@main.command()
@click.argument("campaign")
@click.option("--customer", "customer_id", type=ID, required=True, help="Customer id.")
@_as_of_option
@click.option(
    "--channel",
    type=ChannelChoice(content_only=True),
    default=None,
    help="Preview this channel instead of the one the customer would get.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "html", "pdf"]),
    default="text",
    show_default=True,
    help="text: what the message says, its channel and SMS segments; html: the email as "
    "the customer's mail client shows it (footer and unsubscribe link in place); pdf: the "
    "fax as the provider gets it (needs --out).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write to FILE instead of printing it.",
)
def preview(campaign, customer_id, as_of, channel, fmt, out):
    """Show the message CUSTOMER would get from CAMPAIGN, without sending anything.

    Walks the steps a run takes for this one customer (segment, consent and
    contacts, contact history, templates) and shows what it would send.
    `--format html` opens in a browser as the email; `--format pdf --out
    fax.pdf` is the fax.
    """
    implied = {"html": "email", "pdf": "fax"}.get(fmt)
    if implied and channel not in (None, implied):
        raise click.BadParameter(
            f"--format {fmt} shows the {implied}; leave out --channel {channel}",
            param_hint="--channel",
        )
    if fmt == "pdf" and out is None:
        raise click.UsageError("--format pdf writes a file: add --out FILE.pdf")
    from flows.preview import preview_html, preview_message, preview_pdf

    engine, settings = _engine(), _settings()
    if fmt == "pdf":
        data = preview_pdf(engine, campaign, customer_id, as_of, settings)
    elif fmt == "html":
        data = preview_html(engine, campaign, customer_id, as_of, settings)
    else:
        data = preview_message(engine, campaign, customer_id, as_of, channel, settings)
    if out is None:
        _echo(data)
        return
    try:
        if isinstance(data, bytes):
            out.write_bytes(data)
        else:
            out.write_text(data if data.endswith("\n") else data + "\n", encoding="utf-8")
    except OSError as exc:
        raise click.FileError(str(out), hint=exc.strerror) from None
    _echo(f"wrote {out}")


@main.command("test-send")
@click.argument("campaign")
@click.option(
    "--to",
    required=True,
    metavar="ADDRESS|NUMBER",
    help="Where the test goes: an email address, or a phone or fax number.",
)
@click.option(
    "--customer",
    "customer_id",
    type=ID,
    default=None,
    help="Fill the template with this customer's data (default: a sample customer).",
)
@click.option(
    "--channel",
    type=ChannelChoice(content_only=True),
    default=None,
    help="Default: email for an address; for a number, the first of the campaign's "
    "SMS and fax channels.",
)
@click.option(
    "--locale",
    default=None,
    help="The sample customer's locale, e.g. zh-CN (default: CAREFLOW_DEFAULT_LOCALE).",
)
@_as_of_option
def test_send_cmd(campaign, to, customer_id, channel, locale, as_of):
    """Send CAMPAIGN's message to yourself, through the configured delivery.

    The outbox (default) or, with CAREFLOW_DELIVERY=live, the provider. It
    is recorded in the contact history as a test (campaign test:CAMPAIGN, on
    a record of its own), so it never counts as a customer's message and
    never stops the real one.
    """
    if locale and customer_id is not None:
        raise click.UsageError("--locale is for the sample customer; --customer uses theirs")
    from flows.preview import TEST_CUSTOMER_REF, send_test

    done = send_test(
        _engine(),
        campaign,
        to,
        _settings(),
        customer_id=customer_id,
        channel=channel,
        locale=locale,
        as_of=as_of,
    )
    o = done.outcome
    where = f" ({o.provider_id})" if o.provider_id else ""
    if o.state != "sent":
        _echo(
            f"test {done.channel} to {done.to} {o.state}: {o.reason}: {o.detail}", fg="red"
        )
    else:
        _echo(f"sent a test {done.channel} of {campaign} to {done.to}{where}")
    _echo(f"rendered for {done.rendered_for}")
    if done.subject:
        _echo(f"subject: {done.subject}")
    _echo(
        f"recorded as {done.campaign_key} on customer {done.recorded_on} "
        f"({TEST_CUSTOMER_REF}): `careflow history {done.recorded_on}`"
    )
    if o.state != "sent":
        sys.exit(1)


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

    from careflow.progress import listening

    fn = CARE_FLOWS.get(campaign)
    kwargs = {"as_of": as_of, "channel": channel, "dry_run": dry_run, "allow_past": allow_past}
    labels = [f"campaign:{campaign}"] + ([f"channel:{channel}"] if channel else [])
    with (
        tags(*labels, *(["dry-run"] if dry_run else [])),  # the flow run's tags in the UI
        _progress_bars() as bar,
        listening(bar),
    ):
        summary = fn(**kwargs) if fn else campaign_flow(campaign=campaign, **kwargs)
    _echo(summary_table([summary]))
    if summary.get("split"):
        from careflow.uplift import describe_split

        _echo(describe_split(summary["split"]))
    if summary["already"].get("sent"):
        _echo(
            f"{summary['already']['sent']} customer(s) already got this occasion's "
            "message earlier: not sent again."
        )
    if dry_run and summary["samples"]:
        _echo("\nsamples:")
        for s in summary["samples"]:
            _echo(f"  #{s['customer_id']} {s['channel']} {s['to']}: {s['text'] or s['error']}")
    if dry_run:
        _print_decisions(summary)


def _print_decisions(summary: dict) -> None:
    """A few policy decisions per reason: deferred until when, capped by which messages."""
    notes = summary.get("decisions") or []
    if not notes:
        return
    _echo("\npolicy decisions (a few per reason):")
    for d in notes:
        until = f" until {d['until']}" if d.get("until") else ""
        _echo(f"  #{d['customer_id']} {d['action']} {d['reason']}{until}")
        if d.get("detail"):
            _echo(f"      {d['detail']}")


@main.group()
def deferred():
    """Messages waiting for their send time (quiet hours, sending windows, frequency caps)."""


@deferred.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def deferred_list(as_json):
    """What is waiting, per campaign and reason, and when the first and last are due;
    "taken" counts those a run holds and has not sent yet (sending now, or left by a run
    that died: the next follow-up takes them over once the reservation lease has passed)."""
    from careflow.ledger import deferred_summary
    from careflow.report import text_table

    rows = deferred_summary(_engine())
    if as_json:
        _echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
    elif not rows:
        _echo("no deferred messages")
    else:
        header = ["campaign", "reason", "waiting", "taken", "first due (UTC)", "last due (UTC)"]
        _echo(
            text_table(
                header,
                [
                    [r["campaign"], r["reason"], str(r["count"]), str(r["taken"]),
                     f"{r['first_due']:%Y-%m-%d %H:%M}", f"{r['last_due']:%Y-%m-%d %H:%M}"]
                    for r in rows
                ],
            )
        )


@deferred.command("send")
@_as_of_option
@click.option(
    "--dry-run", is_flag=True, help="Decide as the follow-up would; send and record nothing."
)
def deferred_send(as_of, dry_run):
    """Send the deferred messages that are due now (or at --as-of), once each.

    The deployment `deferred-messages-every-15-minutes` in prefect.yaml does
    this on a schedule; this runs it once, now.
    """
    from careflow.report import summary_table
    from flows.deferred import deferred_flow

    _engine()
    summaries = deferred_flow(as_of=as_of, dry_run=dry_run)
    if not summaries:
        _echo("no deferred message is due")
        return
    _echo(summary_table(summaries))
    if dry_run:
        for s in summaries:
            _print_decisions(s)


@main.command()
@click.argument("customer_id", type=ID)
@click.option(
    "--limit", type=COUNT, default=50, show_default=True, help="The latest N entries (0: all)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(customer_id, limit, as_json):
    """Show CUSTOMER's timeline: messages, delivery, replies, opt-outs, bounces and orders."""
    from careflow.ledger import timeline
    from careflow.safe_text import for_terminal

    items = timeline(_engine(), customer_id, limit)
    if as_json:
        _echo(json.dumps(items, indent=2, ensure_ascii=False, default=str))
        return
    if not items:
        _echo(f"no contact history for customer {customer_id}")
        return
    for i in items:
        where = " ".join(x for x in (i["campaign"], i["channel"]) if x)
        if (i["campaign"] or "").startswith("test:"):
            where += "  (test send)"
        _echo(f"{i['at']:%Y-%m-%d %H:%M}  {i['what']:24} {where}")
        for line in (i["text"] or "").splitlines():  # a reply may have several lines
            _echo(f"    {line}")
        if i["detail"]:
            label = "" if i["what"] == "sent" else "why: "
            _echo(f"    {label}{for_terminal(i['detail'][:200])}")


@main.command()
@click.argument("campaign")
@click.option("--reason", required=True, help="Failure reason to release, e.g. interrupted.")
@click.option("--customer", "customer_id", type=ID, default=None, help="Only this customer.")
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
    _echo(
        f"{n} failed message(s) of {campaign} with reason {reason} will be tried again "
        "by the next run"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
    help="Port to listen on.",
)
@click.option(
    "--local",
    is_flag=True,
    help="Try it on this machine (loopback only): Twilio's signed URL may come from the "
    "Host header, and unsubscribe links use the outbox's key when none is configured.",
)
def serve(host, port, local):
    """Receive delivery status, replies, opt-outs and unsubscribes (docs/responses.md).

    Runs until stopped. Put it behind your HTTPS reverse proxy and set
    CAREFLOW_PUBLIC_BASE_URL to the URL providers call. It logs which
    receivers are on when it starts, and why the others are off.
    """
    import logging

    import uvicorn
    from pydantic import SecretStr

    from careflow.errors import ConfigError
    from channels.credentials import credential, unsubscribe_tokens
    from service.app import create_app

    if local and not _loopback(host):
        raise ConfigError(f"--local listens on this machine only (--host 127.0.0.1), not {host}")
    settings = _settings()
    # the keys senders take from Prefect blocks, the service takes from the same place
    twilio_token = credential(settings, "twilio_auth_token")
    if twilio_token:
        settings = settings.model_copy(update={"twilio_auth_token": SecretStr(twilio_token)})
    # the unsubscribe page is on when its links point here or its key is set
    wanted = local or settings.unsubscribe_base_url or credential(settings, "unsubscribe_secret")
    tokens = unsubscribe_tokens(settings, local=local) if wanted else None
    app = create_app(settings, _engine(), unsubscribe=tokens, local=local)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    public = settings.public_base_url or "not set"
    _echo(f"careflow serve on http://{host}:{port} (public URL: {public})")
    # uvicorn's access log prints query strings (unsubscribe tokens): ours prints routes only
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        return host == "localhost"


@main.group()
def report():
    """Reports: campaign runs, responses, uplift against the holdout, the customer pyramid."""


@report.command("runs")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Only runs started on or after this date (YYYY-MM-DD); default: all.",
)
@click.option("--limit", type=COUNT, default=50, show_default=True, help="Most runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report_runs(since, limit, as_json):
    """Every run, newest first: when, as of, channel, status (failed and stopped too), counts."""
    from careflow.report import runs_since, runs_table

    runs = runs_since(_engine(), since, limit)
    if as_json:
        _echo(json.dumps(runs, indent=2, ensure_ascii=False))
    elif not runs:
        _echo("no runs yet: try `careflow demo` or `careflow run birthday`")
    else:
        _echo(runs_table(runs))


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
    with _progress_bars() as bar:
        bar("attributing orders to messages", 0, None)
        attribute_orders(engine, settings.attribution_window_days, settings.time_zone)
        bar("attributing orders to messages", 1, 1)
        bar("counting responses", 0, None)
        rows = response_summary(engine, since)
    if as_json:
        _echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif not rows:
        _echo("nothing sent yet: try `careflow demo`")
    else:
        _echo(responses_table(rows))


@report.command("uplift")
@click.argument("campaign")
@click.option(
    "--since", default=None, help="Customers taken up on or after this date (YYYY-MM-DD)."
)
@click.option("--until", default=None, help="Customers taken up on or before this date.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report_uplift(campaign, since, until, as_json):
    """Did CAMPAIGN pay? Its contacted customers against its held-out ones.

    Conversion and revenue per customer in each group within the attribution
    window, the uplift with 95% intervals, and a plain verdict (too few to
    tell, and how many it would take). Every occasion taken up between
    --since and --until is pooled (each month's birthdays).
    """
    from careflow.campaigns import load_campaign
    from careflow.errors import ConfigError
    from careflow.uplift import uplift_report, uplift_table

    settings = _settings()
    load_campaign(campaign, settings.templates_dir)  # a misspelt name: one line with a hint
    start, end = _day(since, "--since"), _day(until, "--until")
    if start and end and start > end:
        raise ConfigError(f"--since {start} is after --until {end}")
    found = uplift_report(
        _engine(),
        campaign,
        window_days=settings.attribution_window_days,
        shop_zone=settings.time_zone,
        since=start,
        until=end,
    )
    if as_json:
        _echo(json.dumps(found, indent=2, ensure_ascii=False))
    elif not found["groups"]["contacted"]["customers"] and not found["groups"]["held_out"][
        "customers"
    ]:
        _echo(f"{campaign}: nobody contacted or held out in this range yet")
    else:
        _echo(uplift_table(found))


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
        _echo(f"wrote {len(written)} tables to {folder}/: "
                   + ", ".join(p.name for p in written))
        return
    if fmt == "html":
        from insight.html import as_html

        path = output or Path(f"{stem}.html")
        _writing(path, lambda: path.write_text(as_html(report), encoding="utf-8"))
        _echo(f"wrote {path} ({report.buyers:,} buyers as of {day.isoformat()})")
        return
    text = {
        "text": lambda: render.as_text(report, customers),
        "json": lambda: render.as_json(report, customers),
        "markdown": lambda: render.as_markdown(report),
    }[fmt]()
    if output:
        _writing(output, lambda: output.write_text(text + "\n", encoding="utf-8"))
        _echo(f"wrote {output}")
    else:
        _echo(text)


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
@_format_option("csv writes matrix.csv, customers.csv and fit.json into a folder.")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="File (text, json) or folder (csv; default clv-DATE/) to write to.")
@click.option("--customers", "top", type=COUNT, default=10, show_default=True,
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
        _echo(f"wrote {', '.join(p.name for p in written)} to {folder}/")
        return
    text = clv.as_json(report, top == 0) if fmt == "json" else clv.as_text(report, top)
    if output:
        _writing(output, lambda: output.write_text(text + "\n", encoding="utf-8"))
        _echo(f"wrote {output}")
    else:
        _echo(text)


@report.command("overdue")
@_as_of_option
@click.option("--owner", default=None, help="Only this owner's customers.")
@_param_option
@_format_option("json and csv list every overdue customer.")
@click.option(
    "--limit",
    type=COUNT,
    default=20,
    show_default=True,
    help="Customers to show per owner in text (0: all).",
)
def report_overdue(as_of, owner, params, fmt, limit):
    """Customers who should have been contacted and were not, per owner, most overdue first.

    A customer is overdue when more days have passed since the last contact
    that reached them (a sent message, or their reply) than their grade's
    cadence allows: A 7, B 15, C/D/E 30, F 15, G 30 days by default; change
    them with --param 'cadence={A: 3, B: 10}' (grades not listed are then not
    counted). Only contacts up to --as-of
    count, so an earlier date replays the list as it was. See docs/insight.md.
    """
    from careflow.clock import resolve_as_of
    from insight import overdue

    day, _ = resolve_as_of(as_of, _settings().time_zone)
    report = overdue.overdue_report(_engine(), day, owner=owner, params=_parse_params(params))
    if fmt == "json":
        _echo(overdue.as_json(report))
    elif fmt == "csv":
        click.echo(overdue.as_csv(report), nl=False)  # cells made safe by the writer
    else:
        _echo(overdue.as_text(report, limit))


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
    from careflow.report import replies_by_owner
    from careflow.tables import shorten

    replies = replies_by_owner(_engine(), since, owner)
    if as_json:
        _echo(json.dumps(replies, indent=2, ensure_ascii=False))
        return
    if not replies:
        _echo("no replies waiting for a person")
    for who, items in replies.items():
        _echo(f"{who}: {len(items)} repl{'y' if len(items) == 1 else 'ies'}")
        for r in items:
            _echo(
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
        _echo(json.dumps(runs, indent=2, ensure_ascii=False, default=str))
    elif not runs:
        _echo("no campaign has run yet: try `careflow demo` or `careflow run birthday`")
    else:
        _echo(summary_table(runs))


if __name__ == "__main__":
    main()

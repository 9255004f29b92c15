"""Campaigns and their templates: ``careflow campaigns``, ``lint``, ``preview``
and ``test-send``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from careflow.cli.common import ID, ChannelChoice, _as_of_option, _echo, _engine, _settings


@click.command("campaigns")
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
    from careflow.flows.schedules import campaign_schedules
    from careflow.report import text_table
    from careflow.settings import PROJECT_ROOT

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


def _in_flight(settings):
    """Customers per step of a journey, from the database when there is one (lint's
    version check); None without one."""
    from sqlalchemy.exc import SQLAlchemyError

    from careflow import db
    from careflow.journeys.advance import waiting_on

    url = settings.effective_database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None  # (connecting would create the file)
    engine = db.engine_for(url)
    try:
        waiting_on(engine, "")
    except SQLAlchemyError:  # no database yet, or one from before journeys
        return None
    return lambda name: waiting_on(engine, name)


@click.command()
@click.argument("campaigns", nargs=-1)
def lint(campaigns):
    """Check every template of every campaign (or just CAMPAIGNS) before anyone gets it.

    Renders each template in each of the campaign's locales for sample
    customers (every field filled in, only the required ones, long names)
    and reports every problem at once as FILE:LINE: REASON: syntax errors,
    variables a campaign does not have, values printed as None, an SMS over
    CAREFLOW_SMS_MAX_SEGMENTS, broken HTML, a locale variant missing, a
    channel in campaign.yaml without templates. Journeys too (without CAMPAIGNS):
    journey.yaml itself, steps nothing leads to, loops without a wait, a send
    step's missing templates, and a new version that deletes a step customers
    are on without a moved: map. Exit code 1 when there are problems, 0 when
    there are none.
    """
    from careflow.clock import resolve_as_of
    from careflow.flows.preview import sample_context
    from careflow.lint import lint_templates

    settings = _settings()
    day, _ = resolve_as_of(None, settings.time_zone)
    report = lint_templates(
        settings,
        lambda spec, sample: sample_context(spec, sample, day, settings),
        campaigns,
        _in_flight(settings),
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


@click.command()
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
    contacts, contact history, templates) and shows what it would send; for a
    customer it would defer (quiet hours, sending window, frequency cap) or hold
    out, the message too, with when it would go out (or that it never does).
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
    from careflow.flows.preview import preview_file, preview_message

    engine, settings = _engine(), _settings()
    when: list[str] = []  # a deferred message: when it would go out, beside the file
    if fmt in ("pdf", "html"):
        data, when = preview_file(engine, campaign, customer_id, as_of, fmt, settings)
    else:
        data = preview_message(engine, campaign, customer_id, as_of, channel, settings)
    for line in when:  # on stderr, so the page on stdout stays the page
        _echo(line, err=True)
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


@click.command("test-send")
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
@click.option(
    "--variant",
    default=None,
    help="Of a campaign with an experiment: which variant (default: the control).",
)
@_as_of_option
def test_send_cmd(campaign, to, customer_id, channel, locale, as_of, variant):
    """Send CAMPAIGN's message to yourself, through the configured delivery.

    The outbox (default) or, with CAREFLOW_DELIVERY=live, the provider. It
    is recorded in the contact history as a test (campaign test:CAMPAIGN, on
    a record of its own), so it never counts as a customer's message and
    never stops the real one.
    """
    if locale and customer_id is not None:
        raise click.UsageError("--locale is for the sample customer; --customer uses theirs")
    from careflow.flows.preview import TEST_CUSTOMER_REF, send_test

    done = send_test(
        _engine(),
        campaign,
        to,
        _settings(),
        customer_id=customer_id,
        channel=channel,
        locale=locale,
        as_of=as_of,
        variant=variant,
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


@click.group("campaign")
def campaign_group():
    """Campaigns that paused themselves: list the pauses, resume (docs/compliance.md)."""


@campaign_group.command("pauses")
@click.argument("campaign", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def campaign_pauses(campaign, as_json):
    """Every pause (of CAMPAIGN), newest first: the day's numbers, and who resumed it, when
    and why."""
    import json

    from careflow.pauses import history, history_table

    found = history(_engine(), campaign)
    if as_json:
        _echo(json.dumps(found, indent=2, ensure_ascii=False))
    elif not found:
        _echo(f"{campaign or 'no campaign'} has not paused itself")
    else:
        _echo(history_table(found))


@campaign_group.command("resume")
@click.argument("campaign")
@click.option("--note", default=None, help="Why it is safe to send again (kept with the pause).")
def campaign_resume(campaign, note):
    """Let a paused CAMPAIGN run again: recorded with who and --note.

    A campaign pauses itself when its sending domain's spam reports pass
    CAREFLOW_SPAM_RATE_LIMIT on a day; the day a resumed pause was about never
    pauses it again, a later day over the limit does.
    """
    from careflow.pauses import resume

    pause = resume(_engine(), campaign, note)
    _echo(f"{campaign} resumed; it had paused because {pause.why()}")

"""``careflow report``: runs, responses, compliance, uplift, experiments, send time, the pyramid,
CLV, overdue, replies."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import click

from careflow.cli.common import (
    COUNT,
    _as_of_option,
    _echo,
    _engine,
    _format_option,
    _param_option,
    _parse_params,
    _progress_bars,
    _settings,
)


@click.group()
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


@report.command("compliance")
@click.option(
    "--days", type=click.IntRange(1, 366), default=14, show_default=True,
    help="UTC days to show, today included.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report_compliance(days, as_json):
    """Per sending domain and UTC day: delivered, spam reports and their rate against 0.1%
    and the limit (CAREFLOW_SPAM_RATE_LIMIT), bounces; the worst time from an opt-out to
    its suppression per day, every route; and the campaigns paused (docs/compliance.md)."""
    from careflow.clock import now
    from careflow.compliance import compliance_report, compliance_table
    from careflow.pauses import paused_campaigns

    engine = _engine()
    today = now().astimezone(UTC).date()
    found = compliance_report(engine, _settings(), days, today, paused_campaigns(engine))
    _echo(json.dumps(found, indent=2, ensure_ascii=False) if as_json else compliance_table(found))


def _taken_up_between(command):
    """--since, --until (the days customers were taken up by a run) and --json."""
    command = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(
        command
    )
    command = click.option(
        "--until", default=None, help="Customers taken up on or before this date."
    )(command)
    return click.option(
        "--since", default=None, help="Customers taken up on or after this date (YYYY-MM-DD)."
    )(command)


def _days_between(since: str | None, until: str | None):
    """--since and --until as dates (None stays None); one line when they are not a range."""
    from careflow.errors import ConfigError

    start, end = _day(since, "--since"), _day(until, "--until")
    if start and end and start > end:
        raise ConfigError(f"--since {start} is after --until {end}")
    return start, end


@report.command("uplift")
@click.argument("campaign")
@_taken_up_between
def report_uplift(campaign, since, until, as_json):
    """Did CAMPAIGN pay? Its contacted customers against its held-out ones.

    Conversion and revenue per customer in each group within the attribution
    window, the uplift with 95% intervals, and a plain verdict (too few to
    tell, and how many it would take). Every occasion taken up between
    --since and --until is pooled (each month's birthdays).
    """
    from careflow.campaigns import load_campaign
    from careflow.uplift import uplift_report, uplift_table

    settings = _settings()
    load_campaign(campaign, settings.templates_dir)  # a misspelt name: one line with a hint
    start, end = _days_between(since, until)
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


#: ``--html FILE`` of the reports that have a page with charts
_html_page = click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the report as one HTML page with charts to this file.",
)


@report.command("experiment")
@click.argument("campaign")
@_taken_up_between
@click.option(
    "--decide",
    is_flag=True,
    help="Apply the experiment's rule now and record the winner if it declares one "
    "(a real run does it at its start unless campaign.yaml says decide: by_hand).",
)
@_html_page
def report_experiment(campaign, since, until, as_json, decide, html_path):
    """Which of CAMPAIGN's variants pays more? (campaign.yaml ``experiment:``, or a
    journey's send step's: CAMPAIGN is then JOURNEY.STEP)

    Per variant: customers, orders within the attribution window, conversion,
    its difference from the control and from the held-out customers with
    always-valid intervals (safe to read every day), revenue per customer with
    its interval, the winner rule's state and a verdict (docs/experiments.md).
    With --decide, a winner the rule declares is recorded (once: asked again, the
    first decision stands) and every later message gets it.
    """
    from careflow.campaigns import load_campaign
    from careflow.errors import ConfigError
    from careflow.experiment_report import decide as decide_now
    from careflow.experiment_report import experiment_table, report_for
    from careflow.journey_spec import step_campaign_of

    settings = _settings()
    spec = load_campaign(step_campaign_of(campaign), settings.templates_dir)
    if spec.experiment is None:
        step = spec.segment == "journey_step"
        where = "its step in journey.yaml" if step else "its campaign.yaml"
        raise ConfigError(
            f"{campaign} has no experiment: add experiment: {{variants: [a, b]}} to {where} "
            "(docs/experiments.md)"
        )
    if decide and (since or until):
        raise ConfigError("--decide reads the whole experiment: leave out --since and --until")
    start, end = _days_between(since, until)

    def read() -> dict:
        return report_for(_engine(), spec, settings, start, end)

    found = read()
    said = None
    if decide:
        decided, now = decide_now(_engine(), spec, found, "careflow report experiment --decide")
        if decided is not None:
            found = read()  # the decision's own view: comparisons up to it
        said = (
            "recorded: " if now else "already decided: " if decided else "nothing recorded: "
        ) + found["verdict"]
    if html_path is not None:
        from careflow.insight.experiment_html import as_html

        _writing(html_path, lambda: html_path.write_text(as_html(found), encoding="utf-8"))
    if as_json:
        _echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    _echo(experiment_table(found))
    if said:
        _echo(said)
    if html_path is not None:
        _echo(f"wrote {html_path}")


@report.command("send-time")
@click.argument("campaign")
@_taken_up_between
@_html_page
def report_send_time(campaign, since, until, as_json, html_path):
    """Does sending at each customer's best hour pay? (campaign.yaml ``policy: send_time``)

    The best-hour arm against the fixed-time comparison group: messages sent,
    orders within the attribution window, conversion with 95% intervals, and the
    difference with its interval (docs/policy.md, "Send-time optimisation").
    --html also writes it as one page with charts.
    """
    from careflow.campaigns import load_campaign
    from careflow.send_time_report import send_time_report, send_time_table

    settings = _settings()
    load_campaign(campaign, settings.templates_dir)  # a misspelt name: one line with a hint
    start, end = _days_between(since, until)
    found = send_time_report(
        _engine(),
        campaign,
        window_days=settings.attribution_window_days,
        shop_zone=settings.time_zone,
        since=start,
        until=end,
    )
    if html_path is not None:
        from careflow.insight.send_time_html import as_html

        _writing(html_path, lambda: html_path.write_text(as_html(found), encoding="utf-8"))
    _echo(json.dumps(found, indent=2, ensure_ascii=False) if as_json else send_time_table(found))
    if html_path is not None and not as_json:
        _echo(f"wrote {html_path}")


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
    Money is in --param currency, else CAREFLOW_MAIN_CURRENCY, else the currency
    with the most revenue; the report says which and what it left out.
    """
    from careflow.clock import resolve_as_of
    from careflow.insight import render
    from careflow.insight.pyramid import pyramid_report

    day, _ = resolve_as_of(as_of, _settings().time_zone)
    report = pyramid_report(
        _engine(), day, previous=_day(previous, "--previous"), params=_parse_params(params),
        main_currency=_settings().main_currency,
    )  # fmt: skip
    stem = f"pyramid-{day.isoformat()}"
    if fmt == "csv":
        folder = output or Path(stem)
        written = _writing(folder, lambda: render.write_csv(report, folder))
        _echo(f"wrote {len(written)} tables to {folder}/: "
                   + ", ".join(p.name for p in written))
        return
    if fmt == "html":
        from careflow.insight.html import as_html

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
    from careflow.insight import clv

    day, _ = resolve_as_of(as_of, _settings().time_zone)
    report = clv.clv_report(
        _engine(), day, params=_parse_params(params), draws=draws,
        main_currency=_settings().main_currency,
    )  # fmt: skip
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
    from careflow.insight import overdue

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

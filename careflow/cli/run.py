"""Running campaigns and what they leave: ``careflow run``, ``history`` and ``retry``."""

from __future__ import annotations

import json

import click

from careflow.cli.common import (
    COUNT,
    ID,
    ChannelChoice,
    _as_of_option,
    _echo,
    _engine,
    _print_decisions,
    _progress_bars,
    _settings,
)


@click.command()
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
    from careflow.flows.campaign import campaign_flow, check_not_backdated, preflight
    from careflow.flows.care import CARE_FLOWS
    from careflow.report import already_text, summary_table

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
    if summary.get("experiment"):
        from careflow.experiment_report import plan_in_words

        _echo(plan_in_words(summary["experiment"]))
    already = already_text(summary)  # the table's "already done", in words
    if already:
        _echo(already)
    if dry_run and summary["samples"]:
        _echo("\nsamples:")
        for s in summary["samples"]:
            _echo(f"  #{s['customer_id']} {s['channel']} {s['to']}: {s['text'] or s['error']}")
            if s.get("send_time"):
                _echo(f"    send time: {s['send_time']}")
    if dry_run:
        _print_decisions(summary)


@click.command()
@click.argument("customer_id", type=ID)
@click.option(
    "--limit", type=COUNT, default=50, show_default=True, help="The latest N entries (0: all)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(customer_id, limit, as_json):
    """Show CUSTOMER's timeline: messages, delivery, replies, opt-outs, bounces and orders."""
    from careflow.ledger import timeline
    from careflow.safe_text import for_terminal

    items = timeline(_engine(), customer_id, limit, _settings().time_zone)
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


@click.command()
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
    from careflow.ledger import ContactLedger, failure_reasons

    engine = _engine()
    ledger = ContactLedger(engine)
    reasons = failure_reasons(engine, campaign)
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

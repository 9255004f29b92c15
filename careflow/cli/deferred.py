"""``careflow deferred``: messages waiting for their send time."""

from __future__ import annotations

import json

import click

from careflow.cli.common import _as_of_option, _echo, _engine, _print_decisions


@click.group()
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
    from careflow.flows.deferred import deferred_flow
    from careflow.report import summary_table

    _engine()
    summaries = deferred_flow(as_of=as_of, dry_run=dry_run)
    if not summaries:
        _echo("no deferred message is due")
        return
    _echo(summary_table(summaries))
    if dry_run:
        for s in summaries:
            _print_decisions(s)

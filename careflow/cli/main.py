"""The ``careflow`` command: a thin skin over library calls.

This is the top-level group; each command group lives in a module of its own
(careflow/cli/run.py, careflow/cli/report.py, ...) and shares careflow/cli/common.py.
Every command has --help; tests/test_cli.py checks each one is documented in the README.
"""

from __future__ import annotations

import click

from careflow.cli.campaigns import campaign_group, campaigns_cmd, lint, preview, test_send_cmd
from careflow.cli.common import CareflowGroup
from careflow.cli.consent import consent
from careflow.cli.data import demo, import_
from careflow.cli.db import db
from careflow.cli.deferred import deferred
from careflow.cli.journey import journey
from careflow.cli.report import report
from careflow.cli.run import history, retry, run
from careflow.cli.segment import segment
from careflow.cli.serve import serve


@click.group(cls=CareflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="careflow")
def main():
    """careflow: customer-care campaigns (birthday, reorder reminder, win-back, VIP care).

    Configure with CAREFLOW_* environment variables (see README); by default
    everything runs on a local SQLite file and the outbox channel.
    """


for command in (
    db, demo, import_, segment, campaigns_cmd, campaign_group, lint, preview, test_send_cmd, run,
    deferred, history, retry, serve, report, journey, consent,
):
    main.add_command(command)


if __name__ == "__main__":
    main()

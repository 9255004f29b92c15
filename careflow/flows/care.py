"""The four automatic care campaigns, each its own flow so each gets its own
schedule, parameters form and run history in the Prefect UI.

Each is a plain decorated function (not built by a factory) because
``prefect deploy`` may find entrypoints by reading the source, and a worker
that cannot import a module still needs to see the flow there.

Parameters (typed and described, careflow/flows/params.py, so the UI's run form offers a
date picker and a channel list, with a sentence under each):
- as_of: the run's date (noon of it in CAREFLOW_TIME_ZONE) or an exact
  date-time; "today" or nothing (the default, what schedules use) means now. It picks the
  occasions; a real run still judges quiet hours and sending windows at the
  real clock (a dry run rehearses the date);
- channel: "preferred" (each customer's own channel, the default), one channel
  for everyone this run, or "outbox" to deliver to the local outbox instead of
  the providers;
- dry_run: make every decision a real run would; nothing is sent or recorded;
- allow_past: confirm a real run dated before today (it sends now what was
  meant for then); without it such a run stops before selecting anyone.
"""

from __future__ import annotations

from prefect import flow

from careflow.flows.campaign import record_failure, run_campaign, run_name
from careflow.flows.params import PREFERRED, AllowPast, AsOf, Channel, DryRun
from careflow.flows.runners import BatchTaskRunner


@flow(
    name="birthday",
    flow_run_name=run_name,
    task_runner=BatchTaskRunner(),
    on_failure=[record_failure],
)
def birthday(
    as_of: AsOf = None,
    channel: Channel = PREFERRED,
    dry_run: DryRun = False,
    allow_past: AllowPast = False,
):
    """Birthday wishes to customers whose birthday is today in their own time zone."""
    return run_campaign("birthday", as_of, channel, dry_run, allow_past=allow_past)


@flow(
    name="reorder-reminder",
    flow_run_name=run_name,
    task_runner=BatchTaskRunner(),
    on_failure=[record_failure],
)
def reorder_reminder(
    as_of: AsOf = None,
    channel: Channel = PREFERRED,
    dry_run: DryRun = False,
    allow_past: AllowPast = False,
):
    """Remind customers whose own purchase rhythm says they are about to run out."""
    return run_campaign("reorder_reminder", as_of, channel, dry_run, allow_past=allow_past)


@flow(
    name="winback",
    flow_run_name=run_name,
    task_runner=BatchTaskRunner(),
    on_failure=[record_failure],
)
def winback(
    as_of: AsOf = None,
    channel: Channel = PREFERRED,
    dry_run: DryRun = False,
    allow_past: AllowPast = False,
):
    """Reach customers who have not bought for more than 180 days."""
    return run_campaign("winback", as_of, channel, dry_run, allow_past=allow_past)


@flow(
    name="vip-care",
    flow_run_name=run_name,
    task_runner=BatchTaskRunner(),
    on_failure=[record_failure],
)
def vip_care(
    as_of: AsOf = None,
    channel: Channel = PREFERRED,
    dry_run: DryRun = False,
    allow_past: AllowPast = False,
):
    """Monthly personal note to the top tiers of the customer pyramid."""
    return run_campaign("vip_care", as_of, channel, dry_run, allow_past=allow_past)


CARE_FLOWS = {
    "birthday": birthday,
    "reorder_reminder": reorder_reminder,
    "winback": winback,
    "vip_care": vip_care,
}

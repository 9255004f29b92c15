"""The four automatic care campaigns, each its own flow so each gets its own
schedule, parameters form and run history in the Prefect UI.

Each is a plain decorated function (not built by a factory) because
``prefect deploy`` may find entrypoints by reading the source, and a worker
that cannot import a module still needs to see the flow there.

Parameters (typed, so the UI's run form offers a date picker and a channel list):
- as_of: the run's date (noon of it in CAREFLOW_TIME_ZONE) or an exact
  date-time; empty means now, which is what schedules use;
- channel: send everyone on this channel this run, or "outbox" to deliver to
  the local outbox instead of the providers;
- dry_run: select and render only; nothing is sent or recorded.
"""

from __future__ import annotations

from datetime import date, datetime

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.campaign import ChannelChoice, run_campaign

AsOf = date | datetime | None


@flow(name="birthday", flow_run_name="birthday {as_of}", task_runner=ThreadPoolTaskRunner())
def birthday(as_of: AsOf = None, channel: ChannelChoice | None = None, dry_run: bool = False):
    """Birthday wishes to customers whose birthday is today in their own time zone."""
    return run_campaign("birthday", as_of, channel, dry_run)


@flow(
    name="reorder-reminder",
    flow_run_name="reorder-reminder {as_of}",
    task_runner=ThreadPoolTaskRunner(),
)
def reorder_reminder(
    as_of: AsOf = None, channel: ChannelChoice | None = None, dry_run: bool = False
):
    """Remind customers whose own purchase rhythm says they are about to run out."""
    return run_campaign("reorder_reminder", as_of, channel, dry_run)


@flow(name="winback", flow_run_name="winback {as_of}", task_runner=ThreadPoolTaskRunner())
def winback(as_of: AsOf = None, channel: ChannelChoice | None = None, dry_run: bool = False):
    """Reach customers who have not bought for more than 180 days."""
    return run_campaign("winback", as_of, channel, dry_run)


@flow(name="vip-care", flow_run_name="vip-care {as_of}", task_runner=ThreadPoolTaskRunner())
def vip_care(as_of: AsOf = None, channel: ChannelChoice | None = None, dry_run: bool = False):
    """Monthly personal note to the top tiers of the customer pyramid."""
    return run_campaign("vip_care", as_of, channel, dry_run)


CARE_FLOWS = {
    "birthday": birthday,
    "reorder_reminder": reorder_reminder,
    "winback": winback,
    "vip_care": vip_care,
}

"""The four automatic care campaigns, each its own flow so each gets its own
schedule, parameters form and run history in the Prefect UI.

Parameters (typed, so the UI's run form offers a date picker and a channel list):
- as_of: the run's date (noon of it in CAREFLOW_TIME_ZONE) or an exact
  date-time; empty means now, which is what schedules use;
- channel: send everyone on this channel this run, or "outbox" to deliver to
  the local outbox instead of the providers;
- dry_run: select and render only; nothing is sent or recorded.
"""

from __future__ import annotations

from datetime import date, datetime

from prefect import Flow, flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.campaign import ChannelChoice, run_campaign


def care_flow(campaign: str, flow_name: str, description: str) -> Flow:
    """A flow running one campaign of templates/ with the standard parameters."""

    def run(
        as_of: date | datetime | None = None,
        channel: ChannelChoice | None = None,
        dry_run: bool = False,
    ) -> dict:
        return run_campaign(campaign, as_of, channel, dry_run)

    return flow(
        run,
        name=flow_name,
        description=description,
        flow_run_name=f"{flow_name} {{as_of}}",
        task_runner=ThreadPoolTaskRunner(),
    )


birthday = care_flow(
    "birthday",
    "birthday",
    "Birthday wishes to customers whose birthday is today in their own time zone.",
)
reorder_reminder = care_flow(
    "reorder_reminder",
    "reorder-reminder",
    "Remind customers whose own purchase rhythm says they are about to run out.",
)
winback = care_flow(
    "winback", "winback", "Reach customers who have not bought for more than 180 days."
)
vip_care = care_flow(
    "vip_care", "vip-care", "Monthly personal note to the top tiers of the customer pyramid."
)

CARE_FLOWS = {
    "birthday": birthday,
    "reorder_reminder": reorder_reminder,
    "winback": winback,
    "vip_care": vip_care,
}

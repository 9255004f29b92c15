"""The follow-up flow: deferred messages sent once they are due.

Quiet hours, a country's sending window or a frequency cap defer a message
(the ledger's ``deferred`` state with ``not_before``, docs/policy.md). This
flow, deployed every 15 minutes (prefect.yaml), finds the messages that are
due and runs each campaign's route for just those customers: selected as
of the run that deferred them, decided now. The claim in the ledger lets
only one run take a due message, so the follow-up, a re-run and a
regular campaign run can never send one twice.

A message deferred by a run limited to one channel (``--channel sms``) is
sent on that channel only. A follow-up that dies (SIGKILL) leaves the
messages it had taken reserved: the next follow-up takes them over once the
reservation lease has passed, as any run takes over a dead run's rows. One
that is stopped (SIGTERM, Ctrl-C) puts them back as deferred and due. A paused
campaign's messages (careflow/pauses.py) wait, deferred, until it is resumed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger

from careflow import clock
from careflow.campaigns import load_campaign
from careflow.clock import resolve_as_of
from careflow.errors import ChannelDown, ConfigError
from careflow.flows.campaign import (
    check_campaign,
    check_paused,
    final_state,
    open_run,
    run_batches,
    run_engine,
    run_name,
)
from careflow.flows.idle import idle
from careflow.flows.params import PREFERRED, DeferredAsOf, DeferredChannel, DryRun, chosen_channel
from careflow.flows.route import RunPlan, RunStopped
from careflow.flows.runners import BatchTaskRunner
from careflow.ledger import ContactLedger
from careflow.settings import Settings, load_settings


def send_deferred(
    as_of: str | date | datetime | None = None,
    channel: str | None = None,
    dry_run: bool = False,
    settings: Settings | None = None,
) -> list[dict]:
    """Send every deferred message that is due, once; returns one summary per campaign.

    Each message is selected again as of the run that deferred it (its
    ``selected_at``: the same segment columns, occasion and template data)
    and decided again *now* (``as_of``, default the current instant):
    consent, suppression, quiet hours, windows and caps may have changed
    meanwhile, and a message may be deferred again. The ledger's claim
    makes sure a campaign run and this flow, or two of these, never both
    send one. Must be called inside a Prefect flow.
    """
    logger = get_run_logger()
    settings = settings or load_settings()
    engine = run_engine(settings)
    now = resolve_as_of(as_of, settings.time_zone)[1] if as_of else clock.now()
    if channel == "outbox":
        settings = settings.model_copy(update={"delivery": "outbox"})
    elif channel is not None:
        raise ConfigError(
            f"channel {channel!r}: deferred messages go on the channel their policy decides; "
            "only 'outbox' (deliver to the local outbox) may be given"
        )
    ledger = ContactLedger(engine, settings.reservation_lease_seconds)
    due = ledger.due_deferred(now, settings.batch_size)
    groups: dict[tuple[str, datetime | None, str | None], list[tuple[int, int]]] = {}
    for d in due:
        groups.setdefault((d.campaign, d.selected_at, d.only_channel), []).append((d.lo, d.hi))
    logger.info(
        "%d deferred message(s) due at %s in %d campaign run(s)",
        sum(d.count for d in due),
        now.isoformat(timespec="minutes"),
        len(groups),
    )
    summaries = []
    for (campaign, selected_at, only_channel), ranges in groups.items():
        run_id = str(uuid.uuid4())
        try:
            spec = load_campaign(campaign, settings.templates_dir)
            channel_names = [only_channel] if only_channel else list(spec.channels)
            check_campaign(settings, spec, channel_names)
            check_paused(engine, settings, campaign, run_id, channel_names, dry_run, logger)
        except ConfigError as exc:  # a campaign removed, broken or paused since: they wait
            logger.error("deferred messages of %s left waiting: %s", campaign, exc)
            continue
        at = (selected_at or now.replace(tzinfo=None)).replace(tzinfo=UTC)
        run = RunPlan(
            spec=spec,
            run_id=run_id,
            as_of=at.astimezone(ZoneInfo(settings.time_zone)).date(),
            at=at,
            settings=settings,
            only_channel=only_channel,
            dry_run=dry_run,
            now=now,
            deferred_only=True,
        )
        run, summary = open_run(engine, run, logger)
        summary["followup"] = now.astimezone(UTC).isoformat(timespec="minutes")
        summaries.append(run_batches(engine, run, ranges, summary))
    return summaries


@flow(name="deferred-messages", flow_run_name=run_name, task_runner=BatchTaskRunner())
def deferred_flow(
    as_of: DeferredAsOf = None,
    channel: DeferredChannel = PREFERRED,
    dry_run: DryRun = False,
) -> list[dict]:
    """Send the deferred messages that are due (quiet hours, sending windows, caps), once.

    Deployed to run every 15 minutes (prefect.yaml); ``as_of`` is the instant
    to decide at (default now), ``channel`` may only be ``outbox`` here. A run that
    found nothing due ends Completed named Idle, tagged nothing-due. A stopped
    follow-up ends Cancelled, one whose channel can deliver nothing more Failed, as
    campaign runs do.
    """
    try:
        summaries = send_deferred(as_of, chosen_channel(channel), dry_run)
    except (RunStopped, ChannelDown) as exc:
        return final_state(exc)
    # most follow-ups find nothing due: told apart in the runs list (careflow/flows/idle.py)
    return summaries if summaries else idle(summaries)

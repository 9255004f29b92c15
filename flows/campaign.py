"""The generic campaign flow: one Prefect task per batch of customers.

Prefect costs 10-20 ms per task and walks large task arguments element by
element (bench/README.md), so tasks receive an id range, never rows,
and each handles up to CAREFLOW_BATCH_SIZE customers. Retrying a task is
safe: the ledger, not the task, decides what still needs sending.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

import segments
from careflow import db
from careflow.campaigns import load_campaign
from careflow.clock import resolve_as_of
from careflow.errors import ConfigError
from careflow.rendering import Renderer
from careflow.report import finish_run, start_run, summary_markdown
from careflow.settings import get_settings
from channels import closing_channel, get_channel
from flows.route import BatchResult, id_ranges, process_batch

ChannelChoice = Literal["sms", "email", "fax", "outbox"]


@task(
    name="process-batch",
    task_run_name="{campaign}[{lo}-{hi}]",
    retries=2,
    retry_delay_seconds=[2, 10],
)
def process_batch_task(
    campaign: str,
    run_id: str,
    as_of: date,
    at: datetime,
    lo: int,
    hi: int,
    channel: str | None,
    dry_run: bool,
    params: dict | None = None,
    delivery: str | None = None,
) -> dict:
    settings = get_settings()
    if delivery:  # `--channel outbox` for this run only
        settings = settings.model_copy(update={"delivery": delivery})
    return process_batch(
        spec=load_campaign(campaign, settings.templates_dir),
        engine=db.engine_for(settings.effective_database_url),
        settings=settings,
        run_id=run_id,
        as_of=as_of,
        at=at,
        id_range=(lo, hi),
        channel_override=channel,
        dry_run=dry_run,
        params=params,
    ).as_dict()


def run_campaign(
    campaign: str,
    as_of: str | date | datetime | None = None,
    channel: str | None = None,
    dry_run: bool = False,
) -> dict:
    """Select, render, send and record one campaign; returns the run summary.

    Must be called inside a Prefect flow (the care flows below are thin
    wrappers). Everything that can be wrong with configuration is checked
    before the first customer is selected.
    """
    logger = get_run_logger()
    settings = get_settings()
    spec = load_campaign(campaign, settings.templates_dir)
    engine = db.engine_for(settings.effective_database_url)
    db.ensure_schema(engine)
    as_of_date, at = resolve_as_of(as_of, settings.time_zone)

    channels = [channel] if channel else list(spec.channels)
    if channel == "outbox":
        settings = settings.model_copy(update={"delivery": "outbox"})
        channels, channel = list(spec.channels), None
    # A bad segment parameter in campaign.yaml surfaces here, not in every batch.
    segments.build(spec.segment, as_of_date, spec.parameters, at=at)
    renderer = Renderer(settings.templates_dir, settings.default_locale)
    for name in channels:
        if not renderer.has_channel(spec.name, name):
            raise ConfigError(
                f"campaign {spec.name!r} has no {name} template in templates/{spec.name}/"
            )
        with closing_channel(get_channel(name, settings)):  # ConfigError names the setting
            pass

    run_id = str(flow_run.get_id() or uuid.uuid4())
    start_run(engine, run_id, spec, at, channel or settings.delivery, dry_run)
    ranges = id_ranges(engine, settings.batch_size)
    with engine.connect() as conn:
        params = segments.prepare(spec.segment, conn, as_of_date, spec.parameters)
    logger.info(
        "%s: as of %s, %d batch(es) of up to %d customers, channels %s via %s%s",
        spec.name,
        as_of_date,
        len(ranges),
        settings.batch_size,
        "/".join(channels),
        settings.delivery,
        " (dry run: nothing is sent or recorded)" if dry_run else "",
    )
    progress = create_progress_artifact(progress=0.0, description=f"{spec.name} batches done")
    total = BatchResult()
    futures = [
        process_batch_task.submit(
            spec.name, run_id, as_of_date, at, lo, hi, channel, dry_run, params, settings.delivery
        )
        for lo, hi in ranges
    ]
    for done, future in enumerate(futures, start=1):
        part = BatchResult.from_dict(future.result())
        total.merge(part)
        update_progress_artifact(progress, progress=100.0 * done / len(futures))
        # progress at every quarter: enough to watch a long run, not a line per batch
        if done == len(futures) or done % max(1, len(futures) // 4) == 0:
            logger.info(
                "%d/%d batches done: selected %d, sent %d, already done %d, skipped %d, failed %d",
                done,
                len(futures),
                total.selected,
                total.sent,
                sum(total.already.values()),
                sum(total.skipped.values()),
                sum(total.failed.values()),
            )
    summary = {
        "campaign": spec.name,
        "run_id": run_id,
        "as_of": str(as_of_date),
        "dry_run": dry_run,
        "delivery": settings.delivery,
        **total.as_dict(),
    }
    finish_run(engine, run_id, summary)
    create_markdown_artifact(
        markdown=summary_markdown(summary),
        key=f"{spec.name.replace('_', '-')}-summary",
        description=f"{spec.name} run summary",
    )
    return summary


# Batches run on a thread pool sized by PREFECT_TASK_RUNNER_THREAD_POOL_MAX_WORKERS;
# on a Prefect worker with Dask, swap in prefect-dask's DaskTaskRunner here.
@flow(name="campaign", flow_run_name="{campaign} {as_of}", task_runner=ThreadPoolTaskRunner())
def campaign_flow(
    campaign: str,
    as_of: date | datetime | None = None,
    channel: ChannelChoice | None = None,
    dry_run: bool = False,
) -> dict:
    """Run any campaign in templates/ by name."""
    return run_campaign(campaign, as_of, channel, dry_run)

"""The generic campaign flow: one Prefect task per batch of customers.

Prefect costs 10-20 ms per task and walks large task arguments element by
element (bench/README.md), so a task receives the run (one small value,
``RunPlan``) and an id range, never rows, and each handles up to
CAREFLOW_BATCH_SIZE customers. Batches follow the
customers the segment selects (keyset boundaries from the data), so sparse
or huge ids cost nothing and a run never plans empty batches. Retrying a
task is safe: the ledger, not the task, decides what still needs sending.

Stopping. SIGTERM (a worker cancelling the run, ``kill``) and Ctrl-C reach
the flow's thread; the run then tells its batches to stop between messages,
waits for them briefly, and settles what they held: messages reserved but
never sent go back for the next run (``skipped: run_stopped``), messages
handed to a channel become ``failed: interrupted`` (never resent
automatically). The run is recorded as stopped, its summary counts what
its batches delivered before the stop, and the flow run ends Cancelled in
Prefect (a run that failed ends Failed), with one line for the operator.

A channel that can deliver nothing more (``ChannelDown``: a full or read-only
outbox, credentials the provider refuses) stops the run the same way: the
batch that met it stops the others, the messages nobody started go back to the
next run, and the flow run ends Failed with that one line.

Batches on a Dask cluster (CAREFLOW_TASK_RUNNER=dask, careflow/flows/runners.py) run
in other processes and cannot see the flow's stop event: the run first marks
its row as stopping (``careflow.report.request_stop``) and those batches read
the mark between messages, at most once a second (``RunStopFlag``), so they
stop within about a second of the request instead of at once.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.exceptions import TerminationSignal
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed, State
from sqlalchemy import Engine, select

from careflow import (
    channels,
    clock,
    db,
    outcome_journal,
    pauses,
    purchase_facts,
    segments,
    send_hours,
)
from careflow.campaigns import CampaignSpec, load_campaign
from careflow.clock import TODAY, resolve_as_of
from careflow.db.sqlfunc import id_ranges
from careflow.errors import CampaignPaused, CareflowError, ChannelDown, ConfigError
from careflow.experiment_decisions import winner_of
from careflow.experiment_report import decide, experiment_markdown, plan_for, report_for, verdict
from careflow.flows.params import (
    PREFERRED,
    AllowPast,
    AsOf,
    Campaign,
    Channel,
    DryRun,
    chosen_channel,
)
from careflow.flows.route import BatchResult, Route, RunPlan, RunStopped, process_batch
from careflow.flows.runners import BatchTaskRunner, settle_heap
from careflow.insight.html import figures_markdown
from careflow.insight.send_time_html import charts as send_time_charts
from careflow.ledger import ContactLedger, DryRunLedger
from careflow.policy.config import resolve as resolve_policy
from careflow.progress import report as report_progress
from careflow.rendering import Renderer
from careflow.report import (
    counts_text,
    finish_run,
    record_refused,
    request_stop,
    start_run,
    stop_requested,
    summary_markdown,
)
from careflow.responses import match_orphans
from careflow.send_time_report import send_time_markdown, send_time_report
from careflow.settings import Settings, load_settings
from careflow.uplift import baseline_of, compare, load_units, split_summary

#: how long a stopping run waits for its batches to put down what they hold
STOP_GRACE_SECONDS = 30

#: how often a batch outside the flow's process reads its run's row for a stop request
STOP_POLL_SECONDS = 1.0

#: how often the run's progress artifact is updated (each update is a call to the API)
PROGRESS_EVERY_SECONDS = 1.0

# Stop requests by run id; batch tasks in this process look theirs up.
_STOPS: dict[str, threading.Event] = {}


class _CutWait(Exception):
    """A second stop signal while a stopping run waits for its batches."""


class SettlingSignals:
    """While a stopping run settles what it holds, SIGINT and SIGTERM are noted, not
    raised: raised inside the database driver, a signal broke the connection the
    settling was using (psycopg "can't change 'autocommit' now") and left the run's
    rows held. Only ``wait``, the wait for the batches, is cut short by one.

    Signal handlers belong to the main thread; in any other thread (a flow run
    started by some other runner) signals are left as they are.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.noted = False
        self._waiting = False
        self._saved: dict = {}

    def __enter__(self) -> SettlingSignals:
        if threading.current_thread() is threading.main_thread():
            self._saved = {sig: signal.signal(sig, self._note) for sig in self._SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _note(self, signum, frame) -> None:
        self.noted = True
        if self._waiting:  # at most one raise, and only inside ``wait``
            self._waiting = False
            raise _CutWait

    def wait(self, futures, timeout: float) -> set:
        """The futures done within ``timeout`` seconds, or by the next signal."""
        done = set()
        try:  # wherever the signal lands in here, _CutWait stays in here
            self._waiting = True
            if not self.noted:
                done = wait(futures, timeout=timeout).done
            self._waiting = False
        except _CutWait:
            pass
        return done


class RunStopFlag:
    """A stop request as the run's row records it, for a batch running outside the
    flow's process (a Dask worker) where ``_STOPS`` is empty: ``is_set`` reads the row
    at most every ``every`` seconds (module docs)."""

    def __init__(self, engine, run_id: str, every: float = STOP_POLL_SECONDS):
        self.engine, self.run_id, self.every = engine, run_id, every
        self._set = False
        self._next_read = 0.0

    def is_set(self) -> bool:
        if not self._set and time.monotonic() >= self._next_read:
            self._set = stop_requested(self.engine, self.run_id)
            self._next_read = time.monotonic() + self.every
        return self._set


def plan_batches(
    engine, spec: CampaignSpec, as_of: date, at: datetime, params: dict, batch_size: int
) -> list[tuple[int, int]]:
    """Customer-id ranges of at most ``batch_size`` selected customers each.

    One query numbers the segment's customers and keeps every
    ``batch_size``-th id as a boundary, so the plan costs one pass over the
    selection whatever the id distribution.
    """
    seg = segments.build(spec.segment, as_of, params, at=at).subquery("seg")
    return id_ranges(engine, select(seg.c.customer_id), batch_size)


def run_batch(run: RunPlan, lo: int, hi: int) -> dict:
    """One batch of a run: the whole route for the selected customers in ``lo``..``hi``.

    A real batch sends now, so it judges send times, caps and due deferrals at the
    real clock as it starts, whatever instant the run selects as of (``at``, from
    --as-of) or was planned at (``now``); a dry run rehearses at ``now`` or ``at``.
    """
    settle_heap()
    if not run.dry_run:
        run = replace(run, now=clock.now())
    stop = stop_flag(db.engine_for(run.settings.effective_database_url), run.run_id)
    route = Route.for_run(run, stop)
    try:
        result = process_batch(route, (lo, hi))
    except RunStopped:
        # A stop is not a failure: no retry (it would only claim rows again) and no
        # traceback per batch. The flow settles what this batch held.
        return BatchResult().as_dict()
    if result.fault:  # the channel can deliver nothing more: the other batches stop too
        stop_others(route.engine, run.run_id, result.fault)
    return result.as_dict()


@contextmanager
def stop_event(run_id: str) -> Iterator[threading.Event]:
    """The run's stop for its batches in this process (:func:`stop_flag`), while it runs."""
    stop = _STOPS[run_id] = threading.Event()
    try:
        yield stop
    finally:
        _STOPS.pop(run_id, None)


def stop_flag(engine: Engine, run_id: str) -> threading.Event | RunStopFlag:
    """A batch's view of its run's stop: the flow's own event when it runs in this
    process, else the run's row (Dask)."""
    return _STOPS.get(run_id) or RunStopFlag(engine, run_id)


def stop_others(engine: Engine, run_id: str, fault: str) -> None:
    """A batch whose channel can deliver nothing more stops its run's other batches."""
    if run_id in _STOPS:
        _STOPS[run_id].set()
    else:
        request_stop(engine, run_id, f"failed: {fault}")


# Not a decorator: a Dask worker process gets the function by its importable name
# (run_batch). Under the task's name it would be shipped by value with the globals
# it reads, the flow process's _STOPS (and its locks) among them.
process_batch_task = task(
    name="process-batch",
    task_run_name="{run.spec.name}[{lo}-{hi}]",
    retries=2,
    retry_delay_seconds=[2, 10],
    cache_policy=NO_CACHE,
)(run_batch)


def shop_zone() -> ZoneInfo:
    """The shop's time zone (CAREFLOW_TIME_ZONE); UTC while the settings cannot be read
    (the run itself then stops with the reason)."""
    try:
        return ZoneInfo(load_settings().time_zone)
    except Exception:
        return ZoneInfo("UTC")


def occasion_text(as_of, minutes: bool = False) -> str:
    """A run's occasion for its name: ``as_of`` as given, else the day (and with
    ``minutes`` the time) the run was scheduled for, in the shop's time zone. A
    scheduled run that starts late still names the slot it was scheduled for."""
    if as_of and as_of != TODAY:
        if isinstance(as_of, datetime):
            return as_of.isoformat(sep=" ", timespec="minutes")
        return as_of.isoformat() if hasattr(as_of, "isoformat") else str(as_of)
    start = flow_run.scheduled_start_time.astimezone(shop_zone())
    return f"{start:%Y-%m-%d %H:%M}" if minutes else f"{start:%Y-%m-%d}"


def run_name() -> str:
    """A flow run's name says what and for when: ``birthday 2026-12-07``,
    ``winback 2026-11-22 via sms dry run`` (docs/operators.md)."""
    params = flow_run.parameters or {}
    what = params.get("campaign") or flow_run.flow_name or "campaign"
    followup = flow_run.flow_name == "deferred-messages"  # every 15 minutes: the time too
    channel = chosen_channel(params.get("channel"))
    extra = [f"via {channel}"] if channel else []
    extra += ["dry run"] if params.get("dry_run") else []
    return " ".join([what, occasion_text(params.get("as_of"), minutes=followup), *extra])


def business_today(zone: str) -> date:
    return clock.now().astimezone(ZoneInfo(zone)).date()


def check_not_backdated(as_of: date, zone: str, dry_run: bool, allow_past: bool) -> None:
    """Refuse a real run dated in the past unless it was confirmed."""
    today = business_today(zone)
    if as_of < today and not dry_run and not allow_past:
        raise ConfigError(
            f"--as-of {as_of} is {(today - as_of).days} day(s) ago: a real run would send "
            "today what was meant for then; rehearse it with --dry-run, or confirm with "
            "--allow-past (allow_past in a flow run)"
        )


def preflight(
    settings: Settings, spec: CampaignSpec, channel: str | None
) -> tuple[Settings, str | None, list[str]]:
    """Everything that can be wrong before anyone is selected, checked once, in one place:
    segment parameters, templates, channel configuration. Returns the run's settings,
    channel override and channel order (``outbox`` keeps a live setup local for a run)."""
    if channel == "outbox":
        settings = settings.model_copy(update={"delivery": "outbox"})
        channel = None
    channel_names = [channel] if channel else list(spec.channels)
    try:
        segments.validate_params(spec.segment, spec.parameters)
    except ConfigError as exc:
        raise ConfigError(f"templates/{spec.name}/campaign.yaml: {exc}") from None
    check_campaign(settings, spec, channel_names)
    return settings, channel, channel_names


def check_campaign(settings: Settings, spec: CampaignSpec, channel_names: list[str]) -> None:
    """Everything that can be wrong with configuration, before anyone is selected."""
    resolve_policy(settings, spec)  # the country rules file, read and checked
    if (
        settings.delivery == "live"
        and spec.marketing
        and "email" in channel_names
        and not settings.postal_address
    ):
        raise ConfigError(
            "CAREFLOW_POSTAL_ADDRESS is not set: marketing email must carry the shop's real "
            "postal address (CAN-SPAM), and the footer would show the demo shop's"
        )
    renderer = Renderer.from_settings(settings)
    for name in channel_names:
        if not renderer.has_channel(spec.name, name):
            raise ConfigError(
                f"campaign {spec.name!r} has no {name} template in templates/{spec.name}/"
            )
        # building the channel checks its settings; ConfigError names the one to fix
        with channels.closing_channel(channels.get_channel(name, settings)):
            pass


def run_campaign(
    campaign: str,
    as_of: str | date | datetime | None = None,
    channel: str | None = None,
    dry_run: bool = False,
    settings: Settings | None = None,
    allow_past: bool = False,
) -> dict:
    """Select, render, send and record one campaign; returns the run summary.

    Must be called inside a Prefect flow (the care flows are thin wrappers).
    A real run dated before today sends today what was meant for then (a
    birthday wish three weeks late), so it needs ``allow_past``; a dry run
    may travel in time freely.
    """
    logger = get_run_logger()
    channel = chosen_channel(channel)
    try:
        return _run_campaign(logger, campaign, as_of, channel, dry_run, settings, allow_past)
    except (RunStopped, ChannelDown) as exc:
        return final_state(exc)
    except CareflowError as exc:  # the first line an operator reads: what, and what to do
        logger.error("%s did not run: %s", campaign, exc)
        _record_refused(logger, campaign, as_of, channel, dry_run, settings, exc)
        raise


def _record_refused(logger, campaign, as_of, channel, dry_run, settings, exc) -> None:
    """A run refused before it started, recorded for `careflow report runs` when the
    database can be reached (a run stopped by its database cannot be recorded there)."""
    try:
        settings = settings or load_settings()
        engine = run_engine(settings)
        try:
            at = resolve_as_of(as_of, settings.time_zone)[1]
        except CareflowError:  # the date itself was the problem
            at = clock.now()
        run_id = str(flow_run.get_id() or uuid.uuid4())
        why = " ".join(str(exc).split())
        paused = {"paused": exc.pause} if isinstance(exc, CampaignPaused) else None
        summary = record_refused(
            engine, run_id, str(campaign), at, channel, dry_run, why, extra=paused
        )
        if paused and summary:  # the run's artifact says it, with the numbers
            create_markdown_artifact(
                markdown=summary_markdown(summary),
                key=f"{str(campaign).replace('_', '-')}-summary",
                description=f"{campaign} run summary",
            )
    except Exception as unrecorded:  # the reason is in the log line above all the same
        logger.warning("the refused run could not be recorded: %s", unrecorded)


#: Prefect's words before the reason: parameters the flow's signature refuses, or an error
_PREFECT_PREAMBLE = re.compile(
    r"^(Validation of flow parameters failed with error: \w+: Flow run received "
    r"|Flow run encountered an exception: )"
)


def record_failure(flow, run, state) -> None:
    """``on_failure`` of the campaign flows: a run that failed before careflow's code
    ran (parameters its signature refuses, ``as_of="22/11/2026"``) is recorded like one
    careflow refused (``_record_refused``); a run recorded already is left as it is."""
    logger = logging.getLogger("careflow.flows")
    params = run.parameters or {}
    campaign = params.get("campaign") or flow.name.replace("-", "_")
    why = " ".join(_PREFECT_PREAMBLE.sub("", state.message or "failed").split())
    try:
        engine = run_engine(load_settings())
        at = clock.now()
        with suppress(CareflowError):
            at = resolve_as_of(params.get("as_of"), load_settings().time_zone)[1]
        given = params.get("channel")
        channel = chosen_channel(given) if isinstance(given, str) else None
        dry_run = params.get("dry_run") is True
        record_refused(engine, str(run.id), str(campaign), at, channel, dry_run,
                       why.replace(" - ", " "))  # fmt: skip
    except Exception as unrecorded:  # the reason is in the run's state all the same
        logger.warning("the failed run could not be recorded: %s", unrecorded)


def final_state(exc: RunStopped | ChannelDown) -> State:
    """The flow run's end for a run that stopped: Cancelled when it was asked to stop
    (a signal, a cancelled flow run), Failed when its channel could deliver nothing
    more. Calling the flow raises ``exc``: the CLI prints it as one line."""
    if isinstance(exc, RunStopped):
        return Cancelled(message=str(exc), data=exc)
    return Failed(message=str(exc), data=exc)


def _run_campaign(logger, campaign, as_of, channel, dry_run, settings, allow_past) -> dict:
    settings = settings or load_settings()
    spec = load_campaign(campaign, settings.templates_dir)
    engine = run_engine(settings)
    as_of_date, at = resolve_as_of(as_of, settings.time_zone)
    check_not_backdated(as_of_date, settings.time_zone, dry_run, allow_past)
    if allow_past and not dry_run and as_of_date < business_today(settings.time_zone):
        logger.warning(
            "%s: sending as of %s, %d day(s) ago, as confirmed (allow_past)",
            campaign,
            as_of_date,
            (business_today(settings.time_zone) - as_of_date).days,
        )

    settings, channel, channel_names = preflight(settings, spec, channel)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    check_paused(engine, settings, spec.name, run_id, channel_names, dry_run, logger)
    plan = experiment_start(engine, spec, settings, logger, run_id, dry_run)

    run = RunPlan(
        spec=spec,
        run_id=run_id,
        as_of=as_of_date,
        at=at,
        settings=settings,
        only_channel=channel,
        dry_run=dry_run,
    )
    run, summary = open_run(engine, run, logger, refresh_facts=True)
    if plan is not None:
        summary["experiment"] = plan
    ranges = plan_batches(engine, spec, as_of_date, at, run.params, settings.batch_size)
    logger.info(
        "%s: as of %s, %d batch(es) of up to %d customers, channels %s via %s%s",
        spec.name,
        as_of_date,
        len(ranges),
        settings.batch_size,
        "/".join(channel_names),
        settings.delivery,
        " (dry run: nothing is sent or recorded)" if dry_run else "",
    )
    return run_batches(engine, run, ranges, summary)


def experiment_start(
    engine: Engine, spec: CampaignSpec, settings: Settings, logger, run_id: str, dry_run: bool
) -> dict | None:
    """Before a campaign with an experiment selects anyone: its plan (power and the smallest
    rise it finds, CAREFLOW_EXPERIMENT_MIN_POWER warns or refuses), then its rule applied
    (a real run, unless campaign.yaml says ``decide: by_hand``), so that a winner the
    rule now declares is recorded once and this run sends it (docs/experiments.md)."""
    experiment = spec.experiment
    if experiment is None:
        return None
    plan = plan_for(engine, spec, settings, settings.experiment_underpowered)
    if "warning" in plan:
        logger.warning("%s: %s", spec.name, plan["warning"])
    if dry_run or experiment.decide != "run" or winner_of(engine, spec.name) is not None:
        return plan
    report = report_for(engine, spec, settings)
    decided, now = decide(engine, spec, report, f"run {run_id}")
    if now:
        logger.info("%s: %s", spec.name, verdict({**report, "decision": decided}))
    return plan


def check_paused(
    engine: Engine,
    settings: Settings,
    campaign: str,
    run_id: str,
    channel_names: list[str],
    dry_run: bool,
    logger,
) -> None:
    """A run that may send email refuses while its campaign is paused, and pauses the
    campaign first when its sending domain's spam-report rate passed the limit
    (careflow/pauses.py): CampaignPaused, whose line says why and how to resume. A new
    pause is a Prefect event, ``careflow.campaign.paused``."""
    if "email" not in channel_names:
        return
    pause = pauses.check(engine, settings, campaign, run_id, dry_run=dry_run)
    if pause is None:
        return
    if pause.new:
        logger.warning("%s paused itself: %s", campaign, pause.why())
        emit_pause(pause, logger)
    raise CampaignPaused(pause.refusal(dry_run), pause.as_dict())


def emit_pause(pause: pauses.Pause, logger) -> None:
    """The pause as a Prefect event, for automations (notify someone); best-effort: the
    pause is recorded in the database whatever becomes of the event."""
    try:
        emit_event(**pauses.prefect_event(pause))
    except Exception as exc:  # an unreachable Prefect API must not hide the pause
        logger.warning("could not emit careflow.campaign.paused: %s", type(exc).__name__)


def run_engine(settings: Settings) -> Engine:
    """The database a flow's runs use, its schema brought up to date."""
    engine = db.engine_for(settings.effective_database_url)
    db.ensure_schema(engine)
    return engine


def open_run(
    engine: Engine, run: RunPlan, logger, *, refresh_facts: bool = False
) -> tuple[RunPlan, dict]:
    """Record the run (before any customer is touched) and prepare its segment's
    parameters once for all its batches; returns the run with them and the head of its
    summary. A campaign run first brings purchase facts up to date (``refresh_facts``:
    orders written since the last import; unreadable dates are named, not fatal); the
    follow-up does not: segments are exact either way
    (careflow/purchase_facts.py)."""
    spec, settings = run.spec, run.settings
    start_run(engine, run.run_id, spec, run.at, run.only_channel or settings.delivery, run.dry_run)
    if refresh_facts:
        refreshed = purchase_facts.refresh(engine, warn=logger.warning)
        if refreshed:
            logger.info("purchase facts brought up to date for %d customer(s)", refreshed)
    with engine.connect() as conn:
        params = segments.prepare(spec.segment, conn, run.as_of, spec.parameters)
    shop_hours = None
    timing = spec.policy.send_time
    if timing is not None and timing.optimise:  # the best-hour rule's prior, once per run
        shop_hours = send_hours.shop_hours(
            engine, settings.time_zone, run.policy_now, timing.history_days
        )
    summary = {
        "campaign": spec.name,
        "run_id": run.run_id,
        "as_of": str(run.as_of),
        "dry_run": run.dry_run,
        "delivery": settings.delivery,
    }
    return replace(run, params=params, shop_send_hours=shop_hours), summary


def run_batches(engine, run: RunPlan, ranges: list[tuple[int, int]], summary: dict) -> dict:
    """Process ``ranges`` as Prefect tasks, merge their results into ``summary``, and
    record the run; a stop or failure releases what the run held (module docs)."""
    logger = get_run_logger()
    spec, run_id = run.spec, run.run_id
    progress = create_progress_artifact(progress=0.0, description=f"{spec.name} batches done")
    total = BatchResult()
    stop = _STOPS[run_id] = threading.Event()
    futures = []
    merged: set[int] = set()  # futures whose results are in ``total``
    labels = [f"campaign:{spec.name}", f"delivery:{run.settings.delivery}"]
    labels += [f"channel:{name}" for name in run.channels]
    labels += ["deferred"] if run.deferred_only else []
    try:
        # outcomes a database outage kept on this machine (careflow/flows/route.py)
        if not run.dry_run:
            kept = outcome_journal.replay(run.settings.home, ContactLedger(engine))
            if kept:
                logger.warning("%d outcome(s) kept through a database outage recorded", kept)
        with tags(*labels):  # batch task runs can be found by campaign and channel in the UI
            futures = [process_batch_task.submit(run, lo, hi) for lo, hi in ranges]
        shown = time.monotonic()
        for done, future in enumerate(futures, start=1):
            total.merge(BatchResult.from_dict(future.result()))
            merged.add(id(future))
            if total.fault:
                raise ChannelDown(total.fault)
            # the UI's bar: a call to the API, so at most once a second (and at the end)
            if done == len(futures) or time.monotonic() - shown >= PROGRESS_EVERY_SECONDS:
                update_progress_artifact(progress, progress=100.0 * done / len(futures))
                shown = time.monotonic()
            report_progress(f"{spec.name} batches", done, len(futures))  # a terminal's bar
            # progress at every quarter: enough to watch a long run, not a line per batch
            if done == len(futures) or done % max(1, len(futures) // 4) == 0:
                logger.info(
                    "%d/%d batches done: %s",
                    done,
                    len(futures),
                    counts_text({**total.as_dict(), "dry_run": run.dry_run}),
                )
    except BaseException as exc:  # SIGTERM (Prefect's TerminationSignal), Ctrl-C, a failure
        stop.set()
        stopped = isinstance(exc, RunStopped | KeyboardInterrupt | TerminationSignal)
        if isinstance(exc, ChannelDown):
            why = f"failed: {total.fault}"
        else:
            why = "stopped" if stopped else f"failed: {type(exc).__name__}"
        # a second Ctrl-C or SIGTERM cuts the waiting short, never the settling
        with SettlingSignals() as signals:
            # batches in other processes (Dask) see the stop on the run's row
            request_stop(engine, run_id, why)
            for future in signals.wait(futures, STOP_GRACE_SECONDS):
                if id(future) not in merged:  # what the others did before they stopped
                    with suppress(Exception):
                        total.merge(BatchResult.from_dict(future.result(timeout=0)))
            ledger = DryRunLedger(engine) if run.dry_run else ContactLedger(engine)
            fault = isinstance(exc, ChannelDown)
            released, interrupted = ledger.release(
                run_id, "run_stopped" if stopped or fault else "run_failed"
            )
            # batches that could not report (a second signal, another process): the
            # ledger knows what this run sent; a batch may know of more (an outage)
            total.sent = max(total.sent, ledger.sent_by(run_id))
            what = f"stopped: {total.fault}" if fault else why
            said = f"{spec.name} {what}: {total.sent} sent, {released} left for the next run"
            if interrupted:
                said += f", {interrupted} in doubt (failed: interrupted)"
            logger.error("%s", said)
            finish_run(engine, run_id, {**summary, **total.as_dict(), "stopped": why})
        if fault:
            raise ChannelDown(said) from None
        if stopped:
            raise RunStopped(said) from None
        raise
    finally:
        _STOPS.pop(run_id, None)
        if run.dry_run:  # what it would have taken goes (careflow/ledger/dry_run.py)
            DryRunLedger(engine).forget(run_id)
    summary.update(total.as_dict())
    if not run.deferred_only:
        summary["split"], summary["uplift"] = holdout_sections(engine, run, total)
        if summary.get("experiment") and summary["split"]:
            arms = len(summary["experiment"]["variants"])
            summary["experiment"]["per_variant"] = summary["split"]["to_contact"] // arms
    if not run.dry_run:  # status callbacks that outran the ledger write of their own send
        match_orphans(engine)
    finish_run(engine, run_id, summary)
    create_markdown_artifact(
        markdown=summary_markdown(summary),
        key=f"{spec.name.replace('_', '-')}-summary",
        description=f"{spec.name} run summary",
    )
    if spec.experiment is not None and not run.dry_run:
        publish_experiment(engine, spec, run.settings)
    timing = spec.policy.send_time
    if timing is not None and timing.optimise and not run.dry_run:
        publish_send_time(engine, spec, run.settings)
    return summary


def publish_experiment(engine: Engine, spec: CampaignSpec, settings: Settings) -> None:
    """The experiment's report as the campaign's Prefect artifact, after each real run
    (``<campaign>-experiment``: the UI keeps each version)."""
    report = report_for(engine, spec, settings)
    create_markdown_artifact(
        markdown=experiment_markdown(report),
        key=f"{spec.name.replace('_', '-')}-experiment",
        description=f"{spec.name}: which variant pays more",
    )


def publish_send_time(engine: Engine, spec: CampaignSpec, settings: Settings) -> str:
    """The send-time comparison (best hour against fixed time) with its charts as the
    campaign's Prefect artifact, after each real run of a campaign that optimises send
    times (``<campaign>-send-time``: the UI keeps each version)."""
    report = send_time_report(
        engine, spec.name, window_days=settings.attribution_window_days,
        shop_zone=settings.time_zone,
    )  # fmt: skip
    text = f"{send_time_markdown(report)}\n\n{figures_markdown(send_time_charts(report))}"
    create_markdown_artifact(
        markdown=text,
        key=f"{spec.name.replace('_', '-')}-send-time",
        description=f"{spec.name}: does sending at the best hour pay",
    )
    return text


def holdout_sections(engine, run: RunPlan, total: BatchResult) -> tuple[dict | None, dict | None]:
    """(split, comparison so far) for the run's summary and artifact (careflow/uplift.py).

    The split: customers to contact (sent, would send, deferred) against those held
    out, and the smallest difference in conversion it can detect, from the campaign's
    own baseline over the last year. The comparison: held out against contacted over
    that year, None before anyone was held out. One read of the campaign's year serves both.
    """
    s, name = run.settings, run.spec.name
    to_contact = total.sent + sum(total.would_send.values()) + sum(total.deferred.values())
    if not (to_contact or total.held_out):
        # nothing new (a re-run): the year's read would cost seconds at a million
        # customers and say what the last run said; `careflow report uplift` has it
        return None, None
    now = datetime.now(UTC).replace(tzinfo=None)
    window = s.attribution_window_days
    since = (now - timedelta(days=365 + window)).date()
    units = load_units(engine, name, window, s.time_zone, since=since, now=now)
    baseline, source = baseline_of(
        units, name, window_days=window, default=s.uplift_baseline_conversion, now=now
    )
    share = resolve_policy(s, run.spec).holdout
    split = split_summary(to_contact, total.held_out, share, baseline, source)
    found = compare(units, window_days=window, now=now, campaign=name, since=since)
    if not found["groups"]["held_out"]["customers"]:
        return split, None
    found["occasions"] = found["occasions"][:1] + found["occasions"][1:][-1:]  # kept short
    return split, found


# Batches run on threads or a Dask cluster, as CAREFLOW_TASK_RUNNER says
# (careflow/flows/runners.py).
@flow(
    name="campaign",
    flow_run_name=run_name,
    task_runner=BatchTaskRunner(),
    on_failure=[record_failure],
)
def campaign_flow(
    campaign: Campaign,
    as_of: AsOf = None,
    channel: Channel = PREFERRED,
    dry_run: DryRun = False,
    allow_past: AllowPast = False,
) -> dict:
    """Run any campaign in templates/ by name."""
    return run_campaign(campaign, as_of, channel, dry_run, allow_past=allow_past)

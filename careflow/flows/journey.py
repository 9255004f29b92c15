"""The ``journey-advance`` flow: enter customers and move every journey's due positions.

Deployed every five minutes (prefect.yaml) as the safety net; the journey's
state is all in careflow's database (careflow/journeys/), so a run that dies
loses nothing and the next run takes over its claims once their lease has
passed. Batches are Prefect tasks of customer-id ranges of due positions
(like campaign runs: never a task per customer). A send step's message goes
through the route, exactly as a campaign's: :func:`_send_step` is the one place
that calls into the route and the campaign flow.

Each journey's advance that has anything to do is a run, recorded and stopped as a
campaign run is (:func:`advance_one`; ``journey:<name>`` in `careflow report runs`).
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import suppress
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError, TerminationSignal
from prefect.runtime import flow_run

from careflow import (
    channels,  # noqa: F401 - registers the built-in channels
    clock,
    db,
)
from careflow.campaigns import CampaignSpec, journey_step_campaign
from careflow.clock import resolve_as_of
from careflow.errors import ChannelDown, ConfigError
from careflow.experiment_decisions import winner_of
from careflow.experiment_report import decide, report_for, verdict
from careflow.flows.campaign import (
    STOP_GRACE_SECONDS,
    SettlingSignals,
    final_state,
    occasion_text,
    publish_experiment,
    stop_event,
    stop_flag,
    stop_others,
)
from careflow.flows.idle import idle
from careflow.flows.params import DeferredAsOf, FollowFrom, FollowSeconds, JourneyName
from careflow.flows.route import BatchResult, Route, RunPlan, RunStopped, StopFlag, process_batch
from careflow.flows.runners import BatchTaskRunner, settle_heap
from careflow.journey_spec import JourneySpec, SendStep, list_journeys, load_journey
from careflow.journeys import advance, diagram, events, holdout
from careflow.ledger import ContactLedger
from careflow.report import finish_run, journey_run_name, request_stop, start_journey_run
from careflow.settings import Settings, load_settings


def _send_step(
    settings: Settings,
    spec: JourneySpec,
    step: SendStep,
    claim: str,
    id_range: tuple[int, int],
    now: datetime,
    run_id: str | None = None,
    stop: StopFlag | None = None,
) -> BatchResult:
    """Run the route for the positions ``claim`` holds on send step ``step``: policy
    (consent, suppression, quiet hours, caps), render, reserve, send, record, as for any
    campaign. The only call into careflow/flows/route.py and campaign.py from journeys.

    The ledger rows are the run's (``run_id``: what a stopping run gives back, what
    `careflow report runs` counts); without one, the claim's own."""
    campaign = journey_step_campaign(spec, step)
    params = {**campaign.parameters, "claim": claim}
    as_of = now.astimezone(ZoneInfo(settings.time_zone)).date()
    run = RunPlan(
        spec=campaign, run_id=run_id or f"{claim}:{step.id}", as_of=as_of, at=now,
        settings=settings, params=params, now=now,
    )  # fmt: skip
    try:
        return process_batch(Route.for_run(run, stop), id_range)
    except RunStopped:  # asked to stop before it reserved anyone: nothing to count
        return BatchResult()


def sender(
    settings: Settings,
    run_id: str | None = None,
    stop: StopFlag | None = None,
    messages: BatchResult | None = None,
) -> advance.SendFn:
    """The send function advancing hands send steps to; what the route did is merged into
    ``messages``. A channel that can deliver nothing more stops the run's other batches
    (as a campaign run's do)."""

    def send(spec, step, claim, id_range, now) -> None:
        result = _send_step(settings, spec, step, claim, id_range, now, run_id, stop)
        if messages is not None:
            messages.merge(result)
        if result.fault and run_id is not None:
            stop_others(db.engine_for(settings.effective_database_url), run_id, result.fault)

    return send


def advance_batch(
    journey: str, lo: int, hi: int, now: datetime, settings: Settings, run_id: str | None = None
) -> dict:
    """One batch: the due positions of ``journey`` in ``lo``..``hi``, stepped until none is
    due; returns what it did (``tally``) and what the route did with its messages
    (``messages``). Retrying it is safe: claims, step rows and the ledger decide what is
    left. A batch of a stopping run claims nothing more and puts down what it holds."""
    settle_heap()
    spec = load_journey(journey, settings.templates_dir)
    engine = db.engine_for(settings.effective_database_url)
    messages = BatchResult()
    stop = stop_flag(engine, run_id) if run_id is not None else None
    tally = advance.advance_range(
        engine, spec, settings, (lo, hi), now, sender(settings, run_id, stop, messages),
        run_id=run_id, stop=stop.is_set if stop is not None else None,
    )  # fmt: skip
    return {"tally": tally.as_dict(), "messages": messages.as_dict()}


advance_batch_task = task(
    name="journey-batch",
    task_run_name="{journey}[{lo}-{hi}]",
    retries=2,
    retry_delay_seconds=[2, 10],
    cache_policy=NO_CACHE,
)(advance_batch)


def advance_journeys(
    journey: str | None = None,
    as_of: str | date | datetime | None = None,
    settings: Settings | None = None,
    submit=None,
    segments: bool = True,
    responded_after: tuple[int, int] | None = None,
) -> list[dict]:
    """Enter and advance ``journey`` (default: every journey); one summary per journey.

    ``as_of`` is the instant to advance at (default now). ``submit(fn, *args)`` runs a
    batch and returns an object with ``result()`` (a Prefect task's ``submit`` in the
    flow); without it batches run here, one after the other. Each journey that had
    anything to do is a run (:func:`advance_one`); a stop raises RunStopped, a channel
    that can deliver nothing more ChannelDown, after the run has settled.
    ``segments=False`` enters only journeys entered by an event (a segment's entries are
    the schedule's); ``responded_after`` (a :func:`careflow.journeys.events.response_mark`)
    wakes only the customers with a response since (due positions advance all the same).
    """
    settings = settings or load_settings()
    engine = db.engine_for(settings.effective_database_url)
    db.ensure_schema(engine)
    now = resolve_as_of(as_of, settings.time_zone)[1] if as_of else clock.now()
    names = [journey] if journey else list_journeys(settings.templates_dir)
    return [
        advance_one(engine, name, now, settings, submit, segments, responded_after)
        for name in names
    ]


def advance_one(
    engine,
    name: str,
    now: datetime,
    settings: Settings,
    submit=None,
    segments: bool = True,
    responded_after: tuple[int, int] | None = None,
) -> dict:
    """Enter customers into journey ``name`` and advance its due positions, as one run
    (``segments`` and ``responded_after``: :func:`advance_journeys`).

    Entering and waking come first (one transaction each); a journey with nothing due
    then records nothing (most five-minute advances). Otherwise the advance is a run
    like a campaign's (``journey:<name>`` in `careflow report runs`): its row is written
    before any batch starts, its summary holds what the steps did and what became of
    their messages, and a stop (SIGTERM, Ctrl-C, a cancelled flow run) or a channel
    that can deliver nothing more tells its batches to stop between messages and
    between rounds, waits for them briefly, gives back the messages they reserved but
    never sent (``skipped: run_stopped``; those handed to a channel become ``failed:
    interrupted``) and the positions their claims still hold, due as they were, and
    records the run as stopped (careflow/flows/campaign.py, "Stopping").
    """
    spec = load_journey(name, settings.templates_dir)
    try:
        entering = segments or spec.entry.event is not None
        entered = advance.enter(engine, spec, settings, now) if entering else 0
        scope = None if responded_after is None else events.responders(responded_after)
        woken = advance.wake(engine, spec, settings, now, scope)
        ranges = advance.plan_ranges(engine, name, now, settings.batch_size)
    except (KeyboardInterrupt, TerminationSignal):  # nothing held yet: nothing to give back
        raise RunStopped(f"journey {name} stopped before advancing anyone") from None
    summary = {"journey": name, "version": spec.version, "at": now.isoformat(timespec="minutes"),
               "new_entries": entered, "woken": woken, "batches": len(ranges)}  # fmt: skip
    if not (entered or woken or ranges):
        return {**summary, **advance.Tally().as_dict(), **BatchResult().as_dict()}
    run_id = str(uuid.uuid4())
    start_journey_run(engine, run_id, name, now, settings.delivery)
    summary = {"campaign": journey_run_name(name), "run_id": run_id,
               "as_of": now.astimezone(ZoneInfo(settings.time_zone)).date().isoformat(),
               "dry_run": False, "delivery": settings.delivery, **summary}  # fmt: skip
    tally, messages = advance.Tally(), BatchResult()
    futures: list = []
    merged: set[int] = set()  # futures whose results are counted

    def count(result: dict) -> None:
        tally.merge(advance.Tally.from_dict(result["tally"]))
        messages.merge(BatchResult.from_dict(result["messages"]))

    with stop_event(run_id) as stop:
        try:
            if submit is None:
                for lo, hi in ranges:
                    count(advance_batch(name, lo, hi, now, settings, run_id))
                    if messages.fault or stop.is_set():
                        break
            else:
                futures = [submit(name, lo, hi, now, settings, run_id) for lo, hi in ranges]
                for future in futures:
                    count(future.result())
                    merged.add(id(future))
                    if messages.fault:
                        break
            if messages.fault:
                raise ChannelDown(messages.fault)
        except BaseException as exc:  # SIGTERM (Prefect's TerminationSignal), Ctrl-C, a failure
            stop.set()
            final = _settle(engine, spec, run_id, summary, tally, messages, futures, merged, exc)
            if final is exc:
                raise
            raise final from None
    summary.update(tally.as_dict())
    summary.update(messages.as_dict())
    finish_run(engine, run_id, summary)
    return summary


def _settle(
    engine, spec, run_id, summary, tally, messages, futures, merged, exc
) -> BaseException:
    """A stopping or failing journey run: its batches told, waited for, what they held
    given back, the run recorded; returns what the caller raises (:func:`advance_one`)."""
    stopped = isinstance(exc, RunStopped | KeyboardInterrupt | TerminationSignal)
    fault = isinstance(exc, ChannelDown)
    if fault:
        why = f"failed: {messages.fault}"
    else:
        why = "stopped" if stopped else f"failed: {type(exc).__name__}"
    # a second Ctrl-C or SIGTERM cuts the waiting short, never the settling
    with SettlingSignals() as signals:
        request_stop(engine, run_id, why)  # batches in other processes read the run's row
        for future in signals.wait(futures, STOP_GRACE_SECONDS):
            if id(future) not in merged:
                with suppress(Exception):
                    result = future.result(timeout=0)
                    tally.merge(advance.Tally.from_dict(result["tally"]))
                    messages.merge(BatchResult.from_dict(result["messages"]))
        ledger = ContactLedger(engine)
        released, interrupted = ledger.release(
            run_id, "run_stopped" if stopped or fault else "run_failed"
        )
        claims = advance.release_claims(engine, spec.name, run_id)
        messages.sent = max(messages.sent, ledger.sent_by(run_id))
        what = f"stopped: {messages.fault}" if fault else why
        said = f"journey {spec.name} {what}: {messages.sent} sent, {released} left for the next"
        said += " advance"
        if claims:
            said += f" (with {claims} customer(s) a batch still held)"
        if interrupted:
            said += f", {interrupted} in doubt (failed: interrupted)"
        _log().error("%s", said)
        finish_run(engine, run_id, {**summary, **tally.as_dict(), **messages.as_dict(),
                                    "stopped": why})  # fmt: skip
    if fault:
        return ChannelDown(said)
    if stopped:
        return RunStopped(said)
    return exc


def _log() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger inside a flow, else careflow's."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("careflow.flows")


def due_now(journey: str | None, as_of=None, settings: Settings | None = None) -> list[dict]:
    """What an advance would take up, without doing it: due positions per step."""
    settings = settings or load_settings()
    engine = db.engine_for(settings.effective_database_url)
    now = resolve_as_of(as_of, settings.time_zone)[1] if as_of else clock.now()
    out = []
    for name in [journey] if journey else list_journeys(settings.templates_dir):
        spec = load_journey(name, settings.templates_dir)
        st = advance.status(engine, spec, now)
        due = {}
        for row in st["positions"]:
            first = row["first_due"]
            if row["state"] in ("active", "waiting") and first is not None and first <= st["now"]:
                due[row["step"]] = due.get(row["step"], 0) + row["customers"]
        out.append({"journey": name, "at": now.isoformat(timespec="minutes"), "due": due})
    return out


def run_name() -> str:
    """``all journeys 2026-12-07 14:05``: what, and when, in the shop's time zone."""
    params = flow_run.parameters or {}
    what = params.get("journey") or "all journeys"
    return f"{what} {occasion_text(params.get('as_of'), minutes=True)}"


#: how often a run started by a response looks for more while it follows them
FOLLOW_POLL_SECONDS = 5.0


def follow_responses(
    journey: str | None,
    until: datetime,
    settings: Settings | None = None,
    submit=None,
    sleep=time.sleep,
    poll: float = FOLLOW_POLL_SECONDS,
    mark: tuple[int, int] | None = None,
) -> list[list[dict]]:
    """Until ``until``: every ``poll`` seconds, if a response (a reply, a click, an
    opt-out, an order...) was recorded since the last look, wake those customers and
    advance again (entering event journeys; segment entries and the wake of everyone are
    the schedule's, so a busy minute costs no full scan every few seconds). The
    summaries of the advances it made.

    The deployment's trigger starts a run on the first response and no other for the
    next minute (Prefect's reactive trigger: ``within``); a run that ended before a
    response of that minute came would leave it to the schedule, up to five minutes.
    Following them until the minute is over takes each within about ``poll`` seconds.
    ``mark``: the responses already taken (:func:`events.response_mark` read before the
    run's advance; default: those recorded by now).
    """
    settings = settings or load_settings()
    engine = db.engine_for(settings.effective_database_url)
    mark = mark or events.response_mark(engine)
    made = []
    while (left := (until - clock.now()).total_seconds()) > 0:
        sleep(min(poll, left))
        seen = events.response_mark(engine, mark)
        if seen != mark:
            made.append(advance_journeys(journey, settings=settings, submit=submit,
                                         segments=False, responded_after=mark))  # fmt: skip
            mark = seen
    return made


def _merged(summaries: list[dict], more: list[list[dict]]) -> list[dict]:
    """One summary per journey: the first advance's, with the follow-ups' counts added
    (entries, wakes, batches, steps and what became of their messages)."""
    out = {s["journey"]: dict(s) for s in summaries}
    none = {"new_entries": 0, "woken": 0, "batches": 0,
            **advance.Tally().as_dict(), **BatchResult().as_dict()}  # fmt: skip
    for later in more:
        for s in later:
            first = out.setdefault(s["journey"], dict(s, **none))
            tally = advance.Tally.from_dict(first)
            tally.merge(advance.Tally.from_dict(s))
            messages = BatchResult.from_dict(first)
            messages.merge(BatchResult.from_dict(s))
            first.update(**tally.as_dict(), **messages.as_dict(), at=s["at"],
                         **{k: first[k] + s[k] for k in ("new_entries", "woken", "batches")})
    return list(out.values())


@flow(name="journey-advance", flow_run_name=run_name, task_runner=BatchTaskRunner())
def journey_advance(
    journey: JourneyName = None,
    as_of: DeferredAsOf = None,
    follow_from: FollowFrom = None,
    follow_seconds: FollowSeconds = 0,
) -> list[dict]:
    """Enter customers into journeys and move every due one a step on (all journeys, or
    ``journey``). Deployed every five minutes (prefect.yaml), and started by a response
    (its trigger), which it then follows until ``follow_seconds`` after ``follow_from``."""
    logger = get_run_logger()
    try:
        decide_experiments(journey, logger)
        settings = load_settings()
        following = follow_from is not None and follow_seconds > 0 and as_of is None
        if following:  # what the advance below takes; the rest is followed
            engine = db.engine_for(settings.effective_database_url)
            db.ensure_schema(engine)
            mark = events.response_mark(engine)
        summaries = advance_journeys(journey, as_of, settings, advance_batch_task.submit)
        if following:
            start = follow_from if follow_from.tzinfo else follow_from.replace(tzinfo=UTC)
            until = start + timedelta(seconds=follow_seconds)
            try:
                more = follow_responses(journey, until, settings, advance_batch_task.submit,
                                        mark=mark)  # fmt: skip
            except (KeyboardInterrupt, TerminationSignal):  # between advances: nothing held
                raise RunStopped("journeys stopped while following responses") from None
            logger.info("followed responses until %s: %d more advance(s)", until, len(more))
            summaries = _merged(summaries, more)
    except (RunStopped, ChannelDown) as exc:  # settled and recorded: Cancelled or Failed
        return final_state(exc)
    except ConfigError as exc:
        logger.error("journeys did not advance: %s", exc)
        raise
    moved = [s for s in summaries if s["new_entries"] or s["woken"] or s["steps"] or s["exits"]]
    for s in moved:
        logger.info(
            "%s: %d entered, %d woken, steps %s, exits %s", s["journey"], s["new_entries"],
            s["woken"], s["steps"] or "none", s["exits"] or "none",
        )  # fmt: skip
        publish_diagram(s["journey"], s["at"])  # unchanged journeys keep their last diagram
        if s["steps"].get("sent"):
            publish_experiments(s["journey"])
    # most five-minute advances move nobody: told apart in the runs list (flows/idle.py)
    return summaries if moved else idle(summaries)


def step_experiments(journey: str | None, settings: Settings) -> list[CampaignSpec]:
    """The send steps with an experiment of ``journey`` (default: every journey), each as
    the campaign the route runs."""
    out = []
    for name in [journey] if journey else list_journeys(settings.templates_dir):
        spec = load_journey(name, settings.templates_dir)
        out += [
            journey_step_campaign(spec, s)
            for s in spec.steps
            if isinstance(s, SendStep) and s.experiment is not None
        ]
    return out


def decide_experiments(journey: str | None, logger, settings: Settings | None = None) -> None:
    """Before an advance sends anything: each send step's experiment rule applied, as a
    campaign's run does at its start (careflow/flows/campaign.experiment_start), so a
    winner the rule now declares is recorded once and sent from this advance on."""
    settings = settings or load_settings()
    engine = db.engine_for(settings.effective_database_url)
    for campaign in step_experiments(journey, settings):
        if campaign.experiment.decide != "run" or winner_of(engine, campaign.name):
            continue
        report = report_for(engine, campaign, settings)
        decided, now = decide(engine, campaign, report, f"journey-advance {flow_run.get_id()}")
        if now:
            logger.info("%s: %s", campaign.name, verdict({**report, "decision": decided}))


def publish_experiments(journey: str, settings: Settings | None = None) -> None:
    """The report of each send step's experiment, after an advance that sent something,
    as a Prefect artifact like a campaign's (``j-<journey>--<step>-experiment``)."""
    settings = settings or load_settings()
    engine = db.engine_for(settings.effective_database_url)
    for campaign in step_experiments(journey, settings):
        publish_experiment(engine, campaign, settings)


def publish_diagram(journey: str, when: str, settings: Settings | None = None) -> str:
    """The journey's Mermaid flowchart with its live counts and its customers against its
    holdout (careflow/journeys/holdout.py), as a Prefect markdown artifact (key
    ``journey-<name>``, one per journey, a new version each advance)."""
    settings = settings or load_settings()
    spec = load_journey(journey, settings.templates_dir)
    engine = db.engine_for(settings.effective_database_url)
    text = diagram.markdown(spec, diagram.live_counts(engine, spec), when)
    text += "\n" + holdout.markdown(holdout.journey_uplift(engine, spec, settings))
    create_markdown_artifact(
        markdown=text,
        key=f"journey-{journey.replace('_', '-')}",
        description=f"journey {journey}: customers per step, against its holdout",
    )
    return text


__all__ = [
    "advance_journeys", "due_now", "follow_responses", "journey_advance", "publish_diagram",
    "sender",
]


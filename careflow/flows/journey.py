"""The ``journey-advance`` flow: enter customers and move every journey's due positions.

Deployed every five minutes (prefect.yaml) as the safety net; the journey's
state is all in careflow's database (careflow/journeys/), so a run that dies
loses nothing and the next run takes over its claims once their lease has
passed. Batches are Prefect tasks of customer-id ranges of due positions
(like campaign runs: never a task per customer). A send step's message goes
through the route, exactly as a campaign's: :func:`_send_step` is the one place
that calls into the route and the campaign flow.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from careflow import (
    channels,  # noqa: F401 - registers the built-in channels
    clock,
    db,
)
from careflow.campaigns import journey_step_campaign
from careflow.clock import resolve_as_of
from careflow.errors import ConfigError
from careflow.flows.campaign import occasion_text
from careflow.flows.idle import idle
from careflow.flows.params import DeferredAsOf, FollowFrom, FollowSeconds, JourneyName
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.flows.runners import BatchTaskRunner, settle_heap
from careflow.journey_spec import JourneySpec, SendStep, list_journeys, load_journey
from careflow.journeys import advance, diagram, events
from careflow.settings import Settings, load_settings


def _send_step(
    settings: Settings,
    spec: JourneySpec,
    step: SendStep,
    claim: str,
    id_range: tuple[int, int],
    now: datetime,
) -> None:
    """Run the route for the positions ``claim`` holds on send step ``step``: policy
    (consent, suppression, quiet hours, caps), render, reserve, send, record, as for any
    campaign. The only call into careflow/flows/route.py and campaign.py from journeys."""
    campaign = journey_step_campaign(spec, step)
    params = {**campaign.parameters, "claim": claim}
    as_of = now.astimezone(ZoneInfo(settings.time_zone)).date()
    run_id = f"{claim}:{step.id}"
    run = RunPlan(
        spec=campaign, run_id=run_id, as_of=as_of, at=now, settings=settings, params=params,
        now=now,
    )
    process_batch(Route.for_run(run), id_range)


def sender(settings: Settings) -> advance.SendFn:
    """The send function advancing hands send steps to."""
    return functools.partial(_send_step, settings)


def advance_batch(journey: str, lo: int, hi: int, now: datetime, settings: Settings) -> dict:
    """One batch: the due positions of ``journey`` in ``lo``..``hi``, stepped until none is
    due. Retrying it is safe: claims, step rows and the ledger decide what is left."""
    settle_heap()
    spec = load_journey(journey, settings.templates_dir)
    engine = db.engine_for(settings.effective_database_url)
    tally = advance.advance_range(engine, spec, settings, (lo, hi), now, sender(settings))
    return tally.as_dict()


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
    flow); without it batches run here, one after the other. ``segments=False`` enters
    only journeys entered by an event (a segment's entries are the schedule's);
    ``responded_after`` (a :func:`careflow.journeys.events.response_mark`) wakes only the
    customers with a response since (due positions advance all the same).
    """
    settings = settings or load_settings()
    engine = db.engine_for(settings.effective_database_url)
    db.ensure_schema(engine)
    now = resolve_as_of(as_of, settings.time_zone)[1] if as_of else clock.now()
    names = [journey] if journey else list_journeys(settings.templates_dir)
    summaries = []
    for name in names:
        spec = load_journey(name, settings.templates_dir)
        entering = segments or spec.entry.event is not None
        entered = advance.enter(engine, spec, settings, now) if entering else 0
        scope = None if responded_after is None else events.responders(responded_after)
        woken = advance.wake(engine, spec, settings, now, scope)
        ranges = advance.plan_ranges(engine, name, now, settings.batch_size)
        total = advance.Tally()
        if submit is None:
            results = [advance_batch(name, lo, hi, now, settings) for lo, hi in ranges]
        else:
            futures = [submit(name, lo, hi, now, settings) for lo, hi in ranges]
            results = [f.result() for f in futures]
        for r in results:
            total.merge(advance.Tally.from_dict(r))
        summaries.append(
            {"journey": name, "version": spec.version, "at": now.isoformat(timespec="minutes"),
             "new_entries": entered, "woken": woken, "batches": len(ranges), **total.as_dict()}
        )  # fmt: skip
    return summaries


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
    """One summary per journey: the first advance's, with the follow-ups' counts added."""
    out = {s["journey"]: dict(s) for s in summaries}
    for later in more:
        for s in later:
            first = out.setdefault(s["journey"], dict(s, new_entries=0, woken=0, batches=0,
                                                      **advance.Tally().as_dict()))  # fmt: skip
            tally = advance.Tally.from_dict(first)
            tally.merge(advance.Tally.from_dict(s))
            first.update(tally.as_dict(), at=s["at"],
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
            more = follow_responses(journey, until, settings, advance_batch_task.submit,
                                    mark=mark)  # fmt: skip
            logger.info("followed responses until %s: %d more advance(s)", until, len(more))
            summaries = _merged(summaries, more)
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
    # most five-minute advances move nobody: told apart in the runs list (flows/idle.py)
    return summaries if moved else idle(summaries)


def publish_diagram(journey: str, when: str, settings: Settings | None = None) -> str:
    """The journey's Mermaid flowchart with its live counts, as a Prefect markdown
    artifact (key ``journey-<name>``, one per journey, a new version each advance)."""
    settings = settings or load_settings()
    spec = load_journey(journey, settings.templates_dir)
    engine = db.engine_for(settings.effective_database_url)
    text = diagram.markdown(spec, diagram.live_counts(engine, spec), when)
    create_markdown_artifact(
        markdown=text,
        key=f"journey-{journey.replace('_', '-')}",
        description=f"journey {journey}: customers per step",
    )
    return text


__all__ = [
    "advance_journeys", "due_now", "follow_responses", "journey_advance", "publish_diagram",
    "sender",
]


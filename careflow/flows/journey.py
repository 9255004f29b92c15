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
from datetime import date, datetime
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
from careflow.campaigns import CampaignSpec, journey_step_campaign
from careflow.clock import resolve_as_of
from careflow.errors import ConfigError
from careflow.experiment_decisions import winner_of
from careflow.experiment_report import decide, report_for, verdict
from careflow.flows.campaign import occasion_text, publish_experiment
from careflow.flows.idle import idle
from careflow.flows.params import DeferredAsOf, JourneyName
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.flows.runners import BatchTaskRunner, settle_heap
from careflow.journey_spec import JourneySpec, SendStep, list_journeys, load_journey
from careflow.journeys import advance, diagram
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
) -> list[dict]:
    """Enter and advance ``journey`` (default: every journey); one summary per journey.

    ``as_of`` is the instant to advance at (default now). ``submit(fn, *args)`` runs a
    batch and returns an object with ``result()`` (a Prefect task's ``submit`` in the
    flow); without it batches run here, one after the other.
    """
    settings = settings or load_settings()
    engine = db.engine_for(settings.effective_database_url)
    db.ensure_schema(engine)
    now = resolve_as_of(as_of, settings.time_zone)[1] if as_of else clock.now()
    names = [journey] if journey else list_journeys(settings.templates_dir)
    summaries = []
    for name in names:
        spec = load_journey(name, settings.templates_dir)
        entered = advance.enter(engine, spec, settings, now)
        woken = advance.wake(engine, spec, settings, now)
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


@flow(name="journey-advance", flow_run_name=run_name, task_runner=BatchTaskRunner())
def journey_advance(journey: JourneyName = None, as_of: DeferredAsOf = None) -> list[dict]:
    """Enter customers into journeys and move every due one a step on (all journeys, or
    ``journey``). Deployed every five minutes (prefect.yaml)."""
    logger = get_run_logger()
    try:
        decide_experiments(journey, logger)
        summaries = advance_journeys(journey, as_of, submit=advance_batch_task.submit)
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


__all__ = ["advance_journeys", "due_now", "journey_advance", "publish_diagram", "sender"]


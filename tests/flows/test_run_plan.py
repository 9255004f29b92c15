"""The run value: a run option declared once reaches every batch.

A run's batches get the run as one value (``careflow.flows.route.RunPlan``) and
build their route from it (``Route.for_run``). So a new option is one field on
the run value plus the step that reads it: nothing in between (the flow's
batch plan, the Prefect task and what Prefect does to its arguments, the real
clock a real batch takes, pickling for a Dask worker, the route's builder)
spells the run's parameters out. The fictitious option below proves it, as
tests/test_registry.py does for a fictitious channel.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from datetime import date, datetime

import pytest
from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.collections import visit_collection
from sqlalchemy import select

import careflow.flows.route as route_mod
from careflow.campaigns import load_campaign
from careflow.db.models import ContactHistory
from careflow.demo.data import seed_demo
from careflow.flows.campaign import open_run, plan_batches, run_batches
from careflow.flows.route import RunPlan
from careflow.policy import Decision
from careflow.settings import load_settings

pytestmark = [pytest.mark.prefect, pytest.mark.xdist_group("prefect")]

AS_OF = date(2026, 11, 22)
AT = datetime.fromisoformat("2026-11-22T12:00:00+00:00")
CAMPAIGN = "reorder_reminder"


@dataclass(frozen=True, kw_only=True)
class RunOnStrike(RunPlan):
    """A fictitious run option, declared once: the carriers are on strike, say why."""

    strike: str | None = None


def strike_step(apply_policy):
    """The step that reads the option: the policy's, then the strike skips everyone."""

    def apply(route, candidates, id_range):
        apply_policy(route, candidates, id_range)
        if route.run.strike:
            for c in candidates:
                c.decision = Decision.skip(c.customer_id, "strike", route.run.strike)

    return apply


def test_a_run_option_declared_once_reaches_every_batch(
    prefect_api, engine, monkeypatch, real_clock
):
    seed_demo(engine, as_of=AS_OF, customers=300)
    monkeypatch.setattr(route_mod, "apply_policy", strike_step(route_mod.apply_policy))
    settings = load_settings(delivery="outbox")
    spec = load_campaign(CAMPAIGN, settings.templates_dir)
    strike = RunOnStrike(
        spec=spec, run_id="run-1", as_of=AS_OF, at=AT, settings=settings,
        strike="pigeons want more seed",
    )  # fmt: skip

    @flow(name="strike", task_runner=ThreadPoolTaskRunner(max_workers=2))
    def strike_run() -> tuple[dict, int]:
        # a real run (its batches take the real clock), as the campaign flow plans it
        run, summary = open_run(engine, strike, get_run_logger())
        ranges = plan_batches(engine, spec, AS_OF, AT, run.params, 5)
        return run_batches(engine, run, ranges, summary), len(ranges)

    summary, batches = strike_run()
    assert batches > 1 and summary["selected"] > 0
    assert summary["sent"] == 0 and summary["skipped"] == {"strike": summary["selected"]}
    with engine.connect() as conn:
        details = conn.execute(select(ContactHistory.reason, ContactHistory.detail)).all()
    assert set(details) == {("strike", "pigeons want more seed")}


def test_a_run_option_survives_what_prefect_and_dask_do_to_a_batchs_arguments():
    """Prefect walks a task's arguments (rebuilding a dataclass whose fields it changes)
    and Dask pickles them for another process: the option and the settings' secrets
    arrive."""
    settings = load_settings(twilio_auth_token="secret-token", delivery="outbox")
    spec = load_campaign(CAMPAIGN, settings.templates_dir)
    run = RunOnStrike(
        spec=spec, run_id="run-1", as_of=AS_OF, at=AT, settings=settings, strike="gulls"
    )
    walked = visit_collection(run, visit_fn=lambda x: x, return_data=True)
    shipped = pickle.loads(pickle.dumps(run))
    for copy in (walked, shipped):
        assert type(copy) is RunOnStrike and copy == run and copy.strike == "gulls"
        assert copy.settings.twilio_auth_token.get_secret_value() == "secret-token"

"""What the Prefect UI's runs list shows: each run named for its occasion's date, and the
runs that found nothing to do recognisable and filterable."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateName,
)

from tests.factories import add_customer

pytestmark = [pytest.mark.prefect, pytest.mark.xdist_group("prefect")]

ZONE = "Pacific/Kiritimati"  # UTC+14: its date differs from UTC's for ten hours a day


def _run(state):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def test_a_scheduled_run_is_named_for_its_day_in_the_shops_zone(prefect_api, engine,
                                                                   monkeypatch):
    from careflow.flows.care import birthday

    monkeypatch.setenv("CAREFLOW_TIME_ZONE", ZONE)
    add_customer(engine, 1, mobile="+447911123001")
    run = _run(birthday(dry_run=True, return_state=True))
    day = run.expected_start_time.astimezone(ZoneInfo(ZONE)).date().isoformat()
    assert run.name == f"birthday {day} dry run"  # was "birthday now dry run"


def test_a_run_given_a_date_is_named_for_it(prefect_api, engine):
    from careflow.flows.campaign import campaign_flow

    add_customer(engine, 1, mobile="+447911123001")
    state = campaign_flow(campaign="winback", as_of="2026-12-07", dry_run=True,
                          return_state=True)  # fmt: skip
    assert _run(state).name == "winback 2026-12-07 dry run"


def test_a_follow_up_with_nothing_due_is_idle_tagged_and_left_out_of_completed(
    prefect_api, engine, monkeypatch
):
    from careflow.flows.deferred import deferred_flow

    monkeypatch.setenv("CAREFLOW_TIME_ZONE", ZONE)
    assert deferred_flow() == []  # what the CLI reads is unchanged
    state = deferred_flow(return_state=True)
    assert state.is_completed() and state.name == "Idle" and state.message == "Nothing due"
    run = _run(state)
    start = run.expected_start_time.astimezone(ZoneInfo(ZONE))
    assert run.name == f"deferred-messages {start:%Y-%m-%d %H:%M} nothing due"
    assert "nothing-due" in run.tags
    # the UI's state filter "Completed" (by state name) leaves the idle runs out
    with get_client(sync_client=True) as client:
        def named(*names):
            return client.read_flow_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[run.id]),
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=list(names))),
            ))  # fmt: skip
        assert named("Completed") == [] and [r.id for r in named("Idle")] == [run.id]


def test_a_reconciliation_with_nothing_to_settle_is_idle(prefect_api, engine):
    from careflow.flows.reconcile import reconcile

    state = reconcile(return_state=True)
    assert state.name == "Idle" and state.message == "Nothing to settle"
    run = _run(state)
    assert run.name.startswith("reconcile 20") and run.name.endswith(" nothing due")
    assert "nothing-due" in run.tags

"""Every deployment in prefect.yaml points at a flow that loads, with the parameters it passes."""

from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.schema_tools.validation import validate

from careflow.settings import PROJECT_ROOT

DEPLOYMENTS = yaml.safe_load(Path(PROJECT_ROOT, "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_entrypoint_loads_and_accepts_its_parameters(deployment, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    accepted = set(flow.parameters.properties)
    assert set(deployment.get("parameters", {})) <= accepted
    # the values too, as the server checks every run's parameters (enforce_parameter_schema):
    # a value the run form cannot offer (channel: null once channel is a list) fails every run
    for given in [deployment.get("parameters", {}),
                  *(t.get("parameters", {}) for t in deployment.get("triggers", []))]:
        validate(given, flow.parameters.model_dump(), raise_on_error=True, ignore_required=True)
    if deployment["entrypoint"].startswith(("careflow/flows/care.py", "careflow/flows/campaign.py")):
        # the UI builds a campaign's run form from this schema: typed fields
        assert {"as_of", "channel", "dry_run", "allow_past"} <= accepted
        assert flow.parameters.properties["dry_run"]["type"] == "boolean"


def test_every_care_campaign_is_deployed():
    entrypoints = {d["entrypoint"].split(":")[1] for d in DEPLOYMENTS}
    assert {"birthday", "reorder_reminder", "winback", "vip_care"} <= entrypoints


def _zones() -> list[tuple[str, str | None]]:
    return [
        (d["name"], entry.get("timezone"))
        for d in DEPLOYMENTS
        for entry in d.get("schedules") or []
    ]


def test_every_schedule_names_the_shops_time_zone_and_its_description_says_it():
    # the UI shows "At 09:00 AM": without a zone that is 09:00 UTC, a marketer's 17:00
    zones = _zones()
    assert zones and all(zone for _, zone in zones), [d for d, zone in zones if not zone]
    (shop_zone,) = {zone for _, zone in zones}  # one shop, one zone
    for d in DEPLOYMENTS:
        assert shop_zone in " ".join(d["description"].split()), d["name"]


def test_the_journey_trigger_expects_events_careflow_emits():
    """The journey-advance trigger names careflow's own events (they cannot drift from
    careflow/service/prefect_events.py), matches the resource careflow puts them on,
    is debounced, and the schedule stays as the safety net."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from careflow.journey_spec import EVENTS
    from careflow.journeys.events import EVENT_KINDS
    from careflow.service.prefect_events import EVENT_NAMES, prefect_events

    (deployment,) = [d for d in DEPLOYMENTS if d["entrypoint"].endswith(":journey_advance")]
    assert deployment["schedules"], "the schedule is the safety net"
    (raw,) = deployment["triggers"]
    trigger = DeploymentEventTrigger.model_validate(raw)  # as `prefect deploy` reads it
    from prefect.server.events.schemas.events import matches  # as the server matches

    custom = "careflow.event.*"  # the shop's own events (journeys enter on event:<name>)
    assert trigger.expect and trigger.expect <= set(EVENT_NAMES.values()) | {custom}
    (posted,) = prefect_events([("event:wishlist.added", 7, None, None)])
    assert any(matches(e, posted["event"]) for e in trigger.expect)
    assert trigger.threshold == 1 and trigger.within.total_seconds() >= 30  # debounced
    # every response a journey can wait for or exit on wakes it (delivery receipts,
    # one per message, are left to the schedule); orders come as conversions
    kinds = {k for e in EVENTS if e not in ("delivered", "ordered") for k in EVENT_KINDS[e]}
    wanted = {EVENT_NAMES[k] for k in kinds if k in EVENT_NAMES} | {EVENT_NAMES["converted"]}
    assert wanted <= trigger.expect
    # the resource careflow puts its events on matches
    (pattern,) = [v for k, v in raw["match"].items() if k == "prefect.resource.id"]
    (sample,) = prefect_events([("replied", 7, 70, "j_winback_journey__first_sms")])
    assert sample["event"] in trigger.expect
    assert sample["resource"]["prefect.resource.id"].startswith(pattern.rstrip("*"))
    assert set(raw["parameters"]) <= {"journey", "as_of", "follow_from", "follow_seconds"}
    # Prefect starts no other run for `within` after the first response: the run follows
    # that window's responses itself, from the first one's instant
    assert raw["parameters"]["follow_seconds"] == trigger.within.total_seconds()
    assert "event.occurred" in raw["parameters"]["follow_from"]

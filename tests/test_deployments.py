"""Every deployment in prefect.yaml points at a flow that loads, with the parameters it passes."""

from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from careflow.settings import PROJECT_ROOT

DEPLOYMENTS = yaml.safe_load(Path(PROJECT_ROOT, "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_entrypoint_loads_and_accepts_its_parameters(deployment, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    accepted = set(flow.parameters.properties)
    assert set(deployment.get("parameters", {})) <= accepted
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

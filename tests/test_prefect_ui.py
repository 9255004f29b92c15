"""The Prefect UI, in a real browser, showing what careflow deployed and ran.

Reuses the server, deployments and worked flow runs of tests/prefect_server.py
and opens the UI in headless Debian chromium through playwright-core
(tests/ui/prefect_ui.mjs), as an operator would: the deployments with their
schedules from prefect.yaml, a schedule paused and resumed (its zone said in
the description), the completed birthday run with its logs and summary
artifact, a run that failed before it started with its reason, the runs list
with each run named for its occasion's date, and the custom-run form with its
typed, described fields (as_of's "today" switch, a picked date staying a date;
channel one list with no str/None switch; campaign a list), filled in and
submitted. Only loopback is reachable from the browser.

Screenshots go to a temporary folder; set CAREFLOW_UI_SCREENSHOTS_DIR=docs/img
to refresh the ones docs/operators.md shows.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from careflow.settings import PROJECT_ROOT
from tests.browser import playwright_tools
from tests.prefect_server import AS_OF

pytestmark = [pytest.mark.prefect, pytest.mark.browser, pytest.mark.xdist_group("prefect-server")]

SCRIPT = Path(__file__).parent / "ui" / "prefect_ui.mjs"
SCREENSHOTS = ("ui-deployments.png", "ui-deployment.png", "ui-flow-run.png", "ui-artifact.png",
               "ui-failed-run.png", "ui-runs.png", "ui-run-form.png", "ui-run-form-campaign.png")
#: how the UI words prefect.yaml's cron schedules (it shows them in the schedule's own zone)
CRON_AS_THE_UI_SAYS = {
    "0 9 * * *": "At 09:00 AM every day",
    "0 10 * * 1": "At 10:00 AM, only on Monday",
    "0 10 1 * *": "At 10:00 AM on day 1 of the month",
    "17 * * * *": "At 17 minutes past the hour every day",  # sic: it means every hour
}



def _deployments_in_prefect_yaml() -> list[dict]:
    """Each deployment's name, the UI's wording of its schedule (or None) and its time zone."""
    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    rows = []
    for deployment in config["deployments"]:
        schedules = deployment.get("schedules") or []
        assert len(schedules) <= 1, f"{deployment['name']}: the test expects one schedule at most"
        # an interval schedule (the deferred-messages follow-up) is not checked by its wording
        cron = schedules[0].get("cron") if schedules else None
        if cron and cron not in CRON_AS_THE_UI_SAYS:
            pytest.fail(f"add how the UI words the cron {cron!r} to CRON_AS_THE_UI_SAYS")
        rows.append({
            "name": deployment["name"],
            "schedule": CRON_AS_THE_UI_SAYS.get(cron),
            "time_zone": schedules[0].get("timezone") if schedules else None,
        })
    return rows


def _markdown_table(markdown: str) -> tuple[str, list[str]]:
    """The heading of a summary artifact and the first cell of each row of its first table
    (the outcomes; a run that deferred or skipped someone adds a table of decisions, whose
    rows depend on the hour the run met its customers at)."""
    lines = markdown.splitlines()
    heading = next(line.lstrip("#").strip() for line in lines if line.startswith("#"))
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    cells = [row.strip("|").split("|")[0].strip() for row in table]
    return heading, [c for c in cells[2:] if c]  # after the header row and the --- row


def test_an_operator_sees_deployments_runs_artifacts_and_a_typed_run_form(
    careflow_deployment, worked_runs, tmp_path
):
    chromium, node = playwright_tools()
    server = careflow_deployment.server
    deployments = _deployments_in_prefect_yaml()
    birthday = server.api("/deployments/name/birthday/birthday-daily")
    completed, failed = worked_runs.birthday, worked_runs.backdated
    assert completed["state"]["type"] == "COMPLETED" and failed["state"]["type"] == "FAILED"

    logs = server.api("/logs/filter", {"logs": {"flow_run_id": {"any_": [completed["id"]]}}})
    summary_log = [log["message"] for log in logs if "selected" in log["message"]]
    assert summary_log, "the run logs its outcome counts"
    artifact = server.api("/artifacts/filter", {"artifacts": {
        "key": {"any_": ["birthday-summary"]}, "flow_run_id": {"any_": [completed["id"]]}}})[0]
    heading, outcomes = _markdown_table(artifact["data"])
    channel_field = birthday["parameter_openapi_schema"]["properties"]["channel"]
    # each run is named for its occasion's date (not "birthday now")
    dated = [run["name"] for run in (completed, failed)]
    assert all(re.match(r"\S+ \d{4}-\d\d-\d\d\b", name) for name in dated), dated

    shots = Path(os.environ.get("CAREFLOW_UI_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    shots = shots if shots.is_absolute() else PROJECT_ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)
    (tmp_path / "failures").mkdir()
    spec = {
        "ui_url": server.ui_url,
        "chromium": chromium,
        "user_data_dir": str(tmp_path / "chromium-profile"),
        "screenshots_dir": str(shots),
        "failure_dir": str(tmp_path / "failures"),
        "time_zone": next(d["time_zone"] for d in deployments if d["time_zone"]),
        "deployments": [{"name": d["name"], "schedule": d["schedule"]} for d in deployments],
        "deployment": {"id": birthday["id"], "name": birthday["name"],
                       # the description says the zone the schedule's "At 09:00 AM" is in
                       "zone_said": "09:00 Asia/Shanghai (the shop's time zone)",
                       "schedule": next(d["schedule"] for d in deployments
                                        if d["name"] == birthday["name"])},
        "completed_run": {
            "id": completed["id"],
            "name": completed["name"],
            "log_lines": [f"Beginning flow run '{completed['name']}'", summary_log[0]],
            "artifact_key": artifact["key"],
            "artifact_heading": heading,
            "artifact_cells": outcomes,
        },
        "dated_run_names": dated,
        "failed_run": {"id": failed["id"], "name": failed["name"],
                       "message": failed["state"]["message"]},
        "run_form": {
            "deployment_id": birthday["id"],
            "as_of": AS_OF,
            "as_of_description": birthday["parameter_openapi_schema"]["properties"]["as_of"][
                "description"][:40],
            "channel": "outbox",
            # one list, its default picked, no None beside it (was a str/None switch)
            "channels": channel_field["enum"],
            "channel_default": channel_field["default"],
            "channel_description": channel_field["description"][:40],
            # a sentence under each parameter (careflow/flows/params.py), as the schema has it
            "descriptions": [
                birthday["parameter_openapi_schema"]["properties"][name]["description"][:60]
                for name in ("as_of", "channel", "dry_run", "allow_past")
            ],
        },
    }
    on_demand = server.api("/deployments/name/campaign/campaign-on-demand")
    campaign = on_demand["parameter_openapi_schema"]["properties"]["campaign"]
    spec["campaign_form"] = {
        "deployment_id": on_demand["id"],
        "description": campaign["description"][:40],
        "campaigns": campaign["enum"],
    }
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))

    result = subprocess.run([node, str(SCRIPT), str(spec_path)], capture_output=True, text=True,
                            timeout=150, cwd=PROJECT_ROOT)
    assert result.returncode == 0, (
        f"{result.stderr.strip()}\nscreenshots of the failure: {tmp_path / 'failures'}"
    )
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["outside_requests"] == [], "the UI tried to reach beyond this machine"
    for name in SCREENSHOTS:
        assert (shots / name).read_bytes().startswith(b"\x89PNG"), name
    # the form sent typed values: a date string, a channel from the list, a boolean
    # paused and resumed with the switch: active again, as prefect.yaml has it
    assert all(s["active"] for s in server.api(f"/deployments/{birthday['id']}")["schedules"])
    submitted = server.api(f"/flow_runs/{seen['submitted_run_id']}")
    assert submitted["deployment_id"] == birthday["id"]
    filled_in = {"as_of": AS_OF, "channel": "outbox", "dry_run": True}
    assert {k: submitted["parameters"].get(k) for k in filled_in} == filled_in
    assert not submitted["parameters"].get("allow_past"), "left as it was: off"

"""prefect.yaml on a real Prefect server: deploy, run from the API, a worker executes it.

This is the production path in the README: `prefect server start`, a process
work pool, `prefect deploy --all`, `prefect worker start`. A flow run
requested with parameters (as a UI run form would send them) must reach
the worker, run the campaign and leave its summary artifact. The server,
the deployments and the run come from tests/prefect_server.py and are shared
with tests/test_prefect_ui.py, which looks at them in the Prefect UI.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading

import pytest

from careflow.settings import PROJECT_ROOT
from tests.prefect_server import (
    BACKDATED_PARAMETERS,
    BIN,
    RUN_PARAMETERS,
    TYPO_PARAMETERS,
    api,
)

pytestmark = [pytest.mark.prefect, pytest.mark.xdist_group("prefect-server")]


def test_api_helper_retries_a_busy_server():
    """Regression: a 503 from a busy Prefect server once failed `make test`."""
    answers = [503, 503, 200]

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = answers.pop(0)
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"true" if code == 200 else b"busy")

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        assert api(f"http://127.0.0.1:{httpd.server_port}", "/health", backoff=0.01) is True
        assert answers == []
    finally:
        httpd.shutdown()


def test_xdist_keeps_the_shared_server_on_one_worker(request):
    """Regression: with pytest 9.2, --dist loadgroup ignored xdist_group and each
    worker started its own Prefect server and deployments (pyproject.toml pins pytest)."""
    if getattr(request.config.option, "loadgroup", False):  # `make test`: -n 2 --dist loadgroup
        assert request.node.nodeid.endswith("@prefect-server")


def test_deploy_all_offers_a_typed_run_form_and_schedules(careflow_deployment):
    server = careflow_deployment.server
    deployment = server.api("/deployments/name/birthday/birthday-daily")
    schema = deployment["parameter_openapi_schema"]["properties"]
    # what the UI builds its run form from: a date picker, a channel list, a checkbox
    assert {"format": "date", "type": "string"} in schema["as_of"]["anyOf"]
    # ...offered after a switch named "today", the default, where a "None" switch was
    assert schema["as_of"]["anyOf"][0] == {"title": "today", "type": "null"}
    assert schema["as_of"]["default"] is deployment["parameters"]["as_of"] is None
    channel_enum = json.dumps(schema["channel"])
    assert all(c in channel_enum for c in ("sms", "email", "fax", "outbox"))
    # ...one list, its default "preferred" (each customer's own), where a str/None switch was
    assert schema["channel"]["default"] == deployment["parameters"]["channel"] == "preferred"
    assert "anyOf" not in schema["channel"]
    assert schema["dry_run"]["type"] == "boolean"
    assert deployment["schedules"], "the daily schedule from prefect.yaml"


def test_deploy_all_makes_the_journey_trigger_an_automation(careflow_deployment):
    """prefect.yaml's trigger on careflow's events becomes an automation that runs the
    journey-advance deployment; its schedule stays."""
    server = careflow_deployment.server
    deployment = server.api("/deployments/name/journey-advance/journey-advance-every-5-minutes")
    assert deployment["schedules"], "the five-minute safety net"
    automations = server.api("/automations/filter", {})
    (auto,) = [a for a in automations if a["name"] == "journey-advance-on-responses"]
    assert "careflow.message.replied" in auto["trigger"]["expect"]
    assert auto["trigger"]["posture"] == "Reactive" and auto["trigger"]["within"] == 60
    (action,) = auto["actions"]
    assert action["type"] == "run-deployment" and action["deployment_id"] == deployment["id"]


def test_a_run_with_parameters_is_executed_by_a_worker(careflow_deployment, worked_runs):
    run = worked_runs.birthday
    assert run["parameters"] == RUN_PARAMETERS
    assert run["state"]["type"] == "COMPLETED", run["state"]
    artifacts = careflow_deployment.server.api(
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["birthday-summary"]}, "flow_run_id": {"any_": [run["id"]]}}},
    )
    assert artifacts and "selected" in artifacts[0]["data"]
    count = {m[1]: int(m[2]) for m in re.finditer(
        r"^\| (selected|sent|deferred)\b[^|]*\| +(\d+) \|", artifacts[0]["data"], re.M)}
    outbox = careflow_deployment.careflow_home / "outbox" / "birthday"
    # an SMS (.txt) or, for a customer who prefers email, the .eml; the run judges quiet
    # hours at the real clock, so at night in the customers' zones it defers them all
    # (regression: this asserted a file in the outbox, and failed from 21:00 in Shanghai)
    written = [p for p in outbox.rglob("*") if p.is_file()]
    assert count["selected"] and count["sent"] + count["deferred"] == count["selected"], count
    assert bool(written) == bool(count["sent"]), (count, written)


def test_a_run_for_an_unknown_campaign_is_refused_before_it_is_made(worked_runs):
    # the run form offers the campaigns; the API refuses any other name, naming it
    assert worked_runs.typo.startswith(("409 ", "422 ")), worked_runs.typo
    assert TYPO_PARAMETERS["campaign"] in worked_runs.typo


def test_the_deployments_describe_every_parameter_and_list_the_campaigns(careflow_deployment):
    server = careflow_deployment.server
    on_demand = server.api("/deployments/name/campaign/campaign-on-demand")
    schema = on_demand["parameter_openapi_schema"]["properties"]
    assert all(prop.get("description") for prop in schema.values()), schema
    assert {"birthday", "winback", "vip_care"} <= set(schema["campaign"]["enum"])
    assert "Asia/Shanghai" in on_demand["description"]


def test_a_run_that_failed_before_it_started_is_in_report_runs(careflow_deployment,
                                                                worked_runs):
    state = worked_runs.backdated["state"]
    assert state["type"] == "FAILED", state
    assert "is " in state["message"] and "day(s) ago" in state["message"]
    assert worked_runs.backdated["name"] == f"winback {BACKDATED_PARAMETERS['as_of']} via outbox"
    listed = subprocess.run(
        [BIN / "careflow", "report", "runs"], env=careflow_deployment.env, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if " winback " in row)
    assert f"failed before it started: --as-of {BACKDATED_PARAMETERS['as_of']} is " in line

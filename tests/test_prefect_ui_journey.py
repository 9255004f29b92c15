"""A journey as an operator watches it in the Prefect UI, in a real browser.

The journey-advance deployment of prefect.yaml runs the demo journey once on
a process worker (the server, deployments and demo shop of
tests/prefect_server.py); its diagram artifact is then opened in headless
Debian chromium (tests/ui/journey_artifact.mjs) at the address an operator
lands on (the UI Prefect serves by default), and must show the flowchart
drawn, not its source: each step's node with the customers counted there.

Screenshots go to a temporary folder; set CAREFLOW_UI_SCREENSHOTS_DIR=docs/img
to refresh the one docs/journeys.md shows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from careflow.journey_spec import load_journey
from careflow.settings import PROJECT_ROOT
from tests.browser import playwright_tools
from tests.prefect_server import AS_OF, FINAL_STATES

pytestmark = [pytest.mark.prefect, pytest.mark.browser, pytest.mark.xdist_group("prefect-server")]

SCRIPT = Path(__file__).parent / "ui" / "journey_artifact.mjs"
JOURNEY = "lapsing_journey"
SCREENSHOT = "ui-journey.png"
#: what Prefect's default UI (v2, as of Prefect 3.9) asks for at start, whatever the settings
AMPLITUDE_CONFIG = "https://sr-client-cfg.amplitude.com/config/"


@pytest.fixture(scope="module")
def journey_run(careflow_deployment) -> dict:
    """One journey-advance run of the demo journey, requested through the API and run by
    `prefect worker start --run-once`, as the schedule or the response trigger would."""
    server = careflow_deployment.server
    deployment = server.api("/deployments/name/journey-advance/journey-advance-every-5-minutes")
    run = server.api(f"/deployments/{deployment['id']}/create_flow_run",
                     {"parameters": {"journey": JOURNEY, "as_of": f"{AS_OF}T10:00:00"}})
    for _ in range(3):  # a poll on a busy machine can come back empty-handed
        careflow_deployment.prefect("worker", "start", "--pool", "careflow", "--run-once")
        run = server.api(f"/flow_runs/{run['id']}")
        if run["state"]["type"] in FINAL_STATES:
            break
    return run


def _step_counts(markdown: str) -> dict[str, str]:
    """step id -> its "now N · passed N · exits N" as the artifact's flowchart labels it."""
    return dict(re.findall(r"\"(\w+): [^<]*<br/>(now \d+ · passed \d+ · exits \d+)\"", markdown))


def test_an_operator_sees_the_journey_drawn_with_its_counts(
    careflow_deployment, journey_run, tmp_path
):
    server = careflow_deployment.server
    assert journey_run["state"]["type"] == "COMPLETED", journey_run["state"]
    artifact = server.api("/artifacts/filter", {"artifacts": {
        "key": {"any_": [f"journey-{JOURNEY.replace('_', '-')}"]},
        "flow_run_id": {"any_": [journey_run["id"]]}}})[0]
    counts = _step_counts(artifact["data"])
    spec = load_journey(JOURNEY, PROJECT_ROOT / "templates")
    assert set(counts) == {step.id for step in spec.steps}, "every step is labelled"
    entered = re.search(r"entered (\d+)", artifact["data"]).group(1)
    assert int(entered) > 0, "the demo shop has lapsing customers to enter"

    chromium, node = playwright_tools()
    shots = Path(os.environ.get("CAREFLOW_UI_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    shots = shots if shots.is_absolute() else PROJECT_ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)
    (tmp_path / "failures").mkdir()
    page = {
        "chromium": chromium,
        "user_data_dir": str(tmp_path / "chromium-profile"),
        "failure_dir": str(tmp_path / "failures"),
        "screenshot": str(shots / SCREENSHOT),
        # where the artifact is, from the UI's front page as an operator opens it
        "ui_url": server.ui_url,
        "artifact_key": artifact["key"],
        # what the drawing must say: each step's counts, and how many entered
        "labels": [f"{step}: " for step in counts],
        "counts": list(counts.values()),
        "entered": f"entered {entered}",
    }
    page_path = tmp_path / "page.json"
    page_path.write_text(json.dumps(page))

    result = subprocess.run([node, str(SCRIPT), str(page_path)], capture_output=True, text=True,
                            timeout=150, cwd=PROJECT_ROOT)
    assert result.returncode == 0, (
        f"{result.stderr.strip()}\nscreenshots of the failure: {tmp_path / 'failures'}"
    )
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # Prefect's own UI fetches Amplitude's client configuration when it loads, even with
    # analytics off (it then sends no event); the browser blocked it. Anything else is ours.
    beyond = [url for url in seen["outside_requests"] if not url.startswith(AMPLITUDE_CONFIG)]
    assert beyond == [], f"the UI tried to reach {beyond}"
    assert seen["drawn"], "the flowchart is drawn, not shown as its source"
    assert (shots / SCREENSHOT).read_bytes().startswith(b"\x89PNG")

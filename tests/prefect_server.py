"""A real Prefect server with careflow deployed on it, shared by the tests that need one.

This is the production path in the README: `prefect server start`, a process
work pool, `prefect deploy --all` from prefect.yaml, a flow run requested with
parameters (as the UI's run form sends them) and `prefect worker start`
executing it. Starting all that takes ~20 s, so it happens once per test
session (per xdist worker: modules using it carry the ``prefect-server``
xdist group) and tests/test_prefect_server.py and tests/test_prefect_ui.py
look at the same server and the same completed run.

Loaded as a pytest plugin from tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from careflow import db
from careflow.demo.data import seed_demo
from careflow.settings import PROJECT_ROOT

BIN = Path(sys.executable).parent
#: the business day the run is requested for; the demo data is seeded up to it
AS_OF = "2026-11-22"
#: what Prefect's client retries (prefect.client.base: PREFECT_CLIENT_RETRY_EXTRA_CODES aside)
RETRY_STATUSES = {408, 429, 502, 503}
#: flow run states after which a worker has nothing more to do
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
#: parameters of the birthday run, as an operator would fill the custom-run form
#: (AS_OF is in the past on any machine clock after it: a real run must confirm that)
RUN_PARAMETERS = {"as_of": AS_OF, "channel": "outbox", "dry_run": False, "allow_past": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, path: str, body: dict | None = None, attempts: int = 8, backoff: float = 0.5):
    """Call the Prefect REST API, retrying what Prefect's own client retries.

    A Prefect server on SQLite answers 503 while its database is busy (a
    shared two-core machine makes that common); its Python client retries
    408/429/502/503 with backoff, and so does this helper.
    """
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(attempts):
        req = urllib.request.Request(f"{url}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or "null")
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRY_STATUSES or attempt == attempts - 1:
                raise
            time.sleep(min(10.0, backoff * 2**attempt))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class PrefectServer:
    """A running `prefect server start` on loopback."""

    api_url: str  # http://127.0.0.1:PORT/api
    ui_url: str  # http://127.0.0.1:PORT
    home: Path  # its PREFECT_HOME (database, server.log)

    def api(self, path: str, body: dict | None = None):
        return api(self.api_url, path, body)


@dataclass(frozen=True)
class CareflowDeployment:
    """careflow deployed on a :class:`PrefectServer`, its database seeded with demo data."""

    server: PrefectServer
    env: dict[str, str]  # for prefect CLI calls and the worker
    careflow_home: Path  # CAREFLOW_HOME of runs the worker executes

    def prefect(self, *args: str, timeout: int = 300) -> str:
        """Run the prefect CLI against the server from the checkout; fail on a non-zero exit."""
        result = subprocess.run(
            [BIN / "prefect", *args], cwd=PROJECT_ROOT, env=self.env, capture_output=True,
            text=True, timeout=timeout,
        )
        assert result.returncode == 0, (
            f"prefect {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        )
        return result.stdout


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[PrefectServer]:
    """`prefect server start` on a free loopback port, with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # the UI calls the API at this address (the default assumes port 4200)
        "PREFECT_SERVER_UI_API_URL": f"{base}/api",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    server = PrefectServer(api_url=f"{base}/api", ui_url=base, home=home)
    deadline = time.monotonic() + 180
    while True:
        try:
            if server.api("/health") is True:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail("Prefect server did not start:\n" + (home / "server.log").read_text())
        time.sleep(1)
    yield server
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="session")
def careflow_deployment(prefect_server, tmp_path_factory) -> CareflowDeployment:
    """The `careflow` process work pool and every deployment in prefect.yaml."""
    work = tmp_path_factory.mktemp("careflow-deployed")
    url = f"sqlite:///{work / 'careflow.db'}"
    db.upgrade(url)
    seed_demo(db.engine_for(url), as_of=date.fromisoformat(AS_OF), customers=300)
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_server.home),
        "PREFECT_API_URL": prefect_server.api_url,
        "CAREFLOW_CHECKOUT": str(PROJECT_ROOT),
        "CAREFLOW_DATABASE_URL": url,
        "CAREFLOW_HOME": str(work / "home"),
    }
    deployment = CareflowDeployment(prefect_server, env, work / "home")
    deployment.prefect("work-pool", "create", "careflow", "--type", "process")
    deployment.prefect("--no-prompt", "deploy", "--all")
    return deployment


@dataclass(frozen=True)
class WorkedRuns:
    """Flow runs a process worker has executed, as the API shows them afterwards."""

    birthday: dict  # birthday-daily with RUN_PARAMETERS: completes
    backdated: dict  # campaign-on-demand for a past date, not confirmed: fails before it starts
    typo: str  # what the server answered a run requested for a campaign that does not exist


#: parameters of a run the server must refuse: an operator's typo in the campaign name
TYPO_PARAMETERS = {**RUN_PARAMETERS, "campaign": "birthdya"}
#: parameters of a run that must fail before it starts: a real run for a past date
BACKDATED_PARAMETERS = {**RUN_PARAMETERS, "campaign": "winback", "allow_past": False}


@pytest.fixture(scope="session")
def worked_runs(careflow_deployment) -> WorkedRuns:
    """Flow runs requested through the API, then one `prefect worker start --run-once`."""
    server = careflow_deployment.server
    birthday = server.api("/deployments/name/birthday/birthday-daily")
    on_demand = server.api("/deployments/name/campaign/campaign-on-demand")
    try:  # the deployment's schema offers the campaigns found when it was made
        server.api(f"/deployments/{on_demand['id']}/create_flow_run",
                   {"parameters": TYPO_PARAMETERS})
        refused = "accepted"
    except urllib.error.HTTPError as exc:
        refused = f"{exc.code} {exc.read().decode(errors='replace')}"
    # prefect.yaml delivers live; channel=outbox keeps these runs local, as an operator would
    runs = {
        "birthday": server.api(f"/deployments/{birthday['id']}/create_flow_run",
                               {"parameters": RUN_PARAMETERS}),
        "backdated": server.api(f"/deployments/{on_demand['id']}/create_flow_run",
                                {"parameters": BACKDATED_PARAMETERS}),
    }
    # One poll of the work queue normally picks up both runs; on a busy machine
    # a poll can come back empty-handed, so poll again until both are over.
    for _ in range(3):
        careflow_deployment.prefect("worker", "start", "--pool", "careflow", "--run-once")
        worked = {k: server.api(f"/flow_runs/{r['id']}") for k, r in runs.items()}
        if all(run["state"]["type"] in FINAL_STATES for run in worked.values()):
            break
    return WorkedRuns(**worked, typo=refused)

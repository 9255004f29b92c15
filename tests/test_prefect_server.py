"""prefect.yaml on a real Prefect server: deploy, run from the API, a worker executes it.

This is the production path in the README: `prefect server start`, a process
work pool, `prefect deploy --all`, `prefect worker start`. A flow run
requested with parameters (as a UI run form would send them) must reach
the worker, run the campaign and leave its summary artifact.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from careflow import db
from careflow.settings import PROJECT_ROOT
from demo.data import seed_demo

pytestmark = [pytest.mark.prefect, pytest.mark.xdist_group("prefect-server")]

BIN = Path(sys.executable).parent
AS_OF = "2026-11-22"
#: what Prefect's client retries (prefect.client.base: PREFECT_CLIENT_RETRY_EXTRA_CODES aside)
RETRY_STATUSES = {408, 429, 502, 503}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None, attempts: int = 8, backoff: float = 0.5):
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
        assert _api(f"http://127.0.0.1:{httpd.server_port}", "/health", backoff=0.01) is True
        assert answers == []
    finally:
        httpd.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while True:
        try:
            if _api(url, "/health") is True:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail("Prefect server did not start:\n" + (home / "server.log").read_text())
        time.sleep(1)
    yield {"url": url, "home": home}
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def _prefect(server, *args: str, env: dict, timeout: int = 300) -> str:
    result = subprocess.run(
        [BIN / "prefect", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_deploy_run_with_parameters_and_a_worker_executes_it(server, tmp_path):
    url = f"sqlite:///{tmp_path / 'careflow.db'}"
    db.upgrade(url)
    seed_demo(db.engine_for(url), as_of=date.fromisoformat(AS_OF), customers=300)
    env = {
        **os.environ,
        "PREFECT_HOME": str(server["home"]),
        "PREFECT_API_URL": server["url"],
        "CAREFLOW_CHECKOUT": str(PROJECT_ROOT),
        "CAREFLOW_DATABASE_URL": url,
        "CAREFLOW_HOME": str(tmp_path / "home"),
    }
    _prefect(server, "work-pool", "create", "careflow", "--type", "process", env=env)
    _prefect(server, "--no-prompt", "deploy", "--all", env=env)

    deployment = _api(server["url"], "/deployments/name/birthday/birthday-daily")
    schema = deployment["parameter_openapi_schema"]["properties"]
    # what the UI builds its run form from: a date picker, a channel list, a checkbox
    assert {"format": "date", "type": "string"} in schema["as_of"]["anyOf"]
    channel_enum = json.dumps(schema["channel"])
    assert all(c in channel_enum for c in ("sms", "email", "fax", "outbox"))
    assert schema["dry_run"]["type"] == "boolean"
    assert deployment["schedules"], "the daily schedule from prefect.yaml"

    # prefect.yaml delivers live; channel=outbox keeps this run local, as an operator would
    run = _api(server["url"], f"/deployments/{deployment['id']}/create_flow_run",
               {"parameters": {"as_of": AS_OF, "channel": "outbox", "dry_run": False,
                               "allow_past": True}})
    _prefect(server, "worker", "start", "--pool", "careflow", "--run-once", env=env)

    state = _api(server["url"], f"/flow_runs/{run['id']}")["state"]
    assert state["type"] == "COMPLETED", state
    artifacts = _api(server["url"], "/artifacts/filter",
                     {"artifacts": {"key": {"any_": ["birthday-summary"]}}})
    assert artifacts and "selected" in artifacts[0]["data"]
    outbox = tmp_path / "home" / "outbox" / "birthday"
    # an SMS (.txt) or, for a customer who prefers email, the .eml
    assert any(p.is_file() for p in outbox.rglob("*")), "the worker's run wrote the outbox"

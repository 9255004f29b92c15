"""The README's production block runs as written, top to bottom (issue 25).

The block is the README's one fenced code block whose info string is
``sh production``; it is read from README.md itself, so an edit there is tested
as written, and a README that loses the marker (or has two) fails here. It runs
as tests/readme_shell.py runs a block (``bash -e`` in a checkout-like folder,
nothing careflow or Prefect set, no venv on PATH, a HOME of its own), against
loopback PostgreSQL for the database and role it creates (a throw-away name in
``DB_NAME``, dropped afterwards), on a free port that is not Prefect's 4200.

The whole block (a real Prefect server in the background, `prefect deploy
--all`, a worker, a run watched to its end) takes minutes on a busy machine, so
it is marked ``slow``: `make test` runs its steps 1-3 (the settings file,
the database and its role, the imports), which need no Prefect, and CI
(.ci/run) runs the whole block after it.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
import uuid

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_ADMIN_URL, _postgres_available
from tests.prefect_server import free_port
from tests.readme_shell import README, Shell

BLOCK = re.compile(r"^```sh production\n(.*?)^```", re.MULTILINE | re.DOTALL)
STEP = re.compile(r"^# (\d+)\. ", re.MULTILINE)

pytestmark = [pytest.mark.postgres]


def production_block() -> str:
    blocks = BLOCK.findall(README.read_text(encoding="utf-8"))
    assert len(blocks) == 1, "README.md must have exactly one ```sh production block"
    return blocks[0]


def steps(block: str) -> dict[int, str]:
    """The block's numbered steps (``# 1. ...`` to the next), by number."""
    starts = [(m.start(), int(m.group(1))) for m in STEP.finditer(block)]
    ends = [s for s, _ in starts[1:]] + [len(block)]
    return {n: block[s:e] for (s, n), e in zip(starts, ends, strict=True)}


@pytest.fixture
def shell(tmp_path):
    if not _postgres_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required in CI but not reachable")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    name, port = f"cf_readme_{uuid.uuid4().hex[:10]}", free_port()
    assert port != 4200  # the block must work on another port than Prefect's default
    s = Shell(tmp_path, db_name=name, port=str(port))
    yield s
    s.close()
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
    admin.dispose()


def test_the_block_is_there_and_needs_no_activated_venv_nor_port_4200():
    block = production_block()
    assert sorted(steps(block)) == list(range(1, 8))
    commands = [line.strip() for line in block.splitlines() if line.strip()]
    assert not any(c.startswith((". .venv", "source .venv")) for c in commands)
    # every careflow and prefect command names the checkout's venv
    assert not [c for c in commands if re.match(r"^(nohup )?(careflow|prefect) ", c)]
    # the UI finds the API on whatever port it runs, and the server sends no telemetry
    assert "export PREFECT_SERVER_UI_API_URL=http://127.0.0.1:$PORT/api" in block
    assert "export PREFECT_SERVER_ANALYTICS_ENABLED=false" in block


def test_steps_1_to_3_make_the_database_and_import_the_samples(shell):
    """The normal suite's share of the block: settings, database and role, imports."""
    block = steps(production_block())
    out = shell.run("".join(block[n] for n in (1, 2, 3)), timeout=600)
    assert out.returncode == 0, out.stdout
    assert "Traceback" not in out.stdout
    settings = (shell.work / "careflow.env").read_text()
    name, port = shell.env["DB_NAME"], shell.env["PORT"]
    assert f"PREFECT_SERVER_UI_API_URL=http://127.0.0.1:{port}/api" in settings
    url = f"postgresql+psycopg://{name}@127.0.0.1:5432/{name}"
    assert f"CAREFLOW_DATABASE_URL={url}" in settings
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            owner = conn.execute(
                text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :n"),
                {"n": name},
            ).scalar_one()
            customers = conn.execute(text("SELECT count(*) FROM customers")).scalar_one()
            orders = conn.execute(text("SELECT count(*) FROM orders")).scalar_one()
    finally:
        engine.dispose()
    assert owner == name  # owned by its own role, as step 2 says
    assert (customers, orders) == (6, 26)  # docs/samples: every row loaded
    # production's files are the database's own, not the checkout's .careflow/
    assert not (shell.work / ".careflow").exists()


@pytest.mark.slow
@pytest.mark.prefect
def test_the_whole_block_runs_a_deployment_on_a_worker(shell):
    out = shell.run(production_block(), timeout=1500)
    server_log = (shell.work / "prefect-server.log").read_text(errors="replace")
    worker_log = (shell.work / "prefect-worker.log").read_text(errors="replace")
    shown = f"{out.stdout}\n--- server log\n{server_log}\n--- worker log\n{worker_log}"
    # step 7 watched the run to its end: --watch exits 0 only for a completed run
    assert out.returncode == 0, shown
    assert "finished successfully" in out.stdout, shown
    # the UI, served on the block's port, calls the API there (not at :4200)
    ui = "http://127.0.0.1:" + shell.env["PORT"]
    with urllib.request.urlopen(f"{ui}/ui-settings", timeout=30) as resp:
        assert json.loads(resp.read())["api_url"] == f"{ui}/api"
    # the server's own telemetry is off: no "database is locked" traceback in its log
    assert "Traceback" not in server_log and "database is locked" not in server_log, shown
    assert not (shell.work / ".careflow").exists()

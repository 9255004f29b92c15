"""SIGTERM stops a run whose template is stuck inside one C call, and its rows settle.

A template that builds a dict of 100,000 integers whose hashes collide runs
for minutes inside one C call. In the run's own process that call held the
interpreter lock: SIGTERM's handler never ran, the run never ended and its
rows stayed reserved. Rendering now happens in a render worker process
(careflow/render_worker.py), so the run hears the signal, kills the worker,
releases what it reserved and exits.

The render deadline is set far beyond the test so only the stop can end the
render. The test sends SIGTERM once the render worker has spent a second of
CPU, i.e. while it is inside that call.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from careflow.db.models import Run
from careflow.settings import PROJECT_ROOT
from tests.reliability.cli_run import (
    HANG_GUARD,
    add_birthday_customers,
    careflow_run,
    killed_on_exit,
    ledger,
    output_of,
    wait_for,
)

pytestmark = [pytest.mark.prefect, pytest.mark.xdist_group("prefect-cli-2")]

M = 2**61 - 1  # an int's hash is its value modulo M: these keys all hash alike
STUCK = f"{{{{ dict.fromkeys(range(0, 100000 * {M}, {M}))|length }}}}"


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _busy_render_worker(pid: int) -> int | None:
    """A process two levels below ``pid`` (fork server, then worker) that has spent a
    second of CPU: the render worker, inside the long call."""
    for server in _children(pid):
        for worker in _children(server):
            if _cpu_seconds(worker) >= 1.0:
                return worker
    return None


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)  # fmt: skip
def test_sigterm_stops_a_run_stuck_in_a_template_and_its_rows_are_released(
    engine, db_url, tmp_path, prefect_api_url
):
    add_birthday_customers(engine, 6)
    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates" / "birthday", root / "birthday")
    (root / "birthday" / "sms.en.j2").write_text(
        "{% if customer.id == 3 %}" + STUCK + "{% endif %}Happy birthday {{ name }}!"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_")}
    env |= {
        "CAREFLOW_DATABASE_URL": db_url,
        "CAREFLOW_HOME": str(tmp_path / "home"),
        "CAREFLOW_TEMPLATES_DIR": str(root),
        "CAREFLOW_DELIVERY": "outbox",
        "CAREFLOW_HOLDOUT": "0",
        "CAREFLOW_RENDER_TIMEOUT_SECONDS": "3600",
        "PREFECT_API_URL": prefect_api_url,
        "PYTHONUNBUFFERED": "1",
        # a real run judges send times at the real clock: this one renders at any hour
        "CAREFLOW_QUIET_HOURS": "off",
        "CAREFLOW_SENDING_WINDOWS": "false",
    }
    log = tmp_path / "run.log"
    with killed_on_exit(careflow_run(env, log)) as proc:
        found: list[int] = []
        wait_for(
            lambda: bool(found.append(_busy_render_worker(proc.pid)) or found[-1]),
            proc,
            log,
            "the render worker was inside the template",
        )
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(HANG_GUARD)
    output = output_of(log)
    assert returncode != 0, output[-3000:]
    assert not Path(f"/proc/{found[-1]}").exists()  # the worker went with the run
    with engine.connect() as conn:
        (run,) = conn.execute(select(Run.id, Run.summary, Run.finished_at)).all()
    assert run.finished_at is not None and run.summary["stopped"] == "stopped", run.summary
    rows = ledger(engine)
    held = Counter(f"{state}:{reason}" for state, reason, _ in rows.values())
    # the batch was still rendering: nothing went out, everything goes to the next run
    assert held == {"skipped:run_stopped": 6}, held

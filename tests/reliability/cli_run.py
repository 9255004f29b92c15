"""Running `careflow run` in its own process against a test database and the
loopback provider: what the reliability tests that stop or disturb a real
run share."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import insert, select

from careflow.db.models import ContactHistory, Customer
from careflow.settings import PROJECT_ROOT
from tests.providers import kit
from tests.providers.fault_server import FaultServer

AS_OF = "2026-11-22"
#: only so a run that never ends fails the test instead of hanging it
HANG_GUARD = 240.0


def add_birthday_customers(engine, n: int) -> None:
    """Customers 1..n whose birthday is AS_OF, each with their own mobile number."""
    rows = [
        {
            "id": cid,
            "full_name": f"Customer {cid}",
            "given_name": f"C{cid}",
            "locale": "en",
            "time_zone": "UTC",
            "mobile": kit.cn_mobile(cid),
            "birthday": date(1990, 11, 22),
        }
        for cid in range(1, n + 1)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), rows)


def cli_env(
    db_url: str, home: Path, server: FaultServer, api_url: str, chunk: int
) -> dict[str, str]:
    """The environment of a `careflow run` with live SMS against the loopback provider."""
    live = kit.live_settings(server.base_url, fax_font_path=None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_")}
    for name, value in live.model_dump(exclude_none=True, exclude_defaults=True).items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"CAREFLOW_{name.upper()}"] = str(value)
    env |= {
        "CAREFLOW_DATABASE_URL": db_url,
        "CAREFLOW_HOME": str(home),
        "CAREFLOW_BATCH_SIZE": "20",  # three batches, sent side by side
        "CAREFLOW_BATCH_CONCURRENCY": "3",
        "CAREFLOW_SEND_CHUNK_SIZE": str(chunk),
        "CAREFLOW_SMS_CONCURRENCY": "2",
        "PREFECT_API_URL": api_url,
        "PYTHONUNBUFFERED": "1",
        # a real run judges send times at the real clock: these runs send at any hour
        "CAREFLOW_QUIET_HOURS": "off",
        "CAREFLOW_SENDING_WINDOWS": "false",
    }
    return env


def careflow_run(env: dict, log: Path) -> subprocess.Popen:
    """``python -m careflow run birthday`` with ``env``; its output goes to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "careflow", "run", "birthday", "--as-of", AS_OF, "--allow-past"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


@contextmanager
def killed_on_exit(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """``proc``, killed if it is still running when the block ends (a wait that timed
    out, a failed assertion), so no test leaves a run behind."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def output_of(log: Path) -> str:
    """What the run printed; a traceback in it fails the test (people see one line)."""
    output = log.read_text()
    assert "Traceback" not in output, output[-5000:]
    return output


def wait_for(condition, proc: subprocess.Popen, log: Path, what: str) -> None:
    """Wait until ``condition()``; fail if the run exits first or never gets there."""
    started = time.monotonic()
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"careflow run exited ({proc.returncode}) before {what}:\n"
                        + log.read_text()[-3000:])
        if time.monotonic() - started > HANG_GUARD:
            pytest.fail(f"still waiting for {what}:\n" + log.read_text()[-3000:])
        time.sleep(0.01)


def ledger(engine) -> dict[int, tuple[str, str | None, str]]:
    """customer id -> (state, reason, run id)"""
    with engine.connect() as conn:
        return {
            r.customer_id: (r.state, r.reason, r.run_id)
            for r in conn.execute(select(ContactHistory.__table__))
        }

"""Several Prefect workers pulling from one work pool: each customer messaged once.

On the shared real Prefect server (tests/prefect_server.py), two flow runs
of the same campaign and occasion are requested through the API, as two
operators (or a schedule and an operator) would, and two `prefect worker
start` processes poll the `careflow` pool at the same moment, each taking at
most one run at a time (``--limit 1``), so normally one each. Both runs
work the same customers; the ledger lets only one of them have each message. Afterwards every selected customer has
one recorded outcome, the two runs' "sent" add up to the messages recorded
as sent, and the outbox holds exactly those messages.

The runs use a work queue of their own, so the pool's scheduled runs stay
out of it, and a careflow database of their own (``db_url``), which the
workers hand to their runs through their environment, as in production.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections import Counter
from contextlib import ExitStack
from datetime import date

import pytest
from sqlalchemy import select

from careflow.db.models import ContactHistory, Run
from careflow.demo.data import seed_demo
from careflow.messages import State
from careflow.report import run_status
from careflow.settings import PROJECT_ROOT
from tests.prefect_server import AS_OF, BIN, FINAL_STATES

pytestmark = [pytest.mark.prefect, pytest.mark.xdist_group("prefect-server")]

CAMPAIGN = "reorder_reminder"
PARAMETERS = {
    "campaign": CAMPAIGN,
    "as_of": AS_OF,
    "channel": "outbox",
    "dry_run": False,
    "allow_past": True,
}
#: only so a hung worker fails the test instead of hanging it
WORKER_TIMEOUT = 240


def start_worker(env: dict, queue: str, name: str, log) -> subprocess.Popen:
    return subprocess.Popen(
        [BIN / "prefect", "worker", "start", "--pool", "careflow", "--work-queue", queue,
         "--name", name, "--limit", "1", "--run-once"],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def test_two_workers_on_one_campaign_message_each_customer_once(
    careflow_deployment, db_url, engine, tmp_path
):
    seed_demo(engine, as_of=date.fromisoformat(AS_OF), customers=300)
    server = careflow_deployment.server
    queue = f"scale-out-{uuid.uuid4().hex[:8]}"
    careflow_deployment.prefect("work-queue", "create", queue, "--pool", "careflow")
    home = tmp_path / "home"
    env = {
        **careflow_deployment.env,
        "CAREFLOW_DATABASE_URL": db_url,
        "CAREFLOW_HOME": str(home),
        "CAREFLOW_BATCH_SIZE": "5",  # many batches: the two runs meet on many customers
        # a real run judges send times at the real clock: sends at any hour of the test
        "CAREFLOW_QUIET_HOURS": "off",
        "CAREFLOW_SENDING_WINDOWS": "false",
    }
    on_demand = server.api("/deployments/name/campaign/campaign-on-demand")
    runs = [
        server.api(
            f"/deployments/{on_demand['id']}/create_flow_run",
            {"parameters": PARAMETERS, "work_queue_name": queue},
        )
        for _ in range(2)
    ]

    logs = []
    # One poll each normally takes one run each; on a busy machine a poll can come
    # back empty-handed, so start both again until both runs are over.
    for attempt in range(3):
        with ExitStack() as stack:
            procs = []
            for name in ("a", "b"):
                log_path = tmp_path / f"worker-{name}-{attempt}.log"
                logs.append(log_path)
                log = stack.enter_context(log_path.open("w"))
                procs.append(start_worker(env, queue, f"scale-{name}", log))
            for proc in procs:
                proc.wait(WORKER_TIMEOUT)
        worked = [server.api(f"/flow_runs/{r['id']}") for r in runs]
        if all(run["state"]["type"] in FINAL_STATES for run in worked):
            break
    output = "\n".join(p.read_text() for p in logs)
    assert [run["state"]["type"] for run in worked] == ["COMPLETED", "COMPLETED"], output[-6000:]
    # each run started once, by one of the workers (with --limit 1, normally one each;
    # both may try the same run: the server lets only one move it to Pending)
    started = Counter(re.findall(r"View at \S+/runs/flow-run/([0-9a-f-]+)", output))
    assert started == {run["id"]: 1 for run in worked}, output[-6000:]

    with engine.connect() as conn:
        ledger = conn.execute(select(ContactHistory.__table__)).all()
        recorded_runs = conn.execute(select(Run)).all()
    keys = Counter((r.customer_id, r.occasion) for r in ledger)
    assert keys and max(keys.values()) == 1  # one outcome per customer's occasion
    states = Counter(r.state for r in ledger)
    assert states[State.RESERVED] == states[State.SENDING] == 0
    assert [run_status(r) for r in recorded_runs] == ["completed", "completed"]
    summaries = [r.summary for r in recorded_runs]
    # both runs selected everyone; between them each message was sent by one of them
    assert [s["selected"] for s in summaries] == [len(keys), len(keys)]
    assert sum(s["sent"] for s in summaries) == states[State.SENT] > 0
    outbox = [p for p in (home / "outbox").rglob("*") if p.is_file()]
    assert len(outbox) == states[State.SENT]
    sent_by_run = Counter(r.run_id for r in ledger if r.state == State.SENT)
    assert sum(sent_by_run.values()) == states[State.SENT]

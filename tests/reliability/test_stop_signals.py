"""SIGTERM and Ctrl-C for real: `careflow run` stopped mid-run, then run again.

``python -m careflow run birthday`` runs in its own process, as an operator (or a
worker cancelling a flow run) would start it, against a test database and a
live SMS channel whose provider (the loopback fault server) takes a while
over each message. Once the provider has accepted a few messages the
process gets SIGTERM (or SIGINT). It must exit; the rows it reserved go
back for the next run (``skipped: run_stopped``), rows it handed to the
provider and could not record are ``failed: interrupted``, nothing stays
reserved or sending, the runs table records the run as stopped, and no
traceback reaches the terminal. A second run then finishes the job, and the
provider's log shows every customer messaged exactly once.

An impatient operator presses Ctrl-C twice (or a supervisor sends SIGTERM
twice): the second signal lands while the run is still putting down what it
holds. The run must settle its rows all the same.
"""

from __future__ import annotations

import signal
from collections import Counter
from uuid import UUID

import pytest
from sqlalchemy import select

from careflow.db.models import ContactHistory, Run
from careflow.messages import State
from tests.providers import kit
from tests.providers.fault_server import SlowFaultServer
from tests.reliability.cli_run import (
    HANG_GUARD,
    add_birthday_customers,
    careflow_run,
    cli_env,
    killed_on_exit,
    ledger,
    output_of,
    wait_for,
)

pytestmark = [pytest.mark.prefect, pytest.mark.xdist_group("prefect-cli-2")]

CUSTOMERS = 60


def flow_run_state(run_id: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(run_id)).state.type.value


@pytest.fixture
def shop(engine):
    add_birthday_customers(engine, CUSTOMERS)
    return engine


SIGNALS = {
    "SIGTERM": [signal.SIGTERM],
    "SIGTERM-twice": [signal.SIGTERM, signal.SIGTERM],
    "SIGINT": [signal.SIGINT],
    "SIGINT-twice": [signal.SIGINT, signal.SIGINT],
}
#: what CI runs (each signal, once and twice, and each dialect, at least once);
#: the other combinations are marked slow (run them with -m slow)
IN_CI = {
    ("sqlite", "SIGTERM"),
    ("postgres", "SIGTERM-twice"),
    ("postgres", "SIGINT"),
    ("sqlite", "SIGINT-twice"),
}
CASES = [
    pytest.param(
        dialect,
        signals,
        id=f"{dialect}-{name}",
        marks=([pytest.mark.postgres] if dialect == "postgres" else [])
        + ([] if (dialect, name) in IN_CI else [pytest.mark.slow]),
    )
    for name, signals in SIGNALS.items()
    for dialect in ("sqlite", "postgres")
]


@pytest.mark.parametrize(("db_url", "signals"), CASES, indirect=["db_url"])
def test_a_stopped_run_settles_its_rows_and_a_rerun_finishes_exactly_once(
    shop, db_url, tmp_path, prefect_api_url, signals
):
    # The provider takes a while over each message, so chunks are in flight when
    # the signal comes. A run stops between chunks: the chunk in flight finishes,
    # the rest is released. A second signal comes once a message of the chunk in
    # flight has gone out after the first, i.e. while the run is still waiting
    # for its batches; from then on the provider holds every new request, so
    # that chunk cannot finish before the process is gone: its unsent messages
    # are in doubt.
    chunk = 4 if len(signals) == 1 else 12
    with SlowFaultServer(delay=0.4) as server:
        env = cli_env(db_url, tmp_path / "home", server, prefect_api_url, chunk)
        first_log = tmp_path / "first.log"
        proc = careflow_run(env, first_log)
        try:
            wait_for(lambda: len(server.bodies) >= 6, proc, first_log, "messages went out")
            for i, sig in enumerate(signals):
                before = len(server.bodies)
                wait_for(lambda n=before: len(server.bodies) > n, proc, first_log, "another send")
                server.holding = i > 0
                proc.send_signal(sig)
            returncode = proc.wait(HANG_GUARD)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            server.holding = False
        server.wait_idle()
        server.delay = 0.05  # the re-run need not be slow
        accepted_first = Counter(server.accepted)
        output = first_log.read_text()
        with shop.connect() as conn:
            runs = conn.execute(select(Run.id, Run.summary, Run.finished_at)).all()
        stopped = ledger(shop)

        second_log = tmp_path / "second.log"
        rerun = careflow_run(env, second_log)
        assert rerun.wait(HANG_GUARD) == 0, second_log.read_text()[-3000:]
        server.wait_idle()

    # --- the stopped run ---------------------------------------------------------------
    assert returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-5000:]
    (run,) = runs
    assert run.finished_at is not None and run.summary["stopped"] == "stopped", run.summary
    assert {run_id for _, _, run_id in stopped.values()} == {run.id}
    held = Counter(f"{state}:{reason}" for state, reason, _ in stopped.values())
    # nothing left reserved or sending, and it stopped with work left to do
    in_doubt = {"failed:interrupted", "failed:timeout_unknown"}
    assert set(held) <= {"sent:None", "skipped:run_stopped", *in_doubt}, held
    assert held["skipped:run_stopped"] > 0, held
    # what it delivered before the stop is counted (it said "sent 0"), and Prefect says
    # what careflow says: cancelled, not crashed; the operator reads one line. (After a
    # second signal the run stops waiting for the requests in flight: those it counts
    # in doubt, and their outcomes, recorded as they come back, may say sent.)
    if len(signals) == 1:
        assert run.summary["sent"] == held["sent:None"] > 0, run.summary
    else:
        assert run.summary["sent"] <= held["sent:None"], run.summary
    assert flow_run_state(run.id) == "CANCELLED"
    assert sum(line.startswith("error: birthday stopped") for line in output.splitlines()) == 1
    if len(signals) > 1:  # the process went with messages handed over and unanswered
        assert sum(held[k] for k in in_doubt) > 0, held
    for cid, (state, _reason, _) in stopped.items():
        n = accepted_first[kit.cn_mobile(cid)]
        assert n == {"sent": 1, "skipped": 0}.get(state, n if n <= 1 else -1), (cid, state, n)

    # --- the re-run finished the job, exactly once -------------------------------------------
    with shop.connect() as conn:
        rows = conn.execute(select(ContactHistory.__table__)).all()
    assert len(rows) == CUSTOMERS
    states = Counter(r.state for r in rows)
    assert set(states) <= {State.SENT, State.FAILED}, states
    for r in rows:
        n = server.accepted[kit.cn_mobile(r.customer_id)]
        if r.state == State.SENT:
            assert n == 1, (r.customer_id, n)
        else:  # in doubt: the stopped run's, taken at most once and never sent again
            assert f"failed:{r.reason}" in in_doubt and stopped[r.customer_id][2] == run.id
            assert n <= 1, (r.customer_id, n)
    assert max(server.accepted.values()) == 1
    print(f"\n[{shop.dialect.name} {'+'.join(s.name for s in signals)}] exit {returncode}; "
          f"stopped run's rows {dict(held)}; after the re-run {dict(states)}; "
          f"in doubt accepted {sum(accepted_first[kit.cn_mobile(c)] for c, v in stopped.items() if v[0] == State.FAILED)}")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_run_on_dask_stops_on_sigterm_and_settles_its_rows(shop, db_url, tmp_path, prefect_api_url):
    """Batches in Dask worker processes cannot see the flow's stop event: they read the
    stop from the run's row (careflow/flows/campaign.py, RunStopFlag) and put down what they hold."""
    with SlowFaultServer(delay=0.4) as server:
        env = cli_env(db_url, tmp_path / "home", server, prefect_api_url, chunk=4)
        env |= {
            "CAREFLOW_TASK_RUNNER": "dask",
            "CAREFLOW_DASK_WORKERS": "2",
            "CAREFLOW_DASK_THREADS_PER_WORKER": "1",
        }
        log = tmp_path / "dask.log"
        with killed_on_exit(careflow_run(env, log)) as proc:
            wait_for(lambda: len(server.bodies) >= 6, proc, log, "messages went out")
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(HANG_GUARD)
        server.wait_idle()
    output = output_of(log)
    assert returncode != 0, output[-3000:]
    with shop.connect() as conn:
        (run,) = conn.execute(select(Run.id, Run.summary, Run.finished_at)).all()
    assert run.finished_at is not None and run.summary["stopped"] == "stopped", run.summary
    stopped = ledger(shop)
    held = Counter(f"{state}:{reason}" for state, reason, _ in stopped.values())
    assert set(held) <= {"sent:None", "skipped:run_stopped", "failed:interrupted"}, held
    assert held["skipped:run_stopped"] > 0, held  # it stopped with work left to do
    for cid, (state, _reason, _) in stopped.items():
        n = server.accepted[kit.cn_mobile(cid)]
        assert n == {"sent": 1, "skipped": 0}.get(state, n if n <= 1 else -1), (cid, state, n)
    assert max(server.accepted.values()) == 1

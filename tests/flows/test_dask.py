"""A campaign's batches on a Dask cluster (CAREFLOW_TASK_RUNNER=dask, careflow/flows/runners.py).

The real campaign flow runs end to end with prefect-dask's task runner on a
LocalCluster of two worker processes, which the flow starts from the
settings, on SQLite (a file the worker processes share) and PostgreSQL. It
must come to exactly what the thread runner comes to on the same shop:
every selected customer one recorded outcome, the same outcome per
customer, one outbox message per message sent, and nothing left reserved.
A batch outside the flow's process learns of a stop from the run's row.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner
from sqlalchemy import delete, select

from careflow.campaigns import load_campaign
from careflow.db.models import ContactEvent, ContactHistory, Run
from careflow.demo.data import seed_demo
from careflow.flows.route import RunPlan
from careflow.flows.runners import BatchTaskRunner
from careflow.messages import State
from careflow.report import request_stop, run_status, start_run, stop_requested
from careflow.settings import load_settings

pytestmark = [pytest.mark.prefect, pytest.mark.xdist_group("prefect")]

AS_OF = date(2026, 11, 22)
CUSTOMERS = 300
CAMPAIGN = "reorder_reminder"


def outcomes(engine) -> dict[tuple[int, str], tuple]:
    """(customer, occasion) -> (state, reason, channel), failing on a key recorded twice."""
    with engine.connect() as conn:
        rows = conn.execute(select(ContactHistory.__table__)).all()
    keys = Counter((r.customer_id, r.occasion) for r in rows)
    assert max(keys.values(), default=1) == 1, "a customer's occasion recorded twice"
    return {(r.customer_id, r.occasion): (r.state, r.reason, r.channel) for r in rows}


def outbox_files(home) -> set[str]:
    folder = home / "outbox"
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def run_with(runner: str, engine, tmp_path, monkeypatch) -> tuple[dict, dict, set[str]]:
    """One real campaign run on ``runner``; its summary, ledger and outbox files."""
    from careflow.flows.campaign import campaign_flow

    home = tmp_path / runner
    monkeypatch.setenv("CAREFLOW_HOME", str(home))
    monkeypatch.setenv("CAREFLOW_TASK_RUNNER", runner)
    summary = campaign_flow(
        campaign=CAMPAIGN, as_of=AS_OF, channel="outbox", allow_past=True
    )
    return summary, outcomes(engine), outbox_files(home)


def test_a_campaign_on_dask_comes_to_what_threads_come_to(prefect_api, engine, tmp_path, monkeypatch):
    seed_demo(engine, as_of=AS_OF, customers=CUSTOMERS)
    monkeypatch.setenv("CAREFLOW_BATCH_SIZE", "5")  # batches spread over both workers
    # workers judge send times at their real clock: the two runs compare at any hour
    monkeypatch.setenv("CAREFLOW_QUIET_HOURS", "off")
    monkeypatch.setenv("CAREFLOW_SENDING_WINDOWS", "false")
    monkeypatch.setenv("CAREFLOW_DASK_WORKERS", "2")
    monkeypatch.setenv("CAREFLOW_DASK_THREADS_PER_WORKER", "2")
    monkeypatch.delenv("CAREFLOW_DASK_ADDRESS", raising=False)

    threads, by_threads, files_threads = run_with("threads", engine, tmp_path, monkeypatch)
    assert threads["selected"] >= 20 and threads["sent"] >= 5  # a run worth comparing
    with engine.begin() as conn:  # the same shop, as if nothing had been sent yet
        for table in (ContactEvent, ContactHistory, Run):
            conn.execute(delete(table))

    dask, by_dask, files_dask = run_with("dask", engine, tmp_path, monkeypatch)

    counts = ("selected", "sent", "already", "skipped", "deferred", "failed")
    assert {k: dask[k] for k in counts} == {k: threads[k] for k in counts}
    assert by_dask == by_threads  # every customer: the same single outcome
    assert len(by_dask) == dask["selected"]  # every selected customer recorded once
    states = Counter(state for state, _, _ in by_dask.values())
    assert states[State.RESERVED] == states[State.SENDING] == 0
    assert states[State.SENT] == dask["sent"] == len(files_dask)  # one message per send
    assert files_dask == files_threads
    with engine.connect() as conn:
        (run,) = conn.execute(select(Run)).all()
    assert run_status(run) == "completed"

    again, by_again, _ = run_with("dask", engine, tmp_path, monkeypatch)
    assert again["sent"] == 0 and again["already"]["sent"] == dask["sent"]
    assert sum(again["already"].values()) == again["selected"] == dask["selected"]
    assert by_again == by_dask  # a re-run on Dask sends nothing twice


def test_the_runner_is_chosen_from_the_settings_when_a_run_starts(monkeypatch):
    monkeypatch.delenv("CAREFLOW_TASK_RUNNER", raising=False)
    runner = BatchTaskRunner()  # as the flows are decorated, at import
    assert type(runner.duplicate()) is ThreadPoolTaskRunner
    monkeypatch.setenv("CAREFLOW_TASK_RUNNER", "dask")
    monkeypatch.setenv("CAREFLOW_DASK_WORKERS", "3")
    local = runner.duplicate()
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 3
    monkeypatch.setenv("CAREFLOW_DASK_ADDRESS", "tcp://10.0.0.5:8786")
    assert runner.duplicate().address == "tcp://10.0.0.5:8786"
    # a bad value leaves the choice to the run, which names the variable in one line
    monkeypatch.setenv("CAREFLOW_TASK_RUNNER", "spark")
    assert type(runner.duplicate()) is ThreadPoolTaskRunner
    with pytest.raises(Exception, match="CAREFLOW_TASK_RUNNER"):
        load_settings()


def test_a_batch_outside_the_flow_process_stops_when_the_run_row_says_so(engine):
    """What a Dask worker sees: no stop event of the flow, only the run's row."""
    from careflow.flows.campaign import RunStopFlag, process_batch_task

    seed_demo(engine, as_of=AS_OF, customers=40)
    settings = load_settings()
    spec = load_campaign(CAMPAIGN, settings.templates_dir)
    at = datetime(2026, 11, 22, 12)
    start_run(engine, "run-1", spec, at, "outbox", False)
    flag = RunStopFlag(engine, "run-1", every=0)
    assert not flag.is_set() and not stop_requested(engine, "run-1")

    request_stop(engine, "run-1", "stopped")
    assert flag.is_set()
    with engine.connect() as conn:
        assert run_status(conn.execute(select(Run)).one()) == "stopping"
    run = RunPlan(
        spec=spec, run_id="run-1", as_of=AS_OF, at=at, params=spec.parameters,
        settings=settings.model_copy(update={"delivery": "outbox"}),
    )  # fmt: skip
    result = process_batch_task.fn(run, 1, 40)
    assert result["selected"] == 0 and result["sent"] == 0
    assert outcomes(engine) == {}  # nobody reserved by a batch of a stopping run


def test_batch_task_arguments_survive_pickling():
    """Dask ships a batch's arguments to another process: settings included."""
    import pickle

    settings = load_settings(twilio_auth_token="secret-token", dask_workers=3)
    copy = pickle.loads(pickle.dumps(settings))
    assert copy == settings and copy.twilio_auth_token.get_secret_value() == "secret-token"


@pytest.mark.parametrize("runner", ["threads", "dask"])
def test_a_dry_run_counts_a_shared_address_once_on_any_runner(prefect_api, engine, monkeypatch, runner):
    """A dry run's batches count the addresses the others would take on any runner: on Dask
    they run on the cluster's workers, other processes (careflow/ledger/dry_run.py)."""
    from careflow.flows.campaign import campaign_flow
    from tests.factories import add_customer, add_orders

    for cid in (1, 2, 3):  # one family phone, three dormant customers, three batches
        add_customer(engine, cid, mobile="+447911123456", email=None, country="GB")
        add_orders(engine, cid, [AS_OF - timedelta(days=400)])
    monkeypatch.setenv("CAREFLOW_BATCH_SIZE", "1")
    monkeypatch.setenv("CAREFLOW_TASK_RUNNER", runner)
    result = campaign_flow(campaign="winback", as_of=AS_OF, channel="sms", dry_run=True)
    assert result["selected"] == 3
    assert result["would_send"] == {"sms": 1} and result["skipped"] == {"shared_address": 2}


def test_dask_on_the_embedded_api_reports_to_the_runs_own_server(tmp_path):
    """Regression: with no Prefect server configured (the embedded default), each Dask
    worker process started a temporary Prefect server of its own on the same database,
    a few seconds each, and under concurrent batches one failed to start: the run
    ended in an AssertionError traceback ("Server process did not start"). The
    LocalCluster's workers must report to the server the run itself started."""
    from careflow import db
    from tests.embedded import fresh_home, run_careflow

    home, url = fresh_home(tmp_path)
    seed_demo(db.engine_for(url), as_of=AS_OF, customers=CUSTOMERS)
    code, output = run_careflow(
        home, "run", CAMPAIGN, "--as-of", AS_OF.isoformat(), "--channel", "outbox", "--allow-past",
        env={
            "CAREFLOW_TASK_RUNNER": "dask",
            "CAREFLOW_BATCH_SIZE": "5",  # a dozen batches, two at a time on each worker
            "CAREFLOW_DASK_WORKERS": "2",
            "CAREFLOW_DASK_THREADS_PER_WORKER": "2",
        },
    )  # fmt: skip
    assert code == 0, output[-3000:]
    assert "Traceback" not in output
    assert output.count("Starting temporary server") == 1, output[-3000:]
    settled = outcomes(db.engine_for(url))
    assert len(settled) >= 20 and State.RESERVED not in {s for s, _, _ in settled.values()}

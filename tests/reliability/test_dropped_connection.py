"""The database goes away under a run: a dropped connection, a locked file.

- PostgreSQL: while `careflow run` is sending (its connections idle between
  chunks), a second connection terminates every backend of the run's
  database (``pg_terminate_backend``), three times. The run carries on (the
  pool replaces dead connections), exits 0 without a traceback, and sends
  everyone exactly once; a re-run sends nothing.
- PostgreSQL: the connection is terminated in the middle of a ledger write
  (recording a chunk's outcomes). The write is retried on a new connection:
  no outcome is lost and nothing is sent twice.
- SQLite: another process takes the write lock mid-run and holds it for a
  while. The run's writes wait for it; the run completes exactly once.
- SQLite: the lock is taken just after a chunk went out and held for longer
  than the ledger's retries. The chunk's outcomes are kept in a journal file
  under the run's home; the run warns, waits for the lock to go, and records
  them as sent (tests/reliability/test_send_faults.py has the outage at the
  driver's seam, on both databases, and a run stopped while it waits).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, date, datetime, time

import pytest
from sqlalchemy import create_engine, event, select, text

import careflow.ledger.state
from careflow.campaigns import load_campaign
from careflow.db.models import ContactHistory
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.ledger import ContactLedger
from careflow.messages import Outcome, State
from careflow.settings import load_settings
from tests.providers import kit
from tests.providers.fault_server import SlowFaultServer
from tests.reliability.cli_run import (
    HANG_GUARD,
    add_birthday_customers,
    careflow_run,
    cli_env,
    killed_on_exit,
    output_of,
    wait_for,
)

CUSTOMERS = 60
AS_OF = date(2026, 11, 22)
AT = datetime.combine(AS_OF, time(12), tzinfo=UTC)

@pytest.fixture
def shop(engine):
    add_birthday_customers(engine, CUSTOMERS)
    return engine


def settled_once(engine, server) -> Counter:
    """Every customer has one settled row; every sent row's message was accepted once."""
    with engine.connect() as conn:
        rows = conn.execute(select(ContactHistory.__table__)).all()
    assert sorted(r.customer_id for r in rows) == list(range(1, CUSTOMERS + 1))
    for r in rows:
        n = server.accepted[kit.cn_mobile(r.customer_id)]
        assert r.state in (State.SENT, State.SKIPPED, State.FAILED), r
        assert n == (1 if r.state == State.SENT else 0), (r.customer_id, r.state, r.reason, n)
    return Counter(f"{r.state}:{r.reason}" for r in rows)


def terminate_backends(url: str) -> int:
    """Terminate every other connection to the database at ``url``."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).all()
            )
    finally:
        admin.dispose()


# --- through the CLI ------------------------------------------------------------------------
@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
@pytest.mark.usefixtures("shop")
@pytest.mark.prefect
@pytest.mark.xdist_group("prefect-cli-2")
def test_postgres_connections_terminated_mid_run_the_run_carries_on(
    engine, db_url, tmp_path, prefect_api_url
):
    with SlowFaultServer(delay=0.2) as server:
        env = cli_env(db_url, tmp_path / "home", server, prefect_api_url, chunk=4)
        log = tmp_path / "run.log"
        terminated = []
        with killed_on_exit(careflow_run(env, log)) as proc:
            for accepted in (8, 20, 32):  # between chunks: the run's connections are idle
                wait_for(lambda n=accepted: len(server.bodies) >= n, proc, log, f"{accepted} sent")
                terminated.append(terminate_backends(db_url))
            assert proc.wait(HANG_GUARD) == 0, log.read_text()[-3000:]
        output_of(log)
        assert settled_once(engine, server) == {"sent:None": CUSTOMERS}
        assert all(terminated), terminated  # the run's connections were there to kill

        again_log = tmp_path / "again.log"
        again = careflow_run(env, again_log)
        assert again.wait(HANG_GUARD) == 0, again_log.read_text()[-3000:]
        assert f"{CUSTOMERS} got this occasion's message" in (
            again_log.read_text()
        )
        server.wait_idle()
        assert settled_once(engine, server) == {"sent:None": CUSTOMERS}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("shop")
@pytest.mark.prefect
@pytest.mark.xdist_group("prefect-cli-2")
def test_sqlite_locked_by_another_process_mid_run_the_run_waits(
    engine, db_url, tmp_path, prefect_api_url
):
    path = db_url.split("///", 1)[1]
    locker = (  # takes the write lock, says so, holds it for two seconds
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({path!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(2)\n"
        "c.execute('COMMIT')\n"
    )
    with SlowFaultServer(delay=0.2) as server:
        env = cli_env(db_url, tmp_path / "home", server, prefect_api_url, chunk=4)
        log = tmp_path / "run.log"
        with killed_on_exit(careflow_run(env, log)) as proc:
            wait_for(lambda: len(server.bodies) >= 8, proc, log, "messages went out")
            holder = subprocess.run(
                [sys.executable, "-c", locker], capture_output=True, text=True, timeout=60
            )
            assert holder.returncode == 0 and "locked" in holder.stdout, holder.stderr
            assert proc.wait(HANG_GUARD) == 0, log.read_text()[-3000:]
        server.wait_idle()
        output_of(log)
    assert settled_once(engine, server) == {"sent:None": CUSTOMERS}


# --- the route itself -------------------------------------------------------------------------
class CountingChannel:
    """Delivers everything at once; counts deliveries per customer."""

    name = "counting"

    def __init__(self, delivered: Counter, on_send=None):
        self.delivered, self.on_send = delivered, on_send

    def send_batch(self, messages):
        if self.on_send:
            self.on_send()
        for m in messages:
            self.delivered[m.customer_id] += 1
        return [Outcome.sent(m.contact_id, provider_id=f"p{m.contact_id}") for m in messages]

    def close(self):
        pass


def route_for(engine, run_id: str, delivered: Counter, on_send=None, ledger=None):
    settings = load_settings(send_chunk_size=5, delivery="outbox")
    spec = load_campaign("birthday", settings.templates_dir)
    run = RunPlan(
        spec=spec, run_id=run_id, as_of=AS_OF, at=AT, settings=settings, only_channel="sms"
    )
    route = Route.for_run(run)
    route.engine = engine
    route.ledger = ledger or ContactLedger(engine)
    route.channel_factory = lambda name: CountingChannel(delivered, on_send)
    return route


def rows(engine) -> Counter:
    with engine.connect() as conn:
        return Counter(
            f"{r.state}:{r.reason}" for r in conn.execute(select(ContactHistory.__table__))
        )


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_postgres_connection_terminated_during_a_ledger_write_is_retried(shop, db_url):
    writes = []

    def kill_mid_write(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE contact_history") and "unnest" in statement:
            writes.append(statement)
            if len(writes) == 2:  # recording the second chunk's outcomes
                pid = conn.connection.dbapi_connection.info.backend_pid
                admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
                with admin.connect() as a:
                    a.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                admin.dispose()

    delivered: Counter = Counter()
    event.listen(shop, "before_cursor_execute", kill_mid_write)
    try:
        result = process_batch(route_for(shop, "run-1", delivered), (1, CUSTOMERS))
    finally:
        event.remove(shop, "before_cursor_execute", kill_mid_write)
    assert len(writes) > 2  # the killed write, then its retry and the rest
    assert result.sent == CUSTOMERS and rows(shop) == {"sent:None": CUSTOMERS}
    assert set(delivered.values()) == {1} and len(delivered) == CUSTOMERS
    again = process_batch(route_for(shop, "run-2", delivered), (1, CUSTOMERS))
    assert again.sent == 0 and set(delivered.values()) == {1}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_locked_for_longer_than_a_run_waits_keeps_what_went_out(
    shop, db_url, monkeypatch, tmp_path
):
    """The lock is taken just after a chunk went out and held past the ledger's retries.
    Regression: the batch failed with the database error and the chunk it had delivered
    became failed: interrupted (in doubt). Now its outcomes are kept in a journal file,
    the run warns and waits, and records them as sent once the lock is gone."""
    from careflow import outcome_journal
    from tests.reliability.test_send_faults import wait_for_journal

    monkeypatch.setattr(careflow.ledger.state, "WRITE_ATTEMPTS", 2)
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path / "home"))
    impatient = create_engine(db_url, connect_args={"timeout": 0.2})
    path = db_url.split("///", 1)[1]
    locked, unlock = threading.Event(), threading.Event()

    def hold_lock():
        import sqlite3

        c = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        c.execute("BEGIN EXCLUSIVE")
        locked.set()
        unlock.wait(60)
        c.execute("COMMIT")
        c.close()

    sends = []

    def lock_after_first_chunk():
        sends.append(1)
        if len(sends) == 1:  # the next write (recording this chunk) finds the file locked
            threading.Thread(target=hold_lock, daemon=True).start()
            locked.wait(10)

    delivered: Counter = Counter()
    route = route_for(impatient, "run-1", delivered, lock_after_first_chunk)
    done: list = []
    batch = threading.Thread(target=lambda: done.append(process_batch(route, (1, CUSTOMERS))))
    batch.start()
    kept = wait_for_journal(tmp_path / "home")  # past the retries: kept on disk, waiting
    assert len(kept.read_text().splitlines()) == 5
    unlock.set()
    batch.join(120)
    assert done and done[0].sent == CUSTOMERS
    assert rows(shop) == {"sent:None": CUSTOMERS}  # nothing in doubt
    assert set(delivered.values()) == {1} and len(delivered) == CUSTOMERS
    assert not list(outcome_journal.folder_of(tmp_path / "home").glob("*"))
    impatient.dispose()

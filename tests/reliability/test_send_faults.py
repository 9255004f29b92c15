"""Faults of the send step that would fail every message, and a ledger that goes away
after messages went out.

- The outbox's file system is full (ENOSPC) or read-only, or the provider refuses
  careflow's credentials (401/403): the batch stops at the first message that meets
  it (failed, retryable: it did not go out), leaves the messages it never started
  ``reserved`` for the flow to release (not failed, not in doubt), and says so in
  one line; once the fault is gone, the next run sends the rest, everyone once.
- The database refuses writes longer than the ledger's retries just after a chunk
  went out: the outcomes are kept in a journal file under the run's home, the run
  warns and waits, and records them as sent when the database is back; stopped while
  waiting, the next run writes them from the journal.
- A live channel marks a message ``sending`` when its request starts: while a
  request is held by a slow provider, only the messages whose requests started are
  in ``sending`` (a SIGKILL then leaves only those in doubt; tests/flows/test_kill.py
  and test_kill_slow_rate below kill a real run).

The database's own failure is injected at the driver's seam (an OperationalError
from the cursor), the file system's at the OS-call seam (``os.write``) or, as root,
with a real tmpfs that is full or mounted read-only.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime
from datetime import time as day_time
from pathlib import Path

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

import careflow.ledger.state
from careflow import outcome_journal
from careflow.campaigns import load_campaign
from careflow.db.models import ContactHistory
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.ledger import ContactLedger
from careflow.messages import State
from careflow.settings import load_settings
from tests.providers import kit
from tests.providers.fault_server import FaultServer, SlowFaultServer
from tests.reliability.cli_run import add_birthday_customers

CUSTOMERS = 30
AS_OF = date(2026, 11, 22)
AT = datetime.combine(AS_OF, day_time(12), tzinfo=UTC)


@pytest.fixture
def shop(engine):
    add_birthday_customers(engine, CUSTOMERS)
    return engine


def route_for(run_id: str, home: Path, stop=None, **settings):
    values = {"send_chunk_size": 10, "delivery": "outbox", "home": home} | settings
    s = load_settings(**values)
    return birthday_route(s, run_id, stop)


def birthday_route(s, run_id: str, stop=None) -> Route:
    spec = load_campaign("birthday", s.templates_dir)
    run = RunPlan(spec=spec, run_id=run_id, as_of=AS_OF, at=AT, settings=s, only_channel="sms")
    return Route.for_run(run, stop)


def live_route(run_id: str, home: Path, server: FaultServer, stop=None, **settings):
    s = kit.live_settings(server.base_url, fax_font_path=None, home=home, **settings)
    return birthday_route(s, run_id, stop)


def rows(engine) -> dict[int, tuple[str, str | None, bool]]:
    with engine.connect() as conn:
        return {
            r.customer_id: (r.state, r.reason, r.retryable)
            for r in conn.execute(select(ContactHistory.__table__))
        }


def states(engine) -> Counter:
    return Counter(f"{s}:{r}" for s, r, _ in rows(engine).values())


def outbox_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "outbox").rglob("*") if p.is_file())


class FullDisk:
    """``os.write`` in the outbox answers ENOSPC after ``room`` writes, until ``free``.

    Only the outbox's own writes count: ``os`` is one module, and a process starting its
    render worker meanwhile (multiprocessing's pipes, first imported then) writes too."""

    def __init__(self, monkeypatch, room: int):
        from careflow.channels import outbox

        self.room, self.full = room, True
        real = os.write

        def write(fd, data):
            if sys._getframe(1).f_globals.get("__name__") != outbox.__name__:
                return real(fd, data)
            if self.full:
                if self.room <= 0:
                    real(fd, bytes(data[: len(data) // 2]))  # half a file, then the disk is full
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.room -= 1
            return real(fd, data)

        monkeypatch.setattr(outbox.os, "write", write)

    def free(self) -> None:
        self.full = False


def test_a_full_outbox_stops_the_batch_and_the_next_run_sends_the_rest_once(
    shop, tmp_path, monkeypatch
):
    disk = FullDisk(monkeypatch, room=13)  # the second chunk meets the full disk
    result = process_batch(route_for("run-1", tmp_path), (1, CUSTOMERS))
    assert "No space left on device" in result.fault and "\n" not in result.fault
    held = rows(shop)
    assert Counter(s for s, _, _ in held.values()) == {"sent": 13, "failed": 1, "reserved": 16}
    [hit] = [v for v in held.values() if v[0] == State.FAILED]
    assert hit == (State.FAILED, "outbox_write_error", True)  # it did not go out: retryable
    assert result.sent == 13 and result.failed == {"outbox_write_error": 1}
    assert result.skipped == {"run_stopped": 16}  # what the flow's release makes of them
    # every file under a message's name is whole; no half-written or empty file is left
    files = outbox_files(tmp_path)
    assert len(files) == 13 and all(p.suffix == ".txt" for p in files)
    assert all(p.read_text().endswith("\n") and "Key: birthday:" in p.read_text() for p in files)
    assert ContactLedger(shop).release("run-1") == (16, 0)

    disk.free()
    again = process_batch(route_for("run-2", tmp_path), (1, CUSTOMERS))
    assert again.fault is None and again.sent == CUSTOMERS - 13
    assert states(shop) == {"sent:None": CUSTOMERS}
    assert len(outbox_files(tmp_path)) == CUSTOMERS  # one file per customer: nobody twice


def tmpfs(path: Path, *options: str):
    """Mount a tmpfs at ``path`` (root only); returns the unmount function."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return lambda: subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_real_full_or_read_only_file_system(shop, tmp_path, fault):
    """The same on a real file system: a 16 KiB tmpfs fills up mid-run; a read-only one
    takes nothing. Nothing partial is left; the next run on a usable one sends the rest."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    home = tmp_path / "home"
    outbox = home / "outbox"
    options = ["size=16k"] if fault == "full" else ["size=1m", "ro"]
    unmount = tmpfs(outbox, *options)
    try:
        result = process_batch(route_for("run-1", home), (1, CUSTOMERS))
        files = outbox_files(home)
        texts = [p.read_text() for p in files]
    finally:
        unmount()
    why = "No space left on device" if fault == "full" else "Read-only file system"
    assert why in result.fault
    held = Counter(s for s, _, _ in rows(shop).values())
    assert held["failed"] == 1 and held["sending"] == 0
    assert held["sent"] == len(files) and held["reserved"] == CUSTOMERS - 1 - len(files)
    assert all(t.endswith("\n") and "Key: birthday:" in t for t in texts)  # whole files only
    if fault == "full":
        assert 0 < len(files) < CUSTOMERS
    ContactLedger(shop).release("run-1")
    again = process_batch(route_for("run-2", home), (1, CUSTOMERS))
    assert again.fault is None and states(shop) == {"sent:None": CUSTOMERS}
    assert len(outbox_files(home)) == CUSTOMERS - len(files)  # the first run's went with it


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_stop_the_batch_and_the_next_run_sends_the_rest_once(
    shop, tmp_path, status
):
    with FaultServer(fault_rate=1.0, faults=[f"http:{status}"]) as server:
        route = live_route("run-1", tmp_path, server, sms_concurrency=2)
        result = process_batch(route, (1, CUSTOMERS))
        refused = sum(server.attempts.values())
    assert "refuses every request" in result.fault and "\n" not in result.fault
    held = rows(shop)
    failed = [v for v in held.values() if v[0] == State.FAILED]
    assert 1 <= len(failed) == refused <= 2  # the requests made, no more
    assert set(failed) == {(State.FAILED, "auth_failed", True)}
    # the others never started: back for the next run, not in doubt
    assert Counter(s for s, _, _ in held.values())["reserved"] == CUSTOMERS - refused
    ContactLedger(shop).release("run-1")
    with FaultServer() as server:
        again = process_batch(live_route("run-2", tmp_path, server), (1, CUSTOMERS))
        accepted = server.accepted
    assert again.fault is None and states(shop) == {"sent:None": CUSTOMERS}
    assert set(accepted.values()) == {1} and len(accepted) == CUSTOMERS


class Outage:
    """The database refuses every write of outcomes while ``down`` (as a dropped server
    or a lock held too long does, at the driver's seam)."""

    def __init__(self, engine, monkeypatch):
        monkeypatch.setattr(careflow.ledger.state, "WRITE_ATTEMPTS", 2)
        self.engine, self.down, self.refused = engine, False, 0
        self.armed = threading.Event()
        event.listen(engine, "before_cursor_execute", self._refuse)

    def _refuse(self, conn, cursor, statement, parameters, context, executemany):
        is_record = statement.startswith("UPDATE contact_history") and "provider_id" in statement
        if is_record and self.armed.is_set() and not self.refused:
            self.down = True  # the first chunk's outcomes: the database goes away
        if self.down and statement.startswith(("UPDATE", "INSERT")):
            self.refused += 1
            raise OperationalError(statement[:40], {}, Exception("server closed the connection"))

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._refuse)


def wait_for_journal(home: Path) -> Path:
    folder = outcome_journal.folder_of(home)
    deadline = time.monotonic() + 120  # only a guard against a hang
    while time.monotonic() < deadline:
        found = list(folder.glob("*.jsonl")) if folder.is_dir() else []
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError("no journal file")


def test_delivered_outcomes_wait_out_a_database_outage_and_are_recorded_as_sent(
    shop, tmp_path, monkeypatch, caplog
):
    outage = Outage(shop, monkeypatch)
    outage.armed.set()
    result: list = []
    worker = threading.Thread(
        target=lambda: result.append(process_batch(route_for("run-1", tmp_path), (1, CUSTOMERS)))
    )
    try:
        worker.start()
        kept = wait_for_journal(tmp_path)  # the outcomes are safe on disk before we go on
        assert len(kept.read_text().splitlines()) == CUSTOMERS  # the outbox's one chunk
        outage.down = False  # the database is back
        worker.join(120)
    finally:
        outage.close()
    assert result and result[0].sent == CUSTOMERS
    assert states(shop) == {"sent:None": CUSTOMERS}  # nothing in doubt
    assert not list(outcome_journal.folder_of(tmp_path).glob("*"))  # written: the file went
    assert "DATABASE UNAVAILABLE" in caplog.text and "kept in" in caplog.text


def test_stopped_during_an_outage_the_next_run_records_the_kept_outcomes(
    shop, tmp_path, monkeypatch
):
    outage = Outage(shop, monkeypatch)
    outage.armed.set()
    stop = threading.Event()
    result: list = []
    route = route_for("run-1", tmp_path, stop=stop)
    worker = threading.Thread(target=lambda: result.append(process_batch(route, (1, CUSTOMERS))))
    try:
        worker.start()
        wait_for_journal(tmp_path)
        stop.set()  # SIGTERM while the run waits for the database
        worker.join(120)
    finally:
        outage.close()
    assert result[0].sent == CUSTOMERS  # it delivered them, and says so
    assert states(shop) == {"sending:None": CUSTOMERS}
    # the database is back; the next run first writes what the journal kept
    assert outcome_journal.replay(tmp_path, ContactLedger(shop)) == CUSTOMERS
    assert ContactLedger(shop).release("run-1") == (0, 0)
    again = process_batch(route_for("run-2", tmp_path), (1, CUSTOMERS))
    assert again.sent == 0 and states(shop) == {"sent:None": CUSTOMERS}
    assert not list(outcome_journal.folder_of(tmp_path).glob("*"))
    assert len(outbox_files(tmp_path)) == CUSTOMERS


@pytest.mark.parametrize("rate", [2.0, 20.0])
def test_a_message_is_marked_sending_when_its_request_starts(shop, tmp_path, rate):
    """Regression: the whole chunk was marked before the first request, so a crash at a
    slow rate left every message of the chunk in doubt, requested or not. At 2 a
    second only the requests that started are in ``sending``; at 20 a second, at most
    the channel's quarter-second ahead (5) more."""
    with SlowFaultServer(delay=0.0) as server:
        server.holding = True  # requests that reach the provider wait there
        route = live_route(
            "run-1", tmp_path, server, sms_concurrency=2, sms_rate_per_second=rate,
            send_chunk_size=20,
        )  # fmt: skip
        worker = threading.Thread(target=process_batch, args=(route, (1, CUSTOMERS)))
        worker.start()
        try:
            server.wait_in_flight(2)  # both workers' requests are at the provider
            held = Counter(s for s, _, _ in rows(shop).values())
        finally:
            server.holding = False
            worker.join(120)
    ahead = int(rate * 0.25)
    assert 2 <= held["sending"] <= 2 + ahead, held
    assert held["reserved"] == CUSTOMERS - held["sending"], held
    assert states(shop) == {"sent:None": CUSTOMERS}
    assert set(server.accepted.values()) == {1}


# --- through the CLI ------------------------------------------------------------------------
def _run_row(engine):
    from careflow.db.models import Run

    with engine.connect() as conn:
        return conn.execute(select(Run.id, Run.summary)).all()


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect-cli-2")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_careflow_run_on_a_full_outbox_stops_in_one_line_and_the_next_run_sends_the_rest(
    shop, db_url, tmp_path, prefect_api_url
):
    """Regression: every remaining message failed one by one (not retryable, so not
    sent after space was freed), empty files were left behind, and the run exited 0."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    from tests.reliability.cli_run import careflow_run, cli_env
    from tests.reliability.test_stop_signals import flow_run_state

    outbox = tmp_path / "outbox"
    unmount = tmpfs(outbox, "size=16k")
    try:
        with FaultServer() as server:
            env = cli_env(db_url, tmp_path / "home", server, prefect_api_url, chunk=10)
        env |= {"CAREFLOW_DELIVERY": "outbox", "CAREFLOW_OUTBOX_DIR": str(outbox)}
        first = careflow_run(env, tmp_path / "first.log")
        assert first.wait(240) == 2
        output = (tmp_path / "first.log").read_text()
        written = [p for p in outbox.rglob("*") if p.is_file()]
        assert all(p.stat().st_size > 0 and p.suffix == ".txt" for p in written)
        subprocess.run(["mount", "-o", "remount,size=4m", str(outbox)], check=True)
        second = careflow_run(env, tmp_path / "second.log")
        assert second.wait(240) == 0, (tmp_path / "second.log").read_text()[-3000:]
        files = sorted(p.name for p in outbox.rglob("*") if p.is_file())
    finally:
        unmount()
    assert "Traceback" not in output, output[-5000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], output[-3000:]
    [first_run] = [r for r in _run_row(shop) if "stopped" in r.summary]
    assert first_run.summary["stopped"].startswith("failed: cannot write to the outbox")
    assert first_run.summary["sent"] == len(written) > 0
    assert flow_run_state(first_run.id) == "FAILED"
    held = rows(shop)
    sent = [cid for cid, (state, _, _) in held.items() if state == State.SENT]
    assert {s for s, _, _ in held.values()} <= {State.SENT, State.HELD_OUT}
    assert files == sorted(f"{cid}-2026.txt" for cid in sent)  # one file each: nobody twice


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect-cli-2")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_run_killed_at_a_slow_rate_leaves_in_doubt_only_requests_that_started(
    shop, db_url, tmp_path, prefect_api_url
):
    """Regression: at 2 messages a second each batch marked its whole chunk (12) sending
    before its first request, so a SIGKILL left some 20 messages in doubt, most of them
    never requested. Now only messages whose request started are in ``sending``."""
    import signal

    from tests.reliability.cli_run import careflow_run, cli_env, wait_for

    with SlowFaultServer(delay=0.3) as server:
        env = cli_env(db_url, tmp_path / "home", server, prefect_api_url, chunk=12)
        env["CAREFLOW_SMS_RATE_PER_SECOND"] = "2"
        log = tmp_path / "killed.log"
        proc = careflow_run(env, log)
        try:
            wait_for(lambda: len(server.bodies) >= 4, proc, log, "messages went out")
            proc.send_signal(signal.SIGKILL)
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.wait_idle()
        requested = {r for r, n in server.attempts.items() if n}
        held = rows(shop)
        env["CAREFLOW_SMS_RATE_PER_SECOND"] = "50"
        env["CAREFLOW_RESERVATION_LEASE_SECONDS"] = "1"  # the killed run's rows are stale by then
        again = careflow_run(env, tmp_path / "again.log")
        assert again.wait(240) == 0, (tmp_path / "again.log").read_text()[-3000:]
        server.wait_idle()
        accepted = server.accepted
    in_doubt = {cid for cid, (state, _, _) in held.items() if state == State.SENDING}
    never_requested = {cid for cid in in_doubt if kit.cn_mobile(cid) not in requested}
    # the requests on their way out when the kill came: at most one per sending worker
    assert len(never_requested) <= 2, (len(in_doubt), never_requested)
    assert len(in_doubt) <= len(requested) + 2
    after = rows(shop)
    for cid, (state, reason, _) in after.items():
        n = accepted[kit.cn_mobile(cid)]
        if state == State.SENT:
            assert n == 1, (cid, n)
        elif state == State.FAILED:
            assert reason == "interrupted" and cid in in_doubt and n <= 1, (cid, reason, n)
    assert max(accepted.values()) == 1

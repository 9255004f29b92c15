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
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime
from datetime import time as day_time
from pathlib import Path

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

import careflow.ledger
from careflow import outcome_journal
from careflow.campaigns import load_campaign
from careflow.db.models import ContactHistory
from careflow.ledger import ContactLedger
from careflow.messages import State
from careflow.settings import load_settings
from flows.campaign import build_route
from flows.route import process_batch
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
    spec = load_campaign("birthday", s.templates_dir)
    return build_route(s, spec, run_id, AS_OF, AT, "sms", False, stop=stop)


def live_route(run_id: str, home: Path, server: FaultServer, stop=None, **settings):
    s = kit.live_settings(server.base_url, fax_font_path=None, home=home, **settings)
    spec = load_campaign("birthday", s.templates_dir)
    return build_route(s, spec, run_id, AS_OF, AT, "sms", False, stop=stop)


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
    """``os.write`` in the outbox answers ENOSPC after ``room`` writes, until ``free``."""

    def __init__(self, monkeypatch, room: int):
        import channels.outbox

        self.room, self.full = room, True
        real = os.write

        def write(fd, data):
            if self.full:
                if self.room <= 0:
                    real(fd, bytes(data[: len(data) // 2]))  # half a file, then the disk is full
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.room -= 1
            return real(fd, data)

        monkeypatch.setattr(channels.outbox.os, "write", write)

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
        monkeypatch.setattr(careflow.ledger, "WRITE_ATTEMPTS", 2)
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

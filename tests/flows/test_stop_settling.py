"""A second stop signal while a stopped run settles what it holds.

The first SIGTERM stops the run; the run then writes down what its batches held.
A supervisor (or an impatient operator) may signal again at any moment of that
writing. Regression: the second signal was raised inside the database driver,
once in the middle of the pool's ping on PostgreSQL ("can't change 'autocommit'
now: connection in transaction status ACTIVE", a traceback in CI), and so could
leave the run's rows reserved. Here the second signal lands exactly while the
run releases its rows, every time, in this process.
"""

from __future__ import annotations

import os
import signal
import threading
from datetime import date

import pytest
from sqlalchemy import event, select

from careflow.db.models import ContactHistory, Run
from careflow.ledger import ContactLedger
from careflow.messages import State
from tests.factories import add_customer
from tests.reliability.cli_run import HANG_GUARD

AS_OF = date(2026, 6, 1)

pytestmark = [pytest.mark.prefect, pytest.mark.xdist_group("prefect")]


class Escaped(Exception):
    pass


def escaped(signum, frame):
    raise Escaped("a SIGTERM got past the flow")


def test_a_signal_during_settling_is_noted_and_the_rows_are_still_settled(
    prefect_api, engine, monkeypatch, real_clock
):
    from careflow.flows import campaign
    from careflow.flows.care import birthday
    from careflow.flows.route import RunStopped

    for cid in range(1, 21):
        add_customer(engine, cid, birthday=date(1990, 6, 1))
    monkeypatch.setenv("CAREFLOW_BATCH_SIZE", "1")
    monkeypatch.setenv("CAREFLOW_BATCH_CONCURRENCY", "1")
    real_claim = ContactLedger.claim
    claims, armed = [], threading.Event()

    def first_signal_at_the_third_claim(self, *args, **kwargs):
        claimed = real_claim(self, *args, **kwargs)
        claims.append(claimed)
        if len(claims) == 3:  # a supervisor's SIGTERM reaches the flow's thread
            armed.set()
            os.kill(os.getpid(), signal.SIGTERM)
            # the flow has heard it: this batch stops holding its customer
            next(iter(campaign._STOPS.values())).wait(HANG_GUARD)
        return claimed

    monkeypatch.setattr(ContactLedger, "claim", first_signal_at_the_third_claim)
    seconds = []

    def second_signal_while_releasing(conn, cursor, statement, parameters, context, many):
        releasing = armed.is_set() and threading.current_thread() is threading.main_thread()
        if releasing and not seconds and statement.lstrip().upper().startswith("UPDATE CONTACT_HISTORY"):
            seconds.append(statement)
            os.kill(os.getpid(), signal.SIGTERM)  # lands in the middle of the release

    event.listen(engine, "before_cursor_execute", second_signal_while_releasing)
    # a SIGTERM the flow lets through would end this test's process: fail instead
    outer = signal.signal(signal.SIGTERM, escaped)
    try:
        with pytest.raises(RunStopped) as stopped:
            birthday(as_of=AS_OF, allow_past=True, return_state=True).result()
    finally:
        signal.signal(signal.SIGTERM, outer)
        event.remove(engine, "before_cursor_execute", second_signal_while_releasing)
    assert seconds, "the second signal was never sent"
    assert "2 sent" in str(stopped.value)
    with engine.connect() as conn:
        states = conn.execute(select(ContactHistory.state, ContactHistory.reason)).all()
        run = conn.execute(select(Run.summary, Run.finished_at)).one()
    # nothing stays held: two went out, the third customer goes to the next run
    assert sorted(states) == [(State.SENT, None)] * 2 + [(State.SKIPPED, "run_stopped")]
    assert run.finished_at is not None and run.summary["stopped"] == "stopped"

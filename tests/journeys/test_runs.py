"""A journey's advance is a run: a row in `careflow report runs`, counts that agree with
`careflow journey status` and the ledger, and a stop that leaves nothing held."""

from __future__ import annotations

import os
import signal
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from careflow.db.models import ContactHistory, Run
from careflow.journey_spec import load_journey
from careflow.journeys.advance import status
from careflow.ledger import ContactLedger
from careflow.messages import State
from careflow.report import runs_since, runs_table
from careflow.settings import load_settings
from tests.journeys.conftest import START, advance, days, dormant, messages, positions
from tests.reliability.cli_run import HANG_GUARD


def ledger_sent(engine, run_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).where(
                ContactHistory.run_id == run_id, ContactHistory.state == State.SENT
            )
        ).scalar_one()


def journey_runs(engine) -> list[dict]:
    return [r for r in runs_since(engine) if r["campaign"] == "journey:nudge"]


def test_an_advance_is_a_run_whose_counts_agree_with_status_and_the_ledger(
    engine, templates, real_clock, monkeypatch
):
    monkeypatch.setenv("CAREFLOW_HOLDOUT", "0.3")
    for cid in range(1, 21):
        dormant(engine, cid)
    first = advance(real_clock, START)
    (run,) = journey_runs(engine)
    assert run["run_id"] == first["run_id"] and run["status"] == "completed"
    held = first["steps"].get("held_out", 0)
    assert 0 < held < 20  # the draw splits these twenty
    # every customer who went on got the first message, sent by this run, once
    assert run["selected"] == run["sent"] == first["steps"]["sent"] == 20 - held
    assert ledger_sent(engine, run["run_id"]) == run["sent"]
    assert run["journey"]["new_entries"] == 20
    assert run["journey"]["steps"] == first["steps"]
    assert "journey:nudge" in runs_table(runs_since(engine))

    advance(real_clock, START + timedelta(minutes=5))  # nothing due: no run recorded
    assert len(journey_runs(engine)) == 1

    # nobody answers: three days on, the window closes and the second message goes
    second = advance(real_clock, START + days(3) + timedelta(minutes=1))
    runs = journey_runs(engine)
    assert [r["run_id"] for r in runs] == [second["run_id"], first["run_id"]]
    assert runs[0]["sent"] == ledger_sent(engine, second["run_id"]) == 20 - held
    # the runs' step counts add up to what `careflow journey status` shows
    spec = load_journey("nudge", load_settings().templates_dir)
    shown: Counter = Counter()
    for outcomes in status(engine, spec, real_clock()).get("outcomes").values():
        shown.update(outcomes)
    counted: Counter = Counter()
    for r in runs:
        counted.update(r["journey"]["steps"])
    assert counted == shown
    # and the messages they sent are the ledger's, all of them
    with engine.connect() as conn:
        sent = conn.execute(
            select(func.count()).where(ContactHistory.state == State.SENT)
        ).scalar_one()
    assert sum(r["sent"] for r in runs) == sent == 2 * (20 - held)


class Escaped(Exception):
    pass


def escaped(signum, frame):
    raise Escaped("a SIGTERM got past the journey-advance flow")


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_a_stopped_advance_gives_back_its_messages_and_customers(
    prefect_api, engine, templates, real_clock, monkeypatch
):
    from careflow.flows import campaign
    from careflow.flows.journey import advance_journeys, journey_advance
    from careflow.flows.route import RunStopped

    for cid in range(1, 9):
        dormant(engine, cid)
    monkeypatch.setenv("CAREFLOW_BATCH_SIZE", "2")  # four batches, one at a time
    monkeypatch.setenv("CAREFLOW_BATCH_CONCURRENCY", "1")
    real_claim = ContactLedger.claim
    claims = []

    def signal_at_the_second_claim(self, *args, **kwargs):
        claimed = real_claim(self, *args, **kwargs)
        claims.append(claimed)
        if len(claims) == 2:  # a worker cancelling the flow run: SIGTERM to the flow
            os.kill(os.getpid(), signal.SIGTERM)
            # the flow has heard it: this batch holds two messages it must not send
            assert next(iter(campaign._STOPS.values())).wait(HANG_GUARD)
        return claimed

    monkeypatch.setattr(ContactLedger, "claim", signal_at_the_second_claim)
    real_clock.set(START)
    outer = signal.signal(signal.SIGTERM, escaped)  # a SIGTERM let through fails the test
    try:
        with pytest.raises(RunStopped) as stopped:
            journey_advance(journey="nudge", return_state=True).result()
    finally:
        signal.signal(signal.SIGTERM, outer)
    monkeypatch.setattr(ContactLedger, "claim", real_claim)
    assert "journey nudge stopped: 2 sent" in str(stopped.value)

    with engine.connect() as conn:
        (run,) = conn.execute(select(Run.__table__)).all()
        ledger = conn.execute(
            select(ContactHistory.customer_id, ContactHistory.state, ContactHistory.reason)
        ).all()
    assert run.campaign == "journey:nudge" and run.finished_at is not None
    assert run.summary["stopped"] == "stopped" and run.summary["sent"] == 2
    # the first batch's two went out; the second's two go back; nobody else was reserved
    assert Counter((state, reason) for _, state, reason in ledger) == {
        (State.SENT, None): 2,
        (State.SKIPPED, "run_stopped"): 2,
    }
    # no customer stays claimed, and those not messaged are due now: the second batch's on
    # the send step, the later batches' (which claimed nobody) where they entered
    now = START.replace(tzinfo=None)
    for cid, pos in positions(engine).items():
        assert pos.claimed_by is None and pos.claim_until is None, cid
        if cid > 2:
            step = "first" if cid <= 4 else "_entry"
            assert (pos.step, pos.state) == (step, "active") and pos.due_at <= now, cid

    # the next advance, at the same instant, finishes the job: one message each
    real_clock.set(START + timedelta(minutes=1))
    (summary,) = advance_journeys("nudge", settings=load_settings())
    assert summary["sent"] == 6 and summary["already"] == {}
    for cid in range(1, 9):
        assert messages(engine, cid) == [("j_nudge__first", "sent", "sms")], cid
        assert positions(engine)[cid].step == "answer"
    with engine.connect() as conn:
        finished = conn.execute(select(Run.summary).where(Run.id == summary["run_id"])).scalar()
    assert "stopped" not in finished and finished["steps"]["sent"] == 6


def test_ctrl_c_in_the_middle_of_a_send_leaves_no_customer_claimed(
    engine, templates, real_clock, monkeypatch
):
    """Batches run in the flow's own thread (no task runner): Ctrl-C lands inside a send,
    so the batch never puts down what it holds; the run does."""
    from careflow.channels.outbox import OutboxChannel
    from careflow.flows.journey import advance_journeys
    from careflow.flows.route import RunStopped

    for cid in range(1, 7):
        dormant(engine, cid)
    monkeypatch.setenv("CAREFLOW_BATCH_SIZE", "2")
    real_send = OutboxChannel.send_batch
    calls = []

    def interrupted_at_the_second_send(self, batch):
        calls.append(batch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_send(self, batch)

    monkeypatch.setattr(OutboxChannel, "send_batch", interrupted_at_the_second_send)
    real_clock.set(START)
    with pytest.raises(RunStopped) as stopped:
        advance_journeys("nudge", settings=load_settings())
    monkeypatch.setattr(OutboxChannel, "send_batch", real_send)
    assert "(with 2 customer(s) a batch still held)" in str(stopped.value)
    with engine.connect() as conn:
        (run,) = conn.execute(select(Run.__table__)).all()
        ledger = conn.execute(select(ContactHistory.state, ContactHistory.reason)).all()
    assert run.summary["stopped"] == "stopped" and run.summary["sent"] == 2
    # handed to the channel when the interrupt came: in doubt, never sent again
    assert Counter(ledger) == {(State.SENT, None): 2, (State.FAILED, "interrupted"): 2}
    assert all(p.claimed_by is None for p in positions(engine).values())
    advance(real_clock, START + timedelta(minutes=1))
    for cid in range(1, 7):
        assert positions(engine)[cid].step == "answer", cid
        assert len(messages(engine, cid)) == 1, cid


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect-cli")
def test_sigterm_stops_careflow_journey_advance_and_the_next_finishes_the_job(
    engine, db_url, tmp_path, prefect_api_url
):
    """`careflow journey advance` in its own process, sending SMS through a slow provider,
    gets SIGTERM (a worker cancelling the flow run) once a few messages went out."""
    import subprocess
    import sys

    from careflow.settings import PROJECT_ROOT
    from tests.journeys.test_kill import JOURNEY, shop, write_journey
    from tests.providers.fault_server import SlowFaultServer
    from tests.reliability.cli_run import cli_env, wait_for

    templates = tmp_path / "templates"
    write_journey(templates)
    customers = shop(engine, range(1, 31))

    def advance_cli(log):
        return subprocess.Popen(
            [sys.executable, "-m", "careflow", "journey", "advance", JOURNEY,
             "--as-of", START.isoformat()],
            cwd=PROJECT_ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    with SlowFaultServer(delay=0.2) as server:
        env = cli_env(db_url, tmp_path / "home", server, prefect_api_url, chunk=2)
        env |= {"CAREFLOW_TEMPLATES_DIR": str(templates), "CAREFLOW_BATCH_SIZE": "8",
                "CAREFLOW_FREQUENCY_CAP": "off"}  # fmt: skip
        log = tmp_path / "stopped.log"
        proc = advance_cli(log)
        try:
            wait_for(lambda: len(server.bodies) >= 4, proc, log, "messages went out")
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(HANG_GUARD)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.wait_idle()
        output = log.read_text()
        with engine.connect() as conn:
            (run,) = conn.execute(select(Run.__table__)).all()
            held = conn.execute(
                select(func.count()).where(
                    ContactHistory.state.in_([State.RESERVED, State.SENDING])
                )
            ).scalar_one()
        claimed = [c for c, p in positions(engine, JOURNEY).items() if p.claimed_by]
        accepted_first = len(server.bodies)
        server.delay = 0.01
        rerun = advance_cli(tmp_path / "rerun.log")
        assert rerun.wait(HANG_GUARD) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
        server.wait_idle()
        to = Counter(body["To"] for body in server.bodies)

    assert returncode != 0 and "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: journey {JOURNEY} stopped"), lines
    assert run.campaign == f"journey:{JOURNEY}" and run.summary["stopped"] == "stopped"
    assert 0 < run.summary["sent"] <= accepted_first < 30
    assert held == 0 and claimed == []  # nothing reserved, sending or claimed
    # the next advance sent the rest: each customer who went on got the SMS once
    with engine.connect() as conn:
        first = dict(conn.execute(
            select(ContactHistory.customer_id, ContactHistory.state)
            .where(ContactHistory.campaign == f"j_{JOURNEY}__first")
        ).all())  # fmt: skip
    went_on = {c for c, p in positions(engine, JOURNEY).items() if p.state != "held_out"}
    assert set(first) == went_on and len(went_on) > 20
    assert max(to.values()) == 1 and len(to) >= sum(s == State.SENT for s in first.values())
    assert set(customers) >= went_on

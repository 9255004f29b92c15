"""Two runs of the same campaigns and occasion at once, in two OS processes.

Two kill_worker processes (tests/flows/kill_worker.py: the real route, live
Twilio and SendGrid channels) start up, wait at a gate, and are let go at the
same moment over the same customers: once meeting the batches in the same
order (they contend for every row), and (marked slow) in opposite orders
(they meet in the middle). The loopback provider's log is the truth: every message the
ledger says was sent was accepted exactly once, nothing was accepted twice,
and every selected customer has one settled ledger row, whichever run won it.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import ExitStack

import pytest

from careflow.demo.data import seed_demo
from careflow.messages import State
from tests.flows.kill_worker import CAMPAIGN_OF_SENDER
from tests.flows.test_kill import (
    AS_OF,
    CAMPAIGNS,
    WORKER_TIMEOUT,
    events,
    id_ranges,
    ledger_rows,
    plan_for,
    selected,
    worker,
)
from tests.providers.fault_server import SlowFaultServer

CUSTOMERS = 200


@pytest.mark.parametrize("order", ["same", pytest.param("opposite", marks=pytest.mark.slow)])
def test_two_runs_at_once_send_each_message_once(engine, tmp_path, order):
    seed_demo(engine, as_of=AS_OF, customers=CUSTOMERS)
    selections = [selected(engine, c, ch) for c, ch in CAMPAIGNS]
    jobs = [[c, ch, lo, hi] for lo, hi in id_ranges(engine, 50) for c, ch in CAMPAIGNS]
    gate = tmp_path / "go"
    with SlowFaultServer(delay=0.03, fault_rate=0.03, faults=("http:503", "429:0.05")) as server:
        plans = [
            plan_for(server, "run-a", jobs, start_gate=str(gate)),
            plan_for(
                server, "run-b", jobs if order == "same" else jobs[::-1], start_gate=str(gate)
            ),
        ]
        with ExitStack() as stack:
            procs = [stack.enter_context(worker(p, tmp_path)) for p in plans]
            started = time.monotonic()
            # both started up and waiting at the gate: let them go together
            while not all(out.exists() and events(out) for _, out, _ in procs):
                for proc, _, err in procs:
                    assert proc.poll() is None, err.read_text()[-3000:]
                assert time.monotonic() - started < WORKER_TIMEOUT, "workers did not start"
                time.sleep(0.01)
            gate.touch()
            for proc, _, err in procs:
                assert proc.wait(WORKER_TIMEOUT) == 0, err.read_text()[-3000:]
        server.wait_idle()
        by_recipient, by_key = server.accepted_by_campaign(CAMPAIGN_OF_SENDER)

    results = {
        plan["run_id"]: [x["result"] for x in events(out) if x["event"] == "batch"]
        for plan, (_, out, _) in zip(plans, procs, strict=True)
    }
    sent_by_run = {run: sum(r["sent"] for r in rs) for run, rs in results.items()}
    met_other_run = sum(r["already"].get("in_progress", 0) for rs in results.values() for r in rs)

    states: Counter = Counter()
    for sel in selections:
        rows = ledger_rows(engine, sel.campaign)
        keys = Counter((r.customer_id, r.occasion) for r in rows)
        assert set(keys) == set(sel.keys) and max(keys.values()) == 1, sel.campaign
        for r in rows:
            states[r.state] += 1
            assert r.state in (State.SENT, State.SKIPPED, State.FAILED), r
            address = sel.keys[r.customer_id, r.occasion].address
            accepted = by_recipient[sel.campaign, address] if address else 0
            if r.state == State.SENT:
                assert accepted == 1, f"{sel.campaign} to {address}: accepted {accepted} times"
            else:
                assert r.reason and accepted == 0, (r.state, r.reason, accepted)
    assert max(by_recipient.values()) == 1, "someone got the same message twice"
    assert max(by_key.values()) == 1, "someone got the same email twice"
    assert sum(sent_by_run.values()) == states[State.SENT] == len(server.bodies)
    # not vacuous: both runs sent, and they did meet each other's rows. However the
    # scheduler treats them, a run that falls behind skips what is already sent
    # quickly and catches up with the batch the other is sending.
    assert all(sent_by_run.values()), sent_by_run
    assert met_other_run > 0 or order == "opposite", results
    print(f"\n[{engine.dialect.name}, {order} order] sent by run {sent_by_run}, "
          f"rows another run held {met_other_run}, rows {dict(states)}")

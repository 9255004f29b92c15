"""Exactly-once under SIGKILL: runs are killed at random and re-run until done.

The promise: a customer never receives the same occasion's message twice,
whatever retries, crashes or re-runs happen, and every selected customer ends
with a recorded outcome: sent, skipped with a reason, or failed with a reason.

A loopback fault server plays Twilio and SendGrid (a little slow, with a few
transient errors, resets and accepted-then-reset answers). Runs of four demo
campaigns (tests/flows/kill_worker.py, the real route and SDKs in their own
process) are SIGKILLed at random moments: while starting, after a random
time, as soon as they hold reserved rows, or just after the server accepted
a random number of messages. After a kill the next run usually starts once
the dead run's lease has run out, so it takes over what the dead one left;
sometimes it starts within the lease, with the batch the dead one was in,
and must leave those rows alone. Then runs go to completion until one finds
nothing left to do.

What the test requires is counted, never timed: the kill phase goes on
until it has made the kills its size asks for, enough of them mid-send (some messages of a
chunk accepted, some not) and while holding reserved rows, and a run has
found rows another (dead) run still held. The lease is long (an hour) and
"the lease ran out" is made true by ageing the dead run's rows
(``updated_at`` moved back past the lease), exactly what the clock would do
to rows nobody touches, so a loaded machine changes nothing but the speed.
Every kill takes at most a bounded share of the work, so the work cannot run
out before the kills are made.

The kill timing varies from run to run; the assertions hold for any timing:
one ledger row per selected (campaign, customer, occasion), none left
reserved or sending, every outcome with a reason, and the provider accepted
each sent row's message exactly once, never any message twice, and nothing
for skipped rows or failures that proved the provider did not take it. Rows
whose outcome is ambiguous by design (``interrupted``, ``timeout_unknown``,
``connection_lost_unknown``) were accepted at most once; how many is
reported, with the rows each kill left in doubt.

Sizes: ``ci`` (500 customers, 8 kills; CAREFLOW_KILL_CUSTOMERS and
CAREFLOW_KILL_KILLS change it) runs by default; ``full`` (5,000 customers,
50 kills, marked slow) runs with ``-m slow``; docs/reliability.md has the
command and its figures.

The second test stops a run (SIGSTOP) for longer than the lease instead of
killing it, lets another run take over, and resumes it.

The third kills and stops the follow-up (``careflow deferred send``) that sends
deferred messages, against a provider that queues before it sends and whose
log holds other campaigns' messages to the same numbers, with reconciliation
after each follow-up; ``ci`` size 90 customers, 2 SIGKILLs and a SIGTERM,
``full`` (slow) 600 customers, 12 and 4.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import time as clock
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, update

from careflow.campaigns import load_campaign
from careflow.channels.sms import TwilioSMS
from careflow.db.models import ContactHistory, Customer
from careflow.demo.data import seed_demo
from careflow.flows.reconcile import reconcile_sms
from careflow.flows.route import Route, RunPlan, apply_policy, process_batch, select_occasions
from careflow.messages import State
from careflow.policy import Decision
from careflow.settings import PROJECT_ROOT, load_settings
from tests.flows.kill_worker import CAMPAIGN_OF_SENDER
from tests.providers import kit
from tests.providers.fault_server import FaultServer, SlowFaultServer
from tests.reliability.cli_run import HANG_GUARD, cli_env

AS_OF = date(2026, 11, 22)
AT = datetime.combine(AS_OF, time(12), tzinfo=UTC)
CUSTOMERS = 500  # the paused-run test's shop
BATCH_IDS = 100  # customer ids per process_batch call: a kill costs at most one batch
CAMPAIGNS = [
    ("winback", "sms"),
    ("reorder_reminder", "email"),
    ("birthday", "sms"),
    ("vip_care", "email"),
]
#: CAREFLOW_RESERVATION_LEASE_SECONDS for the kill test's workers: longer than
#: the test, so only ageing rows (``Runner.age_unsettled``) lets a lease run out
LEASE = 3600
PAUSED_LEASE = 2  # the paused-run test waits this lease out for real (a stopped run)
REQUEST_DELAY = 0.02  # every accepted request takes this long: kills land mid-batch
PAUSE = 0.05  # before each hand-over to a channel: kills land on reserved rows too
FAULTS = ("http:500", "http:503", "429:0.05", "reset", "accept_reset")
FAULT_RATE = 0.04
#: failures after which the provider may or may not have taken the message
AMBIGUOUS = {"interrupted", "timeout_unknown", "connection_lost_unknown"}

#: the first rounds' kill modes, and whether the next run waits for the lease; then random
OPENING = [("mid_send", False), ("mid_send", True), ("reserved", True), ("mid_send", True)]
#: generous, only so a hung worker fails the test instead of hanging it
WORKER_TIMEOUT = 120.0
LATER = timedelta(hours=3)  # reconciliation's "now": past its settling and status delays


@dataclass(frozen=True)
class KillSize:
    """How big a kill test is: customers seeded and SIGKILLs the kill phase makes."""

    customers: int
    kills: int

    @classmethod
    def named(cls, name: str) -> KillSize:
        """``ci`` (CAREFLOW_KILL_CUSTOMERS / CAREFLOW_KILL_KILLS may change it) or ``full``."""
        if name == "full":
            return cls(5000, 50)
        env = os.environ.get
        return cls(int(env("CAREFLOW_KILL_CUSTOMERS", "500")), int(env("CAREFLOW_KILL_KILLS", "8")))

    # what the kill phase must have done before runs may finish (counts, not seconds)
    @property
    def min_mid_send_kills(self) -> int:
        return max(2, self.kills // 5)

    @property
    def min_reserved_kills(self) -> int:
        return max(1, self.kills // 10)

    @property
    def min_in_progress_runs(self) -> int:
        return max(1, self.kills // 10)

    @property
    def max_rounds(self) -> int:
        """A hard stop, so a kill phase that cannot reach its counts fails, never spins."""
        return 4 * self.kills + 20

    @property
    def worker_timeout(self) -> float:
        return WORKER_TIMEOUT + self.customers / 10


@dataclass
class Round:
    run_id: str
    mode: str
    killed: bool = False
    seconds: float = 0.0
    accepted: int = 0  # requests the server accepted during this round
    left_sending: int = 0  # this run's rows still in 'sending' after it died
    left_sending_accepted: int = 0  # ... of which the server had accepted
    left_reserved: int = 0
    results: list[dict] = field(default_factory=list)
    done: bool = False
    waited: bool = False  # the next run started only after the lease ran out
    in_flight: list | None = None  # the job it was killed in

    @property
    def in_progress(self) -> int:
        """Rows another run still held (started before that run's lease ran out)."""
        return sum(r["already"].get("in_progress", 0) for r in self.results)

    @property
    def mid_send(self) -> bool:
        """Killed with a channel batch half through: some messages accepted, some not."""
        return self.killed and 0 < self.left_sending_accepted < self.left_sending

    def nothing_to_do(self) -> bool:
        return (
            self.done
            and all(r["sent"] == 0 and not r["failed"] for r in self.results)
            and not self.in_progress
        )


def id_ranges(engine, size: int) -> list[tuple[int, int]]:
    """Customer-id ranges of ``size`` ids: how this test cuts the work into jobs."""
    with engine.connect() as conn:
        lo, hi = conn.execute(select(func.min(Customer.id), func.max(Customer.id))).one()
    return [(start, min(start + size - 1, hi)) for start in range(lo, hi + 1, size)]


@dataclass
class Selected:
    """What the route selects for one campaign, and where it would send each message."""

    campaign: str
    channel: str
    keys: dict[tuple[int, str], Decision]  # (customer_id, occasion) -> policy decision


def selected(engine, campaign: str, channel: str) -> Selected:
    """The route's own selection, occasions and channel decisions (careflow/flows/route.py)."""
    settings = load_settings()
    spec = load_campaign(campaign, settings.templates_dir)
    with engine.connect() as conn:
        full = (1, conn.execute(select(func.max(Customer.id))).scalar_one())
    run = RunPlan(
        spec=spec,
        run_id="selection",
        as_of=AS_OF,
        at=AT,
        settings=settings,
        only_channel=channel,
        dry_run=True,
    )
    route = Route.for_run(run)
    candidates = select_occasions(route, full)
    apply_policy(route, candidates, full)
    return Selected(campaign, channel, {c.key: c.decision for c in candidates})


def ledger_rows(engine, campaign: str | None = None) -> list:
    query = select(ContactHistory.__table__)
    if campaign:
        query = query.where(ContactHistory.campaign == campaign)
    with engine.connect() as conn:
        return list(conn.execute(query))


@contextmanager
def worker(plan: dict, folder: Path) -> Iterator[tuple[subprocess.Popen, Path, Path]]:
    """A kill_worker process for ``plan``; its stdout and stderr go to files in ``folder``."""
    out, err = folder / f"{plan['run_id']}.out", folder / f"{plan['run_id']}.err"
    with (
        open(out, "w") as stdout,
        open(err, "w") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "tests.flows.kill_worker", json.dumps(plan)],
            cwd=PROJECT_ROOT,
            env=os.environ.copy(),  # CAREFLOW_DATABASE_URL and CAREFLOW_HOME from db_url
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        ) as proc,
    ):
        try:
            yield proc, out, err
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # in case it was stopped
                proc.kill()
            proc.wait()


def events(out: Path) -> list[dict]:
    return [json.loads(x) for x in out.read_text().splitlines() if x.strip()]


def plan_for(
    server: FaultServer, run_id: str, jobs: list, lease: int = LEASE, **extra: object
) -> dict:
    return {
        "base_url": server.base_url,
        "run_id": run_id,
        "as_of": AS_OF.isoformat(),
        "at": AT.isoformat(),
        "lease_seconds": lease,
        "jobs": jobs,
        "settings": {"sms_concurrency": 4, "email_concurrency": 4},
        **extra,
    }


class Runner:
    """Launches kill_worker processes against one database and fault server."""

    def __init__(
        self,
        engine,
        server: SlowFaultServer,
        folder: Path,
        rng: random.Random,
        selections: list[Selected],
        size: KillSize,
    ):
        self.engine, self.server, self.folder, self.rng = engine, server, folder, rng
        self.size = size
        self.ranges = id_ranges(engine, BATCH_IDS)
        self.rounds: list[Round] = []
        self.addresses = {  # (campaign, customer, occasion) -> where it goes
            (s.campaign, cid, occ): d.address
            for s in selections
            for (cid, occ), d in s.keys.items()
            if d.address
        }
        # Work one killed run may take: a third of all there is to send, spread over
        # the kills, so the kill phase cannot run out of messages to be killed on.
        self.accept_cap = max(5, len(self.addresses) // (3 * size.kills))

    def plan(self, run_id: str, first: list | None = None) -> dict:
        """Every batch of every campaign, shuffled; ``first`` (a job) goes first."""
        jobs = [[c, ch, lo, hi] for lo, hi in self.ranges for c, ch in CAMPAIGNS]
        self.rng.shuffle(jobs)  # each run meets the batches in another order
        if first:
            jobs.remove(first)
            jobs.insert(0, first)
        return plan_for(self.server, run_id, jobs, pause_before_mark_sending=PAUSE)

    def has_reserved(self, run_id: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    select(ContactHistory.id)
                    .where(ContactHistory.run_id == run_id, ContactHistory.state == State.RESERVED)
                    .limit(1)
                ).first()
                is not None
            )

    def age_unsettled(self) -> int:
        """Let the lease of every row still reserved or sending run out.

        Only dead runs hold such rows (no worker is running), and nobody touches
        them: moving ``updated_at`` back past the lease is what the clock would
        do, without waiting for it. (A fixed past instant: SQL date arithmetic on
        SQLite's text timestamps gives a number, not a time.)
        """
        long_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=LEASE + 60)
        with self.engine.begin() as conn:
            return conn.execute(
                update(ContactHistory)
                .where(ContactHistory.state.in_([State.RESERVED, State.SENDING]))
                .values(updated_at=long_ago)
            ).rowcount

    def run(self, mode: str, first: list | None = None) -> Round:
        """One run; ``mode`` says when to SIGKILL it: early (starting up), timed
        (a random moment), mid_send (after 1-25 more accepted requests), reserved
        (once it holds reserved rows) or none. A killed run is killed at the
        latest once the server accepted ``accept_cap`` of its messages."""
        n = len(self.rounds) + 1
        rnd = Round(run_id=f"kill-{n:02d}-{self.rng.getrandbits(24):06x}", mode=mode)
        kill_at = {"early": self.rng.uniform(0.05, 1.3), "timed": self.rng.uniform(1.0, 3.5)}
        accepted_before = len(self.server.bodies)
        mid_send_target = accepted_before + self.rng.randint(1, min(25, self.accept_cap))
        started = clock.monotonic()
        plan = self.plan(rnd.run_id, first)
        with worker(plan, self.folder) as (proc, out, err):
            while proc.poll() is None:
                elapsed = clock.monotonic() - started
                if elapsed > self.size.worker_timeout:
                    pytest.fail(f"{rnd.run_id} still running after {elapsed:.0f}s (hung?)")
                accepted = len(self.server.bodies)
                due = mode != "none" and (
                    (mode in kill_at and elapsed >= kill_at[mode])
                    or (mode == "mid_send" and accepted >= mid_send_target)
                    or (mode == "reserved" and self.has_reserved(rnd.run_id))
                    or accepted - accepted_before >= self.accept_cap
                )
                if due:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    rnd.killed = True
                    break
                clock.sleep(0.003 if mode != "reserved" else 0.01)
        rnd.seconds = clock.monotonic() - started
        lines = events(out)
        rnd.results = [x["result"] for x in lines if x["event"] == "batch"]
        rnd.done = any(x["event"] == "done" for x in lines)
        finished = [
            [x["campaign"], x["channel"], *x["range"]] for x in lines if x["event"] == "batch"
        ]
        rnd.in_flight = next((j for j in plan["jobs"] if j not in finished), None)
        if not rnd.killed:
            assert proc.returncode == 0 and rnd.done, (
                f"{rnd.run_id} exited {proc.returncode}:\n{err.read_text()[-3000:]}"
            )
        self.server.wait_idle()  # requests cut off by the kill are counted or dropped
        rnd.accepted = len(self.server.bodies) - accepted_before
        by_recipient, _ = self.server.accepted_by_campaign(CAMPAIGN_OF_SENDER)
        with self.engine.connect() as conn:
            left = conn.execute(
                select(ContactHistory.__table__).where(
                    ContactHistory.run_id == rnd.run_id,
                    ContactHistory.state.in_([State.RESERVED, State.SENDING]),
                )
            ).all()
        for row in left:
            if row.state == State.RESERVED:
                rnd.left_reserved += 1
            else:
                rnd.left_sending += 1
                address = self.addresses.get((row.campaign, row.customer_id, row.occasion))
                if by_recipient[row.campaign, address]:
                    rnd.left_sending_accepted += 1
        self.rounds.append(rnd)
        return rnd


def reconcile_in_doubt(engine, server: SlowFaultServer) -> dict:
    """Reconcile the SMS in doubt, and check each against what the provider accepted for
    its campaign (SMS tell theirs by the sender): accepted once, it must now be ``sent``;
    never, released for the next run."""
    by_recipient, _ = server.accepted_by_campaign(CAMPAIGN_OF_SENDER)
    doubtful = [
        r for r in ledger_rows(engine) if r.channel == "sms" and r.reason in AMBIGUOUS
    ]
    with TwilioSMS(kit.live_settings(server.base_url)) as sms:
        settled = reconcile_sms(
            engine, sms, now=datetime.now(UTC).replace(tzinfo=None) + LATER, sleep=lambda _: 0
        )
    after = {r.id: r for r in ledger_rows(engine)}
    problems = []
    for r in doubtful:
        n, now = by_recipient[r.campaign, r.recipient], after[r.id]
        right = now.state == State.SENT if n == 1 else (now.state, now.retryable) == (
            State.FAILED, True
        )
        if not right:
            problems.append(f"{r.campaign}:{r.customer_id} accepted {n}: now {now.state} "
                            f"retryable={now.retryable} ({now.detail})")  # fmt: skip
    return {"in_doubt": len(doubtful), "confirmed": settled.confirmed_sent,
            "released": settled.released, "unanswered": settled.unanswered,
            "problems": problems}  # fmt: skip


def kill_phase_done(rounds: list[Round], size: KillSize) -> bool:
    """Enough kills of every kind, and a run has met rows a dead run still held."""
    kills = [r for r in rounds if r.killed]
    return (
        len(kills) >= size.kills
        and sum(r.mid_send for r in kills) >= size.min_mid_send_kills
        and sum(r.left_reserved > 0 for r in kills) >= size.min_reserved_kills
        and sum(r.in_progress > 0 for r in rounds) >= size.min_in_progress_runs
    )


def next_mode(rounds: list[Round], rng: random.Random, size: KillSize) -> tuple[str, bool]:
    """The next run's kill mode, and whether the run after it waits out the lease.

    Random, leaning towards whatever the kill phase still lacks.
    """
    n = len(rounds)
    if n < len(OPENING):  # while plenty is left to send
        return OPENING[n]
    kills = [r for r in rounds if r.killed]
    weights = {"early": 1, "timed": 3, "mid_send": 3, "reserved": 2}
    if sum(r.mid_send for r in kills) < size.min_mid_send_kills:
        weights["mid_send"] += 6
    if sum(r.left_reserved > 0 for r in kills) < size.min_reserved_kills:
        weights["reserved"] += 6
    mode = rng.choices(list(weights), list(weights.values()))[0]
    wait = rng.random() < 0.6
    if sum(r.in_progress > 0 for r in rounds) < size.min_in_progress_runs:
        wait = rng.random() < 0.3
    return mode, wait


@pytest.mark.parametrize("size_name", ["ci", pytest.param("full", marks=pytest.mark.slow)])
def test_runs_killed_at_random_never_message_anyone_twice(engine, tmp_path, size_name):
    size = KillSize.named(size_name)
    dialect = engine.dialect.name
    seed_demo(engine, as_of=AS_OF, customers=size.customers)
    selections = [selected(engine, c, ch) for c, ch in CAMPAIGNS]
    for s in selections:  # so "accepted twice" can only mean "sent twice"
        addresses = [d.address for d in s.keys.values() if d.address]
        assert addresses and len(set(addresses)) == len(addresses), s.campaign
    began = clock.monotonic()
    rng = random.Random(os.environ.get("CAREFLOW_KILL_SEED", f"kill-{dialect}"))
    with SlowFaultServer(
        delay=REQUEST_DELAY, fault_rate=FAULT_RATE, faults=FAULTS, seed=7, twilio_status="queued"
    ) as server:
        runner = Runner(engine, server, tmp_path, rng, selections, size)
        # --- kill phase: SIGKILL most runs somewhere, until the counts are reached ------
        first = None
        while not kill_phase_done(runner.rounds, size):
            if len(runner.rounds) >= size.max_rounds:
                pytest.fail(
                    f"{size.max_rounds} runs did not make the kills required: "
                    + str([(r.mode, r.killed, r.left_sending, r.left_sending_accepted,
                            r.left_reserved, r.in_progress) for r in runner.rounds])
                )
            mode, wait = next_mode(runner.rounds, rng, size)
            rnd = runner.run(mode, first)
            first = None
            left = rnd.left_sending + rnd.left_reserved
            rnd.waited = rnd.killed and (wait or not left)
            if rnd.waited:  # the lease runs out: the next run takes over what this one left
                runner.age_unsettled()
            elif left:  # the next run starts with the batch this one died in, within
                first = rnd.in_flight  # the lease: it must leave those rows alone
        # --- completion: past the lease, run until a run finds nothing to do --------
        runner.age_unsettled()
        finishing = []
        for _ in range(4):
            rnd = runner.run("none")
            finishing.append(rnd)
            if len(finishing) >= 2 and rnd.nothing_to_do():
                break
        # --- reconciliation: Twilio's log, its messages still queued and the birthday
        # and win-back SMS to the same numbers side by side, settles the SMS in doubt;
        # a run then sends what it released ------------------------------------------
        interrupted = Counter(r.reason for r in ledger_rows(engine) if r.reason in AMBIGUOUS)
        reconciled = reconcile_in_doubt(engine, server)
        for _ in range(3 if reconciled["released"] else 0):
            finishing.append(runner.run("none"))
            if finishing[-1].nothing_to_do():
                break
        seconds = clock.monotonic() - began
        by_recipient, by_key = server.accepted_by_campaign(CAMPAIGN_OF_SENDER)
        attempts, actions = sum(server.attempts.values()), dict(server.actions)

    rounds = runner.rounds
    kills = [r for r in rounds if r.killed]
    mid_send = [r for r in kills if r.mid_send]
    assert finishing[-1].nothing_to_do(), [r.results for r in finishing]
    assert not finishing[0].killed and finishing[0].done
    assert not reconciled["problems"], "\n".join(reconciled["problems"][:40])

    # --- the ledger: one settled row per selected key ---------------------------------
    states: Counter = Counter()
    reasons: Counter = Counter()
    interrupted_accepted: Counter = Counter()  # accepted 0 or 1 times
    problems: list[str] = []
    all_rows = ledger_rows(engine)
    assert {r.campaign for r in all_rows} <= {c for c, _ in CAMPAIGNS}
    for sel in selections:
        rows = ledger_rows(engine, sel.campaign)
        keys = Counter((r.customer_id, r.occasion) for r in rows)
        assert set(keys) == set(sel.keys), f"{sel.campaign}: ledger keys differ from selection"
        assert max(keys.values()) == 1, f"{sel.campaign}: more than one row per key"
        by_address: dict[str, list] = defaultdict(list)
        for r in rows:
            states[r.state] += 1
            where = f"{sel.campaign}:{r.customer_id}:{r.occasion} ({r.state}, {r.reason})"
            if r.state in (State.RESERVED, State.SENDING):
                problems.append(f"{where}: left {r.state}")
                continue
            if r.state == State.SENT:
                if r.reason is not None or r.provider_id is None:
                    problems.append(f"{where}: sent without a provider id, or with a reason")
            elif not r.reason:
                problems.append(f"{where}: {r.state} without a reason")
            if r.state != State.SENT:
                reasons[f"{r.state}:{r.reason}"] += 1
            address = sel.keys[r.customer_id, r.occasion].address
            if address is None:  # nobody to send to: must not have been sent
                if r.state == State.SENT:
                    problems.append(f"{where}: sent, yet the policy gives no address")
                continue
            if r.state == State.SENT and r.recipient != address:
                problems.append(f"{where}: recorded recipient {r.recipient!r} != {address!r}")
            by_address[address].append(r)
            if sel.channel == "email":  # the ledger key travels with the mail: exact
                n = by_key[f"{sel.campaign}:{r.customer_id}:{r.occasion}"]
                ok = {
                    State.SENT: n == 1,
                    State.FAILED: n <= 1 if r.reason in AMBIGUOUS else n == 0,
                    State.SKIPPED: n == 0,
                    State.DEFERRED: n == 0,  # quiet hours: waits for the follow-up
                }[State(r.state)]
                if not ok:
                    problems.append(f"{where}: provider accepted {n} mails with this key")
        # per recipient (SMS carry no key): between the sent and sent + ambiguous rows
        for address, group in by_address.items():
            n = by_recipient[sel.campaign, address]
            sent = sum(r.state == State.SENT for r in group)
            ambiguous = [r for r in group if r.state == State.FAILED and r.reason in AMBIGUOUS]
            if not sent <= n <= sent + len(ambiguous) or n > len(group):
                problems.append(
                    f"{sel.campaign} to {address}: accepted {n} times for "
                    + ", ".join(f"{r.customer_id}:{r.occasion}={r.state}:{r.reason}" for r in group)
                )
            if len(group) == 1 and ambiguous:
                interrupted_accepted[f"{ambiguous[0].reason}={n}"] += 1
        stray = {
            (c, a): n
            for (c, a), n in by_recipient.items()
            if c == sel.campaign and a not in by_address
        }
        stray |= {
            key: n
            for key, n in by_key.items()
            if key.startswith(f"{sel.campaign}:") and n and sel.channel != "email"
        }
        if stray:
            problems.append(f"{sel.campaign}: accepted for recipients not in the ledger: {stray}")
    assert not problems, "\n".join(problems[:40])
    assert sum(states.values()) == sum(len(s.keys) for s in selections)
    assert max(by_recipient.values()) == 1, "someone got the same campaign's message twice"
    assert max(by_key.values()) == 1, "someone got the same campaign's email twice"

    # --- the test was not vacuous (the kill phase ran until these counts held) -----------
    assert kill_phase_done(rounds, size)
    assert len(kills) >= size.kills and len(mid_send) >= size.min_mid_send_kills
    assert states[State.SENT] > 0 and interrupted["interrupted"] > 0
    sms_in_doubt = [r for r in all_rows if r.channel == "sms" and r.reason in AMBIGUOUS]
    assert not sms_in_doubt, "reconciliation left SMS in doubt"

    in_doubt = [r.left_sending for r in kills]
    report = {
        "dialect": dialect,
        "customers": size.customers,
        "runs": len(rounds),
        "kills": len(kills),
        "kills_by_mode": dict(Counter(r.mode for r in kills)),
        "mid_send_kills": len(mid_send),
        "kills_leaving_reserved": sum(r.left_reserved > 0 for r in kills),
        "runs_meeting_rows_in_progress": sum(r.in_progress > 0 for r in rounds),
        "in_doubt_per_kill": in_doubt,
        "in_doubt_accepted_per_kill": [r.left_sending_accepted for r in kills],
        "in_doubt_max": max(in_doubt),
        "in_doubt_total": sum(in_doubt),
        "rows": dict(states),
        "not_sent": dict(reasons),
        "ambiguous_rows_by_times_accepted": dict(interrupted_accepted),
        "reconciled_sms": {k: v for k, v in reconciled.items() if k != "problems"},
        "server_attempts": attempts,
        "server_actions": actions,
        "seconds": round(seconds, 1),
    }
    if os.environ.get("CAREFLOW_KILL_REPORT"):
        with open(os.environ["CAREFLOW_KILL_REPORT"], "a") as f:
            f.write(json.dumps(report) + "\n")
    print(f"\n[{dialect}] " + json.dumps(report))
    for r in rounds:
        print(
            f"  {r.run_id} {r.mode:8} killed={r.killed!s:5} {r.seconds:4.1f}s "
            f"accepted={r.accepted:3} in doubt (left sending)={r.left_sending} "
            f"(accepted {r.left_sending_accepted}) reserved={r.left_reserved} "
            f"found in progress={r.in_progress} waited={r.waited}"
        )


def test_a_run_paused_past_its_lease_never_sends_what_another_run_took_over(engine, tmp_path):
    """A run that stalls (SIGSTOP: a suspended VM, a long GC or I/O stall) for
    longer than the lease and then carries on must not message anyone another
    run has taken over and messaged meanwhile.

    winback prefers email, then SMS, so one batch holds two channel groups;
    the second waits in ``reserved`` while the first is sent. Run A is stopped
    while sending the first group. After the lease, run B settles A's
    ``sending`` rows as interrupted, takes over the stale ``reserved`` ones
    and sends them. Then A resumes.
    """
    assert len(load_campaign("winback", load_settings().templates_dir).channels) >= 2
    seed_demo(engine, as_of=AS_OF, customers=CUSTOMERS)
    hi = id_ranges(engine, CUSTOMERS)[-1][1]
    jobs = [["winback", None, 1, hi]]
    with SlowFaultServer(delay=0.05) as server:
        with worker(plan_for(server, "paused-run", jobs, PAUSED_LEASE), tmp_path) as (a, _, a_err):
            started = clock.monotonic()
            while len(server.bodies) < 3:  # A is sending its first channel group
                assert a.poll() is None, a_err.read_text()[-3000:]
                assert clock.monotonic() - started < WORKER_TIMEOUT
                clock.sleep(0.002)
            a.send_signal(signal.SIGSTOP)
            stopped_after = len(server.bodies)
            clock.sleep(PAUSED_LEASE + 0.3)  # A cannot touch its rows: it is stopped
            with worker(plan_for(server, "rerun", jobs, PAUSED_LEASE), tmp_path) as (b, b_out, b_err):
                assert b.wait(WORKER_TIMEOUT) == 0, b_err.read_text()[-3000:]
            b_sent = sum(x["result"]["sent"] for x in events(b_out) if x["event"] == "batch")
            a.send_signal(signal.SIGCONT)
            assert a.wait(WORKER_TIMEOUT) == 0, a_err.read_text()[-3000:]
        server.wait_idle()
        by_recipient, by_key = server.accepted_by_campaign(CAMPAIGN_OF_SENDER)

    twice = sorted(key for key, n in by_key.items() if n > 1)
    twice += sorted(
        f"{c} to {to}" for (c, to), n in by_recipient.items() if n > 1 and "@" not in to
    )
    rows = ledger_rows(engine, "winback")
    assert stopped_after >= 3 and b_sent > 0  # B did take over and send
    assert not [r for r in rows if r.state in (State.RESERVED, State.SENDING)]
    assert not twice, (
        f"{len(twice)} customers messaged twice after run A resumed (B sent {b_sent}), "
        f"e.g. {twice[:5]}: A still sent the rows B had taken over, although its "
        "mark_sending no longer matched them (they were no longer A's)"
    )


def test_the_kill_worker_builds_a_real_runs_route_without_prefect(db_url):
    """kill_worker builds its route with the route's one builder (``Route.for_run``, as a
    run's batch does), which must not import Prefect: seconds of start-up per worker."""
    probe = (
        "import sys\n"
        "from careflow.flows.route import Route, RunPlan\n"
        "from careflow.campaigns import load_campaign\n"
        "from tests.flows import kill_worker\n"
        "from tests.providers import kit\n"
        "from datetime import date, datetime\n"
        "settings = kit.live_settings(fax_font_path=None)\n"
        "spec = load_campaign('winback', settings.templates_dir)\n"
        f"at = datetime.fromisoformat({AT.isoformat()!r})\n"
        f"run = RunPlan(spec=spec, run_id='r', as_of=date.fromisoformat({AS_OF.isoformat()!r}),"
        " at=at, settings=settings)\n"
        "route = Route.for_run(run)\n"
        "route.channel_factory('sms')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}  # the database: from db_url
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", done.stdout


# --- the follow-up: deferred messages, killed and stopped, then reconciled ------------------
#: birthday customers in Kiritimati (UTC+14): 02:00 there at AT, so quiet hours defer them
FOLLOW_UP_ZONE = "Pacific/Kiritimati"
FOLLOW_UP_AT = "2026-11-22T20:00:00+00:00"  # 10:00 there: every deferred message is due
OTHERS = ("Your order #{n} has shipped.", "Flash sale today only: 30% off shoes.")


@dataclass(frozen=True)
class FollowUpSize:
    """Customers deferred, and how many follow-ups are SIGKILLed and SIGTERMed."""

    customers: int
    kills: int
    stops: int

    @classmethod
    def named(cls, name: str) -> FollowUpSize:
        return cls(600, 12, 4) if name == "full" else cls(90, 2, 1)


def followup_shop(engine, n: int) -> dict[int, str]:
    """Customers 1..n with a birthday in Kiritimati today and a mobile each (and an email:
    the run below is limited to SMS); customer id -> number."""
    numbers = {cid: kit.cn_mobile(cid) for cid in range(1, n + 1)}
    with engine.begin() as conn:
        conn.execute(
            insert(Customer.__table__),
            [
                {"id": cid, "full_name": f"Customer {cid}", "given_name": f"C{cid}",
                 "locale": "en", "time_zone": FOLLOW_UP_ZONE, "mobile": number,
                 "email": f"c{cid}@example.com", "birthday": date(1990, 11, 23)}
                for cid, number in numbers.items()
            ],
        )  # fmt: skip
    return numbers


def follow_up(env: dict, log: Path) -> subprocess.Popen:
    """``careflow deferred send`` in its own process, as the deployment runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "careflow", "deferred", "send", "--as-of", FOLLOW_UP_AT],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect-cli")
@pytest.mark.parametrize("size_name", ["ci", pytest.param("full", marks=pytest.mark.slow)])
def test_follow_ups_killed_or_stopped_at_random_send_each_deferred_message_once(
    engine, db_url, tmp_path, prefect_api_url, size_name
):
    """A ``--channel sms`` birthday run defers everyone (quiet hours). Follow-ups
    (``careflow deferred send``, each in its own process) are SIGKILLed or SIGTERMed
    once the provider has accepted a random number of their messages; after each,
    the provider moves some messages along (it queues before it sends) and
    reconciliation reads its log, where other campaigns' messages to the same numbers
    are too. Then follow-ups and reconciliation go on until nothing is left.

    Every customer must end with one ``sent`` SMS row (none lost, none by email), the
    provider must have accepted exactly one of our messages per number (none twice),
    and no row may be confirmed by another campaign's message.
    """
    size = FollowUpSize.named(size_name)
    rng = random.Random(os.environ.get("CAREFLOW_KILL_SEED", f"follow-{engine.dialect.name}"))
    numbers = followup_shop(engine, size.customers)
    modes = ["kill"] * size.kills + ["stop"] * size.stops
    rng.shuffle(modes)
    rounds: list[dict] = []
    with SlowFaultServer(
        delay=REQUEST_DELAY, fault_rate=FAULT_RATE, faults=FAULTS, seed=11, twilio_status="queued"
    ) as server:
        settings = kit.live_settings(server.base_url)
        spec = load_campaign("birthday", settings.templates_dir)
        deferring = RunPlan(
            spec=spec,
            run_id="deferring-run",
            as_of=AS_OF,
            at=AT,
            settings=settings,
            only_channel="sms",
        )
        deferred = process_batch(Route.for_run(deferring), (1, size.customers))
        assert deferred.deferred == {"quiet_hours": size.customers}, deferred
        for cid, number in numbers.items():  # other campaigns texted them today, too
            for text in rng.sample(OTHERS, rng.randint(0, 2)):
                server.add_twilio_message(number, text.format(n=cid))
        env = cli_env(db_url, tmp_path / "home", server, prefect_api_url, chunk=5)
        env["CAREFLOW_RESERVATION_LEASE_SECONDS"] = str(LEASE)
        cap = max(3, size.customers // (2 * len(modes)))  # the work cannot run out early
        reconcile = functools.partial(
            reconcile_sms, engine, sleep=lambda _: None, default_region="CN"
        )

        def one_round(mode: str) -> dict:
            log = tmp_path / f"follow-up-{len(rounds):02d}.log"
            before = len(server.bodies)
            target = before + rng.randint(1, cap)
            proc = follow_up(env, log)
            try:
                while proc.poll() is None and mode != "none":
                    if len(server.bodies) >= target:
                        proc.send_signal(signal.SIGKILL if mode == "kill" else signal.SIGTERM)
                        break
                    clock.sleep(0.005)
                code = proc.wait(HANG_GUARD)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            server.wait_idle()
            output = log.read_text()
            assert "Traceback" not in output, output[-4000:]
            with engine.connect() as conn:
                held = conn.execute(
                    select(func.count()).where(
                        ContactHistory.state.in_([State.RESERVED, State.SENDING])
                    )
                ).scalar_one()
            if mode == "stop":
                assert held == 0, f"a stopped follow-up left {held} row(s) held:\n{output}"
            if mode == "kill":  # the dead run's lease runs out (as in Runner.age_unsettled)
                long_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=LEASE + 60)
                with engine.begin() as conn:
                    conn.execute(
                        update(ContactHistory)
                        .where(ContactHistory.state.in_([State.RESERVED, State.SENDING]))
                        .values(updated_at=long_ago)
                    )
            elif mode == "none":
                assert code == 0, output[-4000:]
            # Twilio works through its queue at its own pace
            queued = [s for s, m in server.twilio_messages.items() if m["status"] == "queued"]
            server.twilio_advance(rng.choice(["sending", "sent", "delivered"]),
                                  rng.sample(queued, len(queued) // 2))  # fmt: skip
            with TwilioSMS(settings) as sms:
                settled = reconcile(sms, now=datetime.now(UTC).replace(tzinfo=None) + LATER)
            rnd = {"mode": mode, "exit": code, "accepted": len(server.bodies) - before,
                   "held": held, "confirmed": settled.confirmed_sent,
                   "released": settled.released, "unanswered": settled.unanswered,
                   "nothing_due": "no deferred message is due" in output}  # fmt: skip
            rounds.append(rnd)
            return rnd

        for mode in modes:
            one_round(mode)
        for _ in range(6):  # finish: until a follow-up finds nothing and nothing is in doubt
            rnd = one_round("none")
            if rnd["nothing_due"] and not (rnd["confirmed"] or rnd["released"]):
                break
        accepted = Counter(server.accepted)

    with engine.connect() as conn:
        rows = {r.customer_id: r for r in conn.execute(select(ContactHistory.__table__))}
    assert rounds[-1]["nothing_due"], rounds
    assert set(rows) == set(numbers)
    problems = [
        f"{cid}: {r.state}:{r.reason} by {r.channel}, accepted {accepted[numbers[cid]]}"
        for cid, r in rows.items()
        if r.state != State.SENT or r.channel != "sms" or accepted[numbers[cid]] != 1
    ]
    foreign = {s for s, m in server.twilio_messages.items() if m["from"] == "+15005559999"}
    problems += [f"{cid}: confirmed by another campaign's message {r.provider_id}"
                 for cid, r in rows.items() if r.provider_id in foreign]  # fmt: skip
    assert not problems, "\n".join(problems[:40])
    assert sum(r["mode"] == "kill" for r in rounds) == size.kills
    print(f"\n[{engine.dialect.name} follow-up] " + json.dumps(rounds))

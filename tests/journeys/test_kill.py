"""Journeys under SIGKILL: ``careflow journey advance`` killed at many moments, re-run.

A journey with every kind of step that matters to exactly-once (two send steps,
a wait_for with a reply, a branch on locale, a wait, an owner's note, an
exit) is advanced over three instants, each by ``careflow journey advance``
in its own process against a loopback provider (tests/providers/fault_server.py
playing Twilio and SendGrid, a little slow so kills land mid-send). Each
advance is SIGKILLed at a moment drawn from: a random time after it started
(start-up included), as soon as it holds claimed positions, once the provider
has accepted a few of its messages, once it has written a few step rows. After
a kill the next advance either starts while the dead one's leases still hold
(it must leave those positions and ledger rows alone) or after they have run
out (the rows are aged, as test_kill.py in tests/flows does: what the clock
would do to rows nobody touches). Sometimes two advancers start at once. Then
advances run to the end until nothing is due at that instant.

What must hold, for any timing: every customer who reached a send step has
exactly one ledger row for it, matching the step row's outcome; the provider
accepted at most one message per customer and step (exactly one for a ``sent``
row, none for a skip); each customer's step rows are one path through the
journey, each step once, in the order the journey gives for their reply and
locale; every position ended (done, or held out) with one outcome. The first send
step has two variants: the message the provider accepted is the variant its ledger row
keeps.

The kills go only to instants that still have work: an advance that finds nothing
due is no test. Sizes: ``ci`` (one wave of 30 customers, 3 kills, one per instant;
CAREFLOW_JOURNEY_KILLS changes it) and ``full`` (four waves of 40 customers, each
wave entering four days after the one before, at least 54 kills; marked slow).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time as clock
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, update

from careflow.db.models import ContactEvent, ContactHistory, JourneyPosition, JourneyStepRecord
from careflow.messages import State
from careflow.settings import PROJECT_ROOT
from tests.factories import add_customer, add_orders
from tests.providers.fault_server import SlowFaultServer
from tests.reliability.cli_run import HANG_GUARD, cli_env

JOURNEY = "kill_journey"
START = datetime(2026, 6, 1, 12, tzinfo=UTC)
#: the instants a wave is advanced at, from its start: entry and the SMS; the window
#: ends (branch, email); the wait ends
INSTANTS = [timedelta(0), timedelta(days=2), timedelta(days=3)]
WAVE_DAYS = 4  # a new wave of customers every four days
LEASE = 3600  # longer than the test: only ageing rows lets a lease run out
REQUEST_DELAY = 0.01

SPEC = """\
description: Kill test
category: care
entry: {segment: dormant, parameters: {days: 30}}
holdout: 10%
steps:
  - id: first
    type: send
    channels: [sms]
    experiment: {variants: [plain, warm]}
  - id: answer
    type: wait_for
    event: replied
    within: 2 days
    then: thanks
    else: language
  - id: language
    type: branch
    cases:
      - {when: {locale: zh}, goto: second_zh}
    default: second
  - {id: second, type: send, channels: [email], next: pause}
  - {id: second_zh, type: send, channels: [email]}
  - {id: pause, type: wait, days: 1}
  - {id: call, type: notify_owner, note: No answer to the SMS or the email}
  - {id: thanks, type: exit}
"""
SENDS = {"first": "sms", "second": "email", "second_zh": "email"}


@dataclass(frozen=True)
class Size:
    """Waves of customers (each wave enters and goes through the journey on its own
    days, so the kills always find work) and the kills to make at least."""

    customers: int  # per wave
    waves: int
    kills: int

    @classmethod
    def named(cls, name: str) -> Size:
        if name == "full":
            return cls(40, 4, 54)
        return cls(30, 1, int(os.environ.get("CAREFLOW_JOURNEY_KILLS", "3")))

    @property
    def per_instant(self) -> int:
        """Kills to aim for at each instant: enough that the total is reached."""
        return -(-self.kills // (self.waves * len(INSTANTS)))


def write_journey(root: Path) -> None:
    folder = root / JOURNEY
    folder.mkdir(parents=True)
    (folder / "journey.yaml").write_text(SPEC)
    for step in SENDS:
        for locale in ("en", "zh-CN"):
            (folder / f"{step}.sms.{locale}.j2").write_text(f"{step} {{{{ name }}}}")
            (folder / f"{step}.email.{locale}.subject.j2").write_text(f"{step} for you")
            (folder / f"{step}.email.{locale}.txt.j2").write_text(f"{step}: {{{{ name }}}}")
    for locale in ("en", "zh-CN"):  # the first step's second variant
        (folder / f"first.warm.sms.{locale}.j2").write_text("WARM first {{ name }}")


def shop(engine, ids: range) -> dict[int, dict]:
    """Dormant customers: every third speaks Chinese, every fourth replies to the SMS."""
    out = {}
    for cid in ids:
        locale = "zh-CN" if cid % 3 == 0 else "en"
        add_customer(engine, cid, mobile=f"+4479111{cid:05d}", country="GB", locale=locale,
                     owner="Grace")  # fmt: skip
        add_orders(engine, cid, [date(2026, 4, 2)])
        out[cid] = {"locale": locale, "replies": cid % 4 == 0}
    return out


def reply(engine, cid: int, at: datetime) -> None:
    naive = at.astimezone(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(insert(ContactEvent.__table__), [{
            "customer_id": cid, "kind": "replied", "provider": "test",
            "event_id": uuid.uuid4().hex, "occurred_at": naive, "received_at": naive,
        }])  # fmt: skip


def expected_path(customer: dict) -> list[str]:
    if customer["replies"]:
        return ["_entry", "first", "answer", "thanks"]
    second = "second_zh" if customer["locale"] == "zh-CN" else "second"
    return ["_entry", "first", "answer", "language", second, "pause", "call", "thanks"]


class Advancer:
    """Starts ``careflow journey advance`` processes and kills them at chosen moments."""

    def __init__(self, engine, env: dict, server: SlowFaultServer, folder: Path, rng):
        self.engine, self.env, self.server, self.folder, self.rng = (
            engine, env, server, folder, rng,
        )  # fmt: skip
        self.started = 0
        self.kills: Counter = Counter()
        self.in_lease = 0  # advances started while a dead one's leases still held

    def start(self, at: datetime) -> tuple[subprocess.Popen, Path]:
        self.started += 1
        log = self.folder / f"advance-{self.started:03d}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "careflow", "journey", "advance", JOURNEY,
             "--as-of", at.isoformat()],
            cwd=PROJECT_ROOT, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return proc, log

    def count(self, what) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(what)).scalar_one()

    def claimed(self, at: datetime) -> bool:
        """Some position is held by a live claim (aged claims end before ``at``)."""
        naive = at.astimezone(UTC).replace(tzinfo=None)
        with self.engine.connect() as conn:
            return conn.execute(
                select(JourneyPosition.id).where(JourneyPosition.claim_until > naive).limit(1)
            ).first() is not None

    def run(self, at: datetime, mode: str, cap: int) -> bool:
        """One advance at ``at``, SIGKILLed as ``mode`` says (none: to the end); returns
        whether it was killed. A kill comes at the latest after ``cap`` step rows or
        accepted messages, so no advance takes much of the work."""
        steps_before = self.count(JourneyStepRecord.__table__)
        accepted_before = len(self.server.bodies)
        target = self.rng.randint(1, cap)
        after = self.rng.uniform(0.2, 6.0)
        proc, log = self.start(at)
        began = clock.monotonic()
        try:
            while proc.poll() is None:
                elapsed = clock.monotonic() - began
                if elapsed > HANG_GUARD:
                    pytest.fail(f"advance still running after {elapsed:.0f}s:\n"
                                + log.read_text()[-3000:])  # fmt: skip
                if mode != "none":
                    steps = self.count(JourneyStepRecord.__table__) - steps_before
                    accepted = len(self.server.bodies) - accepted_before
                    due = (
                        (mode == "timed" and elapsed >= after)
                        or (mode == "claimed" and self.claimed(at))
                        or (mode == "mid_send" and accepted >= target)
                        or (mode == "step_rows" and steps >= target)
                        or steps >= cap or accepted >= cap
                    )
                    if due:
                        proc.send_signal(signal.SIGKILL)
                        proc.wait()
                        self.kills[mode] += 1
                        self.server.wait_idle()
                        return True
                clock.sleep(0.005)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        output = log.read_text()
        assert proc.returncode == 0 and "Traceback" not in output, output[-3000:]
        return False

    def pair(self, at: datetime) -> None:
        """Two advancers at once, to the end."""
        procs = [self.start(at) for _ in range(2)]
        for proc, log in procs:
            try:
                proc.wait(HANG_GUARD)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            output = log.read_text()
            assert proc.returncode == 0 and "Traceback" not in output, output[-3000:]

    def age(self, at: datetime) -> None:
        """Let every lease a dead advance left run out: its position claims end before
        ``at`` and its ledger rows were last touched longer ago than the lease."""
        naive = at.astimezone(UTC).replace(tzinfo=None)
        long_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=LEASE + 60)
        with self.engine.begin() as conn:
            conn.execute(
                update(JourneyPosition.__table__)
                .where(JourneyPosition.claim_until.is_not(None))
                .values(claim_until=naive - timedelta(seconds=1))
            )
            conn.execute(
                update(ContactHistory.__table__)
                .where(ContactHistory.state.in_([State.RESERVED, State.SENDING]))
                .values(updated_at=long_ago)
            )

    def due(self, at: datetime) -> int:
        naive = at.astimezone(UTC).replace(tzinfo=None)
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).where(
                    JourneyPosition.state.in_(("active", "waiting")),
                    JourneyPosition.due_at <= naive,
                )
            ).scalar_one()


MODES = ("timed", "claimed", "mid_send", "step_rows")


def advance_with_kills(adv: Advancer, at: datetime, kills: int, cap: int) -> None:
    """Up to ``kills`` killed advances at ``at`` while work is due (each next one within
    the dead one's lease or after it, at random; now and then two at once), then
    advances to the end."""
    made = 0
    tries = 0
    while made < kills and (tries == 0 or adv.due(at) > 0):
        tries += 1
        assert tries <= 4 * kills + 10, "an advance neither finished nor could be killed"
        if adv.rng.random() < 0.5:
            adv.age(at)
        elif adv.claimed(at):
            adv.in_lease += 1
        if adv.rng.random() < 0.1:
            adv.pair(at)
            continue
        made += adv.run(at, adv.rng.choice(MODES), cap)
    for _ in range(5):
        adv.age(at)
        adv.run(at, "none", cap)
        if adv.due(at) == 0:
            return
    pytest.fail(f"positions still due at {at} after advancing to the end")


def check(engine, server: SlowFaultServer, customers: dict[int, dict]) -> Counter:
    """The promises, for any timing of the kills; returns the ledger's outcomes."""
    with engine.connect() as conn:
        positions = {r.customer_id: r for r in conn.execute(select(JourneyPosition.__table__))}
        step_rows = conn.execute(
            select(JourneyStepRecord.__table__).order_by(JourneyStepRecord.id)
        ).all()
        ledger = conn.execute(select(ContactHistory.__table__)).all()
    assert set(positions) == set(customers)  # everyone entered, once
    paths: dict[int, list] = {cid: [] for cid in customers}
    for r in step_rows:
        paths[r.customer_id].append(r)
    rows_of = Counter((r.campaign, r.customer_id, r.occasion) for r in ledger)
    assert max(rows_of.values()) == 1, "two ledger rows for one message"
    ledger_of = {(r.campaign, r.customer_id): r for r in ledger}
    accepted: Counter = Counter()
    sms: dict[int, str] = {}  # what the provider accepted for the first step (a variant)
    for body in server.bodies:
        if "personalizations" in body:
            for person in body["personalizations"]:
                campaign, cid, _ = person["custom_args"]["careflow_key"].split(":")
                accepted[campaign, int(cid)] += 1
        else:
            accepted["j_kill_journey__first", int(body["To"][-5:])] += 1
            sms[int(body["To"][-5:])] = body["Body"]
    assert max(accepted.values(), default=0) <= 1, "a message accepted twice"
    outcomes: Counter = Counter()
    for cid, customer in customers.items():
        pos, rows = positions[cid], paths[cid]
        visits = Counter((r.step, r.visit) for r in rows)
        assert max(visits.values()) == 1, f"customer {cid}: a step row twice"
        names = [r.step for r in rows]
        if pos.state == "held_out":
            assert names == ["_entry"] and rows[0].outcome == "held_out", names
            assert not any(k[1] == cid for k in ledger_of), f"held-out {cid} has a message"
            continue
        assert pos.state == "done" and pos.step == "thanks", (cid, pos.state, pos.step)
        assert names == expected_path(customer), (cid, names)
        for r in rows:
            campaign = f"j_{JOURNEY}__{r.step}"
            if r.step not in SENDS:
                continue
            row = ledger_of.get((campaign, cid))
            assert row is not None, f"customer {cid} passed {r.step} without a ledger row"
            assert row.state == r.outcome and row.occasion == pos.entered_on.isoformat()
            assert row.state not in (State.RESERVED, State.SENDING, State.DEFERRED)
            outcomes[row.state, row.reason] += 1
            n = accepted[campaign, cid]
            if row.state == State.SENT:
                assert n == 1, f"customer {cid} {r.step}: sent, accepted {n} times"
            elif row.reason != "interrupted":
                assert n == 0, f"customer {cid} {r.step}: {row.state} {row.reason}, accepted"
            if r.step == "first" and cid in sms:  # the one variant the row keeps went out
                assert row.variant in ("plain", "warm"), (cid, row.variant)
                assert sms[cid].startswith("WARM") == (row.variant == "warm"), (cid, sms[cid])
        sent_steps = {r.step for r in rows if r.step in SENDS}
        for campaign, c in ledger_of:
            if c == cid:
                assert campaign.removeprefix(f"j_{JOURNEY}__") in sent_steps, (cid, campaign)
    return outcomes


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect-cli")
@pytest.mark.parametrize("size_name", ["ci", pytest.param("full", marks=pytest.mark.slow)])
def test_advances_killed_at_random_take_each_step_once(
    engine, db_url, tmp_path, prefect_api_url, size_name
):
    size = Size.named(size_name)
    seed = os.environ.get("CAREFLOW_KILL_SEED", f"journey-{engine.dialect.name}-{size_name}")
    rng = random.Random(seed)
    templates = tmp_path / "templates"
    write_journey(templates)
    customers: dict[int, dict] = {}
    # a kill takes at most a share of an instant's work (about two rows per customer)
    cap = max(2, 2 * size.customers // (2 * size.per_instant))
    with SlowFaultServer(delay=REQUEST_DELAY) as server:
        env = cli_env(db_url, tmp_path / "home", server, prefect_api_url, chunk=5)
        env |= {
            "CAREFLOW_TEMPLATES_DIR": str(templates),
            "CAREFLOW_BATCH_SIZE": "8",
            "CAREFLOW_RESERVATION_LEASE_SECONDS": str(LEASE),
            "CAREFLOW_FREQUENCY_CAP": "off",
        }
        adv = Advancer(engine, env, server, tmp_path, rng)
        wave = 0
        # waves go on until the kills are made: an instant whose work ends before its
        # share of kills leaves them to the next wave
        while wave < size.waves or sum(adv.kills.values()) < size.kills:
            assert wave < 3 * size.waves, f"only {dict(adv.kills)} kills in {wave} waves"
            begins = START + timedelta(days=WAVE_DAYS * wave)
            ids = range(wave * size.customers + 1, (wave + 1) * size.customers + 1)
            joining = shop(engine, ids)  # dormant from now on: they enter with this wave
            customers |= joining
            for i, offset in enumerate(INSTANTS):
                if i == 1:  # the repliers answer the SMS the day after
                    for cid, customer in joining.items():
                        if customer["replies"]:
                            reply(engine, cid, begins + timedelta(days=1))
                advance_with_kills(adv, begins + offset, size.per_instant, cap)
            wave += 1
        outcomes = check(engine, server, customers)
    kills = sum(adv.kills.values())
    print(f"\njourney kill test ({size_name}, {engine.dialect.name}, seed {seed!r}): "
          f"{kills} kills {dict(adv.kills)}, {wave} wave(s), {adv.started} advances, "
          f"{adv.in_lease} started within a dead one's lease; outcomes {dict(outcomes)}")  # fmt: skip
    assert kills >= size.kills

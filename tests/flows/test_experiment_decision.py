"""An experiment's winner: declared only by its rule, recorded once, then sent.

What a marketer relies on: a rule not met declares nothing (never "the best
anyway"); the decision is one fact however often, or however concurrently,
it is asked for; later runs send the winner to every new customer while
rows already rendered keep their variant, and the holdout keeps running.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from careflow.campaigns import load_campaign
from careflow.cli import main
from careflow.clock import utcnow
from careflow.db.models import ContactHistory, ExperimentDecision, Order
from careflow.experiment_decisions import decision_of, judge
from careflow.experiment_report import decide, experiment_report
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.messages import State
from careflow.settings import load_settings
from careflow.variants import Experiment
from tests.factories import add_customer
from tests.flows import test_experiment_route

CUSTOMERS = 120
#: the campaign with plain and warm variants (its fixture, shared)
templates = test_experiment_route.templates


def add_shop(engine, first: int, last: int) -> None:
    for cid in range(first, last + 1):
        add_customer(
            engine, cid, mobile=f"+4479111{cid:05d}", country="GB", birthday=date(1990, 6, 1)
        )


@pytest.fixture
def shop(engine, monkeypatch):
    monkeypatch.setenv("CAREFLOW_HOLDOUT", "0.1")  # the tests' default is none
    add_shop(engine, 1, CUSTOMERS)
    return engine


def run(run_id: str, last: int = CUSTOMERS, year: int = 2026):
    settings = load_settings()
    spec = load_campaign("offer", settings.templates_dir)
    plan = RunPlan(
        spec=spec,
        run_id=run_id,
        as_of=date(year, 6, 1),
        at=datetime(year, 6, 1, 12, tzinfo=UTC),
        settings=settings,
    )
    return process_batch(Route.for_run(plan), (1, last))


def rows(engine, occasion: str | None = None) -> list:
    ch = ContactHistory.__table__
    where = [ch.c.campaign == "offer"]
    if occasion:
        where.append(ch.c.occasion == occasion)
    with engine.connect() as conn:
        return conn.execute(select(ch).where(*where).order_by(ch.c.id)).all()


def buy(engine, chosen, amount=lambda r: 2500) -> None:
    """Each chosen row's customer orders the day after their message."""
    with engine.begin() as conn:
        conn.execute(
            insert(Order.__table__),
            [
                {
                    "customer_id": r.customer_id,
                    "ordered_at": r.created_at + timedelta(days=1),
                    "ordered_on": (r.created_at + timedelta(days=1)).date(),
                    "currency": "GBP",
                    "amount_minor": amount(r),
                }
                for r in chosen
            ],
        )


def warm_buys(engine) -> None:
    buy(engine, [r for r in rows(engine) if r.variant == "warm"])


def report(engine) -> dict:
    settings = load_settings()
    spec = load_campaign("offer", settings.templates_dir)
    return experiment_report(
        engine, spec, window_days=30, shop_zone="UTC", baseline=0.03,
        now=utcnow() + timedelta(days=60),
    )  # fmt: skip


def decisions(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(ExperimentDecision)).scalar_one()


def decide_by_hand():
    return CliRunner().invoke(main, ["report", "experiment", "offer", "--decide"])


def test_a_rule_not_met_declares_nothing(shop, templates):
    run("run-1")
    sent = [r for r in rows(shop) if r.state == State.SENT]
    # warm a little ahead (3 orders against 1): ahead, but its interval holds 0
    buy(shop, [r for r in sent if r.variant == "warm"][:3])
    buy(shop, [r for r in sent if r.variant == "plain"][:1])
    found = report(shop)
    assert found["against_control"]["warm"]["points"] > 0
    assert found["against_control"]["warm"]["verdict"] == "undecided"
    assert found["rule_met"] is None and found["verdict"].startswith("no winner yet")

    out = decide_by_hand()
    assert out.exit_code == 0, out.output
    assert "nothing recorded: no winner yet" in out.output
    assert decisions(shop) == 0
    again = run("run-2", year=2027)  # the next occasion: still the draw, both variants
    assert again.sent > 0
    assert {r.variant for r in rows(shop, "2027") if r.state == State.SENT} == {"plain", "warm"}


def test_the_rule_waits_for_enough_customers_in_every_variant():
    experiment = Experiment(variants=["plain", "warm"], min_per_arm=100)
    clear = {
        "groups": {"plain": {"customers": 99}, "warm": {"customers": 400}},
        "against_control": {
            "warm": {"verdict": "better", "points": 5.0, "ci": [1.0, 9.0]},
        },
    }
    assert judge(clear, experiment) is None
    clear["groups"]["plain"]["customers"] = 100
    assert judge(clear, experiment)["winner"] == "warm"


def test_the_control_wins_when_every_other_variant_is_worse():
    experiment = Experiment(variants=["plain", "warm", "cool"], min_per_arm=10)
    found = {
        "groups": {n: {"customers": 50} for n in ("plain", "warm", "cool")},
        "against_control": {
            "warm": {"verdict": "worse", "points": -4.0, "ci": [-7.0, -1.0]},
            "cool": {"verdict": "worse", "points": -2.0, "ci": [-3.5, -0.5]},
        },
    }
    assert judge(found, experiment) == {
        "winner": "plain", "points": 2.0, "lower": 0.5, "upper": 3.5,
    }  # fmt: skip
    found["against_control"]["cool"]["verdict"] = "undecided"
    assert judge(found, experiment) is None, "one variant not yet known: no winner"


def test_the_decision_is_recorded_once_however_often_it_is_asked(shop, templates):
    run("run-1")
    warm_buys(shop)
    first = decide_by_hand()
    assert first.exit_code == 0, first.output
    assert "recorded: warm won on" in first.output, first.output[-400:]
    kept = decision_of(shop, "offer")
    assert kept["winner"] == "warm" and kept["control"] == "plain"
    assert kept["decided_by"] == "careflow report experiment --decide"
    assert kept["lower"] > 0 and "at least 20 customers" in kept["rule"]
    assert kept["counts"]["warm"]["converted"] == kept["counts"]["warm"]["customers"] > 0

    second = decide_by_hand()
    assert second.exit_code == 0, second.output
    assert "already decided: warm won on" in second.output
    assert decisions(shop) == 1 and decision_of(shop, "offer") == kept


def test_two_deciding_at_once_keep_one_decision(shop, templates):
    run("run-1")
    warm_buys(shop)
    found = report(shop)
    spec = load_campaign("offer", load_settings().templates_dir)
    start = threading.Barrier(2)
    results: dict[str, tuple] = {}

    def decide_as(who: str) -> None:
        start.wait()
        results[who] = decide(shop, spec, found, who)

    threads = [threading.Thread(target=decide_as, args=(f"run {i}",)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert decisions(shop) == 1
    (taken,) = [who for who, (_, now) in results.items() if now]
    assert all(d == decision_of(shop, "offer") for d, _ in results.values())
    assert decision_of(shop, "offer")["decided_by"] == taken


def test_later_runs_send_the_winner_and_what_was_sent_keeps_its_variant(shop, templates):
    run("run-1")
    first = {r.id: (r.state, r.variant, r.body) for r in rows(shop)}
    assert {v for s, v, _ in first.values() if s == State.SENT} == {"plain", "warm"}
    warm_buys(shop)
    assert decide_by_hand().exit_code == 0

    add_shop(shop, CUSTOMERS + 1, 2 * CUSTOMERS)  # new customers, the same occasion
    again = run("run-2", last=2 * CUSTOMERS)
    assert again.sent > 0
    now = {r.id: r for r in rows(shop)}
    assert {i: (now[i].state, now[i].variant, now[i].body) for i in first} == first
    new = [r for i, r in now.items() if i not in first]
    assert {r.variant for r in new if r.state == State.SENT} == {"warm"}
    assert any(r.state == State.HELD_OUT for r in new), "the holdout keeps running"

    run("run-3", last=2 * CUSTOMERS, year=2027)  # the next occasion: everyone gets warm
    later = rows(shop, "2027")
    sent = [r for r in later if r.state == State.SENT]
    assert sent and {r.variant for r in sent} == {"warm"}
    assert all(r.body.startswith("WARM") for r in sent)
    assert any(r.state == State.HELD_OUT for r in later)

    found = report(shop)  # against the control: only the customers before the decision
    before = sum(1 for s, v, _ in first.values() if v == "warm")
    assert found["groups"]["warm"]["customers"] == len(
        [r for r in rows(shop) if r.variant == "warm" and r.state == State.SENT]
    )
    assert found["decision"]["counts"]["warm"]["customers"] == before
    assert found["verdict"].startswith("warm won on")

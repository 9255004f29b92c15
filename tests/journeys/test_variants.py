"""A journey's send step with variants, advanced through the real route and ledger on
SQLite and PostgreSQL: each contacted customer gets exactly one variant, drawn apart from
the journey's holdout, kept on the ledger row across a crash and a retry; the report
reads it back by the step's name; lint refuses a bad variant block."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select, update

from careflow.cli.main import main
from careflow.db.models import ContactHistory, Order
from careflow.journey_spec import load_journey, version_of
from careflow.journeys import advance as core
from careflow.lint import journey_problems
from careflow.settings import load_settings
from tests.journeys.conftest import (
    NUDGE,
    START,
    Crash,
    advance,
    dormant,
    positions,
    send_then_crash,
    steps,
    write_journey,
)

CUSTOMERS = 40
STEP = "j_nudge__first"
VARIANTS = "    experiment: {variants: [plain, warm], audience: 400, min_per_arm: 5}\n"


def with_variants(text: str = NUDGE, block: str = VARIANTS) -> str:
    first = "  - {id: first, type: send, channels: [sms, email]}\n"
    return text.replace(first, "  - id: first\n    type: send\n    channels: [sms, email]\n" + block)


def write(root, text: str) -> None:
    write_journey(root, "nudge", text)
    (root / "nudge" / "first.warm.sms.en.j2").write_text("WARM first: hello {{ name }}")


def rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(ContactHistory.__table__)
            .where(ContactHistory.campaign == STEP)
            .order_by(ContactHistory.id)
        ).all()


@pytest.fixture
def shop(engine, templates):
    write(templates, with_variants(NUDGE + "holdout: 50%\n"))
    for cid in range(1, CUSTOMERS + 1):
        dormant(engine, cid)
    return engine


def test_each_customer_gets_one_variant_drawn_apart_from_the_holdout(shop, templates, real_clock):
    advance(real_clock, START)
    spec = load_journey("nudge", templates)
    experiment = spec.step("first").experiment
    held = {cid for cid, p in positions(shop).items() if core.is_held_out(spec, 0.5, p)}
    sent = rows(shop)
    assert 0 < len(held) < CUSTOMERS
    assert sorted(r.customer_id for r in sent) == sorted(set(range(1, CUSTOMERS + 1)) - held)
    for r in sent:  # one row each, the customer's own draw, rendered from its templates
        assert r.variant == experiment.variant_of(STEP, r.customer_id)
        opener = "WARM first" if r.variant == "warm" else "first"
        assert r.body.startswith(opener), (r.variant, r.body)
    assert set(Counter(r.variant for r in sent)) == {"plain", "warm"}
    # the holdout took customers of both draws: it did not pick a variant
    assert {experiment.variant_of(STEP, cid) for cid in held} == {"plain", "warm"}



def test_a_crash_and_a_retry_keep_the_variant_first_rendered(shop, templates, real_clock):
    real_clock.set(START)
    settings = load_settings()
    spec = load_journey("nudge", settings.templates_dir)
    core.enter(shop, spec, settings, START)

    with pytest.raises(Crash):
        core.advance_range(shop, spec, settings, (1, CUSTOMERS), START, send_then_crash(settings))
    first = {r.customer_id: (r.variant, r.body) for r in rows(shop)}
    assert first and all(v in ("plain", "warm") for v, _ in first.values())
    # the file now weighs warm 50 to 1: a re-render by the new draw would flip plain ones
    write(templates, with_variants(
        NUDGE + "holdout: 50%\n",
        "    experiment: {variants: [plain, {name: warm, weight: 50}]}\n",
    ))  # fmt: skip
    assert version_of(load_journey("nudge", templates)) == spec.version  # nobody moved
    lease = timedelta(seconds=settings.reservation_lease_seconds)
    advance(real_clock, START + lease + timedelta(seconds=1))
    after = {r.customer_id: (r.variant, r.body) for r in rows(shop)}
    assert after == first, "nobody got a second message or another variant"
    for cid in first:
        assert positions(shop)[cid].step == "answer"
        assert steps(shop, cid) == [("_entry", "entered"), ("first", "sent")]


def test_the_report_counts_each_variant_by_the_steps_name(shop, templates, real_clock):
    advance(real_clock, START)
    sent = rows(shop)
    warm = [r for r in sent if r.variant == "warm"]
    with shop.begin() as conn:  # every warm customer orders the next day; nobody else
        # taken up at the advance's instant (the ledger stamps its own wall clock)
        conn.execute(update(ContactHistory.__table__).values(created_at=START.replace(tzinfo=None)))
        conn.execute(insert(Order.__table__), [{
            "customer_id": r.customer_id, "ordered_at": datetime(2026, 6, 2, 12),
            "ordered_on": date(2026, 6, 2), "currency": "GBP", "amount_minor": 2500,
        } for r in warm])  # fmt: skip
    real_clock.set(START + timedelta(days=40))
    for name in ("nudge.first", STEP):
        out = CliRunner().invoke(main, ["report", "experiment", name, "--json"])
        assert out.exit_code == 0, out.output
        found = json.loads(out.output)
        groups = found["groups"]
        assert found["campaign"] == STEP and set(groups) == {"plain", "warm"}
        assert groups["warm"]["customers"] == len(warm) == groups["warm"]["converted"]
        assert groups["plain"]["customers"] + len(warm) == len(sent)
        assert groups["plain"]["converted"] == 0
        assert found["against_control"]["warm"]["points"] == 100.0  # all against none
        assert "at least 5 customers" in found["rule"]  # the step's own winner rule
        assert found["against_held_out"] == {}  # its holdout is the journey's, at entry
    page = templates / "step.html"
    text = CliRunner().invoke(main, ["report", "experiment", "nudge.first", "--html", str(page)])
    assert "plain (control)" in text.output and "holds customers out when they enter" in text.output
    assert "The rule, set before the test" in text.output
    html = page.read_text()
    assert "warm vs plain" in html and "vs held out" not in html.replace("vs held out (points)", "")
    assert "holds customers out when they enter" in html
    out = CliRunner().invoke(main, ["report", "experiment", "nudge.second"])
    assert out.exit_code == 2 and "add experiment: {variants: [a, b]} to its step" in out.output


def test_lint_refuses_a_bad_variant_block(tmp_path):
    bad = with_variants(block="    experiment: {variants: [plain]}\n")
    write(tmp_path, bad)
    out_of = CliRunner().invoke(main, ["lint"], env={"CAREFLOW_TEMPLATES_DIR": str(tmp_path)})
    assert out_of.exit_code != 0 and "at least 2" in out_of.output, out_of.output

    def problems() -> list[str]:
        return journey_problems(load_journey("nudge", tmp_path), tmp_path, "en")

    write(tmp_path, with_variants())
    assert problems() == []
    (tmp_path / "nudge" / "first.warm.sms.en.j2").unlink()
    assert problems() == [
        "step 'first': variant warm has no templates of its own (first.warm.sms.en.j2...): "
        "it would send the control's message"
    ]
    (tmp_path / "nudge" / "first.warm.sms.en.j2").write_text("WARM {{ name }}")
    (tmp_path / "nudge" / "first.sms.zh-CN.j2").write_text("{{ name }}，您好")
    assert problems() == [
        "step 'first': missing: variant warm changes sms sms.*.j2 but not for zh-CN; those "
        "customers would get the control's (first.warm.sms.zh-CN.j2)"
    ]


def test_the_advance_applies_the_rule_and_publishes_the_report(
    prefect_api, engine, templates, real_clock
):
    from prefect.artifacts import Artifact

    from careflow.experiment_decisions import decision_of
    from careflow.flows.journey import journey_advance

    write(templates, with_variants())  # no holdout: every customer is sent to
    for cid in range(1, CUSTOMERS + 1):
        dormant(engine, cid)
    real_clock.set(START)
    state = journey_advance("nudge", return_state=True)
    page = Artifact.get("j-nudge--first-experiment")  # this advance's, not an earlier test's
    assert page is not None and page.flow_run_id == state.state_details.flow_run_id
    assert f"## {STEP}: which variant pays more" in page.data
    warm = [r for r in rows(engine) if r.variant == "warm"]
    with engine.begin() as conn:  # every warm customer orders the next day; nobody else
        conn.execute(update(ContactHistory.__table__).values(created_at=START.replace(tzinfo=None)))
        conn.execute(insert(Order.__table__), [{
            "customer_id": r.customer_id, "ordered_at": datetime(2026, 6, 2, 12),
            "ordered_on": date(2026, 6, 2), "currency": "GBP", "amount_minor": 2500,
        } for r in warm])  # fmt: skip
    assert decision_of(engine, STEP) is None
    newcomers = range(CUSTOMERS + 1, CUSTOMERS + 21)
    for cid in newcomers:
        dormant(engine, cid)
    real_clock.set(START + timedelta(days=1))
    journey_advance("nudge")
    decided = decision_of(engine, STEP)
    assert decided is not None and decided["winner"] == "warm"
    assert decided["decided_by"].startswith("journey-advance ")
    later = [r for r in rows(engine) if r.customer_id in newcomers]
    assert len(later) == len(newcomers) and {r.variant for r in later} == {"warm"}

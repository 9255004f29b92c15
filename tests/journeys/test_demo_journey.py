"""The demo's journey (templates/lapsing_journey): it lints, and `careflow demo`'s one
advance of it says what it did, in numbers that are the rows'; then its next days,
simulated with its scenario.yaml, end in the customers per step, and write nothing."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from sqlalchemy import func, select

from careflow.db.models import ContactHistory, JourneyPosition
from careflow.demo.data import seed_demo
from careflow.demo.run import DEMO_JOURNEY, _advance_journey
from careflow.journey_spec import load_journey
from careflow.lint import lint_journeys
from careflow.settings import PROJECT_ROOT, load_settings

DAY = date(2026, 6, 1)


def test_the_demo_journey_lints_clean_with_its_templates_in_both_languages():
    settings = load_settings()
    assert lint_journeys(settings, [DEMO_JOURNEY]) == []
    spec = load_journey(DEMO_JOURNEY, PROJECT_ROOT / "templates")
    folder = PROJECT_ROOT / "templates" / DEMO_JOURNEY
    for step in ("first_sms", "reminder"):
        for locale in ("en", "zh-CN"):
            for part in ("subject", "txt", "html"):
                assert (folder / f"{step}.email.{locale}.{part}.j2").is_file()
    assert {s.type for s in spec.steps} >= {"send", "wait_for", "wait", "notify_owner", "exit"}


def test_the_demo_advances_its_journey_once_and_says_what_it_did(
    prefect_api, engine, real_clock, capsys
):
    seed_demo(engine, as_of=DAY, customers=400)
    real_clock.set(datetime(2026, 6, 1, 12, tzinfo=UTC))
    _advance_journey(engine, load_settings(), DAY)
    out = capsys.readouterr().out
    with engine.connect() as conn:
        states = dict(conn.execute(
            select(JourneyPosition.state, func.count()).group_by(JourneyPosition.state)
        ).all())  # fmt: skip
        sent = conn.execute(
            select(func.count()).where(
                ContactHistory.campaign == f"j_{DEMO_JOURNEY}__first_sms",
                ContactHistory.state == "sent",
            )
        ).scalar_one()
    entered = sum(states.values())
    assert entered > 0, "the demo shop has customers the journey takes"
    assert f"{entered} customer(s) entered, {states.get('held_out', 0)} of them held out" in out
    if sent:
        assert re.search(rf"step first_sms: .*\b{sent} sent\b", out), out
    assert "where they are now:" in out and "answer" in out
    # the simulated days: a line per day, the customers per step at the end, all on a copy
    # (the positions counted above are the one real advance's: the days wrote none)
    simulated = out[out.index("the journey's next 14 days, simulated"):]
    days = re.findall(r"^  2026-06-(\d\d)\b", simulated, re.M)
    assert days == [f"{d:02d}" for d in range(2, 16)]
    assert "customers per step at the end:" in simulated
    assert re.search(r"^  thanks +done +\d+$", simulated, re.M), simulated

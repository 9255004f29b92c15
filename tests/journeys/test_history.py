"""A customer's journeys on `careflow history`: each step with its outcome and when,
where they wait and until when, and why they left."""

from __future__ import annotations

import json

from click.testing import CliRunner

from careflow.cli.main import main
from tests.journeys.conftest import START, advance, days, dormant
from tests.journeys.test_advance import event


def history(*args) -> str:
    out = CliRunner().invoke(main, ["history", *args])
    assert out.exit_code == 0, out.output
    return out.output


def test_history_shows_the_steps_taken_and_the_wait(engine, templates, real_clock):
    dormant(engine, 1)
    advance(real_clock, START)
    text = history("1")
    lines = text.splitlines()
    entered = next(i for i, x in enumerate(lines) if "journey entered" in x and "nudge" in x)
    assert lines[entered + 1].strip() == "starts at first"
    assert any("sent" in x and "j_nudge__first" in x for x in lines)  # the message itself
    assert any("journey sent" in x and "nudge" in x for x in lines)
    assert "first -> answer" in text
    waiting = next(i for i, x in enumerate(lines) if "journey waiting for replied or ordered" in x)
    assert lines[waiting + 1].strip() == "at answer until 2026-06-04 12:00 UTC"

    items = json.loads(history("1", "--json"))
    steps = [(i["step"], i["what"]) for i in items if i.get("journey") == "nudge"]
    assert steps == [("_entry", "journey entered"), ("first", "journey sent"),
                     ("answer", "journey waiting for replied or ordered")]  # fmt: skip
    assert [i["due_at"] for i in items if i.get("step") == "answer"] == ["2026-06-04 12:00:00"]


def test_history_says_why_a_customer_left_a_journey(engine, templates, real_clock):
    dormant(engine, 1)
    advance(real_clock, START)
    event(engine, 1, "opted_out", START + days(1))
    advance(real_clock, START + days(3))
    text = history("1")
    assert "journey exited: opted_out" in text
    assert "journey waiting" not in text  # the journey is over for them


def test_history_of_a_held_out_customer_says_so(engine, templates, real_clock, monkeypatch):
    from tests.journeys.conftest import NUDGE, write_journey

    write_journey(templates, "nudge", NUDGE + "holdout: 50%\n")
    for cid in range(1, 11):
        dormant(engine, cid)
    advance(real_clock, START)
    texts = [history(str(cid)) for cid in range(1, 11)]
    held = [t for t in texts if "journey held out" in t]
    assert held and all("j_nudge__first" not in t for t in held)

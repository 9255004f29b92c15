"""careflow lint checks journeys: the graph, the templates, and versions against the
customers on each step."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import select

from careflow.cli.main import main
from careflow.db.models import JourneyStepRecord
from careflow.journey_spec import load_journey
from careflow.lint import journey_problems
from tests.journeys.conftest import NUDGE, START, advance, dormant, positions, write_journey


def problems(root, text, in_flight=None, sends=("first", "second")):
    write_journey(root, "trial", text, sends=sends)
    return journey_problems(load_journey("trial", root), root, "en", in_flight)


def test_the_example_is_clean(tmp_path):
    assert problems(tmp_path, NUDGE) == []


def test_unreachable_steps_loops_without_a_wait_and_missing_templates(tmp_path):
    text = NUDGE.replace("{id: call, type: notify_owner,", "{id: call, type: notify_owner, next: thanks,")
    text += "  - {id: orphan, type: exit}\n"
    assert problems(tmp_path, text) == ["step 'orphan': no step leads here"]
    loop = NUDGE.replace("{id: call, type: notify_owner,", "{id: call, type: notify_owner, next: second,")
    loop = loop.replace("{id: pause, type: wait, days: 7}", "{id: pause, type: branch, cases: [{when: {locale: en}, goto: call}]}")
    found = problems(tmp_path, loop)
    assert any("go round without a wait" in p for p in found), found
    (tmp_path / "other").mkdir()
    missing = problems(tmp_path / "other", NUDGE, sends=("first",))
    assert "step 'second' sends email, but second.email.en.txt.j2 is missing" in missing


def test_a_new_version_may_not_strand_customers_without_a_map(tmp_path):
    without = NUDGE.replace("  - {id: pause, type: wait, days: 7}\n", "")
    found = problems(tmp_path, without, in_flight={"pause": 3, "answer": 1})
    assert found == [
        "3 customer(s) are on step 'pause', which this version deletes: add "
        "moved: {pause: <a step>} to say where they go"
    ]
    assert problems(tmp_path, without + "moved: {pause: call}\n", {"pause": 3}) == []


def test_customers_on_a_deleted_step_follow_the_map(engine, templates, real_clock):
    dormant(engine, 1)
    advance(real_clock, START)
    advance(real_clock, START.replace(day=4))  # on to 'pause' for 7 days
    assert positions(engine)[1].step == "pause"
    without = NUDGE.replace("  - {id: pause, type: wait, days: 7}\n", "")
    write_journey(templates, "nudge", without)
    out = CliRunner().invoke(main, ["lint"])
    assert out.exit_code == 1 and "customer(s) are on step 'pause'" in out.output, out.output
    stranded = advance(real_clock, START.replace(day=12))
    assert stranded["stranded"] == 1 and positions(engine)[1].step == "pause"
    write_journey(templates, "nudge", without + "moved: {pause: call}\n")
    assert "pause" not in CliRunner().invoke(main, ["lint"]).output
    advance(real_clock, START.replace(day=12, hour=14))  # the stranded wait an hour
    with engine.connect() as conn:
        rows = conn.execute(
            select(JourneyStepRecord.step, JourneyStepRecord.outcome)
            .order_by(JourneyStepRecord.id)
        ).all()
    assert [tuple(r) for r in rows][-3:] == [
        ("pause", "moved"), ("call", "notified"), ("thanks", "ended")
    ]


def test_lint_renders_a_journeys_templates_for_sample_customers(tmp_path, monkeypatch):
    """A journey's send-step templates are rendered like a campaign's: a name the
    context does not have is found before any customer gets the message."""
    import shutil

    from careflow.settings import PROJECT_ROOT

    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    write_journey(root, "trial", NUDGE)
    (root / "trial" / "second.email.en.txt.j2").write_text("Hello {{ nosuch.field }}")
    (root / "trial" / "first.sms.zh-CN.j2").write_text("{{ name }}，您好 {{ brand }}")
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path / "home"))
    out = CliRunner().invoke(main, ["lint"])
    assert out.exit_code != 0
    assert "trial/second.email.en.txt.j2:1: 'nosuch' is undefined" in out.output
    assert "first.sms" not in out.output  # the zh-CN and en SMS render fine

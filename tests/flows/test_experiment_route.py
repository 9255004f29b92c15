"""A campaign with an experiment: each contacted customer gets one variant, drawn once and
kept on the ledger row; the held-out get none; the report reads the variants back."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select, update

from careflow.campaigns import load_campaign
from careflow.cli import main
from careflow.db.models import ContactHistory, Order
from careflow.experiment_report import experiment_report, experiment_table
from careflow.flows.preview import sample_context
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.ledger import ContactLedger
from careflow.lint import lint_templates
from careflow.messages import State
from careflow.policy.holdout import holdout_draw
from careflow.settings import PROJECT_ROOT, load_settings
from careflow.variants import Experiment
from tests.factories import add_customer

AS_OF = date(2026, 6, 1)
AT = datetime(2026, 6, 1, 12, tzinfo=UTC)
CUSTOMERS = 120

OFFER = """\
segment: birthday
channels: [sms]
occasion: yearly
category: care
experiment:
  variants: [plain, warm]
  audience: 1000
  min_per_arm: 20
"""


@pytest.fixture
def templates(tmp_path, monkeypatch):
    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    folder = root / "offer"
    folder.mkdir()
    (folder / "campaign.yaml").write_text(OFFER)
    (folder / "sms.en.j2").write_text("PLAIN happy birthday {{ name }}")
    (folder / "warm.sms.en.j2").write_text("WARM happy birthday, dear {{ name }}")
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    monkeypatch.setenv("CAREFLOW_QUIET_HOURS", "off")
    return root


@pytest.fixture
def shop(engine):
    for cid in range(1, CUSTOMERS + 1):
        add_customer(
            engine, cid, mobile=f"+4479111{cid:05d}", country="GB", birthday=date(1990, 6, 1)
        )
    return engine


def run(run_id: str):
    settings = load_settings()
    spec = load_campaign("offer", settings.templates_dir)
    plan = RunPlan(spec=spec, run_id=run_id, as_of=AS_OF, at=AT, settings=settings)
    return process_batch(Route.for_run(plan), (1, CUSTOMERS))


def rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(ContactHistory.__table__).where(ContactHistory.campaign == "offer")
        ).all()


def test_each_contacted_customer_gets_the_variant_drawn_for_them(shop, templates):
    result = run("run-1")
    experiment = load_campaign("offer", templates).experiment
    sent = [r for r in rows(shop) if r.state == State.SENT]
    held = [r for r in rows(shop) if r.state == State.HELD_OUT]
    assert len(sent) + len(held) == CUSTOMERS == result.selected
    for r in sent:
        assert r.variant == experiment.variant_of("offer", r.customer_id)
        assert r.body.startswith(r.variant.upper()), (r.variant, r.body)
    assert all(r.variant is None for r in held), "the held-out get no variant"
    assert set(Counter(r.variant for r in sent)) == {"plain", "warm"}

    again = run("run-2")  # a re-run sends nobody a second variant
    assert again.sent == 0
    assert [r.body for r in rows(shop) if r.state == State.SENT] == [r.body for r in sent]


def test_a_row_keeps_its_variant_whatever_the_campaign_says_later(shop, templates):
    """A message rendered once (then failed, retried, reconciled...) renders the same
    variant again, even after the weights changed."""
    run("run-1")
    first = next(r for r in rows(shop) if r.state == State.SENT)
    other = "plain" if first.variant == "warm" else "warm"
    ledger = ContactLedger(shop)
    assert ledger.keep_variants({first.id: other}) == {first.id: first.variant}


def test_the_draw_is_sticky_weighted_and_apart_from_the_holdout():
    experiment = Experiment(variants=["a", {"name": "b", "weight": 3}])
    draws = {cid: experiment.variant_of("offer", cid) for cid in range(20_000)}
    assert draws == {cid: experiment.variant_of("offer", cid) for cid in range(20_000)}
    share_b = sum(v == "b" for v in draws.values()) / len(draws)
    assert 0.74 < share_b < 0.76
    # among the customers a 10% holdout keeps out, the variants split as among the others
    held = [cid for cid in draws if holdout_draw("offer", cid, "2026") < 0.1]
    share_b_held = sum(draws[c] == "b" for c in held) / len(held)
    assert abs(share_b_held - share_b) < 0.03
    assert Experiment(variants=["a", "b"]).variant_of("other", 7) in {"a", "b"}


def offer_problems() -> list:
    s = load_settings()
    found = lint_templates(s, lambda spec, sample: sample_context(spec, sample, AS_OF, s))
    return [p for p in found.problems if "offer" in str(p.path)]


def test_lint_wants_every_variant_to_have_the_controls_templates(templates):
    (templates / "offer" / "sms.zh-CN.j2").write_text("PLAIN 生日快乐 {{ name }}")
    problems = offer_problems()
    assert [p.path.name for p in problems] == ["warm.sms.zh-CN.j2"]
    assert "variant warm" in problems[0].reason
    (templates / "offer" / "warm.sms.zh-CN.j2").write_text("WARM 生日快乐 {{ name }}")
    assert offer_problems() == []


def test_a_variant_changes_only_the_parts_it_has_files_for(templates):
    """A subject-line test needs the variant's subject only: the rest is the control's."""
    from careflow.rendering import Renderer

    folder = templates / "offer"
    (folder / "email.en.subject.j2").write_text("A gift for you")
    (folder / "email.en.txt.j2").write_text("PLAIN body for {{ name }}")
    (folder / "warm.email.en.subject.j2").write_text("{{ name }}, a gift chosen for you")
    renderer = Renderer(templates)
    warm = renderer.render("offer@warm", "email", "en", {"name": "Ann"})
    plain = renderer.render("offer", "email", "en", {"name": "Ann"})
    assert (warm.subject, warm.body) == ("Ann, a gift chosen for you", "PLAIN body for Ann")
    assert (plain.subject, plain.body) == ("A gift for you", "PLAIN body for Ann")


def test_lint_refuses_a_variant_without_templates_of_its_own(templates):
    (templates / "offer" / "warm.sms.en.j2").unlink()
    (problem,) = offer_problems()
    assert problem.path.name == "campaign.yaml"
    assert "variant warm has no templates of its own" in problem.reason


def test_a_test_send_shows_the_variant_asked_for(engine, templates):
    runner = CliRunner()
    for variant, opener in ((None, "PLAIN"), ("warm", "WARM")):
        args = ["test-send", "offer", "--to", "+447911000009"]
        out = runner.invoke(main, [*args, "--variant", variant] if variant else args)
        assert out.exit_code == 0, out.output
        with engine.connect() as conn:
            body = conn.execute(
                select(ContactHistory.body)
                .where(ContactHistory.campaign == "test:offer")
                .order_by(ContactHistory.id.desc())
            ).first()[0]
        assert body.startswith(opener), body
    out = runner.invoke(main, ["test-send", "offer", "--to", "+447911000009", "--variant", "hot"])
    assert out.exit_code == 2 and "offer has no variant 'hot'; its variants: plain, warm" in out.output


def test_the_report_counts_each_variant_and_compares_it(shop, templates, monkeypatch):
    run("run-1")
    sent = [r for r in rows(shop) if r.state == State.SENT]
    warm = [r for r in sent if r.variant == "warm"]
    with shop.begin() as conn:  # every warm customer orders the next day; nobody else
        conn.execute(update(ContactHistory.__table__).values(created_at=AT.replace(tzinfo=None)))
        conn.execute(
            insert(Order.__table__),
            [
                {
                    "customer_id": r.customer_id,
                    "ordered_at": datetime(2026, 6, 2, 12),
                    "ordered_on": date(2026, 6, 2),
                    "currency": "GBP",
                    "amount_minor": 2500,
                }
                for r in warm
            ],
        )
    settings = load_settings()
    spec = load_campaign("offer", settings.templates_dir)
    found = experiment_report(
        shop, spec, window_days=7, shop_zone="UTC", baseline=0.03, now=AT + timedelta(days=30)
    )
    groups = found["groups"]
    assert groups["warm"]["customers"] == len(warm) == groups["warm"]["converted"]
    assert groups["plain"]["customers"] + len(warm) == len(sent)
    assert groups["plain"]["converted"] == 0
    assert groups["held_out"]["customers"] == CUSTOMERS - len(sent)
    assert found["against_control"]["warm"]["verdict"] == "better"
    assert found["verdict"].startswith("warm converts better than plain")
    text = experiment_table(found)
    assert "plain (control)" in text and "held out (nothing sent)" in text

    monkeypatch.setenv("CAREFLOW_ATTRIBUTION_WINDOW_DAYS", "7")
    out = CliRunner().invoke(main, ["report", "experiment", "offer", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["groups"]["warm"]["converted"] == len(warm)
    out = CliRunner().invoke(main, ["report", "experiment", "birthday"])
    assert out.exit_code == 2 and "has no experiment" in out.output


def test_a_dry_run_says_what_the_experiment_can_find(prefect_api, shop, templates):
    out = CliRunner().invoke(main, ["run", "offer", "--as-of", "2026-06-01", "--dry-run"])
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if x.startswith("A/B test of plain, warm"))
    assert "(plain is the control): about" in line and "customers each in this run" in line
    assert "at the planned 1,000 customers it finds a rise of" in line
    assert "8 times in 10" in line

"""Before and after a run of a campaign with an experiment: what it states, refuses and
publishes.

Before launch a dry run and a preview state the power and the smallest rise the test
finds; below CAREFLOW_EXPERIMENT_MIN_POWER a run warns, or refuses in one line and
sends nothing. A real run applies the winner rule at its start and publishes the
experiment's report as a Prefect artifact; the report is also one HTML page.
"""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from careflow.cli import main
from careflow.db.models import ContactHistory, DryRunHold
from careflow.experiment_decisions import decision_of
from careflow.messages import State
from tests.flows import test_experiment_decision as decision_tests

CUSTOMERS = decision_tests.CUSTOMERS
#: the campaign with plain and warm variants, and 120 customers whose birthday is 1 June
templates = decision_tests.templates
shop = decision_tests.shop
rows, run, buy = decision_tests.rows, decision_tests.run, decision_tests.buy


def ledger_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(ContactHistory)).scalar_one()


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_a_dry_run_states_the_power_and_warns_below_the_minimum(prefect_api, shop, templates,
                                                               monkeypatch):  # fmt: skip
    monkeypatch.setenv("CAREFLOW_EXPERIMENT_MIN_POWER", "0.8")
    out = cli("run", "offer", "--as-of", "2026-06-01", "--dry-run")
    assert out.exit_code == 0, out.output
    plan = next(x for x in out.output.splitlines() if x.startswith("A/B test of plain, warm"))
    # 500 a variant at 3%: the default rise worth finding is a fifth of it, 0.6 points
    assert "for the rise worth finding, 0.6 points (a fifth of the rate)" in plan
    power = int(plan.split("; power ")[1].split("%")[0])
    assert 0 < power < 80
    warning = next(x for x in out.output.splitlines() if x.startswith("warning: plain, warm"))
    assert "below CAREFLOW_EXPERIMENT_MIN_POWER=0.8" in warning

    monkeypatch.setenv("CAREFLOW_EXPERIMENT_MIN_POWER", "0")  # the check off
    out = cli("run", "offer", "--as-of", "2026-06-01", "--dry-run")
    assert out.exit_code == 0 and "warning: plain, warm" not in out.output


def test_an_experiment_with_enough_power_is_not_warned_about(prefect_api, shop, templates,
                                                             monkeypatch):  # fmt: skip
    folder = templates / "offer"
    yaml = (folder / "campaign.yaml").read_text().replace("audience: 1000", "audience: 40000")
    (folder / "campaign.yaml").write_text(yaml.replace("min_per_arm: 20", "rise: 2"))
    out = cli("run", "offer", "--as-of", "2026-06-01", "--dry-run")
    assert out.exit_code == 0, out.output
    assert "for the rise worth finding, 2.0 points (campaign.yaml)" in out.output
    assert "warning:" not in out.output


def test_refuse_below_the_minimum_sends_nothing(prefect_api, shop, templates, monkeypatch):
    monkeypatch.setenv("CAREFLOW_EXPERIMENT_MIN_POWER", "0.8")
    monkeypatch.setenv("CAREFLOW_EXPERIMENT_UNDERPOWERED", "refuse")
    for args in (["--dry-run"], ["--allow-past"]):
        out = cli("run", "offer", "--as-of", "2026-06-01", *args)
        assert out.exit_code != 0, out.output
        said = [x for x in out.output.splitlines() if x.strip()]
        assert len(said) == 1 and said[0].startswith("error: experiment refused: plain, warm")
        assert "Traceback" not in out.output
    assert ledger_rows(shop) == 0
    with shop.connect() as conn:
        assert conn.execute(select(func.count()).select_from(DryRunHold)).scalar_one() == 0


def test_a_preview_states_the_power_and_the_winner_once_decided(shop, templates, monkeypatch):
    monkeypatch.setenv("CAREFLOW_EXPERIMENT_MIN_POWER", "0.8")
    out = cli("preview", "offer", "--customer", "1", "--as-of", "2026-06-01")
    assert out.exit_code == 0, out.output
    assert "A/B test of plain, warm (plain is the control)" in out.output
    assert "it finds a rise of" in out.output and "; power " in out.output
    assert "warning: plain, warm" in out.output
    assert "won; every new customer gets it" not in out.output

    run("run-1")
    decision_tests.warm_buys(shop)
    assert cli("report", "experiment", "offer", "--decide").exit_code == 0
    out = cli("preview", "offer", "--customer", str(CUSTOMERS + 1), "--as-of", "2026-06-01")
    assert out.exit_code != 0  # not a customer yet
    decision_tests.add_shop(shop, CUSTOMERS + 1, CUSTOMERS + 40)
    shown = {}
    for cid in range(CUSTOMERS + 1, CUSTOMERS + 41):
        out = cli("preview", "offer", "--customer", str(cid), "--as-of", "2026-06-01")
        assert out.exit_code == 0, out.output
        assert "warm won; every new customer gets it" in out.output
        if "would be held out" not in out.output:
            shown[cid] = "WARM happy birthday" in out.output
    assert shown and all(shown.values()), "every new customer previews the winner"


def test_a_run_applies_the_rule_at_its_start_and_publishes_the_report(prefect_api, shop,
                                                                     templates):  # fmt: skip
    from prefect.artifacts import Artifact

    from careflow.flows.campaign import campaign_flow

    run("run-1")
    decision_tests.warm_buys(shop)
    assert decision_of(shop, "offer") is None
    summary = campaign_flow(campaign="offer", as_of="2027-06-01")
    decided = decision_of(shop, "offer")
    assert decided is not None and decided["winner"] == "warm"
    assert decided["decided_by"] == f"run {summary['run_id']}"
    sent = [r for r in rows(shop, "2027") if r.state == State.SENT]
    assert sent and {r.variant for r in sent} == {"warm"}, "the deciding run sends the winner"

    page = Artifact.get("offer-experiment")
    assert page.type == "markdown"
    assert "## offer: which variant pays more" in page.data
    assert "**warm won on" in page.data and "| warm |" in page.data


def test_the_report_as_a_page_with_charts(shop, templates, tmp_path):
    run("run-1")
    sent = [r for r in rows(shop) if r.state == State.SENT]
    # warm buys more and spends more: 30 of its customers; plain 12, smaller orders
    buy(shop, [r for r in sent if r.variant == "warm"][:30], lambda r: 3000 + 97 * r.id)
    buy(shop, [r for r in sent if r.variant == "plain"][:12], lambda r: 1500 + 31 * r.id)
    page = tmp_path / "offer.html"
    out = cli("report", "experiment", "offer", "--html", str(page))
    assert out.exit_code == 0, out.output
    assert f"wrote {page}" in out.output
    html = page.read_text()
    assert html.count("<svg") == 3  # conversion, differences, revenue in GBP
    # no script, and nothing fetched from the network (an SVG's xmlns is a name, not a fetch)
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']?https?:|url\(|@import""", html)
    assert "Revenue per customer, GBP" in html and "warm vs plain" in html
    assert "The rule, set before the test" in html


def test_the_report_gives_revenue_per_customer_with_intervals(shop, templates):
    run("run-1")
    sent = [r for r in rows(shop) if r.state == State.SENT]
    warm = [r for r in sent if r.variant == "warm"]
    plain = [r for r in sent if r.variant == "plain"]
    buy(shop, warm[:30], lambda r: 3000 + 97 * r.id)
    buy(shop, plain[:12], lambda r: 1500 + 31 * r.id)
    found = decision_tests.report(shop)
    g = found["groups"]["warm"]["revenue_per_customer"]["GBP"]
    expected = sum((3000 + 97 * r.id) / 100 for r in warm[:30]) / len(warm)
    assert g["mean"] == pytest.approx(expected, abs=0.01)
    assert g["ci"][0] < g["mean"] < g["ci"][1]
    vs = found["against_control"]["warm"]["revenue"]["GBP"]
    assert vs["ci"][0] < vs["difference"] < vs["ci"][1]
    # the held out bought nothing: too few buyers for an interval, said so
    assert found["against_held_out"]["warm"]["revenue"]["GBP"]["ci"] is None
    out = cli("report", "experiment", "offer")
    assert out.exit_code == 0 and "revenue vs control" in out.output
    assert f"{g['mean']:,.2f} ({g['ci'][0]:,.2f} to {g['ci'][1]:,.2f}) GBP" in out.output
    as_json = cli("report", "experiment", "offer", "--json")
    assert json.loads(as_json.output)["groups"]["warm"]["revenue_per_customer"]["GBP"] == g

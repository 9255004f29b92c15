"""The pyramid report: the segment's own tiers and scores, summed up; movement since
a previous date; and its skins (text, markdown, JSON, CSV, HTML, the CLI)."""

from __future__ import annotations

import csv
import json
from datetime import date, timedelta

import pytest
from click.testing import CliRunner

from careflow import segments
from careflow.cli.main import main
from careflow.errors import ConfigError
from careflow.insight.pyramid import pyramid_report
from tests.factories import add_customer, add_orders, rows

AS_OF = date(2026, 11, 22)
PREVIOUS = AS_OF - timedelta(days=90)


def ago(days: int) -> date:
    return AS_OF - timedelta(days=days)


@pytest.fixture
def shop(engine):
    """100 steady buyers (customer c spent 10 x c, 200 days ago, in both windows) and
    five who move: 5 jumps to the top, 99 is pushed out of VIP, 101 stopped buying,
    102 is new, 103 comes back after a long absence."""
    for cid in range(1, 104):
        add_customer(engine, cid, external_ref=f"R{cid}")
    for cid in range(1, 101):
        add_orders(engine, cid, [ago(200)], amount=str(10 * cid))
    add_orders(engine, 5, [ago(10)], amount="5000")
    add_orders(engine, 101, [ago(400)], amount="15")  # in the previous window only
    add_orders(engine, 102, [ago(5)], amount="20")
    add_orders(engine, 103, [ago(500)], amount="30")  # before both windows
    add_orders(engine, 103, [ago(3)], amount="30")
    return engine


def test_tiers_and_revenue_shares_sum_the_segment_rows(shop):
    report = pyramid_report(shop, AS_OF)
    seg = rows(shop, segments.build("pyramid", AS_OF)).values()
    assert report.buyers == len(seg) == 102 and report.currency == "GBP"
    assert report.revenue_minor == sum(r["monetary_minor"] for r in seg)
    tiers = report.tiers.set_index("tier")
    for tier in ("VIP", "Large", "Medium", "Small"):
        spent = [r["monetary_minor"] for r in seg if r["tier"] == tier]
        assert tiers.loc[tier, "customers"] == len(spent)
        assert tiers.loc[tier, "revenue_minor"] == sum(spent)
        assert tiers.loc[tier, "revenue_share"] == sum(spent) / report.revenue_minor
        assert tiers.loc[tier, "min_minor"] == min(spent)
    assert list(tiers["customers"]) == [2, 4, 15, 81]
    assert tiers["revenue_share"].sum() == pytest.approx(1.0)


def test_scores_grid_and_ranges(shop):
    report = pyramid_report(shop, AS_OF)
    seg = list(rows(shop, segments.build("pyramid", AS_OF)).values())
    scores = report.scores.set_index(["measure", "score"])
    for measure, column in (("R", "days_since"), ("F", "frequency"), ("M", "monetary_minor")):
        for score in range(1, 6):
            held = [r[column] for r in seg if r[f"{measure.lower()}_score"] == score]
            assert scores.loc[(measure, score), "customers"] == len(held)
            assert scores.loc[(measure, score), "low"] == min(held)
            assert scores.loc[(measure, score), "high"] == max(held)
    grid = report.grid.set_index(["r_score", "f_score"])["customers"]
    assert len(grid) == 25 and grid.sum() == 102
    assert grid[(5, 2)] == sum(1 for r in seg if (r["r_score"], r["f_score"]) == (5, 2))


def test_movement_up_down_inactive_new_and_returning(shop):
    report = pyramid_report(shop, AS_OF, previous=PREVIOUS)
    moved = report.customers.set_index("customer_id")
    assert (moved.loc[5, "previous_tier"], moved.loc[5, "tier"], moved.loc[5, "movement"]) == (
        "Small", "VIP", "up")
    assert (moved.loc[99, "previous_tier"], moved.loc[99, "tier"]) == ("VIP", "Large")
    assert moved.loc[99, "movement"] == "down"
    assert (moved.loc[100, "tier"], moved.loc[100, "movement"]) == ("VIP", "same")
    assert (moved.loc[101, "tier"], moved.loc[101, "movement"]) == ("Inactive", "inactive")
    assert moved.loc[102, "movement"] == "new" and moved.loc[103, "movement"] == "returning"
    summary = dict(zip(report.movement_summary["movement"],
                       report.movement_summary["customers"], strict=True))
    assert summary["inactive"] == summary["new"] == summary["returning"] == 1
    assert sum(summary.values()) == len(report.customers) == 104 - 1  # 104 ids, none never bought
    cells = report.movement.set_index(["before", "after"])["customers"]
    assert cells[("Small", "Inactive")] == 1 and cells[("New", "Small")] == 1
    assert cells.sum() == len(report.customers)


def test_the_previous_date_must_come_first(shop):
    with pytest.raises(ConfigError, match="must come before"):
        pyramid_report(shop, AS_OF, previous=AS_OF)


def test_several_currencies_rank_the_main_one_and_say_what_was_left_out(shop):
    """Regression: a shop selling in several currencies got an error until it passed
    --param currency. Now the report ranks the shop's main currency (the setting), else the
    one with the most revenue, and says which and how many orders it left out."""
    from sqlalchemy import update

    from careflow.db.models import Order
    from careflow.insight.render import as_dict, as_text

    with shop.begin() as conn:
        conn.execute(update(Order).where(Order.customer_id == 7).values(currency="EUR"))
    report = pyramid_report(shop, AS_OF)
    assert report.currency == "GBP" and report.buyers == 101
    text = as_text(report)
    assert "Money in GBP (the currency with the most revenue" in text
    assert "CAREFLOW_MAIN_CURRENCY" in text and "1 order in other currencies left out (EUR 1)" in text
    assert as_dict(report)["currency_choice"] == {
        "currency": "GBP", "chosen_by": "most_revenue", "orders_left_out": 1,
        "left_out_by_currency": {"EUR": 1},
    }  # fmt: skip
    main = pyramid_report(shop, AS_OF, main_currency="EUR")
    assert main.currency == "EUR" and main.buyers == 1
    assert "(the shop's main currency, CAREFLOW_MAIN_CURRENCY)" in as_text(main)
    assert "102 orders in other currencies left out (GBP 102)" in as_text(main)
    asked = pyramid_report(shop, AS_OF, params={"currency": "EUR"}, main_currency="GBP")
    assert asked.buyers == 1 and "(--param currency)" in as_text(asked)


def test_cli_pyramid_and_clv_default_to_the_main_currency_setting(shop, monkeypatch):
    from sqlalchemy import update

    from careflow.db.models import Order

    with shop.begin() as conn:
        conn.execute(update(Order).where(Order.customer_id == 7).values(currency="EUR"))
    runner = CliRunner()
    out = runner.invoke(main, ["report", "pyramid", "--as-of", AS_OF.isoformat()])
    assert out.exit_code == 0, out.output
    assert "Money in GBP (the currency with the most revenue" in out.output
    monkeypatch.setenv("CAREFLOW_MAIN_CURRENCY", "eur")
    out = runner.invoke(main, ["report", "pyramid", "--as-of", AS_OF.isoformat()])
    assert out.exit_code == 0 and "Money in EUR (the shop's main currency" in out.output
    monkeypatch.setenv("CAREFLOW_MAIN_CURRENCY", "GBP")  # a value model needs buyers: GBP's
    for cid in range(10, 40):  # and repeat purchases
        add_orders(shop, cid, [ago(100), ago(40)], amount=str(cid))
    out = runner.invoke(main, ["report", "clv", "--as-of", AS_OF.isoformat(), "--draws", "0"])
    assert out.exit_code == 0, out.output
    assert "Money in GBP (the shop's main currency" in out.output
    assert "1 order in other currencies left out (EUR 1)" in out.output
    monkeypatch.setenv("CAREFLOW_MAIN_CURRENCY", "euro")
    out = runner.invoke(main, ["report", "pyramid", "--as-of", AS_OF.isoformat()])
    assert out.exit_code != 0 and "CAREFLOW_MAIN_CURRENCY" in out.output
    assert "Traceback" not in out.output


def test_an_empty_shop_gives_an_empty_report(engine):
    from careflow.insight.html import as_html
    from careflow.insight.render import as_json, as_text

    report = pyramid_report(engine, AS_OF)
    assert report.buyers == 0 and report.revenue_minor == 0
    assert list(report.tiers["customers"]) == [0, 0, 0, 0]
    assert "0 buyers" in as_text(report)
    assert json.loads(as_json(report))["buyers"] == 0
    assert as_html(report).count("<svg") == 4


def test_skins_show_the_same_numbers(shop, tmp_path):
    from careflow.insight.html import as_html
    from careflow.insight.render import as_dict, as_markdown, as_text, write_csv

    report = pyramid_report(shop, AS_OF)
    data = json.loads(json.dumps(as_dict(report, customers=True)))
    assert [t["customers"] for t in data["tiers"]] == [2, 4, 15, 81]
    assert data["tiers"][0]["revenue"] == "6050.00"  # customer 5 (5,050.00) and 100 (1,000.00)
    assert data["movement_summary"]["up"] >= 1 and len(data["customers"]) == 103
    text = as_text(report)
    assert "VIP     2" in text and "6,050.00" in text
    markdown = as_markdown(report)
    assert "| VIP | 2 | 2.0% | 6,050.00 |" in markdown
    written = write_csv(report, tmp_path / "out")
    assert [p.name for p in written] == [
        "tiers.csv", "scores.csv", "rfm_grid.csv", "movement.csv", "movement_summary.csv",
        "customers.csv",
    ]
    with open(tmp_path / "out" / "tiers.csv", newline="") as f:
        tiers = list(csv.DictReader(f))
    assert tiers[0]["tier"] == "VIP" and tiers[0]["revenue"] == "6050.00"
    page = as_html(report)
    assert page.count("<svg") == 4  # pyramid, revenue, heat map, flows
    assert "<script" not in page  # drawn in the page: it works offline
    assert "Customer pyramid as of 2026-11-22" in page


def test_cli_report_pyramid(shop, tmp_path):
    runner = CliRunner()
    base = ["report", "pyramid", "--as-of", AS_OF.isoformat()]
    out = runner.invoke(main, base)
    assert out.exit_code == 0, out.output
    assert "102 buyers" in out.output and "Tier movement" in out.output
    out = runner.invoke(main, [*base, "--format", "json", "--previous", PREVIOUS.isoformat()])
    assert json.loads(out.output)["previous"] == PREVIOUS.isoformat()
    out = runner.invoke(main, [*base, "--format", "html", "--output", str(tmp_path / "p.html")])
    assert out.exit_code == 0 and 0 < (tmp_path / "p.html").stat().st_size < 60_000
    out = runner.invoke(main, [*base, "--format", "csv", "--output", str(tmp_path / "csv")])
    assert out.exit_code == 0 and (tmp_path / "csv" / "customers.csv").is_file()
    out = runner.invoke(main, [*base, "--param", "vip_pct=5", "--param", "large_pct=10"])
    assert out.exit_code == 0 and "VIP     6" in out.output
    out = runner.invoke(main, [*base, "--customers"])
    assert "Customers who moved" in out.output and "R101" in out.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--previous", "2026-11-31"], "--previous '2026-11-31' is not a date"),
        (["--previous", "2026-12-01"], "must come before the as-of date"),
        (["--param", "vip_pct=0"], "segment 'pyramid': vip_pct must be"),
        (["--format", "html", "--output", "/no/such/folder/p.html"], "cannot write /no/such"),
    ],
)
def test_cli_report_pyramid_errors_are_one_line(shop, extra, message):
    out = CliRunner().invoke(main, ["report", "pyramid", "--as-of", AS_OF.isoformat(), *extra])
    assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output

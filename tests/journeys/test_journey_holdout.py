"""Conversions and uplift per journey against its holdout: `careflow journey status`, its
JSON and the journey's artifact, with the campaign holdout's statistics."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from click.testing import CliRunner

from careflow.cli.main import main
from careflow.journey_spec import load_journey
from careflow.journeys import advance as core
from careflow.journeys.holdout import journey_uplift
from careflow.settings import load_settings
from careflow.uplift import uplift_report
from tests.factories import add_contact, add_orders
from tests.journeys.conftest import START, advance, dormant, positions

WINDOW = 7


@pytest.fixture
def shop(engine, templates, real_clock, monkeypatch):
    """Forty dormant customers entered on START, half held out; orders known per group:
    six in the journey and two held out bought within the window; one in the journey
    bought after it, one just before entering (neither counts)."""
    monkeypatch.setenv("CAREFLOW_HOLDOUT", "0.5")
    monkeypatch.setenv("CAREFLOW_ATTRIBUTION_WINDOW_DAYS", str(WINDOW))
    for cid in range(1, 41):
        dormant(engine, cid)
    advance(real_clock, START)
    found = positions(engine)
    held = sorted(c for c, p in found.items() if p.state == "held_out")
    treated = sorted(c for c, p in found.items() if p.state != "held_out")
    assert len(held) >= 4 and len(treated) >= 8  # the draw split them
    for cid in treated[:6]:
        add_orders(engine, cid, [date(2026, 6, 3)], amount="25.00")
    add_orders(engine, treated[6], [date(2026, 6, 1) + timedelta(days=WINDOW + 2)])
    add_orders(engine, treated[7], [date(2026, 5, 31)])
    for cid in held[:2]:
        add_orders(engine, cid, [date(2026, 6, 2)], amount="10.00")
    # one more customer entered but not through the entry step yet: in neither group
    dormant(engine, 41)
    settings = load_settings()
    core.enter(engine, load_journey("nudge", settings.templates_dir), settings, START)
    return treated, held


def test_each_group_counts_its_customers_and_their_orders_in_the_window(engine, shop):
    treated, held = shop
    settings = load_settings()
    spec = load_journey("nudge", settings.templates_dir)
    report = journey_uplift(engine, spec, settings)
    journey, out = report["groups"]["in_journey"], report["groups"]["held_out"]
    assert (journey["customers"], journey["converted"]) == (len(treated), 6)
    assert (out["customers"], out["converted"]) == (len(held), 2)
    assert report["not_counted_yet"] == 1
    # the campaign holdout's path, over ledger rows of the same customers from the same
    # instant, gives the same numbers and the same intervals
    for cid in treated:
        add_contact(engine, cid, START, "sent", campaign="twin")
    for cid in held:
        add_contact(engine, cid, START, "held_out", campaign="twin")
    twin = uplift_report(engine, "twin", window_days=WINDOW, shop_zone=settings.time_zone)
    assert twin["groups"]["contacted"] == journey and twin["groups"]["held_out"] == out
    assert report["conversion_uplift"] == twin["conversion_uplift"]
    assert report["revenue_uplift"] == twin["revenue_uplift"] != {}
    assert report["mde_points"] == twin["mde_points"]


def test_status_says_whether_the_journey_pays_in_words_and_numbers(engine, shop):
    treated, held = shop
    out = CliRunner().invoke(main, ["journey", "status", "nudge"])
    assert out.exit_code == 0, out.output
    rate = 100 * 6 / len(treated)
    assert f"{rate:.1f}% of {len(treated)} customers in the journey bought within 7 day(s)" in (
        out.output
    )
    assert "in the journey" in out.output and "held out" in out.output
    assert "1 entry not counted" in out.output
    data = json.loads(CliRunner().invoke(main, ["journey", "status", "nudge", "--json"]).output)
    assert data["holdout"]["groups"]["in_journey"]["converted"] == 6
    assert data["holdout"]["groups"]["held_out"]["customers"] == len(held)
    assert data["holdout"]["in_words"] in out.output


def test_a_journey_nobody_is_held_out_of_says_it_cannot_be_measured(engine, templates,
                                                                      real_clock):
    dormant(engine, 1)
    advance(real_clock, START)
    settings = load_settings()
    report = journey_uplift(engine, load_journey("nudge", settings.templates_dir), settings)
    assert report["groups"]["held_out"]["customers"] == 0
    assert report["conversion_uplift"] is None
    assert report["in_words"].startswith("Nobody is held out of this journey")


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_the_artifact_says_whether_the_journey_pays(prefect_api, engine, shop):
    from prefect import flow

    from careflow.flows.journey import publish_diagram

    settings = load_settings()
    report = journey_uplift(engine, load_journey("nudge", settings.templates_dir), settings)
    text = flow(publish_diagram)("nudge", "2026-06-01T12:05")  # as the advance publishes it
    assert "## Does the journey pay? Against its holdout" in text
    assert f"**{report['in_words']}**" in text

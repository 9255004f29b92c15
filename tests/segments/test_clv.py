"""The clv segment: every customer placed in the value matrix, selected by quadrant."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from careflow import segments
from careflow.cli.main import main
from careflow.db.models import Order
from careflow.errors import ConfigError, DataError
from careflow.segments.clv import QUADRANTS, decode_members, encode_members, score_customers
from tests.factories import add_customer, add_orders, rows

AS_OF = date(2026, 11, 22)


def ago(*days: int) -> list[date]:
    return [AS_OF - timedelta(days=d) for d in days]


@pytest.fixture
def shop(engine):
    """60 customers: regulars, newcomers, lapsed big spenders and one-off buyers."""
    rnd = random.Random(5)
    for cid in range(1, 61):
        add_customer(engine, cid, external_ref=f"R{cid}")
        if cid <= 15:  # regulars: every 20-40 days for a year
            step = rnd.randint(20, 40)
            add_orders(engine, cid, ago(*range(rnd.randint(1, 10), 360, step)),
                       str(rnd.randint(40, 120)))
        elif cid <= 30:  # newcomers: first purchase 20-80 days ago, then again
            first = rnd.randint(20, 80)
            add_orders(engine, cid, ago(first, first // 2, 3), str(rnd.randint(20, 60)))
        elif cid <= 45:  # lapsed: bought often two to three years ago
            add_orders(engine, cid, ago(*range(700, 1000, 30)), str(rnd.randint(50, 200)))
        else:  # one purchase, some time in the last two years
            add_orders(engine, cid, ago(rnd.randint(1, 700)), str(rnd.randint(5, 300)))
    return engine


def test_every_customer_is_placed_by_the_two_cuts(shop):
    with shop.connect() as conn:
        frame, fit = score_customers(conn, AS_OF)
    assert len(frame) == 60 and fit["customers"] == 60 and fit["currency"] == "GBP"
    n = len(frame)
    for column, flag in (("historical_minor", "current_high"), ("predicted_minor", "future_high")):
        above = {c: (frame[column] > v).sum() for c, v in zip(frame.customer_id, frame[column],
                                                              strict=True)}
        want = {c: above[c] * 100 < n * 50 and v > 0
                for c, v in zip(frame.customer_id, frame[column], strict=True)}
        assert dict(zip(frame.customer_id, frame[flag], strict=True)) == want
    expected = {(True, True): "retain", (False, True): "develop", (True, False): "maintain",
                (False, False): "convert_or_let_go"}
    for r in frame.itertuples():
        assert r.quadrant == expected[(r.current_high, r.future_high)]
    by_id = frame.set_index("customer_id")
    # the lapsed spent nothing in the last year: never high on current value
    assert not by_id.loc[31:45, "current_high"].any()
    assert set(by_id.loc[1:15, "quadrant"]) <= {"retain", "maintain"}
    assert (by_id["predicted_minor"] > 0).all() and by_id["p_alive"].between(0, 1).all()


def test_the_segment_selects_the_chosen_quadrants_with_their_numbers(shop):
    with shop.connect() as conn:
        frame, _ = score_customers(conn, AS_OF)
        params = segments.prepare("clv", conn, AS_OF, {"quadrants": ["develop", "maintain"]})
    got = rows(shop, segments.build("clv", AS_OF, params))
    want = frame[frame["quadrant"].isin(["develop", "maintain"])].set_index("customer_id")
    assert set(got) == set(want.index) and got
    for cid, row in got.items():
        assert row["quadrant"] == want.loc[cid, "quadrant"]
        assert row["historical_minor"] == want.loc[cid, "historical_minor"]
        assert row["predicted_minor"] == want.loc[cid, "predicted_minor"]
        assert row["currency"] == "GBP"
    every = {}
    for q in QUADRANTS:
        with shop.connect() as conn:
            params = segments.prepare("clv", conn, AS_OF, {"quadrants": [q]})
        every |= rows(shop, segments.build("clv", AS_OF, params))
    assert sorted(every) == list(range(1, 61))  # the four quadrants cover everyone once


def test_members_travel_as_one_text_and_refuse_anything_else(shop):
    with shop.connect() as conn:
        frame, _ = score_customers(conn, AS_OF)
    text = encode_members(frame)
    assert isinstance(text, str) and text.startswith("clv1:")
    assert [r[0] for r in decode_members(text)] == list(frame["customer_id"])
    with pytest.raises(ConfigError, match="members is not what segments.prepare returns"):
        segments.build("clv", AS_OF, {"members": "clv1:not-base64!"})


def test_building_without_prepare_says_what_to_do():
    with pytest.raises(ConfigError, match="scores every customer with a fitted model first"):
        segments.build("clv", AS_OF, {})


def test_mixed_currencies_and_too_few_customers(shop, engine):
    with shop.begin() as conn:
        conn.execute(update(Order).where(Order.customer_id == 3).values(currency="EUR"))
    with shop.connect() as conn, pytest.raises(ConfigError, match=r"\(EUR, GBP\)"):
        segments.prepare("clv", conn, AS_OF, {})
    with shop.connect() as conn, pytest.raises(DataError, match="at least 10 customers"):
        segments.prepare("clv", conn, AS_OF, {"currency": "EUR"})


def test_cli_report_clv_and_segment_list(shop, tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["report", "clv", "--as-of", AS_OF.isoformat(), "--draws", "3"])
    assert out.exit_code == 0, out.output
    assert "Value matrix" in out.output and "retain" in out.output and "BG/NBD r=" in out.output
    out = runner.invoke(main, ["report", "clv", "--as-of", AS_OF.isoformat(), "--draws", "0",
                               "--format", "json", "--customers", "0"])
    data = json.loads(out.output)
    assert sum(m["customers"] for m in data["matrix"]) == 60 and len(data["customers"]) == 60
    assert data["customers"][0]["p_alive_low"] is None  # no draws, no interval
    out = runner.invoke(main, ["report", "clv", "--as-of", AS_OF.isoformat(), "--draws", "0",
                               "--format", "csv", "--output", str(tmp_path / "clv")])
    assert out.exit_code == 0 and (tmp_path / "clv" / "customers.csv").is_file()
    out = runner.invoke(main, ["segment", "list", "clv", "--as-of", AS_OF.isoformat(),
                               "--param", "quadrants=[retain]", "--format", "json"])
    listed = json.loads(out.output)
    assert listed and {r["quadrant"] for r in listed} == {"retain"}
    assert {"historical", "predicted", "p_alive", "ref"} <= set(listed[0])
    out = runner.invoke(main, ["segment", "count", "clv", "--as-of", AS_OF.isoformat()])
    assert out.exit_code == 0 and int(out.output) == len(listed)


def test_preview_of_a_clv_campaign_prepares_the_segment(shop, tmp_path, monkeypatch):
    """A campaign on the clv segment previews like any other (preview prepares it)."""
    from careflow.flows.preview import preview_message
    from careflow.settings import load_settings

    folder = tmp_path / "templates" / "develop_care"
    folder.mkdir(parents=True)
    (folder / "campaign.yaml").write_text(
        "description: Customers worth more later than now.\n"
        "segment: clv\nparameters: {quadrants: [develop]}\nchannels: [email]\n"
        "occasion: monthly\nmarketing: false\n"
    )
    (folder / "email.en.subject.j2").write_text("Hello {{ customer.given_name }}")
    (folder / "email.en.txt.j2").write_text("Predicted: {{ predicted }} {{ currency }}")
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(tmp_path / "templates"))
    with shop.connect() as conn:
        frame, _ = score_customers(conn, AS_OF)
    develop = frame[frame["quadrant"] == "develop"]
    assert len(develop)
    cid = int(develop["customer_id"].iloc[0])
    text = preview_message(shop, "develop_care", cid, AS_OF.isoformat(), None, load_settings())
    assert "Predicted:" in text and "GBP" in text

"""Contacted against held out: the statistics against published values, the report against a
hand computation on SQLite and PostgreSQL, and the command an operator types."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta

import pytest
from click.testing import CliRunner
from scipy import stats
from sqlalchemy import insert

from careflow.cli.main import main
from careflow.db.models import ContactHistory, Order
from careflow.uplift import load_units, uplift_report, verdict
from careflow.uplift_stats import (
    mde,
    newcombe,
    power_two_proportions,
    sample_size,
    welch,
    wilson,
)
from tests.factories import add_customer

Z = 1.959963984540054


# --- the statistics, against published values --------------------------------------------
def test_sample_size_and_mde_match_r_power_prop_test():
    # R's documentation of power.prop.test: p1 = .50, p2 = .75, power = .90 gives n = 76.7
    n = sample_size(0.50, 0.75, power=0.90)
    assert round(n, 1) == 76.7
    assert power_two_proportions(n, n, 0.50, 0.75) == pytest.approx(0.90, abs=1e-6)
    # and the MDE is its inverse: groups of that size detect exactly 25 points
    assert mde(n, n, 0.50, power=0.90) == pytest.approx(0.25, abs=1e-6)
    # unequal groups detect less than equal ones of the same total
    assert mde(1800, 200, 0.03) > mde(1000, 1000, 0.03)
    assert mde(0, 100, 0.03) is None


def test_wilson_and_newcombe_match_newcombe_1998():
    # Newcombe (1998), Statistics in Medicine 17: 81/263 -> 0.2553 to 0.3662 (Wilson), and
    # 56/70 against 48/80 -> difference 0.2000, 0.0524 to 0.3339 (method 10)
    lo, hi = wilson(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    d, lo, hi = newcombe(56, 70, 48, 80)
    assert (round(d, 4), round(lo, 4), round(hi, 4)) == (0.2, 0.0524, 0.3339)


def test_welch_matches_scipy():
    a, b = [0, 0, 129, 0, 268, 0, 399, 0], [0, 0, 0, 129, 0]
    d, lo, hi = welch(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert d == pytest.approx(sum(a) / len(a) - sum(b) / len(b))
    assert (lo, hi) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert welch([1], [1, 2]) is None


def test_the_verdict_says_plainly_when_groups_are_too_small():
    small = verdict(30, 300, 2, 30)
    assert small.startswith("too few customers to tell: need about ")
    assert "per group to detect 3.3 points" in small
    need = int(small.split("need about ")[1].split(" per")[0].replace(",", ""))
    assert need == math.ceil(sample_size(2 / 30, 2 / 30 + 1 / 30))
    clear = verdict(600, 10_000, 30, 1_000)
    assert clear.startswith("contacted customers converted 3.0 points more often")
    assert "no held-out customers" in verdict(5, 50, 0, 0)


# --- the report, against a hand computation ------------------------------------------------
MAY = datetime(2026, 5, 1, 12)
JUNE = datetime(2026, 6, 1, 12)


def ledger_row(cid, state, at, occasion):
    return {
        "campaign": "birthday",
        "customer_id": cid,
        "occasion": occasion,
        "state": state,
        "reason": "holdout" if state == "held_out" else None,
        "attempts": 0,
        "retryable": False,
        "created_at": at,
        "updated_at": at,
        "selected_at": at,
        "sent_at": at if state == "sent" else None,
    }


def order(cid, at, amount):
    return {
        "customer_id": cid,
        "ordered_at": at,
        "ordered_on": at.date(),
        "currency": "GBP",
        "amount_minor": amount,
    }


@pytest.fixture
def shop(engine):
    """May: customers 1-20 contacted, 21-25 held out; June: 31-50 contacted, 51-60 held out.

    Orders (GBP, minor units) in each unit's 7-day window after selection, and a few
    outside it that must not count."""
    rows, orders = [], []
    for cid in range(1, 61):
        add_customer(engine, cid)
    for cid in range(1, 21):
        rows.append(ledger_row(cid, "sent", MAY, "2026-05"))
    for cid in range(21, 26):
        rows.append(ledger_row(cid, "held_out", MAY, "2026-05"))
    for cid in range(31, 51):
        rows.append(ledger_row(cid, "sent", JUNE, "2026-06"))
    for cid in range(51, 61):
        rows.append(ledger_row(cid, "held_out", JUNE, "2026-06"))
    # June, contacted: 31, 32, 33 buy (32 twice); held out: 51 buys
    orders += [
        order(31, JUNE + timedelta(hours=2), 1290),
        order(32, JUNE + timedelta(days=1), 2680),
        order(32, JUNE + timedelta(days=6), 1000),
        order(33, JUNE + timedelta(days=7), 3990),  # the window's last instant: counted
        order(51, JUNE + timedelta(days=3), 1290),
        order(34, JUNE + timedelta(days=7, minutes=1), 5000),  # just after: not counted
        order(52, JUNE - timedelta(hours=1), 5000),  # before selection: not counted
    ]
    # May, contacted: 1 buys; held out: nobody
    orders += [order(1, MAY + timedelta(days=2), 1290)]
    with engine.begin() as conn:
        conn.execute(insert(ContactHistory.__table__), rows)
        conn.execute(insert(Order.__table__), orders)
    return engine


def test_report_numbers_equal_a_hand_computation(shop):
    found = uplift_report(
        shop, "birthday", window_days=7, shop_zone="UTC", since=date(2026, 6, 1),
        now=datetime(2026, 7, 1),
    )  # fmt: skip
    # by hand: June only. Contacted 20, of whom 3 bought; held out 10, of whom 1.
    n1, x1, n0, x0 = 20, 3, 10, 1
    p1, p0 = x1 / n1, x0 / n0
    g = found["groups"]
    assert (g["contacted"]["customers"], g["contacted"]["converted"]) == (n1, x1)
    assert (g["held_out"]["customers"], g["held_out"]["converted"]) == (n0, x0)
    assert g["contacted"]["conversion"] == 15.0 and g["held_out"]["conversion"] == 10.0

    def wilson_by_hand(x, n):
        p = x / n
        mid = (2 * n * p + Z**2) / (2 * (n + Z**2))
        half = Z * math.sqrt(Z**2 + 4 * n * p * (1 - p)) / (2 * (n + Z**2))
        return mid - half, mid + half

    l1, u1 = wilson_by_hand(x1, n1)
    l0, u0 = wilson_by_hand(x0, n0)
    assert g["contacted"]["conversion_ci"] == [round(100 * l1, 4), round(100 * u1, 4)]
    d = p1 - p0
    lower = d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    up = found["conversion_uplift"]
    assert up["points"] == 5.0
    assert up["ci"] == [round(100 * lower, 4), round(100 * upper, 4)]

    # revenue per customer: 12.90 + 26.80 + 10.00 + 39.90 over 20; 12.90 over 10
    contacted = [12.90, 36.80, 39.90] + [0.0] * 17
    held = [12.90] + [0.0] * 9
    assert g["contacted"]["revenue_per_customer"] == {"GBP": round(89.60 / 20, 2)}
    assert g["held_out"]["revenue_per_customer"] == {"GBP": 1.29}
    ci = stats.ttest_ind(contacted, held, equal_var=False).confidence_interval(0.95)
    assert found["revenue_uplift"]["GBP"] == [
        round(89.60 / 20 - 1.29, 2), round(float(ci.low), 2), round(float(ci.high), 2)
    ]  # fmt: skip
    assert found["verdict"].startswith("too few customers to tell: need about")
    assert found["occasions"] == ["2026-06"] and found["windows_open"] == 0


def test_recurring_occasions_pool_over_a_date_range(shop):
    found = uplift_report(shop, "birthday", window_days=7, shop_zone="UTC",
                          now=datetime(2026, 7, 1))  # fmt: skip
    g = found["groups"]
    assert found["occasions"] == ["2026-05", "2026-06"]
    assert (g["contacted"]["customers"], g["contacted"]["converted"]) == (40, 4)
    assert (g["held_out"]["customers"], g["held_out"]["converted"]) == (15, 1)
    may = uplift_report(shop, "birthday", window_days=7, shop_zone="UTC",
                        until=date(2026, 5, 31), now=datetime(2026, 7, 1))  # fmt: skip
    assert may["occasions"] == ["2026-05"] and may["groups"]["contacted"]["converted"] == 1
    # a window that has not closed yet is said to be open
    early = uplift_report(shop, "birthday", window_days=7, shop_zone="UTC",
                          now=JUNE + timedelta(days=2))  # fmt: skip
    assert early["windows_open"] == 30


def test_orders_keep_the_shops_clock(shop, engine):
    # orders are stored on the shop's clock. In Shanghai (UTC+8) 19:00 on June 8 is 11:00
    # UTC, inside the window that ends at 12:00 UTC; read as UTC it would be outside
    with engine.begin() as conn:
        conn.execute(insert(Order.__table__), [order(35, datetime(2026, 6, 8, 19), 700)])

    def buyers(zone):
        units = load_units(engine, "birthday", 7, zone, since=date(2026, 6, 1))
        return {u.customer_id for u in units if u.converted}

    assert 35 not in buyers("UTC") and 35 in buyers("Asia/Shanghai")


# --- the command ------------------------------------------------------------------------
def test_cli_report_uplift(shop, monkeypatch):
    monkeypatch.setenv("CAREFLOW_ATTRIBUTION_WINDOW_DAYS", "7")
    runner = CliRunner()
    out = runner.invoke(main, ["report", "uplift", "birthday", "--since", "2026-06-01"])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "birthday: contacted against held out, taken up from 2026-06-01; 1 occasion(s) pooled (2026-06)" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "20" in lines["contacted"] and "15.0%" in lines["contacted"]
    assert "held out" in text and "10.0%" in lines["held"]
    assert "+5.0 pts" in lines["uplift"] and "GBP" in lines["uplift"]
    assert "too few customers to tell: need about" in text

    out = runner.invoke(main, ["report", "uplift", "birthday", "--json"])
    data = json.loads(out.output)
    assert data["groups"]["held_out"]["customers"] == 15

    out = runner.invoke(main, ["report", "uplift", "birthday", "--since", "June"])
    assert out.exit_code == 2 and "--since 'June' is not a date" in out.output
    assert "Traceback" not in out.output
    out = runner.invoke(
        main, ["report", "uplift", "birthday", "--since", "2026-07-01", "--until", "2026-06-01"]
    )
    assert out.exit_code == 2 and "is after --until" in out.output
    out = runner.invoke(main, ["report", "uplift", "brithday"])
    assert out.exit_code == 2 and "Did you mean 'birthday'?" in out.output
    out = runner.invoke(main, ["report", "uplift", "winback"])
    assert out.exit_code == 0 and "nobody contacted or held out" in out.output


def test_the_run_artifact_reads_whole_and_names_customers_without_contact_details():
    from careflow.report import summary_markdown

    why = "quiet hours 21:00-09:00 in Pacific/Auckland; " + "the customer's own zone " * 20
    summary = {
        "campaign": "birthday", "as_of": "2026-12-07", "dry_run": False, "delivery": "outbox",
        "selected": 2, "sent": 0, "held_out": 0, "already": {}, "skipped": {}, "failed": {},
        "deferred": {"quiet_hours": 1},
        "decisions": [
            {"customer_id": 7, "name": "李娜 *bold* [x](http://e.invalid)", "ref": "C007",
             "action": "defer", "reason": "quiet_hours", "channel": "sms",
             "until": "2026-12-07T20:00+00:00", "detail": why},
            {"customer_id": 8, "name": None, "ref": None, "action": "skip",
             "reason": "no_consent", "channel": None, "until": None, "detail": ""},
        ],
        "split": {"share": 0.1, "to_contact": 90, "held_out": 10, "baseline": 3.0,
                  "baseline_source": "default", "mde_points": 95.8},
    }  # fmt: skip
    text = summary_markdown(summary)
    assert (
        "Too few customers to tell whether this campaign works: a difference smaller than "
        "95.8 points in how many buy would go unnoticed (90 customers to contact, 10 held "
        "out (10%); 80% power, buying rate without the message 3%)." in text
    )
    lines = text.splitlines()
    deferred = next(line for line in lines if "defer quiet_hours" in line)
    assert deferred.startswith("- **李娜 \\*bold\\* \\[x\\](http://e.invalid)** (ref C007, id 7)")
    assert "defer quiet_hours until 2026-12-07 20:00 UTC: " in deferred
    assert " ".join(why.split()) in deferred  # the reason whole, never cut
    assert "- (id 8): skip no_consent" in lines

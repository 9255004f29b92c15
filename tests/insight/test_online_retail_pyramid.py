"""The pyramid report on the real UCI Online Retail file against plain pandas,
on SQLite and PostgreSQL.

The file is imported with `careflow import orders`' own importer into each
database; the expected figures are computed here from the CSV alone, with
pandas and the written rules, sharing no code with careflow. The only thing
read back from the database is which careflow id each CustomerID got, since
RFM ties are broken in an order of those ids.

Rules (as_of is a calendar date; window 365 days; the previous date 90 days
earlier):

- purchases: rows with a CustomerID, an InvoiceNo not starting with "C" and
  Quantity > 0; a row repeated exactly counts once. A line is worth
  Quantity x UnitPrice rounded half up to the penny.
- a buyer bought on a day in (as_of - 365, as_of]; monetary = the sum of
  their lines in the window, frequency = distinct purchase days in it,
  days_since = as_of - their last purchase day.
- tier: with rank = 1 + buyers who spent strictly more, VIP when
  (rank - 1) < 1% of N, Large < 5%, Medium < 20%, else Small.
- R, F, M score: buyers ordered best first (fewest days since; most days;
  most money), equal values by (id mod P) x A mod P and then id
  (P = 2^31 - 1, A = 1327217885); position p = 1..N scores 5 - floor(5(p - 1)/N).
- movement: tiers now against tiers at the previous date; a buyer then and
  not now is inactive; a buyer now and not then is new, or returning when
  they had bought on or before the previous date.
"""

from __future__ import annotations

import os
import uuid
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, select, text

from careflow import db
from careflow.db.models import Customer
from careflow.importers.orders import import_orders
from careflow.insight.pyramid import pyramid_report
from tests.conftest import PG_ADMIN_URL, _postgres_available

DATA = Path(os.environ.get("CAREFLOW_ONLINE_RETAIL", "/work/shared/data/online_retail.csv.gz"))
AS_OF = date(2011, 12, 10)
PREVIOUS = AS_OF - timedelta(days=90)
P, A = 2_147_483_647, 1_327_217_885

pytestmark = [
    pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} not available"),
    pytest.mark.xdist_group("online-retail-pyramid"),  # one import per database
]


@pytest.fixture(scope="module")
def lines() -> pd.DataFrame:
    """Purchase lines of the whole file: customer, day, pence."""
    df = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    quantity = pd.to_numeric(df["Quantity"])
    df = df[(df["CustomerID"] != "") & ~df["InvoiceNo"].str.startswith("C") & (quantity > 0)]
    df = df.drop_duplicates()
    cent = Decimal("0.01")
    pence = [
        int((Decimal(price) * int(qty)).quantize(cent, rounding=ROUND_HALF_UP) * 100)
        for price, qty in zip(df["UnitPrice"], df["Quantity"], strict=True)
    ]
    return pd.DataFrame(
        {
            "ref": df["CustomerID"].str.strip().to_numpy(),
            "day": pd.to_datetime(df["InvoiceDate"].str[:10]).to_numpy(),
            "pence": pence,
        }
    )


# SQLite runs in every test run (about 15 s); PostgreSQL's import takes about 30 s more,
# so it is marked slow: `pytest -m slow tests/insight` runs it.
@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])],
)
def retail(request, tmp_path_factory):
    """An engine on a database holding the whole file, imported by careflow's importer."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('retail') / 'retail.db'}"
        admin, name = None, None
    else:
        if not _postgres_available():
            pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
        name = f"careflow_retail_{uuid.uuid4().hex[:10]}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    db.upgrade(url)
    engine = db.engine_for(url)
    import_orders(engine, DATA)
    yield engine
    engine.dispose()
    db.engines.dispose_all()
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _expected_pyramid(lines: pd.DataFrame, ids: dict[str, int], as_of: date) -> pd.DataFrame:
    stamp = pd.Timestamp(as_of)
    window = lines[(lines["day"] <= stamp) & (lines["day"] > stamp - pd.Timedelta(days=365))]
    by = window.groupby("ref")
    buyers = pd.DataFrame(
        {
            "monetary": by["pence"].sum(),
            "frequency": by["day"].nunique(),
            "days_since": (stamp - by["day"].max()).dt.days,
        }
    )
    buyers["id"] = buyers.index.map(ids)
    n = len(buyers)
    rank = buyers["monetary"].rank(method="min", ascending=False).astype(int)
    buyers["tier"] = "Small"
    for tier, pct in (("Medium", 20), ("Large", 5), ("VIP", 1)):
        buyers.loc[(rank - 1) * 100 < n * pct, "tier"] = tier
    buyers["tie"] = (buyers["id"] % P) * A % P
    for score, column, best_first_ascending in (
        ("r_score", "days_since", True),
        ("f_score", "frequency", False),
        ("m_score", "monetary", False),
    ):
        ordered = buyers.sort_values(
            [column, "tie", "id"], ascending=[best_first_ascending, True, True]
        )
        position = pd.Series(range(1, n + 1), index=ordered.index)
        buyers[score] = 5 - (5 * (position - 1)) // n
    return buyers


@pytest.fixture(scope="module")
def expected(lines, retail):
    with retail.connect() as conn:
        ids = {ref: cid for ref, cid in conn.execute(select(Customer.external_ref, Customer.id))}
    now = _expected_pyramid(lines, ids, AS_OF)
    then = _expected_pyramid(lines, ids, PREVIOUS)
    return now, then


@pytest.fixture(scope="module")
def report(retail):
    return pyramid_report(retail, AS_OF, previous=PREVIOUS)


def test_tier_counts_and_revenue_shares_equal_pandas(report, expected):
    now, _ = expected
    assert report.buyers == len(now) == 4_259  # documented: buyers in the year to 2011-12-10
    assert report.revenue_minor == now["monetary"].sum()
    tiers = report.tiers.set_index("tier")
    want = now.groupby("tier")["monetary"].agg(["size", "sum", "min", "max"])
    for tier in ("VIP", "Large", "Medium", "Small"):
        assert tiers.loc[tier, "customers"] == want.loc[tier, "size"]
        assert tiers.loc[tier, "revenue_minor"] == want.loc[tier, "sum"]
        assert tiers.loc[tier, "revenue_share"] == want.loc[tier, "sum"] / now["monetary"].sum()
        assert tiers.loc[tier, "min_minor"] == want.loc[tier, "min"]
        assert tiers.loc[tier, "max_minor"] == want.loc[tier, "max"]
    # the playbook's shape: 1% of buyers bring about a third of the revenue here
    assert list(tiers["customers"]) == [43, 170, 639, 3_407]


def test_rfm_distributions_and_every_score_equal_pandas(report, expected):
    now, _ = expected
    got = report.customers[report.customers["tier"] != "Inactive"].set_index("ref")
    for score, column in (("r_score", "days_since"), ("f_score", "frequency"),
                          ("m_score", "monetary")):
        assert (got[score].astype(int) == now.loc[got.index, score]).all(), score
        table = report.scores[report.scores["measure"] == score[0].upper()].set_index("score")
        want = now.groupby(score)[column].agg(["size", "min", "max"])
        for s in range(1, 6):
            assert table.loc[s, "customers"] == want.loc[s, "size"]
            assert (table.loc[s, "low"], table.loc[s, "high"]) == (want.loc[s, "min"],
                                                                   want.loc[s, "max"])
        # a fifth each: 4,259 buyers = 852 x 4 + 851
        assert sorted(table["customers"]) == [851, 852, 852, 852, 852]
    grid = report.grid.set_index(["r_score", "f_score"])["customers"]
    want_grid = now.groupby(["r_score", "f_score"]).size()
    assert all(grid[cell] == want_grid.get(cell, 0) for cell in grid.index)
    assert grid[(1, 1)] > 0  # lapsed one-day buyers do have F=1


def test_tier_movement_equals_pandas(report, expected, lines):
    now, then = expected
    before_ever = set(lines.loc[lines["day"] <= pd.Timestamp(PREVIOUS), "ref"])
    order = {"VIP": 0, "Large": 1, "Medium": 2, "Small": 3}
    want = {"up": 0, "same": 0, "down": 0, "inactive": 0, "new": 0, "returning": 0}
    for ref in set(now.index) | set(then.index):
        if ref not in now.index:
            want["inactive"] += 1
        elif ref not in then.index:
            want["returning" if ref in before_ever else "new"] += 1
        else:
            step = order[then.loc[ref, "tier"]] - order[now.loc[ref, "tier"]]
            want["up" if step > 0 else "down" if step < 0 else "same"] += 1
    got = dict(zip(report.movement_summary["movement"], report.movement_summary["customers"],
                   strict=True))
    assert got == want


def test_batches_of_a_campaign_run_agree_with_the_report(retail, report):
    """A vip run scores batch by batch with prepare's cut values: the same tiers and
    scores as the report's whole-population query, on real data full of ties."""
    from careflow import segments

    with retail.connect() as conn:
        params = segments.prepare("pyramid", conn, AS_OF, {})
        got = {}
        for lo in range(1, 4_400, 500):
            query = segments.build("pyramid", AS_OF, params, id_range=(lo, lo + 499))
            got |= {r.customer_id: (r.tier, r.r_score, r.f_score, r.m_score)
                    for r in conn.execute(query)}
    now = report.customers[report.customers["tier"] != "Inactive"]
    want = {r.customer_id: (r.tier, r.r_score, r.f_score, r.m_score) for r in now.itertuples()}
    assert got == want

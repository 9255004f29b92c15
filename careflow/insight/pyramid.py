"""The pyramid and RFM report: tiers, revenue shares, score ranges, the RFM grid and
tier movement since a previous date, computed once into plain data.

The numbers are the ``pyramid`` segment's own (careflow/segments/vip.py): the report
runs the same select a campaign selects by, so what an analyst reads here
is what the ``vip`` campaign will do. Everything below is arithmetic on its
rows in pandas; money stays in integer minor units until a skin shows it.

Movement compares the pyramid at ``as_of`` with the pyramid at ``previous``
(by default 90 days earlier), each over its own window:

- ``up`` / ``down`` / ``same``: a buyer in both, in a higher, lower or the
  same tier now;
- ``inactive``: a buyer then, no purchase in the window now;
- ``new``: a buyer now whose first purchase came after ``previous``;
- ``returning``: a buyer now, not in the previous window, but who had
  bought before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
from sqlalchemy import Engine, select

from careflow import segments
from careflow.clock import check_in_range
from careflow.db.models import Customer, Order
from careflow.errors import ConfigError
from careflow.insight.currency import CurrencyChoice, choose_currency
from careflow.money import check_stored_amounts
from careflow.segments.vip import TIERS

#: the tier axis of the movement table: the pyramid plus who is outside it
BEFORE = (*TIERS, "Returning", "New")
AFTER = (*TIERS, "Inactive")
MOVEMENTS = ("up", "same", "down", "inactive", "new", "returning")
MEASURES = {"r_score": "days_since", "f_score": "frequency", "m_score": "monetary_minor"}
DEFAULT_PERIOD_DAYS = 90

_COLUMNS = [
    "customer_id", "ref", "tier", "r_score", "f_score", "m_score",
    "days_since", "frequency", "monetary_minor", "currency",
]  # fmt: skip


@dataclass(frozen=True)
class PyramidReport:
    """Everything the pyramid report shows, as data. Money in minor units of ``currency``."""

    as_of: date
    previous: date
    params: dict
    currency: str | None
    buyers: int
    revenue_minor: int
    #: tier, customers, customer_share, revenue_minor, revenue_share, min_minor, max_minor
    tiers: pd.DataFrame
    #: score, measure, column, customers, share, low, high (the raw values each score holds)
    scores: pd.DataFrame
    #: r_score, f_score, customers, monetary_minor (sum), mean_monetary_minor; all 25 cells
    grid: pd.DataFrame
    #: before (BEFORE), after (AFTER), customers: the non-empty cells
    movement: pd.DataFrame
    #: movement (MOVEMENTS), customers
    movement_summary: pd.DataFrame
    #: one row per customer in either pyramid: _COLUMNS plus previous_tier, movement
    customers: pd.DataFrame
    #: which currency the report ranks, why, and the orders in others it leaves out
    currency_choice: CurrencyChoice | None = None


def pyramid_report(
    engine: Engine,
    as_of: date,
    *,
    previous: date | None = None,
    params: dict | None = None,
    main_currency: str | None = None,
) -> PyramidReport:
    """The report at ``as_of``, moved against ``previous`` (default: 90 days earlier).

    ``params`` are the ``pyramid`` segment's (window_days, the tier shares,
    currency), checked the same way. Without ``currency`` the report ranks the shop's
    ``main_currency``, else the one with the most revenue in the window, and says so
    (careflow/insight/currency.py).
    """
    checked = segments.validate_params("pyramid", params or {})
    previous = previous or as_of - timedelta(days=DEFAULT_PERIOD_DAYS)
    check_in_range(as_of, "as-of date")
    check_in_range(previous, "previous date")
    if previous >= as_of:
        raise ConfigError(
            f"the previous date {previous.isoformat()} must come before the as-of date "
            f"{as_of.isoformat()}"
        )
    with engine.connect() as conn:
        check_stored_amounts(conn)  # one line naming an order no sum can hold
        choice = choose_currency(
            conn, as_of, window_days=checked["window_days"], asked=checked.get("currency"),
            main=main_currency,
        )  # fmt: skip
        if choice.code and not checked.get("currency"):
            checked = segments.validate_params("pyramid", {**(params or {}),
                                                           "currency": choice.code})
        now = _pyramid_frame(conn, as_of, checked)
        then = _pyramid_frame(conn, previous, checked)
        currency = _one_currency(now, checked.get("currency"))
        returning = _bought_by(conn, set(now.customer_id) - set(then.customer_id), previous)
    customers = _movement(now, then, returning)
    movement = (
        customers.groupby(["previous_tier", "tier"], observed=True)
        .size()
        .rename("customers")
        .reset_index()
        .rename(columns={"previous_tier": "before", "tier": "after"})
    )
    summary = (
        customers["movement"].value_counts().reindex(MOVEMENTS, fill_value=0).rename("customers")
    )
    return PyramidReport(
        as_of=as_of,
        previous=previous,
        params={k: v for k, v in checked.items() if k != "cutoffs"},
        currency=currency,
        buyers=len(now),
        revenue_minor=int(now["monetary_minor"].sum()),
        tiers=_tiers(now),
        scores=_scores(now),
        grid=_grid(now),
        movement=movement,
        movement_summary=summary.rename_axis("movement").reset_index(),
        customers=customers,
        currency_choice=choice,
    )


def _pyramid_frame(conn, as_of: date, params: dict) -> pd.DataFrame:
    """The pyramid segment's rows at ``as_of`` with each customer's ref."""
    seg = segments.build("pyramid", as_of, params).subquery("seg")
    query = (
        select(seg, Customer.external_ref.label("ref"))
        .join(Customer, Customer.id == seg.c.customer_id)
        .order_by(seg.c.customer_id)
    )
    rows = conn.execute(query).mappings().all()
    frame = pd.DataFrame([{c: r[c] for c in _COLUMNS} for r in rows], columns=_COLUMNS)
    for column in ("customer_id", "r_score", "f_score", "m_score", "days_since", "frequency",
                   "monetary_minor"):  # fmt: skip
        frame[column] = frame[column].astype("int64")
    return frame


def _one_currency(frame: pd.DataFrame, asked: str | None) -> str | None:
    """The currency every amount is in; ConfigError when the sums mix currencies."""
    if asked:
        return asked
    seen = set(frame["currency"].dropna())
    if len(seen) > 1 or (len(frame) and frame["currency"].isna().any()):
        names = ", ".join(sorted(seen)) or "several"
        raise ConfigError(
            f"buyers paid in more than one currency ({names}): choose one with "
            "--param currency=CODE (a pyramid ranks one currency)"
        )
    return next(iter(seen), None)


def _bought_by(conn, ids: set[int], day: date) -> set[int]:
    """Which of ``ids`` had bought anything on or before ``day``."""
    if not ids:
        return set()
    query = select(Order.customer_id).where(Order.ordered_on <= day).distinct()
    return {cid for cid in conn.execute(query).scalars() if cid in ids}


def _tiers(now: pd.DataFrame) -> pd.DataFrame:
    grouped = now.groupby("tier")["monetary_minor"]
    tiers = pd.DataFrame(
        {
            "customers": grouped.size(),
            "revenue_minor": grouped.sum(),
            "min_minor": grouped.min(),
            "max_minor": grouped.max(),
        }
    ).reindex(list(TIERS))
    tiers["customers"] = tiers["customers"].fillna(0).astype("int64")
    tiers["revenue_minor"] = tiers["revenue_minor"].fillna(0).astype("int64")
    total_customers, total_revenue = tiers["customers"].sum(), tiers["revenue_minor"].sum()
    tiers["customer_share"] = tiers["customers"] / total_customers if total_customers else 0.0
    tiers["revenue_share"] = tiers["revenue_minor"] / total_revenue if total_revenue else 0.0
    tiers = tiers.rename_axis("tier").reset_index()
    order = ["tier", "customers", "customer_share", "revenue_minor", "revenue_share"]
    return tiers[[*order, "min_minor", "max_minor"]].astype({"min_minor": "Int64",
                                                             "max_minor": "Int64"})


def _scores(now: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for score, column in MEASURES.items():
        grouped = now.groupby(score)[column]
        part = pd.DataFrame(
            {"customers": grouped.size(), "low": grouped.min(), "high": grouped.max()}
        ).reindex(range(5, 0, -1))
        part["customers"] = part["customers"].fillna(0).astype("int64")
        part["share"] = part["customers"] / len(now) if len(now) else 0.0
        part["measure"] = score[0].upper()
        part["column"] = column
        parts.append(part.rename_axis("score").reset_index())
    scores = pd.concat(parts, ignore_index=True)
    scores = scores.astype({"low": "Int64", "high": "Int64"})
    return scores[["measure", "score", "column", "customers", "share", "low", "high"]]


def _grid(now: pd.DataFrame) -> pd.DataFrame:
    """Customers and money per (R, F) cell; every one of the 25 cells, empty ones as 0."""
    cells = pd.MultiIndex.from_product([range(5, 0, -1), range(1, 6)], names=["r_score", "f_score"])
    grouped = now.groupby(["r_score", "f_score"])["monetary_minor"]
    grid = pd.DataFrame({"customers": grouped.size(), "monetary_minor": grouped.sum()})
    grid = grid.reindex(cells, fill_value=0).astype("int64")
    grid["mean_monetary_minor"] = (
        (grid["monetary_minor"] / grid["customers"]).where(grid["customers"] > 0).round()
    ).astype("Int64")
    return grid.reset_index()


def _movement(now: pd.DataFrame, then: pd.DataFrame, returning: set[int]) -> pd.DataFrame:
    rank = {tier: i for i, tier in enumerate(TIERS)}  # 0 = VIP, the top
    before = then.set_index("customer_id")["tier"]
    merged = now.copy()
    merged["previous_tier"] = merged["customer_id"].map(before)
    gone = then[~then["customer_id"].isin(now["customer_id"])].copy()
    gone = gone[["customer_id", "ref", "tier"]].rename(columns={"tier": "previous_tier"})
    gone["tier"] = "Inactive"
    out = pd.concat([merged, gone], ignore_index=True).sort_values("customer_id")
    # the inactive have no scores now: whole numbers with gaps
    ints = ["r_score", "f_score", "m_score", "days_since", "frequency", "monetary_minor"]
    out = out.astype(dict.fromkeys(ints, "Int64"))

    def moved(row) -> str:
        if row.tier == "Inactive":
            return "inactive"
        if pd.isna(row.previous_tier):
            return "returning" if row.customer_id in returning else "new"
        step = rank[row.previous_tier] - rank[row.tier]
        return "up" if step > 0 else "down" if step < 0 else "same"

    out["movement"] = pd.Series([moved(r) for r in out.itertuples()], index=out.index,
                                dtype="str")
    outside = out["movement"].map({"new": "New", "returning": "Returning"})
    out["previous_tier"] = out["previous_tier"].where(out["previous_tier"].notna(), outside)
    out["previous_tier"] = pd.Categorical(out["previous_tier"], categories=BEFORE)
    out["tier"] = pd.Categorical(out["tier"], categories=AFTER)
    return out.reset_index(drop=True)

"""vip and pyramid: the customer pyramid and RFM scores over a window.

The playbook's pyramid ranks customers who bought in the window by money
spent: VIP = top 1%, Large = next 4%, Medium = next 15%, Small = the rest.
Cuts are made on *rank*, with ties kept together: a customer is in a tier
when fewer than that tier's share of buyers spent strictly more than they
did. So customers tied at a boundary all go to the higher tier, and the top
spender is always VIP however few buyers there are. Tiers decide wording
("as one of our VIPs..."), so two customers who spent the same are treated
the same; exact ties in money are rare, so the shares still hold.

RFM scores 1-5 (5 is best) are *rank-based quintiles*: recency = days since
the last purchase (fewer is better), frequency = distinct purchase days in
the window, monetary = amount in the window. Buyers are put in one order per
measure, best first; with ``N`` buyers, the buyer at position ``pos``
(1 = best) scores ``5 - floor(5 x (pos - 1) / N)``: 5 when fewer than 20% of
buyers come before them, 4 when fewer than 40%, and so on. So every score
holds N/5 buyers, give or take one, whenever N >= 5. It is SQL's
``row_number()`` cut into fifths (``ntile(5)`` with the odd buyers spread
over the scores instead of piled on the top ones), and pandas'
``qcut(x.rank(method="first"), 5)`` up to one buyer at a boundary.

Ties (equal values) are broken in a fixed pseudo-random order of customer
ids, ``tie_key(id) = (id mod P) x A mod P`` with P = 2^31 - 1 and
A = 1327217885 (about P / golden ratio, so consecutive ids land far apart),
then by id. Deterministic, the same in SQL, pandas and a spreadsheet, and
unrelated to when a customer was created. Breaking ties by plain id would
favour old customers: on the Online Retail data every lapsed one-day buyer
(low ids) got F=2 and every recent one (high ids) F=1, so the R=1 x F=1
cell of the RFM grid was empty.

The alternatives, and why not (docs/insight.md shows them on real data):

- ties kept together (``rank()``, what careflow did before): most buyers
  bought on one day only, so that tie spans a third of buyers and lands in
  one score: F=1 never occurred, and other scores were empty;
- mid-rank groups (SAS PROC RANK GROUPS=5, TIES=MEAN): F=1 exists, but a
  tie wider than a fifth still empties a neighbouring score (F=2 here);
- quintiles of the values (``pd.qcut(x, 5)``): bin edges collide on ties
  (qcut refuses them, or drops bins with ``duplicates="drop"``);
- random tie-breaking (SPSS "randomly assign ties"): fifths too, but a
  customer's score changes from run to run;
- fixed business thresholds (F: 1, 2, 3-4, 5-9, 10+ days): readable but not
  quintiles, and they need tuning per shop.

The price of fifths is that equal values can get neighbouring scores (two
one-day buyers may get F=1 and F=2): the raw ``frequency``, ``days_since``
and ``monetary`` stand next to every score, and `careflow report pyramid`
prints the range of raw values each score holds.

Tiers and scores need every buyer. Computed with window functions that is
one query over the whole population, fine once but repeated by every batch
of a run. So ``prepare`` computes the cut values once (the amount at the
VIP, Large and Medium boundaries, and for each of R, F and M the value and
customer id of the last buyer in the top 20/40/60/80%); given those
``cutoffs``, each batch scores only its own customers. Both ways give
the same answer (tests/segments/test_vip.py checks it): "fewer than p x N
buyers strictly better" is the same as "at least as good as the buyer at
position ceil(p x N)", comparing (value, tie_key, id) for the scores.

Each buyer's window (money, purchase days, last purchase) comes from
``careflow/purchase_windows.py``, which keeps it for a run's as-of day and
rolls it a day at a time, instead of summing a year of orders on every run
(18 s at a million customers). ``prepare`` brings the window to as-of and
reads the buyer at each position off the window's index for that measure;
while some customer's orders wait for a refresh it sorts every buyer
instead, with the same result.

Money is summed exactly, as integer minor units (careflow/money.py), so
"spent exactly the cut value" means the same in both ways on every
database: the cut values are integers too. ``monetary_minor`` comes with
the ``currency`` it is in; templates see it as ``monetary``, a Decimal.
Without ``currency=`` the pyramid ranks sums across currencies as they
are, which only makes sense for one currency: a shop selling in several
should run one pyramid per currency. A buyer who paid in more than one
currency gets ``currency`` NULL, so no template prints their mixed sum
as if it were one currency.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import BigInteger, Select, case, exists, func, literal, select, union_all
from sqlalchemy.engine import Connection

from careflow import purchase_windows
from careflow.db.models import PurchaseFactsDirty, PurchaseWindow
from careflow.db.sqlfunc import day_number_of
from careflow.purchase_windows import tie_key, tie_key_sql
from careflow.segments._params import SegmentParams
from careflow.segments._registry import Segment

TIERS = ("VIP", "Large", "Medium", "Small")
QUINTILES_BP = (2000, 4000, 6000, 8000)  # top 20%, 40%, 60%, 80% in basis points


def _bp(pct: float) -> int:
    """A percentage as whole basis points, so shares compare exactly in integers."""
    return round(pct * 100)


PERCENT = "a percentage above 0 and at most 100, in steps of 0.01"
Percent = Annotated[float, Field(strict=True, gt=0, le=100, json_schema_extra={"allowed": PERCENT})]
Amount = Annotated[Decimal, Field(allow_inf_nan=False)]
#: a score boundary: the value and customer id of the last buyer in the top 20/40/60/80%
Boundary = Annotated[list[int], Field(min_length=2, max_length=2)]
Quintiles = Annotated[list[Boundary], Field(min_length=4, max_length=4)]


class _MoneyCuts(BaseModel):
    VIP: Amount
    Large: Amount
    Medium: Amount
    quintiles: Quintiles


class _Quintiles(BaseModel):
    quintiles: Quintiles


class _Cutoffs(BaseModel):
    """The shape ``prepare`` returns; checked so a hand-edited one fails clearly."""

    buyers: int = Field(ge=1)
    monetary: _MoneyCuts
    frequency: _Quintiles
    recency: _Quintiles


class PyramidParams(SegmentParams):
    """Parameters of ``pyramid`` (and of ``vip``, which adds ``tiers``)."""

    window_days: int = Field(
        365,
        strict=True,
        ge=1,
        le=3650,
        description="Only purchases in the last this-many days up to as-of count.",
    )
    vip_pct: Percent = Field(1.0, description="Cumulative share of buyers that is VIP.")
    large_pct: Percent = Field(
        5.0, description="Cumulative share of buyers that is VIP or Large (>= vip_pct)."
    )
    medium_pct: Percent = Field(
        20.0,
        description="Cumulative share of buyers that is VIP, Large or Medium (>= large_pct); "
        "the rest are Small.",
    )
    currency: str | None = Field(
        None,
        strict=True,
        description="Only orders in this currency count (null: all, summed as stored).",
        json_schema_extra={"allowed": "a 3-letter currency code such as GBP, or null"},
    )
    cutoffs: dict | None = Field(
        None,
        description="The pyramid's cut values, filled in once per run by segments.prepare.",
        json_schema_extra={
            "internal": True,
            "allowed": "what segments.prepare returns (buyers, monetary, frequency, recency)",
        },
    )

    @field_validator("vip_pct", "large_pct", "medium_pct")
    @classmethod
    def _whole_basis_points(cls, pct: float) -> float:
        if abs(round(pct * 100) - pct * 100) > 1e-6:
            raise ValueError(f"share {pct}% is finer than 0.01%")
        return pct

    @field_validator("currency")
    @classmethod
    def _currency_code(cls, code: str | None) -> str | None:
        if code is None:
            return None
        if not re.fullmatch(r"[A-Za-z]{3}", code):
            raise ValueError("not a 3-letter code")
        return code.upper()

    @field_validator("cutoffs")
    @classmethod
    def _cutoffs_shape(cls, cutoffs: dict | None) -> dict | None:
        if cutoffs is not None:
            _Cutoffs.model_validate(cutoffs)  # the shape only; the values stay as given
        return cutoffs

    @model_validator(mode="after")
    def _shares_in_order(self) -> PyramidParams:
        if not self.vip_pct <= self.large_pct <= self.medium_pct:
            raise ValueError(
                "the shares are cumulative: need vip_pct <= large_pct <= medium_pct "
                f"(got {self.vip_pct}, {self.large_pct}, {self.medium_pct})"
            )
        return self

    def tier_bps(self) -> dict[str, int]:
        """Cumulative tier shares in basis points."""
        shares = {"VIP": self.vip_pct, "Large": self.large_pct, "Medium": self.medium_pct}
        return {name: _bp(pct) for name, pct in shares.items()}


class VipParams(PyramidParams):
    """Parameters of ``vip``: the pyramid's, plus which tiers to select."""

    tiers: Annotated[list[Literal[TIERS]], Field(min_length=1)] = Field(
        ["VIP", "Large"], description="The pyramid tiers to select."
    )

    @field_validator("tiers")
    @classmethod
    def _no_repeats(cls, tiers: list[str]) -> list[str]:
        return list(dict.fromkeys(tiers))


def _buyers(
    as_of: date,
    window_days: int,
    currency: str | None,
    id_range=None,
    min_monetary: int | None = None,
) -> Select:
    """Every buyer in the window: customer_id, monetary_minor, currency, frequency and
    days_since (from the kept window where it can, careflow/purchase_windows.py)."""
    b = purchase_windows.buyers(as_of, window_days, currency, id_range, min_monetary).subquery(
        "window"
    )
    return select(
        b.c.customer_id,
        b.c.monetary_minor,
        b.c.currency,
        b.c.frequency,
        (literal(day_number_of(as_of)) - b.c.last_day).label("days_since"),
    )


def pyramid(
    as_of: date, p: PyramidParams, *, id_range: tuple[int, int] | None = None
) -> Select:
    """Every buyer in the window with tier and R, F, M scores.

    ``*_pct`` are cumulative shares of buyers: the defaults give 1% VIP,
    4% Large, 15% Medium, 80% Small. ``cutoffs`` comes from ``prepare``.
    Columns: customer_id, monetary_minor, currency, frequency, days_since,
    buyers, tier, r_score, f_score, m_score.
    """
    window_days, currency, cutoffs, tier_bps = p.window_days, p.currency, p.cutoffs, p.tier_bps()
    if cutoffs is not None:
        return _with_cutoffs(_buyers(as_of, window_days, currency, id_range), cutoffs)

    buyers = _buyers(as_of, window_days, currency).cte("buyers")
    n = func.count().over()

    def position(measure):  # 1 = best; ties in tie_key order, so every buyer has one
        tie = (tie_key_sql(buyers.c.customer_id), buyers.c.customer_id)
        return func.row_number().over(order_by=(measure, *tie))

    ranked = select(
        buyers,
        n.label("buyers"),
        # the tier ranks money with ties kept together (rank); scores use positions
        func.rank().over(order_by=buyers.c.monetary_minor.desc()).label("tier_rank"),
        position(buyers.c.monetary_minor.desc()).label("m_rank"),
        position(buyers.c.days_since.asc()).label("r_rank"),
        position(buyers.c.frequency.desc()).label("f_rank"),
    ).cte("ranked")

    def within(rank, bp):  # fewer than bp/10000 of the buyers come before
        return (rank - 1) * 10000 < ranked.c.buyers * bp

    def score(rank):
        return case(*[(within(rank, bp), 5 - i) for i, bp in enumerate(QUINTILES_BP)], else_=1)

    tier = case(
        *[(within(ranked.c.tier_rank, bp), name) for name, bp in tier_bps.items()],
        else_="Small",
    )
    query = select(
        ranked.c.customer_id,
        ranked.c.monetary_minor,
        ranked.c.currency,
        ranked.c.frequency,
        ranked.c.days_since,
        ranked.c.buyers,
        tier.label("tier"),
        score(ranked.c.r_rank).label("r_score"),
        score(ranked.c.f_rank).label("f_score"),
        score(ranked.c.m_rank).label("m_score"),
    )
    if id_range is not None:
        # Ranks need every buyer, so the range is applied after ranking.
        query = query.where(ranked.c.customer_id.between(*id_range))
    return query


def _with_cutoffs(buyers: Select, cutoffs: dict) -> Select:
    b = buyers.subquery("buyers")
    m, f, r = cutoffs["monetary"], cutoffs["frequency"], cutoffs["recency"]

    def money(value):  # a cut value: integer minor units, compared exactly
        return literal(int(value), BigInteger)

    def score(column, boundaries, higher_is_better, as_value=literal):
        """5 for (value, id) at least as good as the top-20% boundary, 4 for the 40%..."""

        def reaches(boundary):
            value, last_id = as_value(boundary[0]), int(boundary[1])
            better = column > value if higher_is_better else column < value
            key, last_key = tie_key_sql(b.c.customer_id), literal(tie_key(last_id), BigInteger)
            before_in_ties = (key < last_key) | (
                (key == last_key) & (b.c.customer_id <= literal(last_id, BigInteger))
            )
            return better | ((column == value) & before_in_ties)

        return case(*[(reaches(c), 5 - i) for i, c in enumerate(boundaries)], else_=1)

    tier = case(
        *[(b.c.monetary_minor >= money(m[name]), name) for name in ("VIP", "Large", "Medium")],
        else_="Small",
    )
    m_score = score(b.c.monetary_minor, m["quintiles"], True, as_value=money)
    f_score = score(b.c.frequency, f["quintiles"], True)
    r_score = score(b.c.days_since, r["quintiles"], False)
    return select(
        b.c.customer_id,
        b.c.monetary_minor,
        b.c.currency,
        b.c.frequency,
        b.c.days_since,
        literal(cutoffs["buyers"]).label("buyers"),
        tier.label("tier"),
        r_score.label("r_score"),
        f_score.label("f_score"),
        m_score.label("m_score"),
    )


def prepare(conn: Connection, as_of: date, p: PyramidParams) -> dict:
    """The cut values of the pyramid and of the RFM quintiles (module docs).

    Returns ``{"cutoffs": ...}`` to merge into the segment's parameters; small
    enough to hand to every batch.
    """
    window_days, currency = p.window_days, p.currency
    purchase_windows.bring_to(conn.engine, as_of, window_days, currency)
    wanted = {"monetary": set(p.tier_bps().values()) | set(QUINTILES_BP)}
    wanted |= {"frequency": set(QUINTILES_BP), "recency": set(QUINTILES_BP)}
    n, at = _kept_positions(conn, as_of, p, wanted) or _sorted_positions(conn, as_of, p, wanted)
    if n == 0:
        return {"cutoffs": None}

    def boundaries(measure):
        return [list(at[measure, bp]) for bp in QUINTILES_BP]

    return {
        "cutoffs": {
            "buyers": n,
            "monetary": {name: at["monetary", bp][0] for name, bp in p.tier_bps().items()}
            | {"quintiles": boundaries("monetary")},
            "frequency": {"quintiles": boundaries("frequency")},
            "recency": {"quintiles": boundaries("recency")},
        }
    }


def _position(n: int, bp: int) -> int:
    """The position (1 = best) that is the last of the top ``bp``/10000 of ``n`` buyers."""
    return -(-bp * n // 10000)


#: each measure's column in the kept window; every index orders it best (highest) first,
#: ties by tie key, then id
_KEPT_COLUMN = {
    "monetary": PurchaseWindow.monetary_minor,
    "frequency": PurchaseWindow.frequency,
    "recency": PurchaseWindow.last_day,
}


def _kept_positions(conn: Connection, as_of: date, p: PyramidParams, wanted: dict):
    """(buyers, {(measure, bp): (value, customer_id)}) read off the kept window's indexes,
    or None when the window is not kept for ``as_of`` or some customer is dirty.

    One statement, so one snapshot: it counts the buyers and checks the window
    again beside the positions it reads, and the answer is used only if both
    agree with the first look.

    On PostgreSQL a measure's positions are walked in order, each from where
    the one before it stopped, so its index is read once up to the last of them
    (0.8 of the buyers, where an offset from the top for each position reads 2
    to 2.3 times the buyers: 0.5 -> 0.3 s at a million customers). SQLite steps
    a covering index for an OFFSET at a few ns a row, less than testing each row
    against the previous position, so there each position counts from the top
    (6 against 100 ms at 200,000 customers)."""
    w, key = PurchaseWindow, purchase_windows.window_key(p.window_days, p.currency)
    usable = purchase_windows.kept_at(key, as_of) & ~exists(select(PurchaseFactsDirty.customer_id))
    count = select(func.count()).where(w.window_key == key).scalar_subquery()
    n, ok = conn.execute(select(count, case((usable, 1), else_=0))).one()
    if not ok or n == 0:
        return None
    today = day_number_of(as_of)
    chained = conn.dialect.name == "postgresql"
    parts = [select(literal("check"), literal(0), count, case((usable, 1), else_=0))]
    for measure, bps in wanted.items():
        column = _KEPT_COLUMN[measure]
        step, at = None, 0  # the previous position's row, and the position
        for bp in sorted(bps):
            position = _position(n, bp)
            if position != at:
                after, skip = (step, position - at - 1) if chained else (None, position - 1)
                step = _step(key, column, after, skip).cte(f"{measure}_{bp}")
                step = step.prefix_with("MATERIALIZED")  # read once, however often used
                at = position
            value = step.c.value if measure != "recency" else today - step.c.value
            parts.append(select(literal(measure), literal(bp), value, step.c.customer_id))
    rows = conn.execute(union_all(*parts)).all()
    if rows[0][2:] != (n, 1):
        return None  # the window moved between the two statements: sort instead
    return n, {(r[0], r[1]): (int(r[2]), int(r[3])) for r in rows[1:]}


def _step(key: str, column, after, skip: int) -> Select:
    """The kept row ``skip`` places past ``after`` (a one-row CTE of the previous step;
    None: from the top) in ``column``'s order: best first, then tie key, then id."""
    w = PurchaseWindow
    query = select(column.label("value"), w.tie_key, w.customer_id).where(w.window_key == key)
    if after is not None:
        # after's values as scalars, not a join: so the index is entered at its value
        # and read in its own order (joined, PostgreSQL sorted what it read)
        value, tie, cid = (select(c).scalar_subquery() for c in after.c)
        query = query.where(
            column <= value,
            (column < value) | (w.tie_key > tie) | ((w.tie_key == tie) & (w.customer_id > cid)),
        )
    return query.order_by(column.desc(), w.tie_key, w.customer_id).offset(skip).limit(1)


def _sorted_positions(conn: Connection, as_of: date, p: PyramidParams, wanted: dict):
    """The same as ``_kept_positions``, by sorting every buyer here."""
    rows = conn.execute(_buyers(as_of, p.window_days, p.currency)).all()
    n, at = len(rows), {}
    column = {"monetary": 1, "frequency": 3, "recency": 4}  # in _buyers' row
    sign = {"monetary": -1, "frequency": -1, "recency": 1}  # -1: higher is better
    for measure, bps in wanted.items():
        # (value, tie_key, id) best first; for "higher is better" the value is negated
        i, k = column[measure], sign[measure]
        ordered = sorted((k * int(r[i]), tie_key(r[0]), r[0]) for r in rows)
        for bp in bps:
            value, _, cid = ordered[_position(n, bp) - 1] if n else (0, 0, 0)
            at[measure, bp] = (k * value, int(cid))
    return n, at


def vip(as_of: date, p: VipParams, *, id_range: tuple[int, int] | None = None) -> Select:
    """Buyers in the given top tiers of the pyramid (default VIP and Large)."""
    if p.cutoffs is None or "Small" in p.tiers:
        inner = pyramid(as_of, p, id_range=id_range).subquery("pyramid")
    else:  # only buyers who spent at least the lowest tier's cut value can be selected
        least = min(int(p.cutoffs["monetary"][tier]) for tier in p.tiers)
        buyers = _buyers(as_of, p.window_days, p.currency, id_range, min_monetary=least)
        inner = _with_cutoffs(buyers, p.cutoffs).subquery("pyramid")
    return select(inner).where(inner.c.tier.in_(p.tiers))


PYRAMID = Segment(
    "pyramid",
    pyramid,
    PyramidParams,
    "Every buyer in the window with their pyramid tier and R, F, M scores.",
    prepare=prepare,
)
VIP = Segment(
    "vip",
    vip,
    VipParams,
    "Buyers in the top tiers of the customer pyramid (default VIP and Large).",
    prepare=prepare,
)

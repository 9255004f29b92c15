"""vip and pyramid: the customer pyramid and RFM scores over a window.

The playbook's pyramid ranks customers who bought in the window by money
spent: VIP = top 1%, Large = next 4%, Medium = next 15%, Small = the rest.
Cuts are made on *rank*, with ties kept together: a customer is in a tier
when fewer than that tier's share of buyers spent strictly more than they
did. So customers tied at a boundary all go to the higher tier, and the top
spender is always VIP however few buyers there are.

RFM scores 1-5 by quintile the same way (ties share a score; 5 is best):
recency = days since last purchase (fewer is better), frequency = distinct
purchase days in the window, monetary = amount in the window.

Tiers and scores need every buyer. Computed with window functions that is
one query over the whole population, fine once but repeated by every batch
of a run. So ``prepare`` computes the cut values once (the amount at the
VIP, Large and Medium boundaries, and the quintile boundaries of R, F and
M); given those ``cutoffs``, each batch aggregates only its own customers.
Both ways give the same answer (tests/segments/test_vip.py checks it):
"fewer than p x N buyers strictly better" is the same as "at least as good
as the buyer at position ceil(p x N)".

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

from datetime import date, timedelta

from sqlalchemy import BigInteger, Select, case, cast, func, literal, select
from sqlalchemy.engine import Connection

from careflow.db.models import Order
from careflow.db.sqlfunc import day_number, day_number_of

TIERS = ("VIP", "Large", "Medium", "Small")
QUINTILES_BP = (2000, 4000, 6000, 8000)  # top 20%, 40%, 60%, 80% in basis points


def _bp(pct: float) -> int:
    """A percentage as whole basis points, so shares compare exactly in integers."""
    bp = round(pct * 100)
    if abs(bp - pct * 100) > 1e-6:
        raise ValueError(f"share {pct}% is finer than 0.01%")
    return bp


def _tier_bps(vip_pct: float, large_pct: float, medium_pct: float) -> dict[str, int]:
    if not 0 < vip_pct <= large_pct <= medium_pct <= 100:
        raise ValueError("need 0 < vip_pct <= large_pct <= medium_pct <= 100")
    return {"VIP": _bp(vip_pct), "Large": _bp(large_pct), "Medium": _bp(medium_pct)}


def _buyers(as_of: date, window_days: int, currency: str | None, id_range=None) -> Select:
    since = as_of - timedelta(days=window_days)
    where = [Order.ordered_on <= as_of, Order.ordered_on > since]
    if currency:
        where.append(Order.currency == currency)
    if id_range is not None:
        where.append(Order.customer_id.between(*id_range))
    return (
        select(
            Order.customer_id,
            # sum(bigint) is NUMERIC on PostgreSQL: back to an exact integer.
            cast(func.sum(Order.amount_minor), BigInteger).label("monetary_minor"),
            case(
                (func.count(func.distinct(Order.currency)) == 1, func.min(Order.currency)),
                else_=None,
            ).label("currency"),
            func.count(func.distinct(Order.ordered_on)).label("frequency"),
            (literal(day_number_of(as_of)) - day_number(func.max(Order.ordered_on))).label(
                "days_since"
            ),
        )
        .where(*where)
        .group_by(Order.customer_id)
    )


def pyramid(
    as_of: date,
    *,
    window_days: int = 365,
    vip_pct: float = 1.0,
    large_pct: float = 5.0,
    medium_pct: float = 20.0,
    currency: str | None = None,
    cutoffs: dict | None = None,
    id_range: tuple[int, int] | None = None,
) -> Select:
    """Every buyer in the window with tier and R, F, M scores.

    ``*_pct`` are cumulative shares of buyers: the defaults give 1% VIP,
    4% Large, 15% Medium, 80% Small. ``cutoffs`` comes from ``prepare``.
    Columns: customer_id, monetary_minor, currency, frequency, days_since,
    buyers, tier, r_score, f_score, m_score.
    """
    tier_bps = _tier_bps(vip_pct, large_pct, medium_pct)
    if cutoffs is not None:
        return _with_cutoffs(_buyers(as_of, window_days, currency, id_range), cutoffs)

    buyers = _buyers(as_of, window_days, currency).cte("buyers")
    n = func.count().over()
    ranked = select(
        buyers,
        n.label("buyers"),
        func.rank().over(order_by=buyers.c.monetary_minor.desc()).label("m_rank"),
        func.rank().over(order_by=buyers.c.days_since.asc()).label("r_rank"),
        func.rank().over(order_by=buyers.c.frequency.desc()).label("f_rank"),
    ).cte("ranked")

    def within(rank, bp):  # fewer than bp/10000 of the buyers are strictly better
        return (rank - 1) * 10000 < ranked.c.buyers * bp

    def score(rank):
        return case(*[(within(rank, bp), 5 - i) for i, bp in enumerate(QUINTILES_BP)], else_=1)

    tier = case(
        *[(within(ranked.c.m_rank, bp), name) for name, bp in tier_bps.items()], else_="Small"
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

    def score(tests):  # "at least as good as the boundary" for the top 20/40/60/80 %
        return case(*[(t, 5 - i) for i, t in enumerate(tests)], else_=1)

    tier = case(
        *[(b.c.monetary_minor >= money(m[name]), name) for name in ("VIP", "Large", "Medium")],
        else_="Small",
    )
    m_score = score([b.c.monetary_minor >= money(c) for c in m["quintiles"]])
    f_score = score([b.c.frequency >= c for c in f["quintiles"]])
    r_score = score([b.c.days_since <= c for c in r["quintiles"]])
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


def prepare(
    conn: Connection,
    as_of: date,
    *,
    window_days: int = 365,
    vip_pct: float = 1.0,
    large_pct: float = 5.0,
    medium_pct: float = 20.0,
    currency: str | None = None,
    **_other,
) -> dict:
    """The cut values of the pyramid and of the RFM quintiles: one pass over all buyers.

    Returns ``{"cutoffs": ...}`` to merge into the segment's parameters; small
    enough to hand to every batch.
    """
    tier_bps = _tier_bps(vip_pct, large_pct, medium_pct)
    rows = conn.execute(_buyers(as_of, window_days, currency)).all()
    n = len(rows)
    if n == 0:
        return {"cutoffs": None}
    money = sorted((int(r.monetary_minor) for r in rows), reverse=True)
    freq = sorted((r.frequency for r in rows), reverse=True)
    recency = sorted(r.days_since for r in rows)

    def at(values, bp):  # the value of the buyer at position ceil(bp/10000 x n)
        return values[-(-bp * n // 10000) - 1]

    return {
        "cutoffs": {
            "buyers": n,
            "monetary": {name: at(money, bp) for name, bp in tier_bps.items()}
            | {"quintiles": [at(money, bp) for bp in QUINTILES_BP]},
            "frequency": {"quintiles": [int(at(freq, bp)) for bp in QUINTILES_BP]},
            "recency": {"quintiles": [int(at(recency, bp)) for bp in QUINTILES_BP]},
        }
    }


def vip(
    as_of: date,
    *,
    tiers: tuple[str, ...] | list[str] = ("VIP", "Large"),
    id_range: tuple[int, int] | None = None,
    **pyramid_params,
) -> Select:
    """Buyers in the given top tiers of the pyramid (default VIP and Large)."""
    unknown = set(tiers) - set(TIERS)
    if unknown:
        raise ValueError(f"unknown tiers {sorted(unknown)}; tiers are {', '.join(TIERS)}")
    inner = pyramid(as_of, id_range=id_range, **pyramid_params).subquery("pyramid")
    return select(inner).where(inner.c.tier.in_(list(tiers)))

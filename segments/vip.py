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

Amounts are summed as stored; a shop selling in several currencies should
run one pyramid per currency (``currency=``).
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import Float, Select, case, cast, func, literal, select

from careflow.db.models import Order
from careflow.db.sqlfunc import day_number, day_number_of

TIERS = ("VIP", "Large", "Medium", "Small")


def _score(rank, n):
    """Quintile score 5..1 from a 1-based rank where rank 1 is best."""
    return literal(5) - ((rank - 1) * 5) // n


def pyramid(
    as_of: date,
    *,
    window_days: int = 365,
    vip_pct: float = 1.0,
    large_pct: float = 5.0,
    medium_pct: float = 20.0,
    currency: str | None = None,
    id_range: tuple[int, int] | None = None,
) -> Select:
    """Every buyer in the window with tier, rank and R, F, M scores.

    ``*_pct`` are cumulative shares of buyers: the defaults give 1% VIP,
    4% Large, 15% Medium, 80% Small. Columns: customer_id, monetary,
    frequency, days_since, rank, buyers, tier, r_score, f_score, m_score.
    """
    if not 0 < vip_pct <= large_pct <= medium_pct <= 100:
        raise ValueError("need 0 < vip_pct <= large_pct <= medium_pct <= 100")
    since = as_of - timedelta(days=window_days)
    where = [Order.ordered_on <= as_of, Order.ordered_on > since]
    if currency:
        where.append(Order.currency == currency)
    buyers = (
        select(
            Order.customer_id,
            func.sum(Order.amount).label("monetary"),
            func.count(func.distinct(Order.ordered_on)).label("frequency"),
            (literal(day_number_of(as_of)) - day_number(func.max(Order.ordered_on))).label(
                "days_since"
            ),
        )
        .where(*where)
        .group_by(Order.customer_id)
        .cte("buyers")
    )
    n = func.count().over()
    m_rank = func.rank().over(order_by=buyers.c.monetary.desc())
    ranked = select(
        buyers,
        m_rank.label("rank"),
        n.label("buyers"),
        func.rank().over(order_by=buyers.c.days_since.asc()).label("r_rank"),
        func.rank().over(order_by=buyers.c.frequency.desc()).label("f_rank"),
    ).cte("ranked")

    ahead = cast(ranked.c.rank - 1, Float)  # buyers who spent strictly more
    tier = case(
        *[
            (ahead < ranked.c.buyers * (pct / 100.0), name)
            for pct, name in ((vip_pct, "VIP"), (large_pct, "Large"), (medium_pct, "Medium"))
        ],
        else_="Small",
    )
    query = select(
        ranked.c.customer_id,
        ranked.c.monetary,
        ranked.c.frequency,
        ranked.c.days_since,
        ranked.c.rank,
        ranked.c.buyers,
        tier.label("tier"),
        _score(ranked.c.r_rank, ranked.c.buyers).label("r_score"),
        _score(ranked.c.f_rank, ranked.c.buyers).label("f_score"),
        _score(ranked.c.rank, ranked.c.buyers).label("m_score"),
    )
    if id_range is not None:
        # Ranks need every buyer, so the range is applied after ranking.
        query = query.where(ranked.c.customer_id.between(*id_range))
    return query


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

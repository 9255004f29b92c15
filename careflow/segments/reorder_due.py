"""reorder_due: the customer's own rhythm says they are about to run out.

The rice seller's rule from the CRM playbook, per customer:

- *interval* = the median gap in days between their distinct purchase days
  (needs at least ``min_purchase_days`` purchase days, i.e. two gaps);
- where their last purchase contains products with a known replenishment
  period, interval = max(quantity x replenish_days) over those lines instead,
  since that is what they actually bought (this needs only one purchase);
- due when ``interval <= days since last purchase < 2 x interval``: late
  enough that supplies run low, not so late that they are really dormant.

Each customer is selected on every day of that window; the campaign's
occasion (the last purchase day) makes sure they hear from us once.

Gaps, medians and the last purchase's lines come from each customer's
purchase facts (careflow/purchase_facts.py), exact for any ``as_of``.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field
from sqlalchemy import Float, Select, case, cast, func, literal, or_, select

from careflow.db.sqlfunc import day_date, day_number_of
from careflow.purchase_facts import history
from careflow.segments._params import SegmentParams
from careflow.segments._registry import Segment


class ReorderDueParams(SegmentParams):
    """Parameters of ``reorder_due``."""

    min_purchase_days: int = Field(
        3,
        strict=True,
        ge=3,
        le=1000,
        description="Distinct purchase days a customer needs before their median gap "
        "counts as a rhythm (at least 3: a median needs two gaps).",
    )
    use_replenishment: bool = Field(
        True,
        strict=True,
        description="Use the replenishment period of the products in the last purchase "
        "(quantity x replenish_days) when known, instead of the median gap.",
    )


def reorder_due(
    as_of: date, p: ReorderDueParams, *, id_range: tuple[int, int] | None = None
) -> Select:
    """Customers due to reorder on ``as_of``.

    Columns: customer_id, last_purchase_on, days_since,
    purchase_days, median_gap, interval_days, basis ('median' | 'product').
    """
    h = history(as_of, id_range).subquery("history")
    days_since = literal(day_number_of(as_of)) - h.c.last_day
    if p.use_replenishment:
        interval = func.coalesce(cast(h.c.product_days, Float), h.c.median_gap)
        basis = case((h.c.product_days.is_not(None), "product"), else_="median")
        eligible = or_(h.c.product_days.is_not(None), h.c.purchase_days >= p.min_purchase_days)
    else:
        interval = h.c.median_gap
        basis = literal("median")
        eligible = h.c.purchase_days >= p.min_purchase_days
    return select(
        h.c.customer_id,
        day_date(h.c.last_day).label("last_purchase_on"),
        days_since.label("days_since"),
        h.c.purchase_days,
        h.c.median_gap,
        interval.label("interval_days"),
        basis.label("basis"),
    ).where(
        eligible,
        interval > 0,
        cast(days_since, Float) >= interval,
        cast(days_since, Float) < 2 * interval,
    )


SEGMENT = Segment(
    "reorder_due",
    reorder_due,
    ReorderDueParams,
    "Customers whose own buying rhythm (or product) says they are about to run out.",
)

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
"""

from __future__ import annotations

from datetime import date

from pydantic import Field
from sqlalchemy import Float, Select, and_, case, cast, func, literal, or_, select

from careflow.db.models import Order, OrderLine, Product
from careflow.db.sqlfunc import day_date, day_number_of
from segments._params import SegmentParams, check
from segments._purchases import orders_up_to, purchase_days


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
    as_of: date,
    *,
    min_purchase_days: int = 3,
    use_replenishment: bool = True,
    id_range: tuple[int, int] | None = None,
) -> Select:
    """Customers due to reorder on ``as_of``.

    Columns: customer_id, last_purchase_on, days_since,
    purchase_days, median_gap, interval_days, basis ('median' | 'product').
    """
    p = check(
        "reorder_due",
        ReorderDueParams,
        {"min_purchase_days": min_purchase_days, "use_replenishment": use_replenishment},
    )
    min_purchase_days, use_replenishment = p.min_purchase_days, p.use_replenishment
    days = purchase_days(as_of, id_range).cte("days")

    gaps = select(
        days.c.customer_id,
        (
            days.c.d - func.lag(days.c.d).over(partition_by=days.c.customer_id, order_by=days.c.d)
        ).label("gap"),
    ).cte("gaps")
    ranked = (
        select(
            gaps.c.customer_id,
            gaps.c.gap,
            func.row_number()
            .over(partition_by=gaps.c.customer_id, order_by=gaps.c.gap)
            .label("rn"),
            func.count().over(partition_by=gaps.c.customer_id).label("n"),
        )
        .where(gaps.c.gap.is_not(None))
        .cte("ranked")
    )
    # Median: the middle gap, or the mean of the two middle gaps.
    median = (
        select(ranked.c.customer_id, func.avg(cast(ranked.c.gap, Float)).label("median_gap"))
        .where(ranked.c.rn.in_([(ranked.c.n + 1) // 2, (ranked.c.n + 2) // 2]))
        .group_by(ranked.c.customer_id)
        .cte("median")
    )
    history = (
        select(
            days.c.customer_id,
            func.max(days.c.d).label("last_d"),
            func.count().label("n_days"),
        )
        .group_by(days.c.customer_id)
        .cte("history")
    )

    today = literal(day_number_of(as_of))
    days_since = today - history.c.last_d
    if use_replenishment:
        last_on = (
            select(Order.customer_id, func.max(Order.ordered_on).label("last_on"))
            .where(*orders_up_to(as_of, id_range))
            .group_by(Order.customer_id)
            .subquery("last_on")
        )
        product = (
            select(
                Order.customer_id,
                func.max(OrderLine.quantity * Product.replenish_days).label("product_days"),
            )
            .join(
                last_on,
                and_(
                    last_on.c.customer_id == Order.customer_id,
                    last_on.c.last_on == Order.ordered_on,
                ),
            )
            .join(OrderLine, OrderLine.order_id == Order.id)
            .join(Product, Product.sku == OrderLine.sku)
            .where(Product.replenish_days.is_not(None), OrderLine.quantity > 0)
            .group_by(Order.customer_id)
            .cte("product")
        )
        interval = func.coalesce(cast(product.c.product_days, Float), median.c.median_gap)
        basis_col = case((product.c.product_days.is_not(None), "product"), else_="median")
        eligible = or_(product.c.product_days.is_not(None), history.c.n_days >= min_purchase_days)
    else:
        product = None
        interval = median.c.median_gap
        basis_col = literal("median")
        eligible = history.c.n_days >= min_purchase_days

    query = select(
        history.c.customer_id,
        day_date(history.c.last_d).label("last_purchase_on"),
        days_since.label("days_since"),
        history.c.n_days.label("purchase_days"),
        median.c.median_gap,
        interval.label("interval_days"),
        basis_col.label("basis"),
    ).select_from(history.outerjoin(median, median.c.customer_id == history.c.customer_id))
    if product is not None:
        query = query.outerjoin(product, product.c.customer_id == history.c.customer_id)
    return query.where(
        eligible,
        interval > 0,
        cast(days_since, Float) >= interval,
        cast(days_since, Float) < 2 * interval,
    )

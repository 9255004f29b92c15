"""dormant: customers who bought before but not for more than ``days`` days.

Feeds the win-back campaign. Days are calendar days between the last
purchase day and ``as_of``: bought on 1 June, as_of 29 Nov -> 181 days.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Select, func, literal, select

from careflow.db.models import Order
from careflow.db.sqlfunc import day_number, day_number_of
from segments._purchases import orders_up_to


def dormant(
    as_of: date,
    *,
    days: int = 180,
    max_days: int | None = None,
    id_range: tuple[int, int] | None = None,
) -> Select:
    """Customers whose last purchase was more than ``days`` (and at most ``max_days``) ago.

    Columns: customer_id, last_purchase_on, days_since, purchase_count.
    """
    if days < 0:
        raise ValueError("days must be >= 0")
    last_on = func.max(Order.ordered_on)
    days_since = (literal(day_number_of(as_of)) - day_number(last_on)).label("days_since")
    query = (
        select(
            Order.customer_id,
            last_on.label("last_purchase_on"),
            days_since,
            func.count(Order.id).label("purchase_count"),
        )
        .where(*orders_up_to(as_of, id_range))
        .group_by(Order.customer_id)
        .having(literal(day_number_of(as_of)) - day_number(last_on) > days)
    )
    if max_days is not None:
        query = query.having(literal(day_number_of(as_of)) - day_number(last_on) <= max_days)
    return query

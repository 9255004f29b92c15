"""dormant: customers who bought before but not for more than ``days`` days.

Feeds the win-back campaign. Days are calendar days between the last
purchase day and ``as_of``: bought on 1 June, as_of 29 Nov -> 181 days.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field, model_validator
from sqlalchemy import Select, func, literal, select

from careflow.db.models import Order
from careflow.db.sqlfunc import day_number, day_number_of
from segments._params import SegmentParams, check
from segments._purchases import orders_up_to

MAX_DAYS = 3650  # ten years: longer is not "dormant", it is gone


class DormantParams(SegmentParams):
    """Parameters of ``dormant``."""

    days: int = Field(
        180,
        strict=True,
        ge=1,
        le=MAX_DAYS,
        description="A customer is dormant when their last purchase was strictly more "
        "than this many days before as-of.",
    )
    max_days: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=MAX_DAYS,
        description="Leave out customers whose last purchase was more than this many days "
        "ago (null: no limit). Must be greater than days.",
    )

    @model_validator(mode="after")
    def _window_not_empty(self) -> DormantParams:
        if self.max_days is not None and self.max_days <= self.days:
            raise ValueError(
                f"max_days must be greater than days, or null "
                f"(got days={self.days}, max_days={self.max_days})"
            )
        return self


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
    p = check("dormant", DormantParams, {"days": days, "max_days": max_days})
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
        .having(literal(day_number_of(as_of)) - day_number(last_on) > p.days)
    )
    if p.max_days is not None:
        query = query.having(literal(day_number_of(as_of)) - day_number(last_on) <= p.max_days)
    return query

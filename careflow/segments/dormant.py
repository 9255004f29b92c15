"""dormant: customers who bought before but not for more than ``days`` days.

Feeds the win-back campaign. Days are calendar days between the last
purchase day and ``as_of``: bought on 1 June, as_of 29 Nov -> 181 days.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field, model_validator
from sqlalchemy import Select, literal, select

from careflow.db.sqlfunc import day_date, day_number_of
from careflow.purchase_facts import history
from careflow.segments._params import SegmentParams
from careflow.segments._registry import Segment

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
    as_of: date, p: DormantParams, *, id_range: tuple[int, int] | None = None
) -> Select:
    """Customers whose last purchase was more than ``days`` (and at most ``max_days``) ago.

    Columns: customer_id, last_purchase_on, days_since, purchase_count.
    """
    h = history(as_of, id_range).subquery("history")
    days_since = literal(day_number_of(as_of)) - h.c.last_day
    query = select(
        h.c.customer_id,
        day_date(h.c.last_day).label("last_purchase_on"),
        days_since.label("days_since"),
        h.c.orders.label("purchase_count"),
    ).where(days_since > p.days)
    if p.max_days is not None:
        query = query.where(days_since <= p.max_days)
    return query


SEGMENT = Segment(
    "dormant",
    dormant,
    DormantParams,
    "Customers who bought before but not in the last `days` days (win-back).",
)

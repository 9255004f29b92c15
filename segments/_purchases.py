"""Building blocks shared by the purchase-history segments."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Select, select

from careflow.db.models import Order
from careflow.db.sqlfunc import day_number


def orders_up_to(as_of: date, id_range: tuple[int, int] | None, since: date | None = None):
    """WHERE clauses for orders on or before ``as_of`` (and after ``since``), in the id range."""
    clauses = [Order.ordered_on <= as_of]
    if since is not None:
        clauses.append(Order.ordered_on > since)
    if id_range is not None:
        clauses.append(Order.customer_id.between(*id_range))
    return clauses


def purchase_days(as_of: date, id_range: tuple[int, int] | None) -> Select:
    """Distinct (customer_id, day) pairs: several orders on one day are one purchase day."""
    return (
        select(Order.customer_id, day_number(Order.ordered_on).label("d"))
        .where(*orders_up_to(as_of, id_range))
        .distinct()
    )

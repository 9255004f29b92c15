"""Which currency a report ranks in, and what that leaves out.

A pyramid or a value model adds up money, which only makes sense in one
currency, and careflow keeps no exchange rates. So a report over a shop
that sells in several currencies ranks one: the one asked for (``--param
currency=``), else the shop's main currency (``CAREFLOW_MAIN_CURRENCY``),
else the currency with the most revenue over the report's orders (amounts
compared as written, without exchange rates). The report says which, and
how many orders in other currencies it left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from careflow.db.models import Order
from careflow.db.sqlfunc import readable_day
from careflow.money import exponent

#: how the currency was chosen, as the report says it
SOURCES = {
    "asked": "--param currency",
    "setting": "the shop's main currency, CAREFLOW_MAIN_CURRENCY",
    "only": "the only currency of these orders",
    "most_revenue": (
        "the currency with the most revenue in these orders; set CAREFLOW_MAIN_CURRENCY "
        "to choose the shop's main currency"
    ),
    "none": "no orders",
}


@dataclass(frozen=True)
class CurrencyChoice:
    """The currency a report is in, why, and the orders in other currencies it leaves out."""

    code: str | None
    source: str  # a key of SOURCES
    #: currency -> orders in it the report leaves out
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def orders_left_out(self) -> int:
        return sum(self.left_out.values())

    def note(self) -> str:
        """One line for the report: ``in CNY (the shop's main currency, ...); 1,234 orders
        in other currencies left out (GBP 1,000, USD 234)``."""
        text = f"in {self.code or 'no currency'} ({SOURCES[self.source]})"
        if self.left_out:
            each = ", ".join(f"{c} {n:,}" for c, n in sorted(self.left_out.items()))
            n = self.orders_left_out
            text += f"; {n:,} order{'s' if n != 1 else ''} in other currencies left out ({each})"
        return text

    def as_dict(self) -> dict:
        return {
            "currency": self.code,
            "chosen_by": self.source,
            "orders_left_out": self.orders_left_out,
            "left_out_by_currency": dict(sorted(self.left_out.items())),
        }


def choose_currency(
    conn,
    as_of: date,
    *,
    window_days: int | None,
    asked: str | None,
    main: str | None,
) -> CurrencyChoice:
    """The currency of a report over the orders up to ``as_of`` (in the last
    ``window_days`` days when given): ``asked``, else ``main``, else the one with the
    most revenue."""
    where = [readable_day(Order.ordered_on), Order.ordered_on <= as_of]
    if window_days is not None:
        where.append(Order.ordered_on > as_of - timedelta(days=window_days))
    rows = conn.execute(
        select(Order.currency, func.count(), func.sum(Order.amount_minor))
        .where(*where)
        .group_by(Order.currency)
    ).all()
    orders = {cur: int(n) for cur, n, _ in rows}
    if asked or main:
        code, source = (asked, "asked") if asked else (main, "setting")
    elif not rows:
        return CurrencyChoice(None, "none")
    elif len(rows) == 1:
        code, source = rows[0][0], "only"
    else:
        revenue = {cur: Decimal(int(total or 0)).scaleb(-_places(cur)) for cur, _, total in rows}
        code = max(sorted(revenue), key=lambda cur: revenue[cur])
        source = "most_revenue"
    return CurrencyChoice(code, source, {c: n for c, n in orders.items() if c != code})


def _places(currency: str) -> int:
    try:
        return exponent(currency)
    except Exception:  # a code babel does not know: count it in whole units
        return 0

"""Money as exact integers: amounts in minor units (cents, fen, yen) with their currency.

Amounts are stored as BigInteger counts of a currency's minor unit next to
the ISO 4217 code: 39.99 GBP is 3999, 1,200 JPY is 1200, 1.250 KWD is 1250.
The minor unit's exponent is CLDR's, through Babel's
``get_currency_precision`` (2 for most currencies, 0 for JPY, 3 for KWD).
Integers add and compare exactly on every database; SQLAlchemy's Numeric
does not on SQLite, which stores it as a binary float (10.00 + 29.99 is
39.989999999999995 there), and the VIP tiers compare sums.

Conversions between minor units and Decimal happen here and nowhere else:
importers and the demo call ``to_minor``, and what shows an amount to a
person (templates, ``careflow segment list``) calls ``with_amounts``.

Stored amounts are checked where they are read. SQLite keeps whatever another
program writes into the column (``'NaN'``, infinity, 1e30 as a float) and a
64-bit sum overflows past about 9.2e18: ``from_minor`` refuses anything but a
whole number within ``MAX_MINOR`` with a DataError, and ``check_stored_amounts``
names the orders a report over every order cannot add up.

Exponents come from Babel at run time. Should a CLDR release ever change a
currency's exponent, stored amounts would read 10x off: tests/test_money.py
pins the exponents of the currencies careflow is known to hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from numbers import Integral, Real

from babel.numbers import get_currency_precision, is_currency
from sqlalchemy import Connection, or_, select

from careflow.errors import DataError

#: suffix of columns and keys that hold minor units; ``with_amounts`` drops it
MINOR_SUFFIX = "_minor"
#: the largest amount careflow reads, in minor units: above what the importer lets
#: through (a billion a unit times a million units), well below a 64-bit integer
MAX_MINOR = 10**18


def is_known_currency(code: str) -> bool:
    """True for an ISO 4217 code CLDR knows (case-sensitive: 'GBP', not 'gbp')."""
    return isinstance(code, str) and len(code) == 3 and code.isupper() and is_currency(code)


@lru_cache(maxsize=512)
def exponent(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit: 2 for GBP, 0 for JPY, 3 for KWD."""
    return get_currency_precision(currency)


def to_minor(amount: Decimal | int | str, currency: str, *, exact: bool = False) -> int:
    """``amount`` in minor units of ``currency``, rounded half up to the minor unit.

    With ``exact=True`` an amount finer than the minor unit (2.555 GBP) is a
    ValueError instead of being rounded.
    """
    try:
        value = Decimal(amount) if not isinstance(amount, Decimal) else amount
    except (InvalidOperation, ValueError, TypeError) as exc:
        raise ValueError(f"not an amount: {str(amount)[:40]!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not an amount: {str(amount)[:40]!r}")
    scaled = value.scaleb(exponent(currency))
    whole = scaled.to_integral_value(rounding=ROUND_HALF_UP)
    if exact and whole != scaled:
        raise ValueError(f"{value} {currency} is finer than the currency's minor unit")
    return int(whole)


def line_minor(price: Decimal | str, quantity: int, currency: str) -> tuple[int, int]:
    """An order line's (unit price, amount) in minor units: the amount from the exact
    price times the quantity, rounded once (2.555 GBP x 2 is 511, not 2 x 256)."""
    exact = Decimal(price)
    return to_minor(exact, currency), to_minor(exact * quantity, currency)


def from_minor(minor: int, currency: str) -> Decimal:
    """Minor units back to an amount: ``from_minor(3999, 'GBP') == Decimal('39.99')``.

    A stored value that is no whole number within ``MAX_MINOR`` (text, NaN, infinity,
    2.5, 1e30) is a DataError saying so, not a number made up from it.
    """
    if not _whole(minor):
        raise DataError(
            f"amount {str(minor)[:40]!r} is not a whole number of minor units "
            f"from -{MAX_MINOR:.0e} to {MAX_MINOR:.0e}"
        )
    return Decimal(int(minor)).scaleb(-exponent(currency))


def _whole(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    if not isinstance(value, Integral) and not (math.isfinite(value) and value == int(value)):
        return False
    return -MAX_MINOR <= value <= MAX_MINOR


def check_stored_amounts(conn: Connection) -> None:
    """A DataError naming the first orders whose amount cannot be added up (see the
    module's docstring), for reports that sum every order; nothing when all can."""
    from careflow.db.models import Order

    amount = Order.__table__.c.amount_minor
    # on SQLite any text compares greater than any number, so text is caught here too
    bad = conn.execute(
        select(Order.id, Order.customer_id, amount)
        .where(or_(amount > MAX_MINOR, amount < -MAX_MINOR))
        .order_by(Order.id)
        .limit(3)
    ).all()
    if bad:
        named = ", ".join(f"order {o.id} of customer {o.customer_id}: {str(o[2])[:30]!r}"
                          for o in bad)
        raise DataError(
            f"stored order amounts that are not whole numbers of minor units from "
            f"-{MAX_MINOR:.0e} to {MAX_MINOR:.0e} ({named}): correct or delete them"
        )


def with_amounts(row: Mapping) -> dict:
    """``row`` with every ``<name>_minor`` value replaced by ``<name>`` as a Decimal.

    The currency is the row's ``currency``. A row without one (a sum over
    several currencies has none) gets ``None``: no number is better than a
    number in the wrong currency. Key order is kept, so tables keep their
    column order.
    """
    currency = row.get("currency")
    out: dict = {}
    for key, value in row.items():
        if isinstance(key, str) and key.endswith(MINOR_SUFFIX):
            name = key[: -len(MINOR_SUFFIX)]
            out[name] = None if value is None or not currency else from_minor(value, currency)
        else:
            out[key] = value
    return out

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

Exponents come from Babel at run time. Should a CLDR release ever change a
currency's exponent, stored amounts would read 10x off: tests/test_money.py
pins the exponents of the currencies careflow is known to hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache

from babel.numbers import get_currency_precision, is_currency

#: suffix of columns and keys that hold minor units; ``with_amounts`` drops it
MINOR_SUFFIX = "_minor"


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


def from_minor(minor: int, currency: str) -> Decimal:
    """Minor units back to an amount: ``from_minor(3999, 'GBP') == Decimal('39.99')``."""
    return Decimal(int(minor)).scaleb(-exponent(currency))


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

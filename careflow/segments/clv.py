"""clv: the value matrix, current value against predicted value (careflow/clv.py).

The playbook's four treatments, by a customer's value now (money spent in
the last ``window_days``) and their predicted value (BG/NBD x Gamma-Gamma
over the next ``horizon_days``):

    predicted value high |  develop              retain
                     low |  convert_or_let_go    maintain
                         +------------------------------------
                            current value low    high

"High" on an axis means among the top ``current_high_pct`` /
``future_high_pct`` percent of customers (ties kept in the higher half, as
the pyramid's tiers do), and more than zero. Every customer who bought on
or before as-of is placed; the segment selects those in ``quadrants``.

Transactions are purchase days (several orders on one day are one
purchase, as the pyramid's frequency counts them) and time is counted in
days: x = purchase days - 1, t_x = last - first, T = as-of - first purchase
day; a customer's mean spend is that of their repeat purchase days.

Why ``prepare`` does the work: predictions need a model fitted on every
customer and the Gauss hypergeometric function, which no SQL database
offers. So ``prepare`` fits and scores everyone once per run and hands the
batches the members of the selected quadrants (id, quadrant, predicted
value, P(alive)) as one compressed text, a single value that costs a
Prefect task nothing to receive; each batch turns the ids in its range into
a ``VALUES`` table. The select never executes anything. Without prepared
``members`` there is nothing to select from, and building the segment is a
ConfigError saying so (`careflow segment list clv` and campaign runs prepare
it themselves).
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import asdict
from datetime import date, timedelta
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from sqlalchemy import (
    BigInteger,
    Float,
    Select,
    String,
    and_,
    case,
    cast,
    column,
    false,
    func,
    literal,
    select,
    values,
)
from sqlalchemy.engine import Connection

from careflow.db.models import Order
from careflow.db.sqlfunc import day_number, day_number_of, readable_day
from careflow.errors import ConfigError
from careflow.money import exponent
from careflow.segments._params import SegmentParams, check
from careflow.segments._registry import Segment
from careflow.segments.vip import Percent

QUADRANTS = ("retain", "develop", "maintain", "convert_or_let_go")
#: the columns the segment returns, besides customer_id
MEMBER_COLUMNS = ("quadrant", "historical_minor", "predicted_minor", "p_alive", "currency")


class ClvParams(SegmentParams):
    """Parameters of ``clv``."""

    quadrants: Annotated[list[Literal[QUADRANTS]], Field(min_length=1)] = Field(
        ["retain"], description="The quadrants of the value matrix to select."
    )
    window_days: int = Field(
        365, strict=True, ge=1, le=3650,
        description="Current value: money spent in the last this-many days up to as-of.",
    )
    horizon_days: int = Field(
        365, strict=True, ge=1, le=3650,
        description="Predicted value: expected spend over the next this-many days.",
    )
    current_high_pct: Percent = Field(
        50.0, description="Share of customers whose current value counts as high."
    )
    future_high_pct: Percent = Field(
        50.0, description="Share of customers whose predicted value counts as high."
    )
    currency: str | None = Field(
        None,
        strict=True,
        description="Only orders in this currency count (null: the one currency there is).",
        json_schema_extra={"allowed": "a 3-letter currency code such as GBP, or null"},
    )
    members: str | None = Field(
        None,
        description="The selected customers, filled in once per run by segments.prepare.",
        json_schema_extra={"internal": True, "allowed": "what segments.prepare returns"},
    )
    fit: dict | None = Field(
        None,
        description="The fitted models and cut values, filled in by segments.prepare.",
        json_schema_extra={"internal": True, "allowed": "what segments.prepare returns"},
    )

    @field_validator("currency")
    @classmethod
    def _currency_code(cls, code: str | None) -> str | None:
        if code is None:
            return None
        if not re.fullmatch(r"[A-Za-z]{3}", code):
            raise ValueError("not a 3-letter code")
        return code.upper()

    @field_validator("quadrants")
    @classmethod
    def _no_repeats(cls, quadrants: list[str]) -> list[str]:
        return list(dict.fromkeys(quadrants))


def customer_history(as_of: date, window_days: int, currency: str | None) -> Select:
    """Per customer who bought on or before as-of: purchase days, spend and first-day spend.

    Columns: customer_id, first_day, last_day, purchase_days, total_minor,
    first_day_minor, historical_minor (spent in the window), currencies, currency.
    """
    where = [readable_day(Order.ordered_on), Order.ordered_on <= as_of]  # SQLite: any text
    if currency:
        where.append(Order.currency == currency)
    daily = (
        select(
            Order.customer_id,
            day_number(Order.ordered_on).label("d"),
            cast(func.sum(Order.amount_minor), BigInteger).label("spent"),
        )
        .where(*where)
        .group_by(Order.customer_id, Order.ordered_on)
        .subquery("daily")
    )
    since = day_number_of(as_of - timedelta(days=window_days))
    per_customer = (
        select(
            daily.c.customer_id,
            func.min(daily.c.d).label("first_day"),
            func.max(daily.c.d).label("last_day"),
            func.count().label("purchase_days"),
            cast(func.sum(daily.c.spent), BigInteger).label("total_minor"),
            cast(
                func.sum(case((daily.c.d > since, daily.c.spent), else_=0)), BigInteger
            ).label("historical_minor"),
        )
        .group_by(daily.c.customer_id)
        .subquery("per_customer")
    )
    first = daily.alias("first_purchase")
    currencies = (
        select(
            Order.customer_id,
            func.count(func.distinct(Order.currency)).label("currencies"),
            func.min(Order.currency).label("currency"),
        )
        .where(*where)
        .group_by(Order.customer_id)
        .subquery("currencies")
    )
    return (
        select(
            per_customer,
            first.c.spent.label("first_day_minor"),
            currencies.c.currencies,
            currencies.c.currency,
        )
        .join(
            first,
            and_(first.c.customer_id == per_customer.c.customer_id,
                 first.c.d == per_customer.c.first_day),
        )
        .join(currencies, currencies.c.customer_id == per_customer.c.customer_id)
        .order_by(per_customer.c.customer_id)
    )


def score_customers(conn: Connection, as_of: date, params: Mapping | ClvParams | None = None,
                    *, draws: int = 0) -> tuple[pd.DataFrame, dict]:
    """Every customer who bought on or before as-of, scored and placed in the matrix.

    Returns (customers, fit). ``customers`` has customer_id, historical_minor,
    purchase_days, days_since, x, t_x, T, mean_spend (major units), then
    p_alive, expected_purchases, expected_spend, predicted_value (major
    units; each with _low and _high from ``draws`` bootstrap refits, NaN
    without), predicted_minor, current_high,
    future_high, quadrant. ``fit`` holds the fitted parameters and cut values.
    ConfigError when the orders mix currencies and none was chosen;
    DataError when there are too few customers to fit the models.
    """
    p = params if isinstance(params, ClvParams) else check("clv", ClvParams, params or {})
    rows = conn.execute(customer_history(as_of, p.window_days, p.currency)).mappings().all()
    # here, not at the top: the model's SciPy costs every careflow command a second
    # at start (the segment registry imports this module), only this function uses it
    from careflow.clv import fit_bgnbd, fit_gamma_gamma, predict

    frame = pd.DataFrame([dict(r) for r in rows], columns=[
        "customer_id", "first_day", "last_day", "purchase_days", "total_minor",
        "historical_minor", "first_day_minor", "currencies", "currency",
    ])  # fmt: skip
    currency = p.currency or _one_currency(frame)
    scale = 10 ** exponent(currency) if currency else 1
    today = day_number_of(as_of)
    frame = frame.astype({c: "int64" for c in ("customer_id", "first_day", "last_day",
                                                "purchase_days", "total_minor",
                                                "historical_minor", "first_day_minor")})
    frame["days_since"] = today - frame["last_day"]
    frame["x"] = frame["purchase_days"] - 1
    frame["t_x"] = frame["last_day"] - frame["first_day"]
    frame["T"] = today - frame["first_day"]
    repeat_minor = frame["total_minor"] - frame["first_day_minor"]
    frame["mean_spend"] = np.where(frame["x"] > 0, repeat_minor / frame["x"].clip(lower=1), 0.0)
    frame["mean_spend"] /= scale
    bg = fit_bgnbd(frame["x"], frame["t_x"], frame["T"])
    gg = fit_gamma_gamma(frame["x"], frame["mean_spend"])
    predicted = predict(bg, gg, p.horizon_days, frame["x"], frame["t_x"], frame["T"],
                        frame["mean_spend"], draws=draws)
    for name, value in predicted.items():
        frame[name] = value
    frame["predicted_minor"] = np.round(frame["predicted_value"] * scale).astype("int64")
    n = len(frame)
    frame["current_high"] = _high(frame["historical_minor"], p.current_high_pct, n)
    frame["future_high"] = _high(frame["predicted_minor"], p.future_high_pct, n)
    frame["quadrant"] = np.select(
        [frame["current_high"] & frame["future_high"], frame["future_high"],
         frame["current_high"]],
        ["retain", "develop", "maintain"],
        default="convert_or_let_go",
    )
    frame["currency"] = currency
    fit = {
        "customers": n,
        "currency": currency,
        "horizon_days": p.horizon_days,
        "bgnbd": _plain(asdict(bg)),
        "gamma_gamma": _plain(asdict(gg)),
        "bootstrap_draws": draws,
        "current_cut_minor": _cut(frame, "historical_minor", "current_high"),
        "future_cut_minor": _cut(frame, "predicted_minor", "future_high"),
    }
    return frame, fit


def _one_currency(frame: pd.DataFrame) -> str | None:
    seen = set(frame["currency"].dropna())
    if len(seen) > 1 or (frame["currencies"] > 1).any():
        raise ConfigError(
            f"segment 'clv': orders are in more than one currency ({', '.join(sorted(seen))}): "
            "choose one with the currency parameter"
        )
    return next(iter(seen), None)


def _high(values: pd.Series, pct: float, n: int) -> pd.Series:
    """Among the top pct% (fewer than pct% of customers strictly above), and above zero."""
    above = values.rank(method="min", ascending=False) - 1
    return (above * 100 < n * pct) & (values > 0)


def _cut(frame: pd.DataFrame, column: str, flag: str) -> int | None:
    high = frame.loc[frame[flag], column]
    return int(high.min()) if len(high) else None


def _plain(d: dict) -> dict:
    return {k: (float(v) if isinstance(v, (float, np.floating)) else int(v)) for k, v in d.items()}


def encode_members(frame: pd.DataFrame) -> str:
    """(id, quadrant, historical, predicted, P(alive)) rows as one compressed text."""
    rows = [
        [int(r.customer_id), QUADRANTS.index(r.quadrant), int(r.historical_minor),
         int(r.predicted_minor), round(float(r.p_alive), 4)]
        for r in frame.itertuples()
    ]
    packed = zlib.compress(json.dumps(rows, separators=(",", ":")).encode(), 9)
    return "clv1:" + base64.b64encode(packed).decode()


def decode_members(text: str) -> list[tuple]:
    """The rows ``encode_members`` packed; ConfigError for anything else."""
    try:
        tag, _, body = text.partition(":")
        if tag != "clv1":
            raise ValueError(tag)
        rows = json.loads(zlib.decompress(base64.b64decode(body, validate=True)))
        return [(int(c), QUADRANTS[q], int(h), int(v), float(a)) for c, q, h, v, a in rows]
    except (ValueError, TypeError, IndexError, zlib.error) as exc:
        raise ConfigError(
            "segment 'clv': members is not what segments.prepare returns; "
            "let careflow fill it in"
        ) from exc


def prepare(conn: Connection, as_of: date, p: ClvParams) -> dict:
    """Fit, score and place every customer once; ``members`` for the selected quadrants."""
    # intervals are for people reading a report; a run only needs the quadrants
    frame, fit = score_customers(conn, as_of, p)
    chosen = frame[frame["quadrant"].isin(p.quadrants)]
    return {"members": encode_members(chosen), "fit": fit}


def clv(as_of: date, p: ClvParams, *, id_range: tuple[int, int] | None = None) -> Select:
    """Customers in the chosen quadrants of the value matrix, from prepared ``members``.

    Columns: customer_id, quadrant, historical_minor (spent in the window),
    predicted_minor (expected over the horizon), p_alive, currency.
    """
    if p.members is None:
        raise ConfigError(
            "segment 'clv' scores every customer with a fitted model first: it runs in "
            "campaigns and `careflow segment list clv`, which prepare it (segments.prepare)"
        )
    rows = [r for r in decode_members(p.members) if r[1] in p.quadrants]
    if id_range is not None:
        rows = [r for r in rows if id_range[0] <= r[0] <= id_range[1]]
    money = (p.fit or {}).get("currency")
    types = {"customer_id": BigInteger, "quadrant": String, "historical_minor": BigInteger,
             "predicted_minor": BigInteger, "p_alive": Float}
    if not rows:  # VALUES needs a row: an empty select with the same columns
        return select(
            *[cast(literal(None), t).label(name) for name, t in types.items()],
            cast(literal(money), String).label("currency"),
        ).where(false())
    table = values(
        *[column(name, t) for name, t in types.items()], name="members", literal_binds=True
    ).data(rows).cte("clv_members")
    return select(
        cast(table.c.customer_id, BigInteger).label("customer_id"),
        table.c.quadrant,
        table.c.historical_minor,
        table.c.predicted_minor,
        table.c.p_alive,
        cast(literal(money), String).label("currency"),
    )


SEGMENT = Segment(
    "clv",
    clv,
    ClvParams,
    "Customers in chosen quadrants of the value matrix (value now against predicted value).",
    prepare=prepare,
    needs_prepare=True,
)

__all__ = [
    "QUADRANTS",
    "SEGMENT",
    "ClvParams",
    "clv",
    "customer_history",
    "prepare",
    "score_customers",
]

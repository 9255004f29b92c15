"""Customer segments: one file per segment, each a function that BUILDS a select.

Contract every segment follows (tests/segments/test_contract.py checks it):
- signature ``name(as_of: date, *, id_range=None, **documented_parameters) -> Select``;
- its parameters are a pydantic model (``PARAMS[name]``) declared in its own
  file: types, bounds, allowed values and what each means. ``validate_params``
  checks a campaign's or a person's parameters against it, and every bad
  value is a one-line ConfigError naming the segment, the parameter and what
  is allowed; segments raise nothing else for bad input;
- the select has a ``customer_id`` column plus context columns that templates
  may use (``days_since``, ``tier``...); it is never executed here;
- ``as_of`` is a calendar date and only purchases (and, for ``contact_due``,
  contacts) on or before it count, so a segment can be replayed for any past
  date; it must lie within ``careflow.clock.EARLIEST``..``LATEST``
  (1900-2200), which keeps every window (at most 3650 days) clear of the
  ends of Python's calendar;
- ``id_range=(lo, hi)`` limits the result to customers with lo <= id <= hi so
  a flow can cut the work into batches;
- a segment that needs the whole population (the pyramid ranks every buyer)
  registers a ``prepare(conn, as_of, **params) -> dict`` in PREPARE: a flow
  calls it once per run and hands its (small) result to every batch as extra
  parameters, so batches do not each redo the whole-population work;
- a segment in NEEDS_PREPARE (clv: a fitted model places every customer)
  cannot be built before ``prepare`` has run: ``build`` without its prepared
  parameters is a ConfigError, and whoever lists it prepares it first.

The database does the work: aggregation, windows and medians run in SQL on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from datetime import date, datetime

from sqlalchemy import Select, func, select
from sqlalchemy.engine import Connection

from careflow.clock import check_in_range
from careflow.errors import ConfigError
from segments._params import SegmentParams, check, describe
from segments.birthday import BirthdayParams, birthday
from segments.clv import ClvParams, clv
from segments.clv import prepare as prepare_clv
from segments.contact_due import ContactDueParams, contact_due
from segments.dormant import DormantParams, dormant
from segments.holiday import HolidayParams, holiday
from segments.lunar_birthday import LunarBirthdayParams, lunar_birthday
from segments.reorder_due import ReorderDueParams, reorder_due
from segments.vip import PyramidParams, VipParams, pyramid, vip
from segments.vip import prepare as prepare_pyramid

SEGMENTS: dict[str, Callable[..., Select]] = {
    "birthday": birthday,
    "reorder_due": reorder_due,
    "dormant": dormant,
    "vip": vip,
    "pyramid": pyramid,
    "clv": clv,
    "holiday": holiday,
    "lunar_birthday": lunar_birthday,
    "contact_due": contact_due,
}

PARAMS: dict[str, type[SegmentParams]] = {
    "birthday": BirthdayParams,
    "reorder_due": ReorderDueParams,
    "dormant": DormantParams,
    "vip": VipParams,
    "pyramid": PyramidParams,
    "clv": ClvParams,
    "holiday": HolidayParams,
    "lunar_birthday": LunarBirthdayParams,
    "contact_due": ContactDueParams,
}

PREPARE: dict[str, Callable[..., dict]] = {
    "vip": prepare_pyramid,
    "pyramid": prepare_pyramid,
    "clv": prepare_clv,
}
#: segments that select nothing until ``prepare`` has run (clv's model needs every customer)
NEEDS_PREPARE = frozenset({"clv"})

__all__ = [
    "NEEDS_PREPARE",
    "PARAMS",
    "PREPARE",
    "SEGMENTS",
    "birthday",
    "build",
    "clv",
    "contact_due",
    "count",
    "describe_params",
    "dormant",
    "holiday",
    "lunar_birthday",
    "pyramid",
    "reorder_due",
    "validate_params",
    "vip",
]


def _segment(name: str) -> Callable[..., Select]:
    try:
        return SEGMENTS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown segment {name!r}; known segments: {', '.join(sorted(SEGMENTS))}"
        ) from None


def validate_params(name: str, params: Mapping | None) -> dict:
    """The segment's parameters checked and normalised (defaults filled in).

    Raises ConfigError, one line naming the segment, the parameter and what
    is allowed. Flows call it before a run starts; ``build`` calls it too.
    The result is plain data (numbers, text, lists), safe to hand to tasks,
    and validates again unchanged.
    """
    _segment(name)
    checked = check(name, PARAMS[name], params if params is not None else {})
    out = checked.model_dump()
    model = PARAMS[name]
    for field in model.model_fields.keys() - model.public_fields().keys():
        if out[field] is None:
            del out[field]  # filled in by prepare; absent until then
    return out


def describe_params(name: str) -> list[dict]:
    """The parameters a person may set on segment ``name``: name, allowed, default, meaning."""
    _segment(name)
    return [
        {
            "name": field,
            "allowed": describe(info),
            "default": info.default,
            "description": info.description or "",
        }
        for field, info in PARAMS[name].public_fields().items()
    ]


def build(
    name: str,
    as_of: date,
    params: dict | None = None,
    *,
    at: datetime | None = None,
    id_range: tuple[int, int] | None = None,
) -> Select:
    """The named segment's select; ConfigError for an unknown name or parameter.

    ``at`` (the run's instant) goes to segments that care about the time of
    day in the customer's zone (birthday); the others count calendar days.
    """
    fn = _segment(name)
    checked = validate_params(name, params)
    check_in_range(as_of, "as-of date")
    if at is not None:
        check_in_range(at, "as-of instant")
    extra = {"at": at} if at is not None and "at" in inspect.signature(fn).parameters else {}
    return fn(as_of, **checked, id_range=id_range, **extra)


def count(conn: Connection, query: Select) -> int:
    """How many customers a segment select returns."""
    sub = query.subquery()
    return conn.execute(select(func.count()).select_from(sub)).scalar_one()


def prepare(name: str, conn: Connection, as_of: date, params: dict | None = None) -> dict:
    """Parameters for every batch of a run: ``params`` (validated, normalised) plus
    what PREPARE adds."""
    params = validate_params(name, params)
    if name in PREPARE:
        check_in_range(as_of, "as-of date")
        params |= PREPARE[name](conn, as_of, **params)
    return params

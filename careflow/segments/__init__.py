"""Customer segments: one file per segment, each a function that BUILDS a select.

Each segment file declares its :class:`Segment` entry once (careflow/segments/_registry.py):
the build function, the parameter model, the preparation if any and one line
saying whom it selects. This module registers the built-in ones; ``register``
adds another (a test's, a plug-in's) and everything below picks it up.

Contract every segment follows (tests/segments/test_contract.py checks every
registered one):
- build function ``name(as_of: date, params, *, id_range=None) -> Select``, where
  ``params`` is its parameter model already validated (once, by ``build``);
- its parameters are a pydantic model declared in its own file: types,
  bounds, allowed values and what each means. ``validate_params`` checks a
  campaign's or a person's parameters against it, and every bad value is a
  one-line ConfigError naming the segment, the parameter and what is
  allowed; segments raise nothing else for bad input;
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
  declares a ``prepare(conn, as_of, params) -> dict`` in its entry: a flow
  calls it once per run and hands its (small) result to every batch as extra
  parameters, so batches do not each redo the whole-population work;
- a segment whose entry says ``needs_prepare`` (clv: a fitted model places every customer)
  cannot be built before ``prepare`` has run: ``build`` without its prepared
  parameters is a ConfigError, and whoever lists it prepares it first.

The database does the work: aggregation, windows and medians run in SQL on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from datetime import date, datetime

from sqlalchemy import Select, func, select
from sqlalchemy.engine import Connection

from careflow.clock import check_in_range
from careflow.segments import birthday as _birthday
from careflow.segments import clv as _clv
from careflow.segments import contact_due as _contact_due
from careflow.segments import dormant as _dormant
from careflow.segments import holiday as _holiday
from careflow.segments import journey_step as _journey_step
from careflow.segments import lunar_birthday as _lunar_birthday
from careflow.segments import reorder_due as _reorder_due
from careflow.segments import vip as _vip
from careflow.segments._params import SegmentParams, describe
from careflow.segments._registry import Segment, get, names, register, unregister

for _entry in (
    _birthday.SEGMENT,
    _reorder_due.SEGMENT,
    _dormant.SEGMENT,
    _vip.VIP,
    _vip.PYRAMID,
    _clv.SEGMENT,
    _holiday.SEGMENT,
    _lunar_birthday.SEGMENT,
    _contact_due.SEGMENT,
    _journey_step.SEGMENT,
):
    register(_entry)

__all__ = [
    "Segment",
    "build",
    "count",
    "describe_params",
    "describe_segments",
    "get",
    "names",
    "prepare",
    "register",
    "unregister",
    "validate_params",
]


def _plain(entry: Segment, checked: SegmentParams) -> dict:
    """Validated parameters as plain data; fields ``prepare`` fills in left out until then."""
    out = checked.model_dump()
    for field in entry.params.model_fields.keys() - entry.params.public_fields().keys():
        if out[field] is None:
            del out[field]
    return out


def validate_params(name: str, params: Mapping | None) -> dict:
    """The segment's parameters checked and normalised (defaults filled in).

    Raises ConfigError, one line naming the segment, the parameter and what
    is allowed. Flows call it before a run starts. The result is plain data
    (numbers, text, lists), safe to hand to tasks, and validates again unchanged.
    """
    entry = get(name)
    return _plain(entry, entry.check(params))


def describe_segments() -> dict[str, str]:
    """Every registered segment and the one line saying whom it selects."""
    return {name: get(name).description for name in names()}


def describe_params(name: str) -> list[dict]:
    """The parameters a person may set on segment ``name``: name, allowed, default, meaning."""
    return [
        {
            "name": field,
            "allowed": describe(info),
            "default": info.get_default(call_default_factory=True),
            "description": info.description or "",
        }
        for field, info in get(name).params.public_fields().items()
    ]


def build(
    name: str,
    as_of: date,
    params: Mapping | None = None,
    *,
    at: datetime | None = None,
    id_range: tuple[int, int] | None = None,
) -> Select:
    """The named segment's select; ConfigError for an unknown name or parameter.

    The parameters are validated here, once, and the segment's build function
    gets the validated model. ``at`` (the run's instant) goes to segments that
    care about the time of day in the customer's zone (birthday); the others
    count calendar days.
    """
    entry = get(name)
    checked = entry.check(params)
    check_in_range(as_of, "as-of date")
    if at is not None:
        check_in_range(at, "as-of instant")
    timed = at is not None and "at" in inspect.signature(entry.build).parameters
    extra = {"at": at} if timed else {}
    return entry.build(as_of, checked, id_range=id_range, **extra)


def count(conn: Connection, query: Select) -> int:
    """How many customers a segment select returns."""
    sub = query.subquery()
    return conn.execute(select(func.count()).select_from(sub)).scalar_one()


def prepare(name: str, conn: Connection, as_of: date, params: Mapping | None = None) -> dict:
    """Parameters for every batch of a run: ``params`` (validated, normalised) plus
    what the segment's ``prepare`` adds."""
    entry = get(name)
    checked = entry.check(params)
    out = _plain(entry, checked)
    if entry.prepare is not None:
        check_in_range(as_of, "as-of date")
        out |= entry.prepare(conn, as_of, checked)
    return out

"""Customer segments: one file per segment, each a function that BUILDS a select.

Contract every segment follows (tests/segments/test_contract.py checks it):
- signature ``name(as_of: date, *, id_range=None, **documented_parameters) -> Select``;
- the select has a ``customer_id`` column plus context columns that templates
  may use (``days_since``, ``tier``...); it is never executed here;
- ``as_of`` is a calendar date and only purchases on or before it count, so a
  segment can be replayed for any past date;
- ``id_range=(lo, hi)`` limits the result to customers with lo <= id <= hi so
  a flow can cut the work into batches;
- a segment that needs the whole population (the pyramid ranks every buyer)
  registers a ``prepare(conn, as_of, **params) -> dict`` in PREPARE: a flow
  calls it once per run and hands its (small) result to every batch as extra
  parameters, so batches do not each redo the whole-population work.

The database does the work: aggregation, windows and medians run in SQL on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import date, datetime

from sqlalchemy import Select, func, select
from sqlalchemy.engine import Connection

from careflow.errors import ConfigError
from segments.birthday import birthday
from segments.dormant import dormant
from segments.reorder_due import reorder_due
from segments.vip import prepare as prepare_pyramid
from segments.vip import pyramid, vip

SEGMENTS: dict[str, Callable[..., Select]] = {
    "birthday": birthday,
    "reorder_due": reorder_due,
    "dormant": dormant,
    "vip": vip,
    "pyramid": pyramid,
}

PREPARE: dict[str, Callable[..., dict]] = {"vip": prepare_pyramid, "pyramid": prepare_pyramid}

__all__ = ["SEGMENTS", "birthday", "build", "count", "dormant", "pyramid", "reorder_due", "vip"]


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
    try:
        fn = SEGMENTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown segment {name!r}; known segments: {', '.join(sorted(SEGMENTS))}"
        ) from None
    extra = {"at": at} if at is not None and "at" in inspect.signature(fn).parameters else {}
    try:
        return fn(as_of, **(params or {}), id_range=id_range, **extra)
    except TypeError as exc:
        raise ConfigError(f"segment {name!r}: bad parameters {params!r}: {exc}") from None


def count(conn: Connection, query: Select) -> int:
    """How many customers a segment select returns."""
    sub = query.subquery()
    return conn.execute(select(func.count()).select_from(sub)).scalar_one()


def prepare(name: str, conn: Connection, as_of: date, params: dict | None = None) -> dict:
    """Parameters for every batch of a run: ``params`` plus what PREPARE adds."""
    params = dict(params or {})
    if name in PREPARE:
        params |= PREPARE[name](conn, as_of, **params)
    return params

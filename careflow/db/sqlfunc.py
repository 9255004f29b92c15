"""SQL spellings careflow needs on both dialects.

Segments count calendar days as integers ("day numbers": days since
1970-01-01) so gaps, medians and windows are plain integer arithmetic on
both dialects. :func:`unindexed` keeps a test out of the planner's choice
of index.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Engine,
    Float,
    Integer,
    Select,
    String,
    any_,
    bindparam,
    func,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

EPOCH = date(1970, 1, 1)


def unindexed(column):
    """A text ``column`` as a test on it that no index can serve (``coalesce(column, '')``,
    equal for every non-null value), so the rows are found through the index the query
    means, whatever the planner's statistics say.

    Needed where a test on a column with its own index looks selective to a planner
    that has no statistics (SQLite unless analysed) or statistics from before a run
    wrote its rows (PostgreSQL): the ledger's writes by id (careflow/ledger/plans.py)
    and its reads of who holds an address (careflow/contact_limits.py) walked every
    row the run or the campaign had instead.
    """
    return func.coalesce(column, "")


def insert(conn, table):
    """``table``'s INSERT for the connection's dialect, which knows ON CONFLICT (both
    dialects spell it alike): ``insert(conn, t).on_conflict_do_nothing(...)``."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)


#: ids per statement of :func:`id_chunks` on SQLite (an IN list of bound parameters)
ID_CHUNK = 1000


def id_chunks(conn, ids: list[int]) -> list[list[int]]:
    """``ids`` in the parts :func:`among` takes: all at once on PostgreSQL (one array
    parameter), ID_CHUNK at a time on SQLite."""
    step = len(ids) if conn.dialect.name == "postgresql" else ID_CHUNK
    return [ids[i : i + step] for i in range(0, len(ids), step or 1)]


def among(conn, column, ids: list[int]):
    """SQL: ``column`` is one of ``ids``. PostgreSQL: ``= ANY(array)``, one parameter, a
    statement that compiles once (an IN list of thousands of parameters was rendered
    and parsed again by SQLAlchemy and psycopg on every execution: a fifth of a 1M
    journey advance's CPU, bench/README.md); SQLite: an IN list (:func:`id_chunks`)."""
    if conn.dialect.name != "postgresql":
        return column.in_(ids)
    from sqlalchemy.dialects.postgresql import ARRAY

    return column == any_(bindparam(None, list(ids), type_=ARRAY(BigInteger)))


def id_ranges(engine: Engine, ids: Select, size: int) -> list[tuple[int, int]]:
    """Ranges of ``ids`` (a select of one column of ids, repeats allowed) holding about
    ``size`` rows each: one query numbers the rows and keeps every ``size``-th id as a
    boundary, so planning a run's batches costs one pass whatever the ids' spread."""
    inner = ids.subquery("ids")
    cid = inner.c[0]
    numbered = select(cid.label("cid"), func.row_number().over(order_by=cid).label("rn"))
    numbered = numbered.subquery("numbered")
    with engine.connect() as conn:
        starts = conn.execute(
            select(numbered.c.cid)
            .where((numbered.c.rn - 1) % size == 0)
            .order_by(numbered.c.cid)
        ).scalars()
        starts = list(dict.fromkeys(starts))  # one customer's many rows: one boundary
        if not starts:
            return []
        last = conn.execute(select(func.max(numbered.c.cid))).scalar_one()
    ends = [nxt - 1 for nxt in starts[1:]] + [last]
    return list(zip(starts, ends, strict=True))


def day_number_of(d: date) -> int:
    """The Python twin of ``day_number``: days since 1970-01-01."""
    return (d - EPOCH).days


class day_number(FunctionElement):
    """Days since 1970-01-01 of a DATE column."""

    type = Integer()
    inherit_cache = True


@compiles(day_number, "sqlite")
def _day_number_sqlite(element, compiler, **kw):
    (arg,) = element.clauses
    return f"CAST(julianday({compiler.process(arg, **kw)}) - 2440587.5 AS INTEGER)"


@compiles(day_number)
def _day_number_default(element, compiler, **kw):
    (arg,) = element.clauses
    return f"(CAST({compiler.process(arg, **kw)} AS DATE) - DATE '1970-01-01')"


class readable_day(FunctionElement):
    """True where a DATE column holds a real calendar day.

    PostgreSQL only stores real dates. SQLite keeps any text in a DATE column
    ('2026-13-45', 'yesterday', '') and its date functions turn such a value into
    NULL (or, for '2026-02-30' or 'now', into some other day), which then breaks
    whatever sums or stores it: a value is a real day when SQLite reads it back
    as itself, normalised (a time after the day is allowed)."""

    type = Boolean()
    inherit_cache = True


@compiles(readable_day, "sqlite")
def _readable_day_sqlite(element, compiler, **kw):
    (arg,) = element.clauses
    value = compiler.process(arg, **kw)
    return f"coalesce(date(julianday({value})) = substr({value}, 1, 10), 0)"


@compiles(readable_day)
def _readable_day_default(element, compiler, **kw):
    (arg,) = element.clauses
    return f"({compiler.process(arg, **kw)} IS NOT NULL)"


class month_day(FunctionElement):
    """'MM-DD' of a DATE column."""

    type = String()
    inherit_cache = True


@compiles(month_day, "sqlite")
def _month_day_sqlite(element, compiler, **kw):
    (arg,) = element.clauses
    return f"strftime('%m-%d', {compiler.process(arg, **kw)})"


@compiles(month_day)
def _month_day_default(element, compiler, **kw):
    (arg,) = element.clauses
    return f"to_char({compiler.process(arg, **kw)}, 'MM-DD')"


class day_date(FunctionElement):
    """The DATE of a day number (the inverse of ``day_number``)."""

    type = Date()
    inherit_cache = True


@compiles(day_date, "sqlite")
def _day_date_sqlite(element, compiler, **kw):
    (arg,) = element.clauses
    return f"date({compiler.process(arg, **kw)} + 2440587.5)"


@compiles(day_date)
def _day_date_default(element, compiler, **kw):
    (arg,) = element.clauses
    return f"(DATE '1970-01-01' + CAST({compiler.process(arg, **kw)} AS INTEGER))"


class shifted(FunctionElement):
    """A DATETIME column moved by a whole number of minutes (``shifted(col, -90)``): a UTC
    instant as a naive wall clock of a zone (orders keep the shop's clock). The minutes
    are written into the SQL, so statements using it are not cached."""

    type = DateTime()
    inherit_cache = False


def _minutes(element) -> int:
    value = element.clauses.clauses[1].value
    return int(value)


@compiles(shifted, "sqlite")
def _shifted_sqlite(element, compiler, **kw):
    col = compiler.process(element.clauses.clauses[0], **kw)
    return f"datetime({col}, '{_minutes(element):+d} minutes')"


@compiles(shifted)
def _shifted_default(element, compiler, **kw):
    col = compiler.process(element.clauses.clauses[0], **kw)
    return f"({col} + interval '{_minutes(element)} minutes')"


class day_of(FunctionElement):
    """The calendar DATE of a DATETIME column, on the clock it is stored in (the ledger's
    and the events' UTC)."""

    type = Date()
    inherit_cache = True


@compiles(day_of, "sqlite")
def _day_of_sqlite(element, compiler, **kw):
    (arg,) = element.clauses
    return f"date({compiler.process(arg, **kw)})"


@compiles(day_of)
def _day_of_default(element, compiler, **kw):
    (arg,) = element.clauses
    return f"CAST({compiler.process(arg, **kw)} AS DATE)"


class seconds_between(FunctionElement):
    """Seconds from the second DATETIME column to the first (``later - earlier``), a float."""

    type = Float()
    inherit_cache = True


@compiles(seconds_between, "sqlite")
def _seconds_between_sqlite(element, compiler, **kw):
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


@compiles(seconds_between)
def _seconds_between_default(element, compiler, **kw):
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"

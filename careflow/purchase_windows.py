"""Each buyer's purchases within a trailing window, kept for the pyramid.

The pyramid (careflow/segments/vip.py) ranks everyone who bought in the last
``window_days`` up to as-of: money spent, distinct purchase days, days
since the last one. Summing that from the orders means reading every order
in the window: 6-9 s for 3.3M orders on SQLite at a million customers, on
every run and again for every batch (bench/README.md). So each window a run
asks for (its length and currency) is kept in ``purchase_windows``, one row
per buyer, exact for the as-of day its ``purchase_window_state`` row names:

- :func:`bring_to` moves a kept window to a run's as-of day. The first time
  it reads the whole window; after that it *rolls*: only customers with
  orders on the days that enter or leave the window are summed again (a day
  later: two days of orders). A jump of more than ``ROLL_DAYS`` rebuilds.
- :func:`rewrite` sums again the customers whose orders changed: the
  purchase-facts refresh calls it for each chunk of its dirty list, in the
  same transaction, so the kept rows of every clean customer are exact for
  their window's day (careflow/purchase_facts.py keeps that list).
- :func:`buyers` is what the pyramid reads, exact in every case: the kept
  rows of clean customers when the window is at the asked day, the orders
  of dirty customers summed on the spot, and the whole window summed from
  the orders when nothing is kept for that day (a report for another day,
  or a run that rolled the window elsewhere meanwhile).

Windows nobody brought to a day for ``KEEP_DAYS`` are dropped by the next
:func:`bring_to`. :func:`computed` is the one definition of a buyer's
window; the kept rows are its output, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Select,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    union,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from careflow.clock import utcnow
from careflow.db.models import Order, PurchaseFactsDirty, PurchaseWindow, PurchaseWindowState
from careflow.db.sqlfunc import EPOCH, day_number, day_number_of, readable_day

#: tie_key(id) = (id mod TIE_P) x TIE_A mod TIE_P; the product stays below 2^62
TIE_P, TIE_A = 2_147_483_647, 1_327_217_885
#: a move of at most this many days rolls a kept window; a longer one rebuilds it
ROLL_DAYS = 31
#: a kept window nobody moved for this long is dropped
KEEP_DAYS = 30
COLUMNS = ("customer_id", "monetary_minor", "currency", "frequency", "last_day")


def tie_key(customer_id: int) -> int:
    """Where a buyer stands among buyers with equal values (lower first); careflow/segments/vip.py
    says why this order."""
    return (customer_id % TIE_P) * TIE_A % TIE_P


def tie_key_sql(customer_id):
    """``tie_key`` in SQL: integer arithmetic, the same on SQLite and PostgreSQL."""
    return (customer_id % literal(TIE_P, BigInteger)) * literal(TIE_A, BigInteger) % literal(
        TIE_P, BigInteger
    )


def window_key(window_days: int, currency: str | None) -> str:
    return f"{window_days}:{currency}" if currency else str(window_days)


def computed(as_of: date, window_days: int, currency: str | None, *where) -> Select:
    """Each buyer's window (``COLUMNS``) from their orders: purchases after
    ``as_of - window_days`` up to ``as_of``, in ``currency`` if given."""
    since = as_of - timedelta(days=window_days)
    clauses = [readable_day(Order.ordered_on), Order.ordered_on <= as_of, Order.ordered_on > since]
    clauses += where
    if currency:
        clauses.append(Order.currency == currency)
    return (
        select(
            Order.customer_id,
            # sum(bigint) is NUMERIC on PostgreSQL: back to an exact integer.
            cast(func.sum(Order.amount_minor), BigInteger).label("monetary_minor"),
            case(
                (func.count(func.distinct(Order.currency)) == 1, func.min(Order.currency)),
                else_=None,
            ).label("currency"),
            func.count(func.distinct(Order.ordered_on)).label("frequency"),
            day_number(func.max(Order.ordered_on)).label("last_day"),
        )
        .where(*clauses)
        .group_by(Order.customer_id)
    )


def kept_at(key: str, as_of: date):
    """True when the window ``key`` is kept for ``as_of`` (one test, made once per query)."""
    s = PurchaseWindowState
    return exists().where(s.window_key == key, s.as_of_day == day_number_of(as_of))


def buyers(
    as_of: date,
    window_days: int,
    currency: str | None,
    id_range: tuple[int, int] | None = None,
    min_monetary: int | None = None,
) -> Select:
    """Every buyer's window as of ``as_of`` (``COLUMNS``), exact whatever is kept (module
    docs); ``min_monetary`` leaves out buyers who spent less."""
    w, key = PurchaseWindow, window_key(window_days, currency)
    kept = kept_at(key, as_of)
    dirty = select(PurchaseFactsDirty.customer_id)
    ids = [Order.customer_id.between(*id_range)] if id_range is not None else []
    stored = select(*[getattr(w, c) for c in COLUMNS]).where(
        w.window_key == key,
        kept,
        w.customer_id.not_in(dirty),
        *([w.customer_id.between(*id_range)] if id_range is not None else []),
        *([w.monetary_minor >= min_monetary] if min_monetary is not None else []),
    )
    # orders summed on the spot: dirty customers when the window is kept, else everyone
    # (two branches: a test of the window alone is made once, not once per order)
    dirty_live = computed(as_of, window_days, currency, kept, Order.customer_id.in_(dirty), *ids)
    all_live = computed(as_of, window_days, currency, ~kept, *ids)
    if min_monetary is not None:
        at_least = func.sum(Order.amount_minor) >= min_monetary
        dirty_live, all_live = dirty_live.having(at_least), all_live.having(at_least)
    return union_all(stored, dirty_live, all_live)


def bring_to(engine: Engine, as_of: date, window_days: int, currency: str | None) -> str:
    """Keep the window exact for ``as_of``; returns what it did: "kept", "rolled" or
    "built"."""
    key, day = window_key(window_days, currency), day_number_of(as_of)
    s, w = PurchaseWindowState, PurchaseWindow
    now = utcnow()
    with engine.begin() as conn:  # committed first, so a refresh running now waits on it
        insert_ignore = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        row = {"window_key": key, "window_days": window_days, "currency": currency, "used_at": now}
        conn.execute(insert_ignore(s).values(row).on_conflict_do_nothing())
    with engine.begin() as conn:
        previous = _lock_state(conn, key)
        if previous == day:
            done = "kept"
        elif previous is None or abs(day - previous) > ROLL_DAYS:
            conn.execute(delete(w).where(w.window_key == key))
            _insert(conn, key, as_of, window_days, currency)
            done = "built"
        else:
            lo, hi = sorted((previous, day))
            edges = [(lo, hi), (lo - window_days, hi - window_days)]  # days in or out
            # one range per edge (an OR of both would walk every order on SQLite)
            on = Order.ordered_on
            ranges = [on.between(_date(a + 1), _date(b)) for a, b in edges]
            moved = union(*[select(Order.customer_id).where(r) for r in ranges]).scalar_subquery()
            conn.execute(delete(w).where(w.window_key == key, w.customer_id.in_(moved)))
            _insert(conn, key, as_of, window_days, currency, Order.customer_id.in_(moved))
            done = "rolled"
        conn.execute(update(s).where(s.window_key == key).values(as_of_day=day, used_at=now))
    with engine.begin() as conn:  # windows nobody uses any more cost every refresh something
        conn.execute(delete(s).where(s.used_at < now - timedelta(days=KEEP_DAYS)))
    if done != "kept":
        tidy(engine, analyze=done == "built")
    return done


def tidy(engine: Engine, analyze: bool = True) -> None:
    """PostgreSQL, after a window is built or rolled: a fresh visibility map, so the
    pyramid's walk reads the index alone (without it the cut values took 9.3 s instead
    of 0.5 s at a million customers), and after a build fresh statistics, so the
    planner walks the indexes at all. A one-day roll changes about 1% of the rows and
    keeps the statistics: at a million customers the VACUUM then costs 0.05-0.3 s,
    and ANALYZE would add 0.1-0.3 s more."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM {'(ANALYZE) ' if analyze else ''}purchase_windows")


def _lock_state(conn: Connection, key: str) -> int | None:
    """The day the window is kept for (None: not yet); the window is this transaction's
    until it ends (PostgreSQL: its state row locked; SQLite: the one write lock)."""
    s = PurchaseWindowState
    pick = select(s.as_of_day).where(s.window_key == key)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update()
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    return conn.execute(pick).scalar_one()


def rewrite(conn: Connection, customer_ids: Sequence[int], among) -> None:
    """Sum ``customer_ids`` again in every kept window (their orders changed).
    ``among(column, ids)`` is the caller's ``column IN ids`` for the dialect."""
    s, w = PurchaseWindowState, PurchaseWindow
    windows = select(s)
    if conn.dialect.name == "postgresql":  # a window moving meanwhile waits, and vice versa
        windows = windows.with_for_update(read=True)
    for state in conn.execute(windows).all():
        if state.as_of_day is None:
            continue  # its first build starts after this commits, and reads these orders
        conn.execute(
            delete(w).where(w.window_key == state.window_key, among(w.customer_id, customer_ids))
        )
        _insert(
            conn,
            state.window_key,
            _date(state.as_of_day),
            state.window_days,
            state.currency,
            among(Order.customer_id, customer_ids),
        )


def _insert(conn: Connection, key: str, as_of: date, window_days: int, currency, *where) -> None:
    window = computed(as_of, window_days, currency, *where).subquery("window")
    conn.execute(
        insert(PurchaseWindow).from_select(
            ["window_key", *COLUMNS, "tie_key"],
            select(
                literal(key),
                *[window.c[c] for c in COLUMNS],
                tie_key_sql(window.c.customer_id),
            ),
        )
    )


def _date(day: int) -> date:
    return EPOCH + timedelta(days=day)

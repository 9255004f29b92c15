"""Each customer's purchase history, summed up once and kept current.

Segments ask the same questions of every customer's orders: when did they
first and last buy, on how many days, how many orders, what is their
rhythm (the median gap between purchase days), and how long does what
they last bought last them. Aggregating millions of orders for that on
every run costs 20 s to minutes at a million customers; reading one row
per customer costs well under a second (bench/README.md).

So the answers are kept in ``purchase_facts``, one row per customer:

- triggers on orders, order_lines and products (migration 0005) put every
  customer whose facts a change touches into ``purchase_facts_dirty``,
  whoever makes the change;
- :func:`history` is what segments read: the stored facts of clean
  customers whose last purchase is on or before ``as_of``, and for every
  other customer (dirty, or with purchases after ``as_of``) the same
  facts computed from their orders. It is exact at any moment and for any
  ``as_of``; the further back ``as_of`` lies, the more customers it
  computes (a week back: only the week's buyers);
- :func:`refresh` brings dirty customers up to date, a chunk at a time:
  imports call it when they finish, runs when they start.

:func:`computed` is the one definition of the facts; the stored ones are
its output, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date

from sqlalchemy import (
    BigInteger,
    Engine,
    Float,
    Select,
    String,
    and_,
    any_,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    union,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY

from careflow import purchase_windows
from careflow.db.models import Order, OrderLine, Product, PurchaseFacts, PurchaseFactsDirty
from careflow.db.sqlfunc import day_date, day_number, day_number_of, readable_day

COLUMNS = (
    "customer_id",
    "first_day",
    "last_day",
    "purchase_days",
    "orders",
    "median_gap",
    "product_days",
)
#: customers per refresh transaction: small enough to keep each one short
REFRESH_CHUNK = 10_000
#: PostgreSQL: refreshes at least this big update the planner's statistics
ANALYZE_AFTER = 1_000


def computed(as_of: date | None, *where) -> Select:
    """The facts (``COLUMNS``) of customers with orders on or before ``as_of`` (None: all),
    among the orders matching ``where``."""
    clauses = [readable_day(Order.ordered_on), *where]  # SQLite keeps any text (sqlfunc)
    if as_of is not None:
        clauses.append(Order.ordered_on <= as_of)
    days = (
        select(
            Order.customer_id,
            day_number(Order.ordered_on).label("d"),
            func.count().label("n"),
        )
        .where(*clauses)
        .group_by(Order.customer_id, Order.ordered_on)
        .cte("days")
    )
    gaps = select(
        days.c.customer_id,
        (
            days.c.d - func.lag(days.c.d).over(partition_by=days.c.customer_id, order_by=days.c.d)
        ).label("gap"),
    ).cte("gaps")
    ranked = (
        select(
            gaps.c.customer_id,
            gaps.c.gap,
            func.row_number()
            .over(partition_by=gaps.c.customer_id, order_by=gaps.c.gap)
            .label("rn"),
            func.count().over(partition_by=gaps.c.customer_id).label("k"),
        )
        .where(gaps.c.gap.is_not(None))
        .cte("ranked")
    )
    # the median: the middle gap, or the mean of the two middle gaps
    median = (
        select(ranked.c.customer_id, func.avg(cast(ranked.c.gap, Float)).label("median_gap"))
        .where(ranked.c.rn.in_([(ranked.c.k + 1) // 2, (ranked.c.k + 2) // 2]))
        .group_by(ranked.c.customer_id)
        .cte("median")
    )
    summed = (
        select(
            days.c.customer_id,
            func.min(days.c.d).label("first_day"),
            func.max(days.c.d).label("last_day"),
            func.count().label("purchase_days"),
            func.sum(days.c.n).label("orders"),
        )
        .group_by(days.c.customer_id)
        .cte("summed")
    )
    # what the last purchase day's lines last: quantity x the product's replenishment period
    product = (
        select(
            Order.customer_id,
            func.max(OrderLine.quantity * Product.replenish_days).label("product_days"),
        )
        .join(
            summed,
            and_(
                summed.c.customer_id == Order.customer_id,
                Order.ordered_on == day_date(summed.c.last_day),
            ),
        )
        .join(OrderLine, OrderLine.order_id == Order.id)
        .join(Product, Product.sku == OrderLine.sku)
        # the same orders again, so the database looks up these customers' orders
        # instead of walking every order to find the ones on a last day
        .where(*clauses, Product.replenish_days.is_not(None), OrderLine.quantity > 0)
        .group_by(Order.customer_id)
        .cte("product")
    )
    return (
        select(
            summed.c.customer_id,
            summed.c.first_day,
            summed.c.last_day,
            summed.c.purchase_days,
            cast(summed.c.orders, PurchaseFacts.orders.type).label("orders"),
            median.c.median_gap,
            cast(product.c.product_days, PurchaseFacts.product_days.type).label("product_days"),
        )
        .select_from(summed)
        .outerjoin(median, median.c.customer_id == summed.c.customer_id)
        .outerjoin(product, product.c.customer_id == summed.c.customer_id)
    )


def history(as_of: date, id_range: tuple[int, int] | None = None) -> Select:
    """Every customer's facts as of ``as_of``: exact whatever the state of the stored facts.

    Stored facts serve clean customers whose last purchase is on or before
    ``as_of``; the rest are computed from their orders (module docs).
    """
    f = PurchaseFacts
    today = literal(day_number_of(as_of))
    in_range = [f.customer_id.between(*id_range)] if id_range is not None else []
    dirty = select(PurchaseFactsDirty.customer_id)
    stored = select(*[getattr(f, c) for c in COLUMNS]).where(
        f.last_day <= today, f.customer_id.not_in(dirty), *in_range
    )
    redo = union(dirty, select(f.customer_id).where(f.last_day > today))
    live_range = [Order.customer_id.between(*id_range)] if id_range is not None else []
    live = computed(as_of, Order.customer_id.in_(redo), *live_range)
    return union_all(stored, live)


def refresh(
    engine: Engine,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> int:
    """Bring every dirty customer's facts up to date; returns how many were refreshed.

    An order whose date SQLite cannot read (it keeps any text: '2026-13-45',
    'yesterday', '') is left out of its customer's facts, so that customer's
    facts come from their readable orders (or there are none) and nobody else is
    touched; ``warn`` is told which customers and values, once, when they are
    refreshed.

    Each chunk is one transaction that takes its customers off the dirty
    list and writes their facts from their orders. A write to a customer's
    orders that commits meanwhile marks them dirty again (PostgreSQL: the
    trigger's row lock makes the two wait for each other; SQLite: one
    writer at a time), so nothing is lost; concurrent refreshes take
    different chunks (``SKIP LOCKED``).
    """
    done, unreadable = 0, []
    postgresql = engine.dialect.name == "postgresql"
    while True:
        pick = (
            select(PurchaseFactsDirty.customer_id)
            .order_by(PurchaseFactsDirty.customer_id)
            .limit(REFRESH_CHUNK)
        )
        if postgresql:
            pick = pick.with_for_update(skip_locked=True)
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    delete(PurchaseFactsDirty)
                    .where(PurchaseFactsDirty.customer_id.in_(pick.scalar_subquery()))
                    .returning(PurchaseFactsDirty.customer_id)
                ).scalars()
            )
            if not ids:
                break
            write(conn, ids)
            if not postgresql:  # PostgreSQL stores only real dates
                unreadable += unreadable_orders(conn, ids)
        done += len(ids)
        if progress is not None:
            progress(done)
    if unreadable and warn is not None:
        warn(describe_unreadable(unreadable))
    if postgresql and done >= ANALYZE_AFTER:
        # the planner's row counts for both tables are now far off (a million dirty
        # customers become none): without new ones it picks plans for the old sizes
        with engine.begin() as conn:
            conn.execute(text("ANALYZE purchase_facts, purchase_facts_dirty"))
        purchase_windows.tidy(engine)
    return done


def write(conn, customer_ids: Sequence[int]) -> None:
    """Replace the stored facts of ``customer_ids``, and their rows in every kept
    purchase window (careflow/purchase_windows.py), by what their orders say now."""
    postgresql = conn.dialect.name == "postgresql"
    conn.execute(
        delete(PurchaseFacts).where(_among(PurchaseFacts.customer_id, customer_ids, postgresql))
    )
    conn.execute(
        insert(PurchaseFacts).from_select(
            list(COLUMNS), computed(None, _among(Order.customer_id, customer_ids, postgresql))
        )
    )
    purchase_windows.rewrite(conn, customer_ids, lambda col, ids: _among(col, ids, postgresql))


def unreadable_orders(conn, customer_ids: Sequence[int]) -> list[tuple[int, int, str]]:
    """(customer, order, date as stored) of ``customer_ids``' orders whose date is not a
    real day: left out of their facts and windows."""
    found = conn.execute(
        select(Order.customer_id, Order.id, cast(Order.ordered_on, String))
        .where(Order.customer_id.in_(customer_ids), ~readable_day(Order.ordered_on))
        .order_by(Order.customer_id, Order.id)
    )
    return [(r[0], r[1], r[2]) for r in found]


def describe_unreadable(found: Sequence[tuple[int, int, str]], examples: int = 5) -> str:
    """One line for an operator: how many orders, whose, and what they hold."""
    customers = sorted({c for c, _, _ in found})
    shown = "; ".join(f"customer {c} order {o}: {v!r}" for c, o, v in found[:examples])
    more = f" and {len(found) - examples} more" if len(found) > examples else ""
    return (
        f"{len(found)} order(s) of {len(customers)} customer(s) have a date that is not a "
        f"real day and are left out of their purchase history ({shown}{more}); "
        "correct them in the orders table"
    )


def _among(column, ids: Sequence[int], postgresql: bool):
    """``column IN ids``; on PostgreSQL one array parameter, not thousands of them (each
    costs parsing and planning: twice the time of the work itself at 10,000 ids)."""
    if postgresql:
        return column == any_(literal(list(ids), ARRAY(BigInteger)))
    return column.in_(ids)


def pending(engine: Engine) -> int:
    """How many customers' facts wait for a refresh."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(PurchaseFactsDirty)).scalar_one()

"""How the ledger's statements are shaped for each database: the SQL building blocks.

The ledger (careflow/ledger/state.py) says what moves where; this module says
how a batch of keys or rows travels so that the plan stays cheap on both
dialects, whatever the planner's statistics say:

- **by key** (:func:`keys_query`, :func:`rows_for`): a batch's
  (customer_id, occasion) keys as one walk of the unique index, or on
  PostgreSQL two arrays looked up customer by customer;
- **inserting** (:func:`insert_reserved`, :func:`insert_rows`) and **writing by id**
  (:func:`write_by_id`, :func:`unnested`): on PostgreSQL one statement over
  array parameters joined through ``unnest()`` (psycopg runs an executemany
  one row at a time), on SQLite a Core executemany (tens of thousands of
  rows/s; the ORM is ~10x slower here);
- **guards** (:func:`row_guard`): what a write that finds its rows by id
  checks on each row, in a form no index serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    String,
    and_,
    bindparam,
    func,
    insert,
    literal,
    select,
    true,
    update,
)

from careflow.db.models import ContactHistory
from careflow.db.sqlfunc import unindexed
from careflow.messages import State

CH = ContactHistory.__table__


def unnested(columns, rows: Sequence[tuple], name: str):
    """``rows`` as a derived table ``name`` with ``columns``, for PostgreSQL: one array
    parameter per column (``<name>_<column>``), unnested into rows. One statement that
    compiles once, however many rows there are."""
    from sqlalchemy.dialects.postgresql import ARRAY

    arrays = [
        bindparam(f"{name}_{c.name}", list(col), type_=ARRAY(c.type))
        for c, col in zip(columns, zip(*rows, strict=True), strict=True)
    ]
    return func.unnest(*arrays).table_valued(*[c.name for c in columns]).render_derived(name=name)


def write_by_id(conn, columns, rows: list[tuple]) -> None:
    """Set ``columns[1:]`` on each row found by its id (``columns[0]``), from ``rows``.

    PostgreSQL gets one UPDATE ... FROM unnest(arrays) (psycopg runs an
    executemany row by row); SQLite an executemany.
    """
    names = [c.name for c in columns]
    if conn.dialect.name != "postgresql":
        conn.execute(
            update(CH)
            .where(CH.c.id == bindparam("b_id"))
            .values({n: bindparam(f"b_{n}") for n in names[1:]}),
            [{f"b_{n}": v for n, v in zip(names, row, strict=True)} for row in rows],
        )
        return
    w = unnested(columns, rows, "w")
    conn.execute(update(CH).where(CH.c.id == w.c.id).values({n: w.c[n] for n in names[1:]}))


def insert_rows(conn, table, columns, rows: list[tuple]) -> None:
    """Insert ``rows`` (tuples in the order of ``columns``, columns of ``table``).

    PostgreSQL gets one INSERT ... SELECT over unnest(arrays) (psycopg runs an
    executemany row by row); SQLite an executemany.
    """
    if not rows:
        return
    names = [c.name for c in columns]
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), [dict(zip(names, row, strict=True)) for row in rows])
        return
    source = unnested(columns, rows, "r")
    conn.execute(insert(table).from_select(names, select(*[source.c[n] for n in names])))


def rows_for(conn, campaign: str, keys: Sequence[tuple[int, str]]) -> list:
    """Ledger rows of ``campaign`` for exactly these (customer_id, occasion) keys."""
    wanted = set(keys)
    query = keys_query(conn, campaign, keys, (CH.c.id, CH.c.state, CH.c.run_id))
    return [r for r in conn.execute(query).all() if (r.customer_id, r.occasion) in wanted]


#: keys whose customers fill at least 1/DENSE_SPAN of their id range are read as a range
DENSE_SPAN = 8


def keys_query(conn, campaign: str, keys: Sequence[tuple[int, str]], cols, *where):
    """customer_id, occasion and ``cols`` of ``campaign``'s rows matching ``where`` for
    ``keys``, and perhaps rows of other keys: callers keep their own.

    A batch's keys are customers of one id range. Where they fill a good part of it,
    the campaign's rows for the whole range come in one walk of the unique index
    (campaign, customer_id, occasion): on PostgreSQL 2.4 ms for a win-back batch of
    4,940 keys, against 48 ms looked up one by one. SQLite gets an IN list of the
    customers. Otherwise, on PostgreSQL, the keys arrive as two arrays and each is
    looked up on its own by customer (a lateral join).

    The plan must not depend on statistics: the table grows by a million rows in one
    run, and with the statistics from before, a join of the keys against the
    campaign's rows read all its rows for every batch (205 us a key instead of 4 on a
    re-run), and a lookup by campaign walked the campaign's rows once per key. A
    row-value IN list becomes a per-row OR filter, and ``= ANY(array)`` an array scan
    per row: both grow with table size x batch size. A range on the unique index's
    first two columns has no such rival: every other index serves one of them only.
    """
    ids = sorted({c for c, _ in keys})
    rows = select(CH.c.customer_id, CH.c.occasion, *cols).where(CH.c.campaign == campaign, *where)
    if conn.dialect.name != "postgresql":
        return rows.where(CH.c.customer_id.in_(ids))
    if ids and ids[-1] - ids[0] < DENSE_SPAN * len(ids):
        return rows.where(CH.c.customer_id.between(ids[0], ids[-1]))
    from sqlalchemy.dialects.postgresql import ARRAY

    unique = list(dict.fromkeys(keys))
    k = (
        func.unnest(
            bindparam("customer_ids", [c for c, _ in unique], type_=ARRAY(BigInteger)),
            bindparam("occasions", [o for _, o in unique], type_=ARRAY(String)),
        )
        .table_valued("cid", "occ")
        .render_derived(name="k")
    )
    # Each key's rows of any campaign (a customer has few), through the one index that
    # starts with the customer: an index starting with the campaign looks cheapest to a
    # planner that believes the campaign has no rows yet, and is walked whole per key.
    hit = (
        select(CH.c.campaign, CH.c.customer_id, CH.c.occasion, *cols)
        .where(CH.c.customer_id == k.c.cid, CH.c.occasion == k.c.occ, *where)
        .offset(0)  # keeps PostgreSQL from flattening this into one join of everything,
        .lateral("hit")  # and the campaign test below out of it
    )
    return (
        select(*[c for c in hit.c if c.name != "campaign"])
        .select_from(k)
        .join(hit, true())
        .where(hit.c.campaign == campaign)
    )


def row_guard(run_id: str | None = None, state: State | None = None):
    """What a write that finds its rows by id checks on each row, in a form no index serves.

    PostgreSQL's statistics come from before a run: they hold none of its rows, and
    few reserved ones. Written plainly, these tests look selective enough to find the
    rows through ix_contact_history_run or the state index instead of the ids, and
    each write walked every row the run had written so far (29 ms a batch at 60,000
    rows) or every reserved row of every batch in flight.
    """
    guard = []
    if run_id is not None:
        guard.append(unindexed(CH.c.run_id) == run_id)
    if state is not None:
        guard.append(unindexed(CH.c.state) == state)
    return and_(*guard)


def insert_reserved(
    conn,
    campaign: str,
    run_id: str,
    keys,
    now: datetime,
    category: str | None = None,
    selected_at: datetime | None = None,
    only_channel: str | None = None,
) -> None:
    """Insert ``reserved`` rows for keys, leaving alone any another run inserted first.

    PostgreSQL gets one INSERT ... SELECT unnest(ids), unnest(occasions):
    psycopg runs an executemany row by row. SQLite's executemany is fast, and its VALUES
    lists cannot name their columns.
    """
    fixed = {
        "campaign": campaign,
        "state": State.RESERVED,
        "run_id": run_id,
        "attempts": 0,
        "retryable": False,
        "created_at": now,
        "updated_at": now,
        "category": category,
        "selected_at": selected_at,
        "only_channel": only_channel,
    }
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        # Two array parameters, whatever the batch size: the statement compiles once.
        ids = bindparam("ids", [c for c, _ in keys], type_=ARRAY(BigInteger))
        occasions = bindparam("occasions", [o for _, o in keys], type_=ARRAY(String))
        names = ["customer_id", "occasion", *fixed]
        source = select(
            func.unnest(ids), func.unnest(occasions), *[literal(x) for x in fixed.values()]
        )
        conn.execute(
            pg_insert(CH)
            .from_select(names, source)
            .on_conflict_do_nothing(constraint="uq_contact_key")
        )
        return
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    conn.execute(
        sqlite_insert(CH).on_conflict_do_nothing(),
        [{"customer_id": c, "occasion": o, **fixed} for c, o in keys],
    )

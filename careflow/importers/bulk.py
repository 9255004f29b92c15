"""Bulk reads and writes shared by the importers: SQLAlchemy Core, in chunks."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Connection, insert, select

INSERT_CHUNK = 10_000


def chunks(items: list, size: int = INSERT_CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def existing(conn: Connection, column, values: list[str]) -> dict[str, int | str]:
    """{value: id} for the values of a unique ``column`` already in the database."""
    table = column.table
    key = table.c.id if "id" in table.c else column
    found: dict[str, int | str] = {}
    for batch in chunks(values, 5_000):
        found.update(conn.execute(select(column, key).where(column.in_(batch))).all())
    return found


def insert_many(conn: Connection, table, rows: list[dict], size: int = INSERT_CHUNK) -> None:
    """Core executemany, in chunks (psycopg pipelines these; SQLite loops in C)."""
    for batch in chunks(rows, size):
        conn.execute(insert(table), batch)


def insert_returning_ids(conn: Connection, table, rows: list[dict]) -> dict[str, int]:
    """Insert rows and map each one's external_ref to its new id (both dialects)."""
    stmt = insert(table).returning(table.c.external_ref, table.c.id, sort_by_parameter_order=True)
    ids: dict[str, int] = {}
    for batch in chunks(rows):
        ids.update(conn.execute(stmt, batch).all())
    return ids

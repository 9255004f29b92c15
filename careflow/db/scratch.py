"""A scratch copy of careflow's database, for work that must run the real code and
leave the real database as it was (``careflow journey simulate``).

SQLite: the file is copied with SQLite's online backup (a consistent copy
while others write) into a temporary folder beside it; its connections in this
process skip fsyncs (``synchronous=OFF``: the copy is thrown away anyway).
PostgreSQL: a schema of its own
(``careflow_sim_<when>_<id>``) in the same database gets a copy of every
table (columns, defaults, keys, indexes and triggers, not foreign keys),
filled with one ``INSERT ... SELECT`` per table; the copy's connections put
it first on their ``search_path``, so every statement careflow makes lands
there. The original is only read. The copy is dropped when the block ends;
one left by a killed process is dropped by the next copy once it is
``ABANDONED_AFTER`` old.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from careflow.db import engines
from careflow.errors import ConfigError

#: the prefix of a scratch schema's name on PostgreSQL
PREFIX = "careflow_sim_"
#: a scratch copy older than this was left by a process that died: the next copy drops it
ABANDONED_AFTER = 24 * 3600


@contextmanager
def scratch_copy(url: str, folder: Path | None = None) -> Iterator[str]:
    """The URL of a copy of the database at ``url``, dropped when the block ends."""
    if make_url(url).get_backend_name() == "sqlite":
        copy = _sqlite_copy(url, folder)
        throwaway(engines.get(copy))
    else:
        copy = _postgres_copy(url)
    try:
        yield copy
    finally:
        engines.dispose(copy)
        _drop(url, copy)


def throwaway(engine) -> None:
    """A SQLite copy's connections do not wait for the disk (``synchronous=OFF``): the
    copy is dropped at the end, so a crash may lose it whole, and the commits and
    checkpoints of a simulation's days need no fsync. Set on the engine the copy's URL
    gets in this process (``engines.get``), after careflow's own pragmas."""

    @event.listens_for(engine, "connect")
    def _no_sync(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        cur.close()


def _sqlite_copy(url: str, folder: Path | None) -> str:
    source = make_url(url).database
    # next to the database by default: where there is room for one
    folder = folder or Path(source).parent
    for old in folder.glob("careflow-sim-*"):
        try:
            if time.time() - old.stat().st_mtime > ABANDONED_AFTER:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    target_dir = Path(tempfile.mkdtemp(prefix="careflow-sim-", dir=folder))
    target = target_dir / "careflow.db"
    src = sqlite3.connect(source)  # read only by the backup
    dst = sqlite3.connect(target)
    try:
        src.backup(dst, pages=4096)
    finally:
        dst.close()
        src.close()
    return f"sqlite:///{target}"


def _postgres_copy(url: str) -> str:
    schema = f"{PREFIX}{int(time.time())}_{uuid.uuid4().hex[:8]}"
    try:
        _postgres_fill(url, schema)
    except DBAPIError as exc:
        raise ConfigError(
            f"cannot make the simulation's copy in schema {schema} of the database: "
            f"{' '.join(str(exc.orig).split())[:200]} (the database user needs CREATE on it)"
        ) from None
    return str(
        make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


def _postgres_fill(url: str, schema: str) -> None:
    engine = engines.get(url)
    with engine.begin() as conn:
        _drop_abandoned(conn)
        source = conn.execute(text("SELECT current_schema()")).scalar_one()
        tables = inspect(conn).get_table_names(schema=source)
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        for table in tables:
            conn.execute(text(
                f'CREATE TABLE "{schema}"."{table}" (LIKE "{source}"."{table}" '
                "INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING GENERATED)"
            ))  # fmt: skip
            conn.execute(text(
                f'INSERT INTO "{schema}"."{table}" OVERRIDING SYSTEM VALUE '
                f'SELECT * FROM "{source}"."{table}"'
            ))  # fmt: skip
            _keys_and_indexes(conn, source, schema, table)
        # ids: a default that draws from the original's sequence (serial columns) would
        # move that sequence on; the copy gets sequences of its own, past its rows
        for table, column in conn.execute(text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = :s AND column_default LIKE 'nextval(%'"
        ), {"s": schema}).all():  # fmt: skip
            seq = f'"{schema}"."{table}_{column}_seq"'
            top = conn.execute(
                text(f'SELECT max("{column}") FROM "{schema}"."{table}"')
            ).scalar()
            conn.execute(text(f"CREATE SEQUENCE {seq}"))
            if top:
                conn.execute(text(f"SELECT setval('{seq}', {int(top)})"))
            conn.execute(text(
                f'ALTER TABLE "{schema}"."{table}" ALTER COLUMN "{column}" '
                f"SET DEFAULT nextval('{seq}')"
            ))  # fmt: skip
        for table, column in conn.execute(text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = :s AND is_identity = 'YES'"
        ), {"s": schema}).all():  # fmt: skip
            top = conn.execute(
                text(f'SELECT max("{column}") FROM "{schema}"."{table}"')
            ).scalar()
            if top:
                conn.execute(text(
                    f'ALTER TABLE "{schema}"."{table}" ALTER COLUMN "{column}" '
                    f"RESTART WITH {int(top) + 1}"
                ))  # fmt: skip


def _keys_and_indexes(conn, source: str, schema: str, table: str) -> None:
    """The table's keys, unique and check constraints under their own names (ON CONFLICT
    ON CONSTRAINT names them), its other indexes and its triggers, made once the rows are
    in; foreign keys are left out (the copy is written by careflow alone)."""
    found = conn.execute(text(
        "SELECT c.conname, pg_get_constraintdef(c.oid), c.conindid FROM pg_constraint c "
        "JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname = :s AND t.relname = :t AND c.contype IN ('p', 'u', 'c', 'x')"
    ), {"s": source, "t": table}).all()  # fmt: skip
    for name, definition, _ in found:
        conn.execute(text(
            f'ALTER TABLE "{schema}"."{table}" ADD CONSTRAINT "{name}" {definition}'
        ))  # fmt: skip
    backing = {index for *_, index in found if index}
    for definition in conn.execute(text(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname = :s AND t.relname = :t AND NOT (i.indexrelid = ANY(:b))"
    ), {"s": source, "t": table, "b": sorted(backing)}).scalars():  # fmt: skip
        head, sep, rest = definition.partition(" ON ")
        _, dot, after = rest.partition(f"{table} ")
        if not (sep and dot):
            raise RuntimeError(f"cannot copy index {definition!r}")
        conn.execute(text(f'{head} ON "{schema}"."{table}" {after}'))
    # the purchase facts' triggers (migration 0005): their functions name their tables
    # unqualified, so in the copy's sessions they mark the copy's facts
    for definition in conn.execute(text(
        "SELECT pg_get_triggerdef(g.oid) FROM pg_trigger g "
        "JOIN pg_class t ON t.oid = g.tgrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname = :s AND t.relname = :t AND NOT g.tgisinternal"
    ), {"s": source, "t": table}).scalars():  # fmt: skip
        head, sep, rest = definition.partition(f" ON {source}.{table} ")
        if not sep:
            head, sep, rest = definition.partition(f" ON {table} ")
        if not sep:
            raise RuntimeError(f"cannot copy trigger {definition!r}")
        conn.execute(text(f'{head} ON "{schema}"."{table}" {rest}'))


def _drop_abandoned(conn) -> None:
    now = int(time.time())
    for (name,) in conn.execute(
        text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": PREFIX + "%"}
    ).all():
        stamp = name.removeprefix(PREFIX).split("_", 1)[0]
        if stamp.isdigit() and now - int(stamp) > ABANDONED_AFTER:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


def _drop(url: str, copy: str) -> None:
    parsed = make_url(copy)
    if parsed.get_backend_name() == "sqlite":
        shutil.rmtree(Path(parsed.database).parent, ignore_errors=True)
        return
    schema = parsed.query["options"].removeprefix("-csearch_path=")
    with engines.get(url).begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


__all__ = ["scratch_copy"]

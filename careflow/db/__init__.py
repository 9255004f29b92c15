"""Database access: engines, migrations and the SQL helpers both dialects share."""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import URL, Engine, create_engine, event, inspect, make_url
from sqlalchemy.exc import DBAPIError

from careflow.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
URL_SHAPE = (
    "dialect+driver://user@host:port/database, "
    "e.g. postgresql+psycopg://careflow@localhost:5432/careflow"
)


class EngineRegistry:
    """This process's engines, one per database URL: an engine pools connections, so every
    caller of one URL shares one pool.

    - ``get(url)`` makes the URL's engine (``new_engine``) the first time and hands out
      the same one after; at most ``limit`` are kept, and making one more disposes of
      the one used longest ago (a test session opens a database per test).
    - ``dispose(url)`` and ``dispose_all()`` close the pooled connections of that
      engine or of every one and forget them: the next ``get`` makes a new engine. For
      a database about to be dropped or a SQLite file about to be deleted (``careflow
      demo --reseed``), and for a test's end.
    - A process forked from one that holds engines must not use their connections (the
      two processes would talk over one socket): the first ``get`` in the child forgets
      the parent's engines, leaving their connections to the parent
      (``dispose(close=False)``), and makes its own.
    """

    def __init__(self, limit: int = 8):
        self.limit = limit
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def get(self, url: str) -> Engine:
        """The engine for ``url``, made the first time (ConfigError for a bad URL)."""
        self._leave_parents_engines()
        with self._lock:
            engine = self._engines.get(url)
            if engine is not None:
                self._engines.move_to_end(url)
                return engine
            engine = self._engines[url] = new_engine(url)
            retired = []
            while len(self._engines) > self.limit:
                retired.append(self._engines.popitem(last=False)[1])
        for old in retired:
            old.dispose()  # whoever still holds it may go on: it opens new connections
        return engine

    def dispose(self, url: str) -> None:
        """Close the pooled connections of ``url``'s engine and forget it."""
        self._leave_parents_engines()
        with self._lock:
            engine = self._engines.pop(url, None)
        if engine is not None:
            engine.dispose()

    def dispose_all(self) -> None:
        """Close every engine's pooled connections and forget them all."""
        self._leave_parents_engines()
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            engine.dispose()

    def _leave_parents_engines(self) -> None:
        if self._pid == os.getpid():
            return
        # a forked child: its parent's lock may have been held by a thread that is not here
        self._lock = threading.Lock()
        for engine in self._engines.values():
            engine.dispose(close=False)
        self._engines.clear()
        self._pid = os.getpid()


#: this process's engines (``EngineRegistry``)
engines = EngineRegistry()


def engine_for(url: str) -> Engine:
    """The engine for ``url``, one per URL per process: ``engines.get(url)``."""
    return engines.get(url)


def new_engine(url: str) -> Engine:
    """A new engine for ``url``, set up as careflow's are (``engine_for`` keeps one per
    URL; this one is the caller's to dispose of).

    A malformed URL, a driver that is not installed or a SQLite folder that
    cannot be created is a one-line ConfigError naming the setting, with the
    password masked (``shown_url``). Nothing connects here: ``check_connection`` does.
    """
    parsed = _parse(url)
    secrets = (url, *_secrets(parsed))
    shown = shown_url(parsed)
    if parsed.get_backend_name() == "sqlite":
        _sqlite_folder(parsed.database)
        kwargs: dict = {"connect_args": {"timeout": 30}}
    else:
        kwargs = {"pool_pre_ping": True}
    try:
        engine = create_engine(parsed, **kwargs)
    except ImportError as exc:  # the driver package is not installed
        raise ConfigError(
            f"CAREFLOW_DATABASE_URL {shown}: the driver {parsed.get_driver_name()} is not "
            f"installed ({_reason(exc, *secrets)}); install it, or for PostgreSQL use "
            "postgresql+psycopg://, whose driver comes with careflow"
        ) from exc
    except Exception as exc:  # NoSuchModuleError (unknown dialect or driver), bad options
        raise ConfigError(
            f"CAREFLOW_DATABASE_URL {shown} is not usable ({_reason(exc, *secrets)}); "
            f"expected {URL_SHAPE}"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif parsed.get_backend_name() == "postgresql":
        event.listen(engine, "connect", _postgresql_session)
    return engine


def _parse(url: str) -> URL:
    """``url`` parsed; a ConfigError that quotes none of it when it does not parse.

    A password with an ``@``, ``:`` or ``/`` that is not URL-encoded shifts the parts
    (``user:p@ss@host`` reads as host ``ss@host``), so the text a parser or driver would
    quote may hold the password: nothing of the URL is echoed.
    """
    encode = (
        "write the user name and password URL-encoded (@ as %40, : as %3A, / as %2F, "
        "% as %25)"
    )
    try:
        parsed = make_url(url)
    except Exception:  # ArgumentError, or ValueError for a port that is not a number
        raise ConfigError(
            f"CAREFLOW_DATABASE_URL is not a database URL: expected {URL_SHAPE}; {encode}"
        ) from None
    if "@" in (parsed.host or ""):
        raise ConfigError(
            f"CAREFLOW_DATABASE_URL has an @ after the one that ends the password: {encode}"
        )
    return parsed


def shown_url(url: URL) -> str:
    """``url`` as it may be shown or logged: the password and every query value (libpq
    also takes ``password=`` and ``sslpassword=`` there) as ``***``."""
    return url.set(query=dict.fromkeys(url.query, "***")).render_as_string(hide_password=True)


def _secrets(url: URL) -> list[str]:
    """What of ``url`` must not be shown, as written and as URL-encoded."""
    values = [url.password or ""]
    for value in url.query.values():
        values += [value] if isinstance(value, str) else list(value)
    return [v for s in values if s for v in (s, quote(s, safe=""))]


def _postgresql_session(dbapi_conn, _record) -> None:
    """No JIT compilation: careflow's queries are short (a segment over a million
    purchase facts takes well under a second), and compiling them cost 0.2-0.7 s
    each when the planner's estimate crossed ``jit_above_cost`` (bench/README.md)."""
    with dbapi_conn.cursor() as cur:
        cur.execute("SET jit = off")
    dbapi_conn.commit()  # a SET in a transaction rolled back on return to the pool is undone


def _sqlite_folder(database: str | None) -> None:
    """Create the SQLite file's folder; ConfigError when that is impossible."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    folder = Path(database).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the folder {folder} for the SQLite database ({exc.strerror or exc}): "
            "set CAREFLOW_HOME to a writable folder, or CAREFLOW_DATABASE_URL to another database"
        ) from exc


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the report read while a run writes; FKs are off by default in SQLite.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def check_connection(engine: Engine) -> None:
    """Open and close one connection; ConfigError (one line, no password) if that fails.

    This is the boundary where a driver's connection error becomes a
    configuration error: the CLI and flows come through here (``ensure_schema``,
    ``upgrade``) before any work. Later, mid-run, a lost connection stays the
    driver's OperationalError, which the ledger retries and Prefect reruns.
    """
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        shown = shown_url(engine.url)
        if engine.dialect.name == "sqlite":
            todo = (
                "set CAREFLOW_HOME to a writable folder, or CAREFLOW_DATABASE_URL to a "
                "SQLite file you may write"
            )
        else:
            todo = (
                "check that the server is running and the URL's host, port, user, "
                "password and database are right"
            )
        raise ConfigError(
            f"cannot connect to CAREFLOW_DATABASE_URL {shown} "
            f"({_reason(exc.orig or exc, *_secrets(engine.url))}): {todo}"
        ) from exc


def _reason(exc: BaseException, *secrets: object) -> str:
    """A driver's message as one short line, with ``secrets`` (URL, password) masked."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in sorted({str(s) for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text if len(text) <= 200 else text[:197] + "..."


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (``careflow db upgrade``)."""
    from alembic import command

    check_connection(engine_for(url))
    command.upgrade(alembic_config(url), revision)


@functools.cache
def head_revision() -> str:
    """The newest migration this careflow has."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def ensure_schema(engine: Engine) -> None:
    """Fail fast with a helpful message when the database is unreachable, was never
    migrated, or is at another migration than this careflow's newest (careflow was
    upgraded and the database not, or a newer careflow migrated it): a run would fail
    in its batches on a missing column, with a traceback."""
    check_connection(engine)
    if not inspect(engine).has_table("contact_history"):
        raise ConfigError(
            f"database {shown_url(engine.url)} has no careflow tables: "
            "run `careflow db upgrade` (or `careflow demo` to seed demo data)"
        )
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        at = MigrationContext.configure(conn).get_current_revision()
    head = head_revision()
    if at == head:
        return
    from alembic.script import ScriptDirectory

    known = {s.revision for s in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
    if at in known or at is None:
        raise ConfigError(
            f"database {shown_url(engine.url)} is at migration {at or 'none'}, this careflow "
            f"needs {head}: run `careflow db upgrade`"
        )
    raise ConfigError(
        f"database {shown_url(engine.url)} is at migration {at}, which this careflow does "
        f"not have (its newest is {head}): a newer careflow migrated it; run that version"
    )


def current_revision(url: str) -> str | None:
    """The migration the database at ``url`` is at; None for one without careflow's tables."""
    from alembic.migration import MigrationContext

    engine = engine_for(url)
    check_connection(engine)  # an unreachable database is one line, naming the setting
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()

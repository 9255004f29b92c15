"""Shared fixtures: a migrated database on SQLite and, when reachable, PostgreSQL.

``db_url`` is parametrised over both dialects; tests that take it run twice.
PostgreSQL comes from CAREFLOW_TEST_POSTGRES_URL (default: the local server on
127.0.0.1:5432); each test session creates its own throw-away database there
and drops it at the end. Set CAREFLOW_TEST_POSTGRES_URL=skip to run SQLite only.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

from careflow import (
    channels,  # noqa: F401 - registers the built-in channels, as the CLI and flows do
    db,
)

# the shared real Prefect server (tests/test_prefect_server.py, tests/test_prefect_ui.py)
pytest_plugins = ["tests.prefect_server"]

PG_ADMIN_URL = os.environ.get(
    "CAREFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _postgres_available() -> bool:
    if PG_ADMIN_URL == "skip":
        return False
    try:
        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_server_url():
    """A fresh PostgreSQL database for this test session (dropped afterwards)."""
    if not _postgres_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required in CI but not reachable")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    name = f"careflow_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    db.engines.dispose_all()
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def _reset_postgres(url: str) -> None:
    eng = db.engine_for(url)
    with eng.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))


@pytest.fixture(autouse=True)
def _no_holdout_unless_asked(monkeypatch):
    """Campaigns hold out 10% of their customers by default (docs/policy.md). Tests of
    other behaviour count sends exactly, so the holdout is off unless a test turns it on
    (tests/test_holdout.py does, and checks the default itself)."""
    monkeypatch.setenv("CAREFLOW_HOLDOUT", "0")


@pytest.fixture(autouse=True)
def _own_data_folder(monkeypatch, tmp_path_factory):
    """A database named by CAREFLOW_DATABASE_URL without CAREFLOW_HOME keeps its files in
    a folder of its own under the user's data folder (careflow.settings.home_for_database):
    in tests, a throw-away one, never the machine user's ~/.local/share."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


class FakeClock:
    """careflow's real clock (``careflow.clock.now``), the instant a real run judges send
    times at, set by hand: ``real_clock.set(instant)``."""

    def __init__(self, instant):
        self.set(instant)

    def set(self, instant) -> None:
        self.instant = instant.astimezone(UTC)

    def __call__(self):
        return self.instant


@pytest.fixture(autouse=True)
def _real_clock_at_noon(monkeypatch):
    """A real run judges send times at the real clock (``careflow.clock.now``), so a test
    of a run in this process would pass or fail by the hour the suite runs at. The real
    clock stands at noon UTC today unless a test sets it (``real_clock``); runs in a
    process of their own turn send times off instead (tests/reliability/cli_run.py)."""
    from careflow import clock

    today = datetime.now(UTC).date()
    monkeypatch.setattr(clock, "now", FakeClock(datetime(*today.timetuple()[:3], 12, tzinfo=UTC)))


@pytest.fixture
def real_clock(monkeypatch):
    """The real clock faked, at noon UTC of 2026-06-01 until a test sets it: a real run
    judges quiet hours and windows at the real clock, not at its --as-of date."""
    from careflow import clock

    fake = FakeClock(datetime(2026, 6, 1, 12, tzinfo=UTC))
    monkeypatch.setattr(clock, "now", fake)
    return fake


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path, monkeypatch):
    """URL of an empty, migrated careflow database; settings point at it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'careflow.db'}"
    else:
        url = request.getfixturevalue("postgres_server_url")
        _reset_postgres(url)
    db.upgrade(url)
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", url)
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path / "home"))
    yield url


@pytest.fixture
def engine(db_url):
    return db.engine_for(db_url)


@pytest.fixture(scope="session")
def prefect_api_url():
    """One temporary Prefect API for every `careflow` command tests start in its own
    process (each would otherwise start its own, ~10 s apiece on a busy machine): the
    reliability tests and the kill tests. Tests using it are in one of two xdist groups,
    ``prefect-cli`` (the kill tests) and ``prefect-cli-2`` (tests/reliability/): each group
    runs on one worker, which starts the API once, and the two halves can run side by
    side (as one group they were the suite's longest unit)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def prefect_api():
    """A throw-away Prefect API for tests that run flows or use blocks."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield

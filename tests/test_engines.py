"""One engine per database URL per process: careflow.db.engines."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import event, text

from careflow import db
from careflow.db import EngineRegistry


def _closes(engine) -> list[int]:
    """A list that grows by one each time ``engine`` closes a database connection."""
    closed: list[int] = []
    event.listen(engine, "close", lambda *args: closed.append(1))
    return closed


def test_one_url_one_engine_two_urls_two(tmp_path):
    engines = EngineRegistry()
    a, b = (f"sqlite:///{tmp_path / name}.db" for name in ("a", "b"))
    assert engines.get(a) is engines.get(a)
    assert engines.get(a) is not engines.get(b)
    assert str(engines.get(b).url) == b
    # the module's registry is the one careflow's code reaches through engine_for
    assert db.engine_for(a) is db.engines.get(a) is not engines.get(a)
    db.engines.dispose(a)


def test_disposing_closes_the_pooled_connections_and_the_next_get_makes_a_new_engine(tmp_path):
    engines = EngineRegistry()
    a, b = (f"sqlite:///{tmp_path / name}.db" for name in ("a", "b"))
    first = {url: engines.get(url) for url in (a, b)}
    closed = {url: _closes(engine) for url, engine in first.items()}
    for engine in first.values():
        with engine.connect() as conn:  # a connection goes back to the pool
            conn.execute(text("SELECT 1"))

    engines.dispose(a)
    assert closed == {a: [1], b: []}
    assert engines.get(a) is not first[a] and engines.get(b) is first[b]

    engines.dispose_all()
    assert closed == {a: [1], b: [1]}
    assert engines.get(b) is not first[b]
    engines.dispose_all()


def test_past_its_limit_the_engine_used_longest_ago_is_disposed_of(tmp_path):
    engines = EngineRegistry(limit=2)
    a, b, c = (f"sqlite:///{tmp_path / name}.db" for name in ("a", "b", "c"))
    old = engines.get(a)
    closed = _closes(old)
    with old.connect():
        pass
    engines.get(b)
    assert engines.get(a) is old  # used again: b is now the one used longest ago
    engines.get(c)  # b goes
    assert closed == []
    engines.get(b)  # made again, so a goes
    assert closed == [1] and engines.get(a) is not old
    with old.connect() as conn:  # whoever still holds it can go on using it
        assert conn.execute(text("SELECT 1")).scalar() == 1
    old.dispose()
    engines.dispose_all()


@pytest.mark.postgres
def test_a_forked_process_makes_its_own_connections_and_leaves_the_parents_alone(
    postgres_server_url,
):
    """A child forked from a process holding engines must not use their pooled
    connections: the two would talk over one socket. With one engine cached per URL,
    the child was handed its parent's connection."""
    engines = EngineRegistry()
    engine = engines.get(postgres_server_url)
    with engine.connect() as conn:
        parents = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report the server process its connection talks to
        code = 1
        try:
            os.close(read)
            with engines.get(postgres_server_url).connect() as conn:
                own = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            os.write(write, str(own).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        childs = int(pipe.read() or 0)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert childs and childs != parents
    with engine.connect() as conn:  # the parent's pooled connection is still its own
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == parents
    engines.dispose_all()

"""The webhook contract, run over every provider in the registry (careflow/webhooks/registry.py).

Each case builds careflow serve from settings with only that provider on and
drives its ASGI app in-process (tests/service/asgi.py), so a test sees how
much of a body the service read. How to sign for a provider and what it
documents it posts are in tests/webhooks/kits.py.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from careflow.db.models import ContactEvent
from careflow.service.app import create_app
from careflow.settings import load_settings
from careflow.webhooks import registry
from tests.service.asgi import request, running
from tests.service.conftest import PUBLIC, Clock
from tests.webhooks.kits import KITS

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
MAX_BODY = 100_000
#: every route of every registered provider, as (provider, hook)
ROUTES = [(provider, hook) for provider in registry.providers() for hook in provider.hooks]


@pytest.fixture(params=ROUTES, ids=[hook.path for _, hook in ROUTES])
def route(request):
    return request.param


@pytest.fixture
def kit(route):
    name = route[0].name
    if name not in KITS:
        pytest.fail(f"webhook provider {name!r} has no contract kit in tests/webhooks/kits.py")
    return KITS[name]


@pytest.fixture
def app(route, kit, engine, monkeypatch):
    """careflow serve with only this provider on, writing to ``engine``."""
    for name, value in kit.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CAREFLOW_PUBLIC_BASE_URL", PUBLIC)
    monkeypatch.setenv("CAREFLOW_SERVE_MAX_BODY_BYTES", str(MAX_BODY))
    return create_app(load_settings(), engine, clock=Clock(NOW))


def recorded(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(ContactEvent)).scalar_one()


def post(app, path: str, headers: dict, chunks: list[bytes]):
    return post_all(app, [(path, headers, chunks)])[0]


def post_all(app, requests: list[tuple[str, dict, list[bytes]]]):
    """Each request in turn, to the app started once (its writer lives in one event loop)."""

    async def posting():
        async with running(app):
            return [
                await request(app, "POST", path, headers=headers, chunks=chunks)
                for path, headers, chunks in requests
            ]

    return asyncio.run(posting())


def test_an_unsigned_request_is_refused_before_its_body_is_read(route, kit, app, engine):
    path = route[1].path
    example = kit.examples[path][0]
    unsigned = re.sub(r"\{[^}]*\}", "unsigned-0123456789abcdefghij", path)
    call = post(app, unsigned, example.headers, [example.body, example.body])
    assert call.status == 403 and call.pulled == 0
    assert recorded(engine) == 0


def test_a_forged_request_is_403_and_changes_nothing(route, kit, app, engine):
    path = route[1].path
    example = kit.examples[path][0]
    to, headers = kit.sign(path, example.body, example.headers, NOW, forged=True)
    assert post(app, to, headers, [example.body]).status == 403
    assert recorded(engine) == 0


def test_a_signed_request_that_is_no_callback_is_400_and_records_nothing(
    route, kit, app, engine
):
    path = route[1].path
    malformed = kit.malformed[path]
    to, headers = kit.sign(path, malformed.body, malformed.headers, NOW)
    call = post(app, to, headers, [malformed.body])
    assert call.status == 400 and call.body.startswith(b"malformed: ")
    assert recorded(engine) == 0


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_signed_request_past_its_bound_is_413_and_records_nothing(
    route, kit, app, engine, declared
):
    provider, hook = route
    path, limit = hook.path, provider.max_body or MAX_BODY
    example = kit.examples[path][0]
    body = example.body + b" " * (limit + 1 - len(example.body))
    to, headers = kit.sign(path, body, example.headers, NOW)
    if declared:
        headers = {**headers, "content-length": str(len(body))}
    chunk = 16 * 1024
    call = post(app, to, headers, [body[i : i + chunk] for i in range(0, len(body), chunk)])
    assert call.status == 413
    assert call.pulled == (0 if declared else limit // chunk + 1)
    assert recorded(engine) == 0


def test_a_documented_request_posted_twice_is_recorded_once(route, kit, app, engine):
    hook = route[1]
    examples = kit.examples[hook.path]
    expected = sum(example.events for example in examples)
    signed = [kit.sign(hook.path, e.body, e.headers, NOW) + ([e.body],) for e in examples]
    calls = post_all(app, signed * 2)  # providers retry
    answer = hook.answer
    assert {(c.status, c.body) for c in calls} == {(answer.status, (answer.body or "").encode())}
    assert recorded(engine) == expected

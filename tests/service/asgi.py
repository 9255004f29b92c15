"""Driving the service's ASGI app in this test's own event loop, watching what it reads.

Over real HTTP a test cannot see how much of a body the service pulled or
whether its event loop was free; here ``receive`` counts each chunk handed
over and may hold the request mid-body until an event is set. :func:`running`
starts the app's lifespan (its event writer) for tests that store events.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

#: a chunk that keeps the request waiting (mid-body) until ``Call.resume`` is set
WAIT = object()


@dataclass
class Call:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    pulled: int = 0  # body chunks the app took
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: asyncio.Event = field(default_factory=asyncio.Event)  # set once held at WAIT


async def request(
    app,
    method: str,
    path: str,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    chunks: list = (b"",),
    call: Call | None = None,
) -> Call:
    """Send one request; ``chunks`` are the body's pieces (``WAIT`` holds it there)."""
    call = call or Call()
    pending = list(chunks)

    async def receive():
        while pending and pending[0] is WAIT:
            pending.pop(0)
            call.waiting.set()
            await call.resume.wait()
        if not pending:  # the body is over: the client waits for the answer
            await asyncio.Event().wait()
        call.pulled += 1
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message):
        if message["type"] == "http.response.start":
            call.status = message["status"]
            call.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            call.body += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    await app(scope, receive, send)
    return call


@asynccontextmanager
async def running(app):
    """The app started (its lifespan: the event writer runs) for the block, then stopped."""
    messages: asyncio.Queue = asyncio.Queue()
    started = asyncio.Event()

    async def send(message):
        if message["type"].startswith("lifespan.startup"):
            started.set()

    messages.put_nowait({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, messages.get, send)
    )
    await started.wait()
    try:
        yield
    finally:
        messages.put_nowait({"type": "lifespan.shutdown"})
        await lifespan

"""Batching event writes: a burst of callbacks becomes a few transactions, not a storm.

Each request hands its events to :class:`EventWriter` and waits for them to
be committed before answering 2xx (so a provider never gets a success for
an event that was not stored). One background task drains the queue:
whatever arrived while the previous write ran is written together, in one
``record_events`` call on a worker thread. With a quiet queue a lone event
is written at once; under load, batches grow by themselves.

The shop's events (POST /events, careflow/shop_events.py) go through the same
queue, so a webhook and a shop post arriving together share a transaction;
the write function sorts them out and every waiting request gets the
batch's result, reading its own part (a shop post its events' answers).

Small requests go first: a request of at most URGENT_EVENTS events (a Twilio
callback, an unsubscribe, most shop posts) is written in the next batch
whatever bulk posts (SendGrid's hundreds of events) queued before it, and
bulk posts fill a batch only up to BULK_BATCH events, so a one-event
callback waits for at most one bulk batch being written and its own. Requests
in flight at the same time have no order between them (each is answered
only once committed), so taking them out of arrival order changes nothing
a provider can see; each lane keeps its own order.

Batching never makes one request's trouble another's: ``record_events``
keeps an event the database refuses as ``rejected`` and writes the rest,
and should a batch fail for any reason but the database being unreachable,
each request is written again on its own. Only an unreachable database
fails every waiting request (the service answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence

import anyio.to_thread

from careflow.events import InboundEvent
from careflow.responses import database_unavailable
from careflow.shop_events import ShopEvent

log = logging.getLogger("careflow.serve")

#: most events written in one transaction
MAX_BATCH = 5000
#: a request of at most this many events is written ahead of bulk posts
URGENT_EVENTS = 100
#: most events of bulk posts in one transaction (more when one post is larger)
BULK_BATCH = 2000


#: what a request hands the writer: a provider's events or a shop's
Item = InboundEvent | ShopEvent


class EventWriter:
    def __init__(self, write: Callable[[Sequence[Item]], object]):
        self._write = write
        #: requests waiting, small ones and bulk ones, each lane in arrival order
        self._urgent: deque[tuple[Sequence[Item], asyncio.Future]] = deque()
        self._bulk: deque[tuple[Sequence[Item], asyncio.Future]] = deque()
        self._waiting: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._waiting = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, events: Sequence[Item]):
        """Store ``events``; returns once they are committed (raises if they were not)."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        lane = self._urgent if len(events) <= URGENT_EVENTS else self._bulk
        lane.append((events, future))
        self._waiting.set()
        return await future

    def _next_batch(self) -> list[tuple[Sequence[Item], asyncio.Future]]:
        """The requests the next transaction writes: every small one waiting (up to
        MAX_BATCH events), then bulk ones up to BULK_BATCH (at least one)."""
        batch, size, bulk = [], 0, 0
        while self._urgent and size < MAX_BATCH:
            item = self._urgent.popleft()
            batch.append(item)
            size += len(item[0])
        while self._bulk and size < MAX_BATCH:
            more = len(self._bulk[0][0])
            if bulk and bulk + more > BULK_BATCH:
                break
            batch.append(self._bulk.popleft())
            size, bulk = size + more, bulk + more
        return batch

    async def _run(self) -> None:
        while True:
            await self._waiting.wait()
            batch = self._next_batch()
            if not (self._urgent or self._bulk):
                self._waiting.clear()
            if batch:
                await self._settle(batch)

    async def _settle(self, waiting: list[tuple[Sequence[Item], asyncio.Future]]) -> None:
        """Write the waiting requests' events together; each request gets its answer."""
        events = [e for batch, _ in waiting for e in batch]
        try:
            result = await anyio.to_thread.run_sync(self._write, events)
        except Exception as exc:
            if len(waiting) > 1 and not database_unavailable(exc):
                # one request's failure is its own: the others are written without it
                for item in waiting:
                    await self._settle([item])
                return
            for _, future in waiting:  # the database is down: every waiting request says so
                if not future.done():
                    future.set_exception(exc)
            return
        if getattr(result, "rejected", 0):
            log.warning("%d event(s) refused by the database, kept as rejected", result.rejected)
        for _, future in waiting:
            if not future.done():
                future.set_result(result)

"""Batching event writes: a burst of callbacks becomes a few transactions, not a storm.

Each request hands its events to :class:`EventWriter` and waits for them to
be committed before answering 2xx (so a provider never gets a success for
an event that was not stored). One background task drains the queue:
whatever arrived while the previous write ran is written together, in one
``record_events`` call on a worker thread. With a quiet queue a lone event
is written at once; under load, batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import anyio.to_thread

from careflow.events import InboundEvent
from careflow.responses import Ingested

#: most events written in one transaction
MAX_BATCH = 5000


class EventWriter:
    def __init__(self, write: Callable[[Sequence[InboundEvent]], Ingested]):
        self._write = write
        self._queue: asyncio.Queue[tuple[Sequence[InboundEvent], asyncio.Future]] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, events: Sequence[InboundEvent]) -> Ingested:
        """Store ``events``; returns once they are committed (raises if they were not)."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((events, future))
        return await future

    async def _run(self) -> None:
        while True:
            waiting = [await self._queue.get()]
            size = len(waiting[0][0])
            while not self._queue.empty() and size < MAX_BATCH:
                item = self._queue.get_nowait()
                waiting.append(item)
                size += len(item[0])
            events = [e for batch, _ in waiting for e in batch]
            try:
                result = await anyio.to_thread.run_sync(self._write, events)
            except Exception as exc:  # the database is down: every waiting request says so
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in waiting:
                if not future.done():
                    future.set_result(result)

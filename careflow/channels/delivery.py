"""Shared delivery machinery: retries, Retry-After, rate limits, concurrency.

Every live channel hands :func:`deliver_batch` two functions, ``prepare``
(message -> request payload, may decide to skip) and ``send`` (payload ->
provider id), and gets back one Outcome per message. The decisions that must
be the same for every provider live here, once:

Exactly-once. Twilio's Messages API and SendGrid's Mail Send have no
idempotency keys, and Sinch Fax documents none, so a request that *may* have
been accepted is never repeated. A failure is retried only when it proves
the provider did not accept the request:

- the connection could not be opened (refused, DNS, connect timeout), or the
  request body could not be written completely;
- the provider answered 429 (honouring Retry-After) or 5xx.

A read timeout or a connection lost after the request went out is
ambiguous: the outcome is ``failed`` with reason ``timeout_unknown`` or
``connection_lost_unknown`` and ``retryable=False``, so neither this batch
nor a later run messages the customer twice. An operator can look the
message up on the provider side (the ledger key is sent along where the API
allows) and decide. Other 4xx answers are permanent and not retried.
Transient failures that exhaust their attempts come back ``retryable=True``:
the provider never took them, so a later run may try again.

Rate limits. Each channel names a limit (``twilio-sms``...). With
``rate_limit_backend="auto"`` and a reachable Prefect API, a slot of that
Prefect global concurrency limit is taken per request, so every flow run at
once shares the provider's budget. When the limit does not exist (or Prefect
is unreachable) the channel falls back, with one warning, to an in-process
token bucket at the configured rate. A 429's Retry-After pauses the whole
channel, not only the worker that saw it.

A channel that cannot deliver anything any more. A 401 or 403 without a
reason of the channel's own (bad credentials, a suspended account) would
fail every message: the batch stops calling the provider and raises
``ChannelDown`` with the outcomes of the requests that were made (the
refused one failed, retryable: it did not go out); the messages never
started have none, and the run leaves them to the next run.

Marking sending. Handed ``start`` (careflow/flows/route.py ``SendingMarks``), a
channel tells the ledger which messages it is about to request, after their
rate-limit slot and before the request: a message moves to ``sending`` when
its request starts (or a few ahead of it at high rates), not when its chunk
is handed over, so a crash at a slow rate leaves in doubt only what may have
reached the provider.

Concurrency. A channel either sends from ``workers`` threads (fax), or, given
an async ``send_many``, runs the batch on one event loop per process
(:class:`AsyncDelivery`, SMS and email) with up to ``workers`` requests of
the batch in flight and rate-limit slots taken without blocking the loop.
Both apply the same :meth:`Delivery.after_failure`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from careflow.errors import (
    AmbiguousError,
    ChannelDown,
    DeliveryError,
    PermanentError,
    Skip,
    TransientError,
)
from careflow.messages import Message, Outcome
from careflow.settings import DeliverySettings

log = logging.getLogger(__name__)

P = TypeVar("P")
T = TypeVar("T")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_for_status(
    status: int, detail: str, *, retry_after: float | None = None, reason: str | None = None
) -> DeliveryError:
    """The delivery error an HTTP error status stands for (the one place that decides)."""
    if status == 429:
        return TransientError("rate_limited", detail, retry_after=retry_after)
    if status >= 500:
        return TransientError("provider_unavailable", detail, retry_after=retry_after)
    if status in (401, 403):
        return PermanentError(reason or "auth_failed", detail, abort_batch=reason is None)
    return PermanentError(reason or "provider_rejected", detail)


def error_for_exception(exc: BaseException) -> DeliveryError:
    """Classify a transport exception from requests, urllib or httpx.

    Only failures that happen before the request is complete on the wire are
    transient; everything after that is ambiguous (see the module docstring).
    """
    name = type(exc).__name__
    detail = f"{name}: {exc}"[:300]
    try:  # aiohttp (the async SMS and email transports)
        import aiohttp

        # Only a connection that never opened is proof: a reset while writing
        # may come after the provider read the whole request.
        if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
            return TransientError("connect_failed", detail)
        if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
            return AmbiguousError("timeout_unknown", detail)
        if isinstance(exc, aiohttp.ClientError):
            return AmbiguousError("connection_lost_unknown", detail)
    except ImportError:  # pragma: no cover - aiohttp ships with twilio
        pass
    try:  # requests (twilio SDK)
        import requests
        from urllib3.exceptions import NameResolutionError, NewConnectionError

        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return TransientError("connect_failed", detail)
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return AmbiguousError("timeout_unknown", detail)
        if isinstance(exc, requests.exceptions.ConnectionError):
            reason = getattr(exc.args[0] if exc.args else None, "reason", None)
            if isinstance(reason, (NewConnectionError, NameResolutionError)):
                return TransientError("connect_failed", detail)
            return AmbiguousError("connection_lost_unknown", detail)
    except ImportError:  # pragma: no cover - requests ships with twilio
        pass
    try:  # httpx (fax)
        import httpx

        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
            return TransientError("connect_failed", detail)
        # A body that was not written completely cannot have been acted on.
        if isinstance(exc, (httpx.WriteError, httpx.WriteTimeout)):
            return TransientError("connect_failed", detail)
        if isinstance(exc, httpx.TimeoutException):
            return AmbiguousError("timeout_unknown", detail)
        if isinstance(exc, httpx.TransportError):
            return AmbiguousError("connection_lost_unknown", detail)
    except ImportError:  # pragma: no cover - httpx ships with prefect
        pass
    # urllib (sendgrid SDK): URLError wraps failures while connecting or
    # writing the request; errors while reading the answer come through bare.
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):  # pragma: no cover - SDK converts these
        return error_for_status(exc.code, detail)
    if isinstance(exc, urllib.error.URLError):
        return TransientError("connect_failed", detail)
    if isinstance(exc, TimeoutError):
        return AmbiguousError("timeout_unknown", detail)
    return AmbiguousError("connection_lost_unknown", detail)


# --- rate limiting -----------------------------------------------------------
class RateLimiter(Protocol):
    def acquire(self) -> None: ...

    def pause(self, seconds: float) -> None: ...


class TokenBucket:
    """Thread-safe in-process limiter: ``rate`` per second, bursts of ``burst``.

    Generic cell rate algorithm: each caller reserves the next conforming
    instant under the lock and sleeps outside it, so waiting threads do not
    hold each other up and the long-run rate is exact.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate, self.burst = rate, max(1, burst)
        self._interval = 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tat = clock()  # theoretical arrival time of the next request
        self._paused_until = 0.0

    def reserve(self) -> float:
        """Take the next conforming slot without waiting: seconds until it is due."""
        with self._lock:
            now = self._clock()
            tolerance = (self.burst - 1) * self._interval
            at = max(now, self._tat - tolerance, self._paused_until)
            self._tat = max(self._tat, at) + self._interval
        return at - now

    def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)

    def paused_for(self) -> float:
        """Seconds left of a Retry-After pause (0 when not paused)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())

    def wait_if_paused(self) -> None:
        wait = self.paused_for()
        if wait > 0:
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)


class PrefectRateLimit:
    """A Prefect global concurrency limit (with slot decay) used as a rate limit.

    A slot costs one call to the Prefect API (~12 ms, and Prefect's client
    serializes them per limit: ~10/s from 8 threads when taken one by one),
    so slots are taken in chunks worth a quarter second of the limit's decay
    rate (at most its size) and handed out locally. A chunk left unused for a
    second is dropped rather than saved up for a burst.

    Falls back to ``local`` for good, with one warning, the first time the
    limit turns out not to exist (or has no slot decay) or Prefect cannot be
    reached.
    """

    CHUNK_SECONDS = 0.25
    CHUNK_TTL = 1.0

    def __init__(
        self, name: str, local: TokenBucket, *, clock: Callable[[], float] = time.monotonic
    ):
        self.name, self.local, self._clock = name, local, clock
        self._use_prefect = True
        self._lock = threading.Lock()
        self._chunk: int | None = None
        self._tokens, self._fetched_at = 0, 0.0

    def _configure(self) -> int:
        """Slots to take per API call, from the limit's own settings."""
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(self.name)
        decay = limit.slot_decay_per_second or 0.0
        if decay <= 0:
            raise ValueError(f"global concurrency limit {self.name!r} has no slot decay")
        return max(1, min(limit.limit, int(decay * self.CHUNK_SECONDS)))

    def acquire(self) -> None:
        self.local.wait_if_paused()
        if self._use_prefect:
            try:
                self._take()
                return
            # Missing limit, API down: degrade to the local bucket, never stop sending.
            except Exception as exc:
                self._degrade(exc)
        self.local.acquire()

    def reserve(self) -> float | None:
        """A slot without blocking when one is at hand (seconds until due), else None:
        the caller then takes the blocking :meth:`acquire` off the event loop."""
        if not self._use_prefect:
            return self.local.reserve()
        with self._lock:
            fresh = self._clock() - self._fetched_at <= self.CHUNK_TTL
            if not (self._use_prefect and self._tokens and fresh):
                return None
            self._tokens -= 1
        return self.local.paused_for()

    def _take(self) -> None:
        from prefect.concurrency.sync import rate_limit

        # Held while waiting for Prefect: other threads would wait for slots anyway.
        with self._lock:
            if not self._use_prefect:
                raise RuntimeError("fell back while waiting")
            if self._chunk is None:
                self._chunk = self._configure()
            if self._tokens and self._clock() - self._fetched_at > self.CHUNK_TTL:
                self._tokens = 0
            if not self._tokens:
                rate_limit(self.name, occupy=self._chunk, strict=True)
                self._tokens, self._fetched_at = self._chunk, self._clock()
            self._tokens -= 1

    def _degrade(self, exc: Exception) -> None:
        with self._lock:
            if self._use_prefect:
                self._use_prefect = False
                log.warning(
                    "Prefect rate limit %r unavailable (%s); using an in-process limit of "
                    "%.3g/s. Create it with: prefect gcl create %s --limit N "
                    "--slot-decay-per-second N",
                    self.name,
                    type(exc).__name__,
                    self.local.rate,
                    self.name,
                )

    def pause(self, seconds: float) -> None:
        self.local.pause(seconds)


_LIMITERS: dict[tuple[str, str, float], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def make_rate_limiter(settings: DeliverySettings, name: str, rate: float) -> RateLimiter:
    """The limiter a channel should use, per ``settings.rate_limit_backend``.

    Shared by every channel built in this process with the same name and
    rate: flows build a channel per batch and run batches in parallel
    threads, and a bucket per instance would multiply the rate.
    """
    from careflow.channels.credentials import prefect_api_available

    use_prefect = settings.rate_limit_backend == "auto" and prefect_api_available()
    key = ("prefect" if use_prefect else "local", name, rate)
    with _LIMITERS_LOCK:
        if key not in _LIMITERS:
            local = TokenBucket(rate, burst=max(1, int(rate)))
            _LIMITERS[key] = PrefectRateLimit(name, local) if use_prefect else local
        return _LIMITERS[key]


# --- retries and the batch ---------------------------------------------------
@dataclass
class RetryPolicy:
    """How often and how patiently a transient failure is repeated."""

    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> RetryPolicy:
        return cls(
            max_attempts=settings.delivery_max_attempts,
            backoff_base=settings.delivery_backoff_base_seconds,
            backoff_max=settings.delivery_backoff_max_seconds,
            max_retry_after=settings.delivery_max_retry_after_seconds,
        )

    async def wait(self, seconds: float) -> None:
        """``sleep`` for the async path: real sleeps do not block the event loop
        (a test's stand-in for ``sleep`` is called as is)."""
        if self.sleep is time.sleep:
            await asyncio.sleep(seconds)
        else:
            self.sleep(seconds)

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff before attempt ``attempt + 1``."""
        return self.rng.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))


class _Abort(threading.Event):
    """Set when the provider refused our credentials: stop calling it this batch."""

    reason: str = "auth_failed"
    detail: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.unsent: set[int] = set()  # contacts left without a request once it was set

    def left(self, cid: int) -> Outcome:
        """The outcome of a message not requested (again) after the refusal."""
        self.unsent.add(cid)
        return Outcome.failed(cid, self.reason, retryable=True, detail=self.detail)

    def check(self, channel: str, outcomes: list[Outcome]) -> list[Outcome]:
        """``outcomes``, or, once set, ChannelDown with those of the requests made."""
        if not self.is_set():
            return outcomes
        raise ChannelDown(
            self.reason,
            f"{channel}: the provider refuses every request ({self.detail})",
            [o for o in outcomes if o.contact_id not in self.unsent],
        )


class Starts(Protocol):
    """Where a channel says which messages it is about to request (module docs)."""

    def owned(self, contact_ids: Sequence[int]) -> set[int] | None:
        """Those of ``contact_ids`` already marked sending, without I/O; None when some
        still need marking."""

    def mark(self, contact_ids: Sequence[int]) -> set[int]:
        """Mark ``contact_ids`` sending: the ones this run may request (another run may
        have taken over the rest)."""


@dataclass
class Delivery(Generic[P]):
    """One channel's way of delivering: what deliver_batch needs to know."""

    channel: str
    prepare: Callable[[Message], P]
    send: Callable[[P], str | None]
    limiter: RateLimiter
    policy: RetryPolicy
    workers: int = 4

    def prepared(self, message: Message) -> P | Outcome:
        """The request payload for ``message``, or the Outcome that settles it unsent."""
        cid = message.contact_id
        try:
            return self.prepare(message)
        except Skip as exc:
            return Outcome.skipped(cid, exc.reason, exc.detail)
        except DeliveryError as exc:
            return Outcome.failed(cid, exc.reason, detail=exc.detail)
        except Exception as exc:  # a bug or bad data for this one message only
            log.exception("%s: preparing contact %s failed", self.channel, cid)
            return Outcome.failed(cid, "prepare_error", detail=f"{type(exc).__name__}: {exc}")

    def after_failure(
        self, cids: Sequence[int], exc: BaseException, attempt: int, abort: _Abort
    ) -> list[Outcome] | float:
        """What a failed attempt to deliver to ``cids`` means (the one place that decides).

        Either the final Outcomes, one per contact, or the seconds to wait
        before the next attempt: only a TransientError (the provider proved it
        did not accept the request) is ever repeated.
        """
        if isinstance(exc, TransientError):
            wait = exc.retry_after
            if (wait is not None and wait > self.policy.max_retry_after) or (
                attempt >= self.policy.max_attempts
            ):
                return [
                    Outcome.failed(c, exc.reason, retryable=True, detail=exc.detail) for c in cids
                ]
            if wait is not None:
                self.limiter.pause(wait)  # the provider throttles the account, not a thread
            else:
                wait = self.policy.backoff(attempt)
            log.debug("%s: contacts %s %s, retry in %.2fs", self.channel, cids, exc.reason, wait)
            return wait
        if isinstance(exc, PermanentError):
            if exc.abort_batch:
                abort.reason, abort.detail = exc.reason, exc.detail
                abort.set()
                return [
                    Outcome.failed(c, exc.reason, retryable=True, detail=exc.detail) for c in cids
                ]
            return [Outcome.failed(c, exc.reason, detail=exc.detail) for c in cids]
        if isinstance(exc, AmbiguousError):
            return [Outcome.failed(c, exc.reason, detail=exc.detail) for c in cids]
        # unexpected: may have been sent, so never repeat
        log.error("%s: sending to contacts %s failed", self.channel, cids, exc_info=exc)
        detail = f"{type(exc).__name__}: {exc}"[:300]
        return [Outcome.failed(c, "internal_error", detail=detail) for c in cids]

    def one(
        self, message: Message, abort: _Abort | None = None, start: Starts | None = None
    ) -> Outcome:
        """Deliver one message; never raises. ``abort`` is shared by one batch."""
        if abort is None:
            abort = _Abort()
        cid = message.contact_id
        payload = self.prepared(message)
        if isinstance(payload, Outcome):
            return payload
        attempt = 0
        while True:
            attempt += 1
            if abort.is_set():
                return abort.left(cid)
            self.limiter.acquire()
            if attempt == 1 and start is not None and cid not in start.mark([cid]):
                return not_owned(cid)
            try:
                return Outcome.sent(cid, self.send(payload))
            except Exception as exc:
                settled = self.after_failure([cid], exc, attempt, abort)
                if isinstance(settled, list):
                    return settled[0]
                self.policy.sleep(settled)

    def batch(self, messages: Sequence[Message], start: Starts | None = None) -> list[Outcome]:
        """One Outcome per message, in input order, sending ``workers`` at a time;
        ChannelDown when the provider refused our credentials (module docs)."""
        if not messages:
            return []
        abort = _Abort()
        workers = max(1, min(self.workers, len(messages)))
        if workers == 1:
            outcomes = [self.one(m, abort, start) for m in messages]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix=f"careflow-{self.channel}") as ex:
                outcomes = list(ex.map(lambda m: self.one(m, abort, start), messages))
        _log_counts(self.channel, outcomes)
        return abort.check(self.channel, outcomes)


def not_owned(cid: int) -> Outcome:
    """A message another run took over while this one waited: not requested, not ours."""
    return Outcome.skipped(cid, "not_owned", "another run holds this message now")


def _log_counts(channel: str, outcomes: Sequence[Outcome]) -> None:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.state.value] = counts.get(o.state.value, 0) + 1
    log.info("%s batch of %d: %s", channel, len(outcomes), counts)


# --- many requests in flight: one event loop per process ------------------------------
class _HttpLoop:
    """The event loop every async channel in this process sends on, on a daemon thread.

    Channels are called from worker threads (Prefect runs tasks in threads) and
    stay synchronous to their callers: ``run`` hands a coroutine to this loop
    and waits for it. One loop for all batches at once keeps the GIL-bound
    HTTP work on one thread instead of hundreds.
    """

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _pid: int | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._pid != os.getpid() or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="careflow-http", daemon=True).start()
                cls._loop, cls._pid = loop, os.getpid()
            return cls._loop


def run_on_http_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the shared HTTP loop and wait for its result.

    If the waiting thread is interrupted, the coroutine is cancelled: no
    request starts after the caller has gone (those in flight stay in doubt,
    as the ledger's "sending" rows already say).
    """
    loop = _HttpLoop.get()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("run_on_http_loop called from the HTTP loop itself")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def http_session(settings: DeliverySettings, connections: int):
    """An aiohttp session with careflow's timeouts; call it on the HTTP loop.

    ``sock_connect`` bounds opening a connection (a failure there is proof the
    request never left), ``sock_read`` waiting for the answer (ambiguous).
    The pool holds as many connections as requests may be in flight.
    """
    import aiohttp

    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=settings.delivery_connect_timeout_seconds,
        sock_read=settings.delivery_read_timeout_seconds,
    )
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


async def acquire_async(limiter: RateLimiter) -> None:
    """Take a rate-limit slot without blocking the loop (blocking limiters go to a thread)."""
    reserve = getattr(limiter, "reserve", None)
    wait = reserve() if reserve is not None else None
    if wait is None:
        await asyncio.to_thread(limiter.acquire)
    elif wait > 0:
        await asyncio.sleep(wait)


class MembersRejected(Exception):
    """A request for several recipients refused because of some of them only.

    The provider accepted nothing, so the others may be sent again at once;
    ``errors`` maps the position of each refused member to its error.
    """

    def __init__(self, errors: dict[int, DeliveryError]):
        super().__init__(f"{len(errors)} member(s) refused")
        self.errors = errors


#: what a grouping function says of a payload: (content it may share, recipient), or None
GroupKey = tuple[Hashable, Hashable] | None


@dataclass
class AsyncDelivery(Delivery[P]):
    """Delivery with up to ``workers`` requests in flight on the shared HTTP loop.

    ``send_many(payloads)`` sends one request for one or more payloads and
    returns a provider id per payload. With ``group_key``, payloads sharing
    content (and not a recipient) go out together, up to ``max_group`` per
    request; each member still gets its own Outcome. The retry and
    exactly-once rules are :meth:`Delivery.after_failure`, as for threads.
    ``send`` stays the synchronous path (unused by :meth:`batch`).
    """

    send_many: Callable[[list[P]], Awaitable[list[str | None]]] | None = None
    group_key: Callable[[P], GroupKey] | None = None
    max_group: int = 1

    def batch(self, messages: Sequence[Message], start: Starts | None = None) -> list[Outcome]:
        if not messages:
            return []
        abort = _Abort()
        outcomes: list[Outcome | None] = [None] * len(messages)
        ready: list[tuple[int, P]] = []
        for i, message in enumerate(messages):
            payload = self.prepared(message)
            if isinstance(payload, Outcome):
                outcomes[i] = payload
            else:
                ready.append((i, payload))
        if ready:
            cids = [m.contact_id for m in messages]
            run_on_http_loop(self._run(cids, self._units(ready), outcomes, abort, start))
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(messages), "every message gets one outcome"
        _log_counts(self.channel, done)
        return abort.check(self.channel, done)

    def _units(self, ready: list[tuple[int, P]]) -> list[list[tuple[int, P]]]:
        """Requests to make: one payload each, or groups that share content."""
        if self.group_key is None or self.max_group <= 1:
            return [[item] for item in ready]
        units: list[list[tuple[int, P]]] = []
        open_groups: dict[Hashable, tuple[list[tuple[int, P]], set[Hashable]]] = {}
        for item in ready:
            key = self.group_key(item[1])
            if key is None:
                units.append([item])
                continue
            content, recipient = key
            group = open_groups.get(content)
            if group is None or recipient in group[1] or len(group[0]) >= self.max_group:
                group = ([], set())
                open_groups[content] = group
                units.append(group[0])
            group[0].append(item)
            group[1].add(recipient)
        return units

    async def _run(
        self,
        cids: list[int],
        units: list[list[tuple[int, P]]],
        outcomes: list[Outcome | None],
        abort: _Abort,
        start: Starts | None,
    ) -> None:
        gate = asyncio.Semaphore(max(1, self.workers))

        async def one_unit(members: list[tuple[int, P]]) -> None:
            for i, outcome in await self._unit(cids, members, gate, abort, start):
                outcomes[i] = outcome

        await asyncio.gather(*(one_unit(u) for u in units))

    async def _unit(
        self,
        cids: list[int],
        members: list[tuple[int, P]],
        gate: asyncio.Semaphore,
        abort: _Abort,
        start: Starts | None,
    ) -> list[tuple[int, Outcome]]:
        assert self.send_many is not None
        done: list[tuple[int, Outcome]] = []
        attempt = 0
        while members:
            attempt += 1
            ids = [cids[i] for i, _ in members]
            if abort.is_set():
                done += [(i, abort.left(cids[i])) for i, _ in members]
                break
            await acquire_async(self.limiter)
            try:
                async with gate:
                    if abort.is_set():  # while this waited for a slot
                        continue
                    if attempt == 1 and start is not None:
                        mine = start.owned(ids)
                        if mine is None:
                            mine = await asyncio.to_thread(start.mark, ids)
                        done += [(i, not_owned(cids[i])) for i, _ in members if cids[i] not in mine]
                        members = [m for m in members if cids[m[0]] in mine]
                        if not members:
                            break
                    provider_ids = await self.send_many([p for _, p in members])
            except MembersRejected as exc:
                refused = {k: e for k, e in exc.errors.items() if 0 <= k < len(members)}
                if not refused:  # names nobody: the whole request was refused
                    refused = dict.fromkeys(
                        range(len(members)), PermanentError("provider_rejected", str(exc))
                    )
                for k, err in refused.items():
                    i = members[k][0]
                    done.append((i, Outcome.failed(cids[i], err.reason, detail=err.detail)))
                members = [m for k, m in enumerate(members) if k not in refused]
                attempt -= 1  # nothing was accepted: the others' attempt does not count
                continue
            except Exception as exc:
                settled = self.after_failure(ids, exc, attempt, abort)
                if isinstance(settled, list):
                    done += list(zip((i for i, _ in members), settled, strict=True))
                    break
                await self.policy.wait(settled)
                continue
            done += [
                (i, Outcome.sent(cids[i], pid))
                for (i, _), pid in zip(members, provider_ids, strict=True)
            ]
            break
        return done


class ProviderChannel:
    """What every provider channel shares: a Delivery does the sending, and a
    channel can be closed (also as a context manager).

    Subclasses set ``name`` and call ``_deliver_with`` in ``__init__``.
    """

    name: str
    delivery: Delivery

    def _deliver_with(
        self,
        settings: DeliverySettings,
        *,
        prepare: Callable[[Message], P],
        send: Callable[[P], str | None],
        limit_name: str,
        rate: float,
        concurrency: int,
        limiter: RateLimiter | None,
        policy: RetryPolicy | None,
        send_many: Callable[[list[P]], Awaitable[list[str | None]]] | None = None,
        group_key: Callable[[P], GroupKey] | None = None,
        max_group: int = 1,
    ) -> None:
        """Deliver with ``concurrency`` worker threads calling ``send``, or, given
        ``send_many`` (async), with that many requests in flight on the HTTP loop."""
        self.configured_rate = rate  # requests per second, as configured (SendingMarks)
        common: dict[str, Any] = {
            "channel": self.name,
            "prepare": prepare,
            "send": send,
            "limiter": limiter or make_rate_limiter(settings, limit_name, rate),
            "policy": policy or RetryPolicy.from_settings(settings),
            "workers": concurrency,
        }
        if send_many is None:
            self.delivery = Delivery(**common)
        else:
            self.delivery = AsyncDelivery(
                **common, send_many=send_many, group_key=group_key, max_group=max_group
            )

    #: it calls ``start`` as each request begins (module docs, careflow/flows/route.py)
    marks_sending: ClassVar[bool] = True
    configured_rate: float

    def send_batch(
        self, messages: Sequence[Message], start: Starts | None = None
    ) -> list[Outcome]:
        """Send every message; one Outcome each, in order. Never raises per recipient;
        ChannelDown when the provider refuses every request."""
        return self.delivery.batch(messages, start)

    def close(self) -> None:
        """Release connections this channel opened; nothing by default."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

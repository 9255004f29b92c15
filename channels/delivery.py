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
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from careflow.errors import (
    AmbiguousError,
    DeliveryError,
    PermanentError,
    Skip,
    TransientError,
)
from careflow.messages import Message, Outcome
from careflow.settings import DeliverySettings

log = logging.getLogger(__name__)

P = TypeVar("P")


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

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            tolerance = (self.burst - 1) * self._interval
            at = max(now, self._tat - tolerance, self._paused_until)
            self._tat = max(self._tat, at) + self._interval
        if at > now:
            self._sleep(at - now)

    def wait_if_paused(self) -> None:
        with self._lock:
            wait = self._paused_until - self._clock()
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
    from channels.credentials import prefect_api_available

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

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff before attempt ``attempt + 1``."""
        return self.rng.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))


class _Abort(threading.Event):
    """Set when the provider refused our credentials: stop calling it this batch."""

    reason: str = "auth_failed"
    detail: str | None = None


@dataclass
class Delivery(Generic[P]):
    """One channel's way of delivering: what deliver_batch needs to know."""

    channel: str
    prepare: Callable[[Message], P]
    send: Callable[[P], str | None]
    limiter: RateLimiter
    policy: RetryPolicy
    workers: int = 4

    def one(self, message: Message, abort: _Abort | None = None) -> Outcome:
        """Deliver one message; never raises. ``abort`` is shared by one batch."""
        if abort is None:
            abort = _Abort()
        cid = message.contact_id
        try:
            payload = self.prepare(message)
        except Skip as exc:
            return Outcome.skipped(cid, exc.reason, exc.detail)
        except DeliveryError as exc:
            return Outcome.failed(cid, exc.reason, detail=exc.detail)
        except Exception as exc:  # a bug or bad data for this one message only
            log.exception("%s: preparing contact %s failed", self.channel, cid)
            return Outcome.failed(cid, "prepare_error", detail=f"{type(exc).__name__}: {exc}")
        attempt = 0
        while True:
            attempt += 1
            if abort.is_set():
                return Outcome.failed(cid, abort.reason, retryable=True, detail=abort.detail)
            self.limiter.acquire()
            try:
                return Outcome.sent(cid, self.send(payload))
            except TransientError as exc:
                wait = exc.retry_after
                if wait is not None and wait > self.policy.max_retry_after:
                    return Outcome.failed(cid, exc.reason, retryable=True, detail=exc.detail)
                if attempt >= self.policy.max_attempts:
                    return Outcome.failed(cid, exc.reason, retryable=True, detail=exc.detail)
                if wait is not None:
                    self.limiter.pause(wait)  # the provider throttles the account, not a thread
                else:
                    wait = self.policy.backoff(attempt)
                log.debug("%s: contact %s %s, retry in %.2fs", self.channel, cid, exc.reason, wait)
                self.policy.sleep(wait)
            except PermanentError as exc:
                if exc.abort_batch:
                    abort.reason, abort.detail = exc.reason, exc.detail
                    abort.set()
                    return Outcome.failed(cid, exc.reason, retryable=True, detail=exc.detail)
                return Outcome.failed(cid, exc.reason, detail=exc.detail)
            except AmbiguousError as exc:
                return Outcome.failed(cid, exc.reason, detail=exc.detail)
            except Exception as exc:  # unexpected: may have been sent, so never repeat
                log.exception("%s: sending to contact %s failed", self.channel, cid)
                return Outcome.failed(
                    cid, "internal_error", detail=f"{type(exc).__name__}: {exc}"[:300]
                )

    def batch(self, messages: Sequence[Message]) -> list[Outcome]:
        """One Outcome per message, in input order, sending ``workers`` at a time."""
        if not messages:
            return []
        abort = _Abort()
        workers = max(1, min(self.workers, len(messages)))
        if workers == 1:
            outcomes = [self.one(m, abort) for m in messages]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix=f"careflow-{self.channel}") as ex:
                outcomes = list(ex.map(lambda m: self.one(m, abort), messages))
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.state.value] = counts.get(o.state.value, 0) + 1
        log.info("%s batch of %d: %s", self.channel, len(messages), counts)
        return outcomes


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
    ) -> None:
        self.delivery = Delivery(
            channel=self.name,
            prepare=prepare,
            send=send,
            limiter=limiter or make_rate_limiter(settings, limit_name, rate),
            policy=policy or RetryPolicy.from_settings(settings),
            workers=concurrency,
        )

    def send_batch(self, messages: Sequence[Message]) -> list[Outcome]:
        """Send every message; one Outcome each, in order. Never raises per recipient."""
        return self.delivery.batch(messages)

    def close(self) -> None:
        """Release connections this channel opened; nothing by default."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

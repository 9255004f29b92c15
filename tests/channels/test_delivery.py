"""careflow/channels/delivery.py: classification, Retry-After, rate limits, the batch runner."""

from __future__ import annotations

import email.utils
import http.client
import logging
import threading
import urllib.error

import httpx
import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from careflow.channels.delivery import (
    Delivery,
    PrefectRateLimit,
    RetryPolicy,
    TokenBucket,
    error_for_exception,
    error_for_status,
    make_rate_limiter,
    parse_retry_after,
)
from careflow.errors import AmbiguousError, PermanentError, Skip, TransientError
from careflow.messages import Message, State
from tests.providers.kit import live_settings, make_message

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "value, seconds",
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("5", 5.0),
        ("0.25", 0.25),
        ("-3", 0.0),
        (email.utils.formatdate(NOW + 10, usegmt=True), 10.0),
        (email.utils.formatdate(NOW - 10, usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "status, reason, kind, expected_reason, abort",
    [
        (429, None, TransientError, "rate_limited", False),
        (500, None, TransientError, "provider_unavailable", False),
        (503, None, TransientError, "provider_unavailable", False),
        (401, None, PermanentError, "auth_failed", True),
        (403, None, PermanentError, "auth_failed", True),
        (403, "region_not_enabled", PermanentError, "region_not_enabled", False),
        (400, None, PermanentError, "provider_rejected", False),
        (400, "invalid_contact", PermanentError, "invalid_contact", False),
        (404, None, PermanentError, "provider_rejected", False),
    ],
)
def test_error_for_status(status, reason, kind, expected_reason, abort) -> None:
    error = error_for_status(status, "detail", reason=reason, retry_after=1.0)
    assert isinstance(error, kind) and error.reason == expected_reason
    assert getattr(error, "abort_batch", False) is abort


def _refused() -> requests.exceptions.ConnectionError:
    reason = NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(MaxRetryError(None, "/x", reason=reason))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc, kind, reason",
    [
        # requests (twilio)
        (_refused(), TransientError, "connect_failed"),
        (requests.exceptions.ConnectTimeout(), TransientError, "connect_failed"),
        (requests.exceptions.ReadTimeout(), AmbiguousError, "timeout_unknown"),
        (
            requests.exceptions.ConnectionError(ProtocolError("Connection aborted.")),
            AmbiguousError,
            "connection_lost_unknown",
        ),
        # httpx (sinch)
        (httpx.ConnectError("refused"), TransientError, "connect_failed"),
        (httpx.ConnectTimeout("slow"), TransientError, "connect_failed"),
        (httpx.WriteError("broken pipe"), TransientError, "connect_failed"),
        (httpx.ReadTimeout("slow"), AmbiguousError, "timeout_unknown"),
        (httpx.RemoteProtocolError("closed"), AmbiguousError, "connection_lost_unknown"),
        # urllib (sendgrid)
        (urllib.error.URLError(ConnectionRefusedError()), TransientError, "connect_failed"),
        (TimeoutError("timed out"), AmbiguousError, "timeout_unknown"),
        (http.client.RemoteDisconnected("closed"), AmbiguousError, "connection_lost_unknown"),
        (ConnectionResetError(), AmbiguousError, "connection_lost_unknown"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_error_for_exception(exc: BaseException, kind: type, reason: str) -> None:
    error = error_for_exception(exc)
    assert isinstance(error, kind) and error.reason == reason


class FakeTime:
    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))


def test_token_bucket_spaces_requests() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, burst=1, clock=t.clock, sleep=t.sleep)
    for _ in range(4):
        bucket.acquire()
    assert t.slept == [0.1, 0.2, 0.3]  # each caller reserves the next free instant


def test_token_bucket_burst_and_pause() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, burst=3, clock=t.clock, sleep=t.sleep)
    for _ in range(3):
        bucket.acquire()
    assert t.slept == []
    bucket.pause(2.0)
    bucket.acquire()
    assert t.slept == [2.0]


def test_token_bucket_rate_across_threads() -> None:
    # The clock stands still: 60 requests from 6 threads at once each get their own
    # slot, 1/200 s after the one before, so the rate holds whatever the threads do.
    waits: list[float] = []
    bucket = TokenBucket(200, burst=1, clock=lambda: 0.0, sleep=waits.append)
    start = threading.Barrier(6, timeout=10)

    def send_ten() -> None:
        start.wait()
        for _ in range(10):
            bucket.acquire()

    threads = [threading.Thread(target=send_ten) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # the first slot is due at once (no sleep); the 59 others, one each 5 ms
    assert sorted(round(w * 200) for w in waits) == list(range(1, 60))


class CountingBucket(TokenBucket):
    def __init__(self) -> None:
        super().__init__(1000)
        self.calls = 0

    def acquire(self) -> None:
        self.calls += 1


def test_prefect_rate_limit_takes_slots_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.concurrency.sync as prefect_sync

    taken: list[tuple[str, int]] = []
    monkeypatch.setattr(
        prefect_sync, "rate_limit", lambda name, occupy, **kw: taken.append((name, occupy))
    )
    monkeypatch.setattr(PrefectRateLimit, "_configure", lambda self: 5)
    t = FakeTime()
    local = CountingBucket()
    limiter = PrefectRateLimit("twilio-sms", local, clock=t.clock)
    for _ in range(12):
        limiter.acquire()
    assert taken == [("twilio-sms", 5)] * 3 and local.calls == 0
    t.now += 2.0  # the 3 slots left over are stale now: not saved up for a burst
    limiter.acquire()
    assert len(taken) == 4


def test_prefect_rate_limit_degrades_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import prefect.concurrency.sync as prefect_sync

    def missing(name: str, **kw: object) -> None:
        raise RuntimeError(f"Concurrency limits [{name!r}] must be created before acquiring")

    monkeypatch.setattr(prefect_sync, "rate_limit", missing)
    monkeypatch.setattr(PrefectRateLimit, "_configure", lambda self: 1)
    local = CountingBucket()
    limiter = PrefectRateLimit("twilio-sms", local)
    with caplog.at_level(logging.WARNING, logger="careflow.channels.delivery"):
        for _ in range(3):
            limiter.acquire()
    assert local.calls == 3
    warnings = [r for r in caplog.records if "prefect gcl create twilio-sms" in r.getMessage()]
    assert len(warnings) == 1


def test_prefect_rate_limit_needs_the_limit_to_exist(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def missing(self: PrefectRateLimit) -> int:
        raise LookupError("no global concurrency limit named twilio-sms")

    monkeypatch.setattr(PrefectRateLimit, "_configure", missing)
    local = CountingBucket()
    limiter = PrefectRateLimit("twilio-sms", local)
    limiter.acquire()
    assert local.calls == 1 and "LookupError" in caplog.text


def test_make_rate_limiter(monkeypatch: pytest.MonkeyPatch, no_prefect_api: None) -> None:
    assert isinstance(
        make_rate_limiter(live_settings(rate_limit_backend="auto"), "x", 5), TokenBucket
    )
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert isinstance(
        make_rate_limiter(live_settings(rate_limit_backend="auto"), "x", 5), PrefectRateLimit
    )
    assert isinstance(
        make_rate_limiter(live_settings(rate_limit_backend="local"), "x", 5), TokenBucket
    )


def test_rate_limiter_is_shared_by_channels_of_a_process() -> None:
    settings = live_settings(rate_limit_backend="local")
    first = make_rate_limiter(settings, "shared-test", 7)
    assert make_rate_limiter(settings, "shared-test", 7) is first
    assert make_rate_limiter(settings, "other-test", 7) is not first


def test_backoff_is_bounded() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=4.0)
    assert all(0 <= policy.backoff(1) <= 0.5 for _ in range(50))
    assert all(0 <= policy.backoff(10) <= 4.0 for _ in range(50))


def _messages(n: int) -> list[Message]:
    return [make_message(i, "sms", f"+86138{i:08d}") for i in range(n)]


def test_batch_runs_concurrently_and_keeps_order() -> None:
    active, peak, lock = [0], [0], threading.Lock()
    # each send waits for three others to be in flight: 4 workers get through, fewer hang
    together = threading.Barrier(4, timeout=10)

    def send(message: Message) -> str:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        together.wait()
        with lock:
            active[0] -= 1
        return f"id-{message.contact_id}"

    runner = Delivery("test", lambda m: m, send, TokenBucket(10_000), RetryPolicy(), workers=4)
    messages = _messages(20)
    outcomes = runner.batch(messages)
    assert [o.provider_id for o in outcomes] == [f"id-{m.contact_id}" for m in messages]
    assert peak[0] == 4


def test_unexpected_errors_become_outcomes() -> None:
    calls: list[int] = []

    def prepare(message: Message) -> Message:
        if message.customer_id == 0:
            raise Skip("invalid_contact", "bad")
        if message.customer_id == 1:
            raise ValueError("template data broken")
        return message

    def send(message: Message) -> str:
        calls.append(message.customer_id)
        raise RuntimeError("SDK bug after the request went out")

    runner = Delivery("test", prepare, send, TokenBucket(10_000), RetryPolicy(), workers=2)
    outcomes = runner.batch(_messages(3))
    assert [(o.state, o.reason) for o in outcomes] == [
        (State.SKIPPED, "invalid_contact"),
        (State.FAILED, "prepare_error"),
        (State.FAILED, "internal_error"),
    ]
    assert calls == [2]  # an unexpected failure may have sent: never repeated
    assert not outcomes[2].retryable


def test_reserve_takes_slots_without_blocking() -> None:
    """The async path reserves a slot and awaits the wait; the schedule is acquire's."""
    t = FakeTime()
    bucket = TokenBucket(10, burst=2, clock=t.clock, sleep=t.sleep)
    assert [round(bucket.reserve(), 6) for _ in range(4)] == [0.0, 0.0, 0.1, 0.2]
    bucket.pause(1.0)
    assert bucket.reserve() == 1.0 and t.slept == []


def test_prefect_rate_limit_reserves_from_its_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.concurrency.sync as prefect_sync

    taken: list[int] = []
    monkeypatch.setattr(prefect_sync, "rate_limit", lambda name, occupy, **kw: taken.append(occupy))
    monkeypatch.setattr(PrefectRateLimit, "_configure", lambda self: 3)
    t = FakeTime()
    limiter = PrefectRateLimit("twilio-sms", CountingBucket(), clock=t.clock)
    assert limiter.reserve() is None  # no slot at hand: the blocking acquire is needed
    limiter.acquire()  # takes a chunk of 3, uses one
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.0, None]
    assert taken == [3]


@pytest.mark.parametrize(
    "exc, kind, reason",
    [
        ("connector", TransientError, "connect_failed"),
        ("connect_timeout", TransientError, "connect_failed"),
        ("read_timeout", AmbiguousError, "timeout_unknown"),
        ("disconnected", AmbiguousError, "connection_lost_unknown"),
        ("reset_while_writing", AmbiguousError, "connection_lost_unknown"),
    ],
)
def test_aiohttp_errors(exc: str, kind: type, reason: str) -> None:
    """Only a connection that never opened is retried; the rest may have been accepted."""
    import aiohttp
    from aiohttp.client_reqrep import ConnectionKey

    key = ConnectionKey("api.twilio.com", 443, True, True, None, None, None)
    errors = {
        "connector": aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused")),
        "connect_timeout": aiohttp.ConnectionTimeoutError("connect"),
        "read_timeout": aiohttp.SocketTimeoutError("read"),
        "disconnected": aiohttp.ServerDisconnectedError(),
        "reset_while_writing": aiohttp.ClientConnectionResetError("reset"),
    }
    error = error_for_exception(errors[exc])
    assert isinstance(error, kind) and error.reason == reason

"""Exactly-once under provider faults, for every HTTP channel, with the real SDKs.

The fault server counts *accepted* requests per recipient. "Sent exactly
once" is ``accepted == 1`` and a ``sent`` outcome; a failure must carry its
reason, and only failures that prove non-acceptance may be retried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from careflow.channels.delivery import RetryPolicy, TokenBucket
from careflow.channels.email import SendGridEmail
from careflow.channels.fax import SinchFax
from careflow.channels.sms import TwilioSMS
from careflow.errors import ChannelDown
from careflow.messages import Message, State
from tests.providers.fault_server import TRANSIENT, FaultServer
from tests.providers.kit import live_settings, make_message, need_cjk_font, recipient_of

CHANNELS = {
    "sms": (TwilioSMS, "sms"),
    "email": (SendGridEmail, "email"),
    "fax": (SinchFax, "sms"),  # faxes go to phone numbers
}


@pytest.fixture(params=list(CHANNELS))
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "fax":
        need_cjk_font()
    return request.param


@pytest.fixture
def make_channel(kind: str) -> Iterator[Callable[..., object]]:
    built: list = []

    def factory(
        server: FaultServer,
        policy: RetryPolicy | None = None,
        limiter: TokenBucket | None = None,
        **settings: object,
    ):
        cls, _ = CHANNELS[kind]
        channel = cls(live_settings(server.base_url, **settings), policy=policy, limiter=limiter)
        built.append(channel)
        return channel

    yield factory
    for channel in built:
        channel.close()


def batch(kind: str, n: int, start: int = 0) -> list[Message]:
    contact = CHANNELS[kind][1]
    return [make_message(i, kind, recipient_of(contact, i)) for i in range(start, start + n)]


def test_transient_faults_end_sent_exactly_once(kind: str, make_channel) -> None:
    """20% of calls fail with 500/502/503/429: every message still goes out once."""
    n = {"sms": 200, "email": 200, "fax": 30}[kind]
    with FaultServer(fault_rate=0.2, faults=TRANSIENT, seed=7) as server:
        channel = make_channel(server, delivery_max_attempts=10)
        messages = batch(kind, n)
        outcomes = channel.send_batch(messages)
    assert [o.state for o in outcomes] == [State.SENT] * n, [o for o in outcomes if o.reason]
    assert {m.to: server.accepted[m.to] for m in messages} == {m.to: 1 for m in messages}
    assert sum(server.attempts.values()) > n  # faults really happened and were retried
    assert server.actions["http"] + server.actions["429"] > 0


@pytest.mark.parametrize(
    "script, reason, retryable, attempts",
    [
        (["http:400"], "provider_rejected", False, 1),
        (["http:500"] * 3, "provider_unavailable", True, 3),
        (["429:0.01"] * 3, "rate_limited", True, 3),
        (["429:999"], "rate_limited", True, 1),  # longer than we are willing to wait
        (["accept_hang:3"], "timeout_unknown", False, 1),
        (["accept_reset"], "connection_lost_unknown", False, 1),
        # Dropped before acceptance looks the same from outside: never repeated.
        (["reset"], "connection_lost_unknown", False, 1),
    ],
    ids=[
        "400",
        "5xx-exhausted",
        "429-exhausted",
        "429-too-long",
        "timeout-after-accept",
        "reset-after-accept",
        "reset-before-accept",
    ],
)
def test_failure_recorded_once_with_reason(
    kind: str,
    make_channel,
    fast_policy: RetryPolicy,
    script: list[str],
    reason: str,
    retryable: bool,
    attempts: int,
) -> None:
    fast_policy.max_attempts = 3
    with FaultServer() as server:
        channel = make_channel(server, fast_policy, delivery_read_timeout_seconds=1.0)
        messages = batch(kind, 3)
        victim = messages[1]
        server.script(victim.to, script)
        outcomes = channel.send_batch(messages)
        attempts_seen = server.attempts[victim.to]
    failed = outcomes[1]
    assert (failed.state, failed.reason, failed.retryable) == (State.FAILED, reason, retryable)
    assert failed.detail  # what the provider or the transport said
    assert attempts_seen == attempts
    assert [outcomes[0].state, outcomes[2].state] == [State.SENT, State.SENT]


class StillBucket(TokenBucket):
    """A fast bucket on a clock that stands at 0: records each request's wait for a slot."""

    def __init__(self) -> None:
        super().__init__(1000, clock=lambda: 0.0, sleep=lambda seconds: None)
        self.waits: list[float] = []

    def reserve(self) -> float:
        wait = super().reserve()
        self.waits.append(round(wait, 6))
        return wait


def test_retry_after_is_honoured(kind: str, make_channel) -> None:
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=3, sleep=slept.append)
    bucket = StillBucket()
    with FaultServer() as server:
        channel = make_channel(server, policy, bucket)
        message = batch(kind, 1)[0]
        server.script(message.to, ["429:0.25", "ok"])
        [outcome] = channel.send_batch([message])
    assert outcome.state == State.SENT
    assert slept == [0.25]
    # The channel-wide pause holds the next request back too: its slot is 0.25 s away.
    assert bucket.waits == [0.0, 0.25]
    assert server.accepted[message.to] == 1


def test_slow_answer_within_timeout_is_sent(kind: str, make_channel) -> None:
    with FaultServer() as server:
        channel = make_channel(server, delivery_read_timeout_seconds=2.0)
        message = batch(kind, 1)[0]
        server.script(message.to, ["slow:0.3"])
        [outcome] = channel.send_batch([message])
    assert outcome.state == State.SENT
    assert server.accepted[message.to] == 1


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_stops_the_channel(kind: str, make_channel, status: int) -> None:
    """Bad credentials fail every message: the channel stops calling the provider and
    raises ChannelDown (the run stops with one line) instead of failing the rest one by
    one. The outcomes it carries are the requests made, refused and retryable (nothing
    went out); the messages never requested have none, for the next run to send."""
    n = 12
    with FaultServer() as server:
        messages = batch(kind, n)
        for m in messages:
            server.script(m.to, [f"http:{status}"])
        channel = make_channel(server, sms_concurrency=4, email_concurrency=4)
        with pytest.raises(ChannelDown, match="refuses every request") as down:
            channel.send_batch(messages)
        calls = sum(server.attempts.values())
    outcomes = down.value.outcomes
    assert {(o.state, o.reason, o.retryable) for o in outcomes} == {
        (State.FAILED, "auth_failed", True)
    }
    workers = {"sms": 4, "email": 4, "fax": 2}[kind]
    assert 1 <= len(outcomes) == calls <= workers  # at most the requests already in flight
    assert "\n" not in str(down.value)


def test_connection_refused_is_retried_then_failed_retryable(kind: str, make_channel) -> None:
    server = FaultServer().start()
    server.stop()  # the port is closed now: every connect is refused
    channel = make_channel(server, RetryPolicy(max_attempts=2, backoff_base=0.001))
    outcomes = channel.send_batch(batch(kind, 2))
    assert {(o.state, o.reason, o.retryable) for o in outcomes} == {
        (State.FAILED, "connect_failed", True)
    }

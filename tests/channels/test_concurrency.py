"""The async path of the live SMS and email channels: many requests in flight,
identical emails sharing one request, and the exactly-once rules unchanged.

The fault server counts requests per recipient; "sent once" is
``accepted == 1`` with a ``sent`` outcome. No timings: requests are held in
flight by the server (``holding``) and counted there.
"""

from __future__ import annotations

import threading

import pytest

from careflow.channels.delivery import RetryPolicy
from careflow.channels.email import SendGridEmail
from careflow.channels.sms import TwilioSMS
from careflow.messages import Message, State
from tests.providers.fault_server import TRANSIENT, FaultServer
from tests.providers.kit import live_settings, make_message, recipient_of


def sms_batch(n: int) -> list[Message]:
    return [make_message(i, "sms", recipient_of("sms", i)) for i in range(n)]


def same_email(n: int, **fields: object) -> list[Message]:
    """Service mail whose rendered content is identical for every recipient."""
    values: dict[str, object] = {
        "marketing": False,
        "body": "Our shop is closed on Monday.",
        "subject": "Notice",
        "html": "<p>Our shop is closed on Monday.</p>",
    }
    values.update(fields)
    return [make_message(i, "email", recipient_of("email", i), **values) for i in range(n)]


@pytest.mark.parametrize("kind", ["sms", "email"])
def test_requests_are_in_flight_together_and_outcomes_keep_order(kind: str) -> None:
    n, concurrency = 60, 25
    messages = (
        sms_batch(n)
        if kind == "sms"
        else [make_message(i, "email", recipient_of("email", i)) for i in range(n)]
    )
    cls = TwilioSMS if kind == "sms" else SendGridEmail
    with FaultServer() as server:
        settings = live_settings(
            server.base_url, sms_concurrency=concurrency, email_concurrency=concurrency
        )
        result: list = []
        with cls(settings) as channel:
            server.holding = True  # requests wait at the server: all in flight
            sender = threading.Thread(target=lambda: result.extend(channel.send_batch(messages)))
            sender.start()
            server.wait_in_flight(concurrency)
            in_flight_at_once = server.in_flight
            server.holding = False
            sender.join(30)
    assert in_flight_at_once == concurrency  # the limit, not one at a time
    assert [o.contact_id for o in result] == [m.contact_id for m in messages]
    assert [o.state for o in result] == [State.SENT] * n
    assert {m.to: server.accepted[m.to] for m in messages} == {m.to: 1 for m in messages}
    if kind == "sms":  # each outcome carries the sid Twilio gave *its* message
        to_of = {sid: m["to"] for sid, m in server.twilio_messages.items()}
        assert [to_of[o.provider_id] for o in result] == [m.to for m in messages]


def test_a_5xx_for_one_recipient_affects_only_it() -> None:
    messages = sms_batch(30)
    victim = messages[17]
    policy = RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_max=0.01)
    with FaultServer() as server:
        server.script(victim.to, ["http:503"] * 3)
        with TwilioSMS(live_settings(server.base_url), policy=policy) as channel:
            outcomes = channel.send_batch(messages)
    failed = outcomes[17]
    assert (failed.state, failed.reason, failed.retryable) == (
        State.FAILED,
        "provider_unavailable",
        True,
    )
    assert server.attempts[victim.to] == 3
    others = [o for i, o in enumerate(outcomes) if i != 17]
    assert {o.state for o in others} == {State.SENT}
    assert all(server.accepted[m.to] == 1 for m in messages if m is not victim)


@pytest.mark.parametrize("kind", ["sms", "email"])
def test_a_timeout_leaves_only_that_message_in_doubt(kind: str) -> None:
    messages = (
        sms_batch(20)
        if kind == "sms"
        else [make_message(i, "email", recipient_of("email", i)) for i in range(20)]
    )
    victim = messages[5]
    cls = TwilioSMS if kind == "sms" else SendGridEmail
    with FaultServer() as server:
        server.script(victim.to, ["accept_hang:3"])
        settings = live_settings(server.base_url, delivery_read_timeout_seconds=1.0)
        with cls(settings) as channel:
            outcomes = channel.send_batch(messages)
    doubt = outcomes[5]
    assert (doubt.state, doubt.reason, doubt.retryable) == (State.FAILED, "timeout_unknown", False)
    assert server.attempts[victim.to] == 1  # never repeated: it may have been accepted
    assert [o.state for i, o in enumerate(outcomes) if i != 5] == [State.SENT] * 19


def test_identical_emails_share_one_request_with_a_personalization_each(
    fault_server: FaultServer,
) -> None:
    messages = same_email(6)
    with SendGridEmail(live_settings(fault_server.base_url)) as channel:
        outcomes = channel.send_batch(messages)
    [body] = fault_server.bodies
    people = body["personalizations"]
    assert [p["to"][0]["email"] for p in people] == [m.to for m in messages]
    assert [p["custom_args"] for p in people] == [
        {"careflow_key": m.key, "contact_id": str(m.contact_id)} for m in messages
    ]
    assert [o.contact_id for o in outcomes] == [m.contact_id for m in messages]
    assert [o.state for o in outcomes] == [State.SENT] * 6
    # one request, one X-Message-Id: each recipient's events match by its careflow_key
    assert len({o.provider_id for o in outcomes}) == 1 and outcomes[0].provider_id


def test_personalised_emails_are_not_merged(fault_server: FaultServer) -> None:
    """Marketing mail carries each recipient's own unsubscribe link: never shared."""
    messages = same_email(4, marketing=True)
    with SendGridEmail(live_settings(fault_server.base_url)) as channel:
        channel.send_batch(messages)
    assert [len(b["personalizations"]) for b in fault_server.bodies] == [1, 1, 1, 1]


def test_one_address_twice_is_never_in_one_request(fault_server: FaultServer) -> None:
    messages = same_email(3)
    messages.append(
        make_message(
            9,
            "email",
            messages[0].to,
            marketing=False,
            body=messages[0].body,
            subject="Notice",
            html=messages[0].html,
        )
    )
    with SendGridEmail(live_settings(fault_server.base_url)) as channel:
        outcomes = channel.send_batch(messages)
    assert sorted(len(b["personalizations"]) for b in fault_server.bodies) == [1, 3]
    assert [o.state for o in outcomes] == [State.SENT] * 4


def test_a_refused_member_fails_alone_and_the_rest_go_once(fault_server: FaultServer) -> None:
    messages = same_email(5)
    victim = messages[3]
    fault_server.script(victim.to, ["http:400:4001"])
    with SendGridEmail(live_settings(fault_server.base_url)) as channel:
        outcomes = channel.send_batch(messages)
    failed = outcomes[3]
    assert (failed.state, failed.reason, failed.retryable) == (
        State.FAILED,
        "invalid_contact",
        False,
    )
    assert "personalizations.3" in failed.detail
    assert [o.state for i, o in enumerate(outcomes) if i != 3] == [State.SENT] * 4
    assert {m.to: fault_server.accepted[m.to] for m in messages} == {
        m.to: int(m is not victim) for m in messages
    }
    [accepted] = fault_server.bodies  # the second request, without the refused recipient
    assert victim.to not in {p["to"][0]["email"] for p in accepted["personalizations"]}


@pytest.mark.parametrize("kind", ["sms", "email-shared", "email"])
def test_transient_faults_with_many_in_flight_send_each_once(kind: str) -> None:
    n = 300
    cls = TwilioSMS if kind == "sms" else SendGridEmail
    if kind == "sms":
        messages = sms_batch(n)
    elif kind == "email-shared":  # 30 groups of 10 identical mails, retried as a whole
        messages = [
            make_message(
                j,
                "email",
                recipient_of("email", j),
                marketing=False,
                body=f"Notice {j // 10}",
                subject="Notice",
                html=None,
            )
            for j in range(n)
        ]
    else:
        messages = [make_message(i, "email", recipient_of("email", i)) for i in range(n)]
    with FaultServer(fault_rate=0.2, faults=TRANSIENT, seed=11) as server:
        settings = live_settings(server.base_url, delivery_max_attempts=10)
        with cls(settings) as channel:
            outcomes = channel.send_batch(messages)
    assert [o.state for o in outcomes] == [State.SENT] * n, [o for o in outcomes if o.reason]
    assert {m.to: server.accepted[m.to] for m in messages} == {m.to: 1 for m in messages}
    assert server.actions["http"] + server.actions["429"] > 0
    if kind == "email-shared":
        assert len(server.bodies) == 30  # one accepted request per shared content

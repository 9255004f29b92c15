"""The channel contract, run over every registered channel (see careflow/channels/base.py).

The cases come from the channel registry (careflow/registry.py): each entry
is run with its test kit from :data:`KITS`. A registered channel without a
kit gets one case per contract test that fails naming it, so a new channel
cannot ship without contract coverage.

Each case builds its channel through ``get_channel`` from settings, the way
flows do; live channels talk to the loopback fault server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from careflow import registry
from careflow.channels import Channel, get_channel
from careflow.errors import ConfigError
from careflow.messages import State
from careflow.registry import ChannelSpec
from careflow.settings import Settings
from tests.providers.fault_server import FaultServer
from tests.providers.kit import live_settings, make_message, need_cjk_font, recipient_of


@dataclass(frozen=True)
class Kit:
    """What the contract needs to run one configuration of a channel."""

    #: names the configuration in the test id when a channel has several
    variant: str = ""
    overrides: dict = field(default_factory=dict)
    #: a recipient the channel must refuse (skipped/failed), None if it accepts anything
    invalid_recipient: str | None = "not-a-number"
    #: settings that must make construction fail
    bad_config: dict | None = None
    contact: str = "sms"  # which kind of address it delivers to


#: The test kit of every registered channel, keyed by its registry name.
KITS: dict[str, tuple[Kit, ...]] = {
    "outbox": (Kit(overrides={"delivery": "outbox"}, invalid_recipient=None),),
    "sms": (Kit(bad_config={"twilio_account_sid": "XX123"}),),
    "email": (
        Kit(
            invalid_recipient="not an address",
            bad_config={"sendgrid_api_key": "no-prefix"},
            contact="email",
        ),
    ),
    "fax": (
        Kit(
            "sinch",
            overrides={"fax_provider": "sinch"},
            bad_config={"sinch_project_id": None},
        ),
        Kit(
            "email-gateway",
            overrides={"fax_provider": "email_gateway"},
            bad_config={"fax_email_gateway_address": "fax.example.net"},
        ),
    ),
}


@dataclass(frozen=True)
class Case:
    name: str  # registered channel name asked of get_channel
    kit: Kit | None  # None: the channel has no kit in KITS

    @property
    def id(self) -> str:
        if self.kit is None:
            return f"{self.name}-no-kit"
        return f"{self.name}-{self.kit.variant}" if self.kit.variant else self.name

    def checked(self) -> Case:
        """This case, or a failure naming a registered channel that has no kit."""
        if self.kit is None:
            pytest.fail(
                f"channel {self.name!r} is registered but has no contract test kit: "
                "add one to KITS in tests/channels/test_contract.py",
                pytrace=False,
            )
        return self

    def settings(self, base_url: str, tmp_path: Path, **more: object) -> Settings:
        values = {"outbox_dir": tmp_path / "outbox", **self.kit.overrides, **more}
        return live_settings(base_url, **values)


def contract_cases() -> list[Case]:
    """One case per kit of every registered channel; one failing case for each without."""
    return [Case(name, kit) for name in registry.names() for kit in KITS.get(name, (None,))]


@pytest.fixture(params=contract_cases(), ids=lambda case: case.id)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param.checked()


@pytest.fixture
def pigeon() -> Iterator[None]:
    """A fictitious channel registered for one test, then removed."""
    registry.register(
        ChannelSpec("pigeon", contact_field=None, address_kind=None, factory=lambda s: None)
    )
    yield
    registry.unregister("pigeon")


def test_a_registered_channel_without_a_kit_fails_naming_it(pigeon: None) -> None:
    (case,) = [c for c in contract_cases() if c.name == "pigeon"]
    assert case.id == "pigeon-no-kit"
    with pytest.raises(pytest.fail.Exception, match="channel 'pigeon' is registered but has no"):
        case.checked()


def test_every_kit_belongs_to_a_registered_channel() -> None:
    assert set(KITS) <= set(registry.names())


@pytest.fixture
def build(case: Case, fault_server: FaultServer, tmp_path: Path) -> Callable[..., Channel]:
    if case.name == "fax":
        need_cjk_font()
    built: list[Channel] = []

    def factory(**more: object) -> Channel:
        channel = get_channel(case.name, case.settings(fault_server.base_url, tmp_path, **more))
        built.append(channel)
        return channel

    yield factory
    for channel in built:
        close = getattr(channel, "close", None)
        if close:
            close()


def messages(case: Case, n: int, start: int = 0) -> list:
    channel = "fax" if case.name == "fax" else case.kit.contact
    return [make_message(i, channel, recipient_of(case.kit.contact, i)) for i in range(start, start + n)]


def test_declares_protocol_attributes(build: Callable[..., Channel]) -> None:
    channel = build()
    assert isinstance(channel, Channel)
    assert isinstance(channel.name, str)


def test_one_outcome_per_message_in_order(case: Case, build: Callable[..., Channel]) -> None:
    batch = messages(case, 5 if case.name == "fax" else 12)
    outcomes = build().send_batch(batch)
    assert [o.contact_id for o in outcomes] == [m.contact_id for m in batch]
    assert all(o.state == State.SENT for o in outcomes), outcomes
    assert all(o.provider_id for o in outcomes if case.name != "email")


def test_empty_batch(build: Callable[..., Channel]) -> None:
    assert build().send_batch([]) == []


def test_bad_recipient_fails_alone(case: Case, build: Callable[..., Channel]) -> None:
    if case.kit.invalid_recipient is None:
        pytest.skip("the outbox delivers to any address, like the channel it stands in for")
    batch = messages(case, 4)
    bad = make_message(99, batch[0].channel, case.kit.invalid_recipient)
    batch.insert(2, bad)
    outcomes = build().send_batch(batch)
    assert len(outcomes) == len(batch)
    by_id = {o.contact_id: o for o in outcomes}
    assert by_id[bad.contact_id].state in (State.SKIPPED, State.FAILED)
    assert by_id[bad.contact_id].reason == "invalid_contact"
    others = [o for o in outcomes if o.contact_id != bad.contact_id]
    assert all(o.state == State.SENT for o in others)


def test_provider_rejection_fails_alone(
    case: Case, build: Callable[..., Channel], fault_server: FaultServer
) -> None:
    if case.name == "outbox":
        pytest.skip("the outbox has no provider to refuse")
    batch = messages(case, 4)
    refused = batch[1]
    target = refused.to if case.kit.overrides.get("fax_provider") != "email_gateway" else (
        f"{refused.to}@fax.example.net"
    )
    fault_server.script(target, ["http:400"])
    outcomes = build().send_batch(batch)
    states = {o.contact_id: o.state for o in outcomes}
    assert states.pop(refused.contact_id) == State.FAILED
    assert set(states.values()) == {State.SENT}


def test_never_raises_when_provider_is_down(case: Case, tmp_path: Path) -> None:
    if case.name == "fax":
        need_cjk_font()
    # Port 9 (discard) on loopback: nothing listens there, so connecting is refused.
    settings = case.settings("http://127.0.0.1:9", tmp_path, delivery_max_attempts=2)
    if case.name == "outbox":
        settings = case.settings("http://127.0.0.1:9", tmp_path, outbox_dir=tmp_path / "f")
        (tmp_path / "f").write_text("a file where the outbox folder should be")
    channel = get_channel(case.name, settings)
    batch = messages(case, 3)
    outcomes = channel.send_batch(batch)
    assert [o.state for o in outcomes] == [State.FAILED] * 3
    if case.name != "outbox":
        # Refused connections prove nothing was sent: safe to try again later.
        assert all(o.reason == "connect_failed" and o.retryable for o in outcomes)


def test_bad_config_raises_config_error(case: Case, tmp_path: Path) -> None:
    if case.name == "fax":
        need_cjk_font()  # without one, any fax config is refused, proving nothing
    if case.kit.bad_config is None:
        pytest.skip("the outbox needs no configuration")
    with pytest.raises(ConfigError):
        get_channel(case.name, case.settings("http://127.0.0.1:9", tmp_path, **case.kit.bad_config))

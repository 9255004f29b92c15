"""The channel registry: each delivery channel declared once, read by everything else.

An entry says what the rest of careflow needs to know about a channel
without importing it: which customer field holds its address and what kind
of address that is (the policy stage normalises it), which template files
make one message (rendering), how to finish a rendered message for that
channel (the SMS opt-out line and segment limit), and how to build the
channel from settings (a factory, so the provider SDKs are imported only
when a run really delivers on that channel).

The core declares nothing here. ``careflow/channels/__init__.py`` registers the
built-in channels; a test or a plug-in registers its own with one
:func:`register` call, and campaign validation, the CLI's choices, the
flows' typed parameters, rendering and policy all pick it up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from careflow.errors import ConfigError

if TYPE_CHECKING:
    from careflow.rendering import Rendered
    from careflow.settings import Settings

AddressKind = Literal["phone", "email"]


@dataclass(frozen=True)
class TemplatePart:
    """One template file of a message: ``stem`` holds ``{locale}``."""

    field: Literal["body", "subject", "html"]
    stem: str
    required: bool = True


@dataclass(frozen=True)
class ChannelSpec:
    """Everything careflow needs to know about one delivery channel."""

    name: str
    #: customer column holding the address; None for a channel that takes any (the outbox)
    contact_field: str | None
    #: how the address is checked and normalised (careflow/addresses.py)
    address_kind: AddressKind | None
    #: the template files of one message; empty for a channel campaigns cannot name
    parts: tuple[TemplatePart, ...] = ()
    #: ``factory(settings) -> Channel``; raises ConfigError for bad configuration
    factory: Callable[[Settings], Any] | None = None
    #: the provider's settings model the factory reads (careflow/settings.py)
    settings_model: type | None = None
    #: ``finish(rendered, locale=, marketing=, settings=) -> Rendered``: the message
    #: exactly as it goes out; raises Unsendable when it cannot (too long...)
    finish: Callable[..., Rendered] | None = None
    #: delivers the messages of every other channel (the outbox, a dry run's recorder)
    stands_in: bool = False
    #: longest subject the channel and the ledger accept (characters)
    max_subject_chars: int | None = None

    @property
    def content(self) -> bool:
        """True for channels a campaign can send on (it has templates)."""
        return bool(self.parts)

    def build(self, settings: Settings):
        if self.factory is None:
            raise ConfigError(f"channel {self.name!r} cannot be built (no factory registered)")
        return self.factory(settings)


_REGISTRY: dict[str, ChannelSpec] = {}


def register(spec: ChannelSpec, *, replace: bool = False) -> ChannelSpec:
    """Add a channel. Registering a name twice is an error unless ``replace``."""
    if spec.name in _REGISTRY and not replace:
        raise ConfigError(f"channel {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a channel (tests that register a fictitious one clean up with this)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """Every registered channel, content channels first, in registration order."""
    return [s.name for s in _REGISTRY.values() if s.content] + [
        s.name for s in _REGISTRY.values() if not s.content
    ]


def content_names() -> list[str]:
    """Channels a campaign can name in campaign.yaml (they have templates)."""
    return [s.name for s in _REGISTRY.values() if s.content]


def content_channels(names: list[str]) -> list[str]:
    """``names`` if each is a channel with templates (a field validator of campaign.yaml and
    of a journey's send step); ValueError naming the choices otherwise."""
    allowed = content_names()
    for name in names:
        if name not in allowed:
            raise ValueError(f"{name!r} is not a channel; choose from {', '.join(allowed)}")
    return names


def get(name: str) -> ChannelSpec:
    """The entry for ``name``; ConfigError naming the known channels otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(names()) or "none registered (import channels first)"
        raise ConfigError(
            f"unknown or unavailable channel {name!r}; choose one of: {known}"
        ) from None

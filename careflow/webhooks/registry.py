"""The webhook registry: each provider's receiver declared once, served by careflow serve.

An entry says everything the service needs to know about one provider's
callbacks without knowing the provider: the routes it posts to and what
each answers on success, whether it is on (its key read from Settings) and
the one line saying why not, how a request is pre-checked from its headers
and path before a byte of its body is read, the largest body it posts and
the content types it posts them in, how the body's signature is verified,
and how each route's body becomes :class:`careflow.events.InboundEvent`\\ s.

The service (careflow/service/app.py) loops over the entries and writes the rest once:
reading bodies within the bound, the refusals (404 off, 403 unsigned or
forged, 415, 413, 400 for what a parser raised on verified input), checks
and parsing on worker threads for large bodies, the batched writes, the
logs and the headers. ``careflow/webhooks/__init__.py`` registers the built-in
providers; a test or a plug-in registers its own with one :func:`register`
call and gets a working route.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from careflow.errors import ConfigError
from careflow.events import InboundEvent
from careflow.settings import Settings


@dataclass(frozen=True)
class Posted:
    """One request as its provider posted it: what a provider module may look at."""

    #: the public URL the provider called, query included (what Twilio signs)
    url: str
    #: the route's path parameters (Sinch's token)
    path_params: Mapping[str, str]
    #: the request headers, names case-insensitive
    headers: Mapping[str, str]
    #: the body; empty in :attr:`WebhookProvider.ready`, which runs before it is read
    body: bytes = b""

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


@dataclass(frozen=True)
class Answer:
    """What a route answers once its events are stored."""

    status: int = 204
    body: str | None = None
    media_type: str | None = None


NO_CONTENT = Answer()


@dataclass(frozen=True)
class Hook:
    """One route a provider posts to."""

    #: the route (Starlette syntax: ``/webhooks/sinch/{token}``); logs show it, not the path
    path: str
    #: ``parse(posted, received_at) -> events``: called on verified requests only, so
    #: whatever it raises is the request's fault (400); ``received_at`` is naive UTC
    parse: Callable[[Posted, datetime], Sequence[InboundEvent]]
    answer: Answer = NO_CONTENT


@dataclass(frozen=True)
class Configured:
    """A provider that is on: the key its requests are verified with, and the line the
    service logs when it starts (its routes, how they are checked; never the key)."""

    key: Any
    detail: str


@dataclass(frozen=True)
class WebhookProvider:
    """Everything careflow serve needs to know about one provider's callbacks."""

    name: str
    hooks: tuple[Hook, ...]
    #: ``configure(settings, local) -> Configured | None``: None when its settings are not
    #: set; ConfigError (one line) when they are set wrong. ``local``: careflow serve --local
    configure: Callable[[Settings, bool], Configured | None]
    #: why it is off, naming the setting to set
    off: str
    #: ``ready(key, posted) -> bool``: from the headers and path alone, is this request
    #: worth reading (its signature header or path token is there)? False is 403
    ready: Callable[[Any, Posted], bool]
    #: ``verify(key, posted, now) -> bool``: the body is signed by the provider (False is
    #: 403); ``now`` is the service's aware UTC clock, for timestamp tolerances
    verify: Callable[[Any, Posted, datetime], bool]
    #: largest body it posts, in bytes; None for CAREFLOW_SERVE_MAX_BODY_BYTES
    max_body: int | None = None
    #: the content types its bodies come in; any other is 415 before the body is read.
    #: Empty: any (the parser refuses what it cannot read)
    media_types: tuple[str, ...] = ()


_REGISTRY: dict[str, WebhookProvider] = {}


def register(provider: WebhookProvider, *, replace: bool = False) -> WebhookProvider:
    """Add a provider. A name or a route registered twice is an error unless ``replace``."""
    if provider.name in _REGISTRY and not replace:
        raise ConfigError(f"webhook provider {provider.name!r} is already registered")
    taken = {
        hook.path
        for other in _REGISTRY.values()
        if other.name != provider.name
        for hook in other.hooks
    }
    clash = [hook.path for hook in provider.hooks if hook.path in taken]
    if clash:
        raise ConfigError(f"webhook route {clash[0]} is already served by another provider")
    _REGISTRY[provider.name] = provider
    return provider


def unregister(name: str) -> None:
    """Remove a provider (tests that register a fictitious one clean up with this)."""
    _REGISTRY.pop(name, None)


def providers() -> list[WebhookProvider]:
    """Every registered provider, in registration order."""
    return list(_REGISTRY.values())

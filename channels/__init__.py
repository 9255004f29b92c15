"""Delivery channels: one file per channel behind the protocol in channels/base.py.

``get_channel(name, settings)`` builds the named channel from settings; it
raises ConfigError (naming the setting) before anything is sent.
"""

from __future__ import annotations

from channels.base import Channel, CONTACT_FIELD
from careflow.errors import ConfigError
from careflow.settings import Settings

__all__ = ["Channel", "CONTACT_FIELD", "get_channel", "CHANNEL_NAMES"]

CHANNEL_NAMES = ("outbox", "sms", "email", "fax")


def get_channel(name: str, settings: Settings) -> Channel:
    """The channel delivering ``name`` messages: the outbox for every name unless
    CAREFLOW_DELIVERY=live."""
    if name == "outbox" or (name in CHANNEL_NAMES and settings.delivery == "outbox"):
        from channels.outbox import OutboxChannel

        return OutboxChannel(settings.effective_outbox_dir)
    raise ConfigError(
        f"unknown or unavailable channel {name!r}; choose one of: {', '.join(CHANNEL_NAMES)}"
    )

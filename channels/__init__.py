"""Delivery channels: one file per channel behind the protocol in channels/base.py.

``get_channel(name, settings)`` builds the named channel from settings; it
raises ConfigError (naming the setting) before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from careflow.errors import ConfigError
from careflow.settings import Settings
from channels.base import CONTACT_FIELD, Channel

__all__ = ["CHANNEL_NAMES", "CONTACT_FIELD", "Channel", "closing_channel", "get_channel"]

CHANNEL_NAMES = ("outbox", "sms", "email", "fax")


def get_channel(name: str, settings: Settings) -> Channel:
    """The channel delivering ``name`` messages: the outbox for every name unless
    CAREFLOW_DELIVERY=live."""
    if name == "outbox" or (name in CHANNEL_NAMES and settings.delivery == "outbox"):
        from channels.outbox import OutboxChannel

        return OutboxChannel(settings.effective_outbox_dir)
    # Live channels are imported on demand: their SDKs cost import time that
    # outbox runs should not pay.
    if name == "sms":
        from channels.sms import TwilioSMS

        return TwilioSMS(settings)
    if name == "email":
        from channels.email import SendGridEmail

        return SendGridEmail(settings)
    if name == "fax":
        from channels.fax import EmailFaxGateway, SinchFax

        if settings.fax_provider == "email_gateway":
            return EmailFaxGateway(settings)
        return SinchFax(settings)
    raise ConfigError(
        f"unknown or unavailable channel {name!r}; choose one of: {', '.join(CHANNEL_NAMES)}"
    )


@contextmanager
def closing_channel(channel: Channel) -> Iterator[Channel]:
    """Release a channel's connection pools afterwards; the outbox has none."""
    try:
        yield channel
    finally:
        close = getattr(channel, "close", None)
        if close is not None:
            close()

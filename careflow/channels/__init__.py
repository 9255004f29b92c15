"""Delivery channels: one file per channel, each registered once below.

The registry (careflow/registry.py) is how the rest of careflow knows a
channel: its address field and kind, its template files, how to finish a
rendered message, and a factory. Live channels are built on demand so an
outbox run never imports a provider SDK.

``get_channel(name, settings)`` builds what delivers ``name`` messages this
run: the outbox for every channel unless CAREFLOW_DELIVERY=live. It raises
ConfigError (naming the setting) before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from careflow import registry
from careflow.channels.base import Channel
from careflow.registry import ChannelSpec, TemplatePart
from careflow.settings import FaxSettings, SendGridSettings, Settings, TwilioSettings

__all__ = ["Channel", "closing_channel", "get_channel"]


def _twilio_sms(settings: TwilioSettings):
    from careflow.channels.sms import TwilioSMS

    return TwilioSMS(settings)


def _sendgrid_email(settings: SendGridSettings):
    from careflow.channels.email import SendGridEmail

    return SendGridEmail(settings)


def _fax(settings: FaxSettings):
    from careflow.channels.fax import EmailFaxGateway, SinchFax

    if settings.fax_provider == "email_gateway":
        return EmailFaxGateway(settings)
    return SinchFax(settings)


def _outbox(settings: Settings):
    from careflow.channels.outbox import OutboxChannel

    return OutboxChannel.from_settings(settings)


def _finish_sms(rendered, **kwargs):
    from careflow.channels.sms_text import finish_sms

    return finish_sms(rendered, **kwargs)


registry.register(
    ChannelSpec(
        "sms",
        contact_field="mobile",
        address_kind="phone",
        parts=(TemplatePart("body", "sms.{locale}.j2"),),
        factory=_twilio_sms,
        settings_model=TwilioSettings,
        finish=_finish_sms,
    )
)
registry.register(
    ChannelSpec(
        "email",
        contact_field="email",
        address_kind="email",
        parts=(
            TemplatePart("subject", "email.{locale}.subject.j2"),
            TemplatePart("body", "email.{locale}.txt.j2"),
            TemplatePart("html", "email.{locale}.html.j2", required=False),
        ),
        factory=_sendgrid_email,
        settings_model=SendGridSettings,
        # the ledger keeps subjects up to 300 characters; inboxes show far fewer
        max_subject_chars=300,
    )
)
registry.register(
    ChannelSpec(
        "fax",
        contact_field="fax",
        address_kind="phone",
        parts=(TemplatePart("body", "fax.{locale}.j2"),),
        factory=_fax,
        settings_model=FaxSettings,
    )
)
# The outbox simulates whatever channel the campaign would have used.
registry.register(
    ChannelSpec("outbox", contact_field=None, address_kind=None, factory=_outbox, stands_in=True)
)


def get_channel(name: str, settings: Settings) -> Channel:
    """The channel delivering ``name`` messages this run (see the module docs)."""
    spec = registry.get(name)
    if not spec.stands_in and settings.delivery == "outbox":
        return _outbox(settings)
    return spec.build(settings)


@contextmanager
def closing_channel(channel: Channel) -> Iterator[Channel]:
    """Release a channel's connection pools afterwards; the outbox has none."""
    try:
        yield channel
    finally:
        close = getattr(channel, "close", None)
        if close is not None:
            close()

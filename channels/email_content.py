"""What an email says and carries, whoever delivers it: SendGrid or the outbox.

One place decides the unsubscribe link (a signed, expiring token:
careflow/unsubscribe.py), where it goes in the text and HTML parts, and the
RFC 8058 one-click headers; the SendGrid channel turns the result into a
Mail Send request, the outbox into the RFC 5322 message a mailbox would
receive. So the outbox holds exactly what would be sent.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid

from careflow.ledger import utcnow
from careflow.messages import Message
from careflow.unsubscribe import UnsubscribeTokens

UNSUBSCRIBE_PLACEHOLDER = "%unsubscribe_url%"


@dataclass(frozen=True)
class EmailContent:
    """The parts and headers of one email as it goes out."""

    text: str
    html: str | None
    headers: dict[str, str] = field(default_factory=dict)


def unsubscribe_url(base: str, token: str) -> str:
    """``base`` with the token as query parameter."""
    return f"{base}{'&' if '?' in base else '?'}token={token}"


def add_footer(message: Message, url: str) -> tuple[str, str | None]:
    """Body and HTML with the unsubscribe link placed (placeholder) or appended."""
    zh = message.locale.lower().startswith("zh")
    text, markup = message.body, message.html
    if UNSUBSCRIBE_PLACEHOLDER in text:
        text = text.replace(UNSUBSCRIBE_PLACEHOLDER, url)
    else:
        text = f"{text.rstrip()}\n\n{'退订' if zh else 'Unsubscribe'}: {url}\n"
    if markup is not None:
        if UNSUBSCRIBE_PLACEHOLDER in markup:
            markup = markup.replace(UNSUBSCRIBE_PLACEHOLDER, html.escape(url))
        else:
            footer = (
                f'<p style="font-size:12px;color:#666"><a href="{html.escape(url)}">'
                f"{'退订' if zh else 'Unsubscribe'}</a></p>"
            )
            at = markup.lower().rfind("</body>")
            markup = markup[:at] + footer + markup[at:] if at >= 0 else markup + footer
    return text, markup


def email_content(
    message: Message, tokens: UnsubscribeTokens | None, unsubscribe_base: str | None
) -> EmailContent:
    """The text, HTML and list headers of ``message`` (marketing mail gets the link)."""
    if not message.marketing or tokens is None or not unsubscribe_base:
        return EmailContent(message.body, message.html)
    token = tokens.make(message.customer_id, message.campaign, message.occasion)
    url = unsubscribe_url(unsubscribe_base, token)
    text, markup = add_footer(message, url)
    headers = {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    return EmailContent(text, markup, headers)


def mime_message(
    message: Message,
    content: EmailContent,
    *,
    from_email: str,
    from_name: str | None = None,
    reply_to: str | None = None,
) -> bytes:
    """The RFC 5322 message a mailbox would receive: both parts and every header."""
    mail = EmailMessage()
    mail["From"] = formataddr((from_name or "", from_email)) if from_name else from_email
    mail["To"] = message.to
    mail["Subject"] = message.subject or ""
    mail["Date"] = format_datetime(utcnow().replace(tzinfo=UTC))
    mail["Message-ID"] = make_msgid(domain=from_email.rpartition("@")[2] or "careflow")
    if reply_to:
        mail["Reply-To"] = reply_to
    for name, value in content.headers.items():
        mail[name] = value
    mail["X-Careflow-Key"] = message.key
    mail.set_content(content.text)
    if content.html:
        mail.add_alternative(content.html, subtype="html")
    return bytes(mail)

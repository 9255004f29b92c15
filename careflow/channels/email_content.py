"""What an email says and carries, whoever delivers it: SendGrid or the outbox.

One place decides the unsubscribe link (a signed, expiring token:
careflow/unsubscribe.py), where it goes in the text and HTML parts, and the
RFC 8058 one-click headers; the SendGrid channel turns the result into a
Mail Send request, the outbox into the RFC 5322 message a mailbox would
receive. So the outbox holds exactly what would be sent.
"""

from __future__ import annotations

import base64
import html
import uuid
from dataclasses import dataclass, field
from datetime import UTC
from email.header import Header
from email.utils import format_datetime, formataddr, make_msgid

from careflow.clock import utcnow
from careflow.messages import Message
from careflow.preferences import PreferenceTokens, preferences_url
from careflow.safe_text import for_header
from careflow.unsubscribe import PLACEHOLDER, UnsubscribeTokens

#: the categories whose email carries the preference centre's link
PREFERENCE_CATEGORIES = ("marketing", "care")


@dataclass(frozen=True)
class EmailContent:
    """The parts and headers of one email as it goes out."""

    text: str
    html: str | None
    headers: dict[str, str] = field(default_factory=dict)


def unsubscribe_url(base: str, token: str) -> str:
    """``base`` with the token as query parameter."""
    return f"{base}{'&' if '?' in base else '?'}token={token}"


def preferences_base(unsubscribe_base: str) -> str | None:
    """Where the preference centre is: the same service as the unsubscribe endpoint
    (``.../unsubscribe`` -> ``.../p``); None when the unsubscribe URL is not careflow
    serve's own path (then no preference link is added)."""
    base = unsubscribe_base.split("?", 1)[0].rstrip("/")
    if not base.endswith("/unsubscribe"):
        return None
    return base[: -len("unsubscribe")] + "p"


def add_footer(
    message: Message, url: str | None, preferences: str | None = None
) -> tuple[str, str | None]:
    """Body and HTML with the unsubscribe link placed (placeholder) or appended, and the
    preference centre's link appended after it.

    A placeholder in the rendered text is one the template wrote: rendering breaks any
    that comes with a customer's data (careflow/unsubscribe.py, ``inert_placeholder``)."""
    zh = message.locale.lower().startswith("zh")
    text, markup = message.body, message.html
    manage = "偏好设置" if zh else "Your message preferences"
    lines, links = [], []
    if url is not None:
        if PLACEHOLDER in text:
            text = text.replace(PLACEHOLDER, url)
        else:
            lines.append(f"{'退订' if zh else 'Unsubscribe'}: {url}")
        if markup is not None and PLACEHOLDER in markup:
            markup = markup.replace(PLACEHOLDER, html.escape(url))
        elif markup is not None:
            links.append((url, "退订" if zh else "Unsubscribe"))
    if preferences is not None:
        lines.append(f"{manage}: {preferences}")
        links.append((preferences, manage))
    if lines:
        text = f"{text.rstrip()}\n\n" + "\n".join(lines) + "\n"
    if markup is not None and links:
        footer = (
            '<p style="font-size:12px;color:#666">'
            + " · ".join(f'<a href="{html.escape(href)}">{label}</a>' for href, label in links)
            + "</p>"
        )
        at = markup.lower().rfind("</body>")
        markup = markup[:at] + footer + markup[at:] if at >= 0 else markup + footer
    return text, markup


def email_content(
    message: Message, tokens: UnsubscribeTokens | None, unsubscribe_base: str | None
) -> EmailContent:
    """The text, HTML and list headers of ``message``: marketing mail gets the unsubscribe
    link and headers; marketing and care mail the preference centre's link
    (careflow/preferences.py), signed with the same key."""
    if tokens is None or not unsubscribe_base:
        return EmailContent(message.body, message.html)
    preferences = None
    where = preferences_base(unsubscribe_base)
    if where is not None and message.category in PREFERENCE_CATEGORIES:
        token = PreferenceTokens(tokens).make(message.customer_id)
        preferences = preferences_url(where, token)
    if not message.marketing:
        if preferences is None:
            return EmailContent(message.body, message.html)
        return EmailContent(*add_footer(message, None, preferences))
    token = tokens.make(message.customer_id, message.campaign, message.occasion)
    url = unsubscribe_url(unsubscribe_base, token)
    text, markup = add_footer(message, url, preferences)
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
    """The RFC 5322 message a mailbox would receive: both parts and every header.

    Written out directly for its one shape (a text part, and an HTML alternative
    when there is one): the standard library's ``EmailMessage`` parsed and folded
    every header and took about 1.7 ms a message, ten times the rendering, which
    made HTML email on the outbox 450 messages a second (bench/README.md). Header
    values are single lines (non-ASCII as RFC 2047 encoded words); each part is
    7bit or 8bit UTF-8, or base64 where a line is too long for SMTP."""
    name = for_header(from_name or "")
    head = [
        ("From", formataddr((name, from_email), charset="utf-8") if name else from_email),
        ("To", message.to),
        ("Subject", _header_text(message.subject or "")),
        ("Date", format_datetime(utcnow().replace(tzinfo=UTC))),
        ("Message-ID", make_msgid(domain=from_email.rpartition("@")[2] or "careflow")),
        *([("Reply-To", reply_to)] if reply_to else []),
        *content.headers.items(),
        ("X-Careflow-Key", message.key),
        ("MIME-Version", "1.0"),
    ]
    if not content.html:
        return _lines(head) + _part("plain", content.text)
    boundary = f"=_careflow_{uuid.uuid4().hex}"
    out = _lines([*head, ("Content-Type", f'multipart/alternative; boundary="{boundary}"')])
    for subtype, text in (("plain", content.text), ("html", content.html)):
        # the line break after each part belongs to the boundary that follows it
        out += f"--{boundary}\n".encode() + _part(subtype, text) + b"\n"
    return out + f"--{boundary}--\n".encode()


#: the longest line SMTP carries (RFC 5321: 1,000 octets with the line break)
_SMTP_LINE = 998


def _header_text(value: str) -> str:
    """A header value on one line, without control or bidi characters (a customer's name in
    the subject may carry them); non-ASCII as RFC 2047 encoded words."""
    value = for_header(value)
    return value if value.isascii() else Header(value, "utf-8").encode()


def _part(subtype: str, text: str) -> bytes:
    """One text part: its headers and its content, which ends in a line break as a mail
    client shows it; 7bit or 8bit UTF-8, or base64 where a line is too long for SMTP."""
    data = text.encode("utf-8")
    data = data if data.endswith(b"\n") else data + b"\n"
    if max(map(len, data.splitlines()), default=0) > _SMTP_LINE:
        encoding, data = "base64", base64.encodebytes(data)
    else:
        encoding = "7bit" if data.isascii() else "8bit"
    head = [
        ("Content-Type", f'text/{subtype}; charset="utf-8"'),
        ("Content-Transfer-Encoding", encoding),
    ]
    return _lines(head) + data


def _lines(headers: list[tuple[str, str]]) -> bytes:
    """Header lines and the blank line after them; a value can hold no line break."""
    body = "".join(f"{k}: {' '.join(str(v).splitlines())}\n" for k, v in headers)
    return (body + "\n").encode("utf-8")

"""Request bodies decoded by their declared type, or refused.

careflow/service/app.py reads each body within its route's bound; here it becomes
JSON or form fields, for the provider modules (careflow/webhooks/) and the
unsubscribe page (careflow/service/) alike. Decoding failures are :class:`Malformed` (400) and a
body type a route does not take is :class:`Unsupported` (415): never an
exception from deeper down.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from email import policy
from email.parser import BytesParser
from urllib.parse import parse_qsl

#: Deepest JSON accepted: a SendGrid batch or a Sinch fax callback nests four or five levels.
MAX_JSON_DEPTH = 32
#: Most fields a form may have (a one-click post has one, the unsubscribe page two).
MAX_FORM_FIELDS = 200

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class Malformed(ValueError):
    """The body cannot be decoded as what it says it is (400)."""


class Unsupported(ValueError):
    """The body is of a type the route does not take (415)."""


def _refuse_constant(name: str):
    raise Malformed(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise Malformed(f"number out of range: {text[:20]}")
    return value


def json_value(body: bytes):
    """``body`` as JSON (RFC 8259: UTF-8, finite numbers), nested at most MAX_JSON_DEPTH deep.

    The depth is measured before decoding, so no input reaches the
    decoder's recursion limit: strings are cut out, then the innermost
    bracket pairs are removed once per level; anything left after
    MAX_JSON_DEPTH rounds is nested deeper (or unbalanced)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("not UTF-8") from None
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    for _ in range(MAX_JSON_DEPTH):
        if not brackets:
            break
        brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
    if brackets:
        raise Malformed(f"JSON nested deeper than {MAX_JSON_DEPTH} levels or unbalanced")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except ValueError as exc:
        raise Malformed(f"not JSON: {exc}") from None


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lower case and without parameters
    (``multipart/form-data; boundary=x`` is ``multipart/form-data``); ``text/plain``, as
    RFC 7231 reads a missing or unreadable one."""
    return policy.HTTP.header_factory("content-type", content_type or "").content_type


def form_fields(
    content_type: str | None, body: bytes, *, skip: Collection[str] = ()
) -> list[tuple[str, str]]:
    """The fields of an HTML form post, in order: urlencoded or multipart/form-data.

    A missing Content-Type is read as urlencoded (the HTML default). Text
    is decoded by the declared charset (UTF-8 when none); file parts, and
    multipart parts named in ``skip`` (a document a provider attaches), are
    left out undecoded."""
    declared = content_type or "application/x-www-form-urlencoded"
    header = policy.HTTP.header_factory("content-type", declared)
    kind, charset = header.content_type, header.params.get("charset") or "utf-8"
    try:
        if kind == "application/x-www-form-urlencoded":
            return parse_qsl(
                body.decode(charset),
                keep_blank_values=True,
                encoding=charset,
                errors="strict",
                max_num_fields=MAX_FORM_FIELDS,
            )
        if kind == "multipart/form-data":
            return _multipart(declared, body, charset, skip)
    except (UnicodeDecodeError, LookupError, ValueError) as exc:
        raise Malformed(f"unreadable form: {exc}") from None
    raise Unsupported(f"{kind} is not a form")


def _multipart(
    content_type: str, body: bytes, charset: str, skip: Collection[str]
) -> list[tuple[str, str]]:
    """RFC 7578: one part per field, named in its Content-Disposition, between boundaries."""
    message = BytesParser(policy=policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body
    )
    if not message.is_multipart() or message.defects:
        raise Malformed("multipart/form-data without its boundary, or cut short")
    parts = list(message.iter_parts())
    if len(parts) > MAX_FORM_FIELDS:
        raise Malformed("too many form fields")
    fields = []
    for part in parts:
        disposition = part["content-disposition"]
        name = disposition.params.get("name") if disposition else None
        if (
            part.defects
            or part.is_multipart()
            or name is None
            or disposition.content_disposition != "form-data"
        ):
            raise Malformed("a form part that is not a named field")
        if "filename" not in disposition.params and name not in skip:
            value = part.get_payload(decode=True)
            fields.append((name, value.decode(part.get_content_charset() or charset)))
    return fields

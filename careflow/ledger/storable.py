"""What a ledger row can hold, asked before sending and applied when recording.

PostgreSQL refuses some text SQLite keeps (a NUL character, text that is not
valid Unicode, a value longer than its column); the ledger holds the same on
both. :func:`unstorable` is asked before a message goes out (a message the
ledger could not record as sent must never go); :func:`fit` cuts what comes
back (provider ids, error texts) so recording never fails.
"""

from __future__ import annotations

from careflow.db.models import ContactHistory

CH = ContactHistory.__table__

#: how much of a free-text detail (a provider's error text, say) a row keeps
DETAIL_CHARS = 2000


def unstorable(**values: str | None) -> str | None:
    """Why the ledger cannot keep these message values (``recipient=``, ``subject=``,
    ``body=``: column names) exactly as they are, or None.

    PostgreSQL refuses a NUL character in text and any text that is not valid
    Unicode (a lone surrogate), and a value longer than its column; SQLite would
    keep them, and the ledger holds the same on both. The route asks before
    sending (``careflow/flows/route.build_message``): a message the ledger cannot record
    as sent must never go out, since its record would fail after the provider
    took it (``failed: invalid_content``).
    """
    for name, value in values.items():
        if value is None:
            continue
        if "\x00" in value:
            return f"{name} contains a NUL character (at position {value.index(chr(0))})"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"{name} is not valid Unicode text (a lone surrogate at position {exc.start})"
        limit = CH.c[name].type.length
        if limit is not None and len(value) > limit:
            return f"{name} has {len(value)} characters; the ledger keeps {limit}"
    return None


def fit(value: str | None, column_name: str) -> str | None:
    """``value`` as its column can store it, so recording never fails: NUL characters
    and lone surrogates replaced by U+FFFD, cut to the column's size (a detail to
    ``DETAIL_CHARS``) with an ellipsis.

    Record-after-send must not fail on data a provider already accepted: what
    goes out was checked before sending (:func:`unstorable`), and this is the
    last line of defence for the rest (provider ids and error texts).
    """
    if value is None:
        return None
    value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    limit = DETAIL_CHARS if column_name == "detail" else CH.c[column_name].type.length
    if limit is None or len(value) <= limit:
        return value
    return value[: limit - 1] + "…"

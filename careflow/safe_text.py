"""Text from customers and providers, made safe where a person reads it.

A name, a reply or a provider's error message is data, and data may carry
characters that act instead of showing: ESC and the C1 controls start
terminal sequences (colours, cursor moves, OSC 8 hyperlinks, window titles),
a carriage return overwrites the line it is on, and the bidi overrides
(U+202A-U+202E, U+2066-U+2069) reorder what follows, so ``txt.exe`` can read
``exe.txt``. The terminal (``for_terminal``: every line the CLI prints goes
through it), email headers (``for_header``) and CSV cells
(careflow/csv_export.py) all go by the one list here.
"""

from __future__ import annotations

import re

#: C0 and C1 controls, DEL, the bidi embeddings, overrides, isolates and marks, and the
#: Unicode line and paragraph separators (some terminals break lines on them)
_ACTIVE = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_ACTIVE_CHARS = re.compile(f"[{_ACTIVE}]")


def active_chars(text: str, keep: str = "") -> str:
    """``text`` with its control and bidi characters, but those in ``keep``, written out
    as ``\\uXXXX``: JSON's escape, so JSON text stays valid JSON that reads back the same."""
    return _ACTIVE_CHARS.sub(
        lambda m: m.group() if m.group() in keep else f"\\u{ord(m.group()):04x}", text
    )


def for_terminal(text: object, *, lines: bool = False) -> str:
    """``text`` as the terminal should show it: one line, control and bidi characters
    written out (``\\u001b``); with ``lines`` its line breaks stay."""
    return active_chars(str(text), "\n" if lines else "")


def for_header(text: str) -> str:
    """``text`` as one line for an email header: white space (line breaks too) one space,
    other control and bidi characters dropped."""
    return " ".join(_ACTIVE_CHARS.sub(lambda m: " " if m.group().isspace() else "", text).split())

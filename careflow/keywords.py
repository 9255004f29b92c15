"""Reading a reply: is it an opt-out, an opt-in, a request for help, or words for a person?

The rule is the one carriers, Twilio and Braze apply: a reply is a keyword
when, apart from surrounding spaces and punctuation, it *is* the keyword,
case- and width-insensitive ("Stop", " STOP! ", "ｓｔｏｐ" and "退订。" all
count). A keyword inside a sentence ("please don't stop the offers", "how
do I 退订?") is not acted on automatically: it is kept on the timeline as
a reply and surfaced to the customer's owner, who reads it.

Keywords follow the customer's language: English keywords work for
everyone (carriers require them), and the customer's locale adds its own
("TD", "退订" and "取消" for Chinese, where "回复TD退订" is the customary
opt-out line). Single letters like "T" count only in the language where
they are customary.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

Intent = Literal["opt_out", "opt_in", "help"]

_EVERYONE: dict[str, Intent] = {
    **dict.fromkeys(
        ["stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout", "revoke"], "opt_out"
    ),
    **dict.fromkeys(["start", "unstop", "yes"], "opt_in"),
    **dict.fromkeys(["help", "info"], "help"),
}
_BY_LANGUAGE: dict[str, dict[str, Intent]] = {
    "zh": {
        "td": "opt_out",
        "t": "opt_out",
        "退订": "opt_out",
        "取消": "opt_out",
        "退定": "opt_out",  # a common slip for 退订
        "订阅": "opt_in",
        "开始": "opt_in",
        "帮助": "help",
    },
}


def normalise(text: str) -> str:
    """Fold width and case, and trim spaces and punctuation at both ends."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    start, end = 0, len(folded)
    while start < end and _trim(folded[start]):
        start += 1
    while end > start and _trim(folded[end - 1]):
        end -= 1
    return " ".join(folded[start:end].split())


def _trim(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch)[0] in ("P", "S")


def classify(text: str | None, locale: str | None = None) -> Intent | None:
    """The keyword ``text`` is, for a customer of ``locale``; None for anything else."""
    if not text:
        return None
    word = normalise(text).replace(" ", "")
    if not word:
        return None
    language = (locale or "").replace("_", "-").split("-")[0].lower()
    return _BY_LANGUAGE.get(language, {}).get(word) or _EVERYONE.get(word)

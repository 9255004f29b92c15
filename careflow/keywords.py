"""Reading a reply: is it an opt-out, an opt-in, a request for help, or words for a person?

The rule is the one carriers, Twilio and Braze apply: a reply is a keyword
when, apart from surrounding spaces and punctuation, it *is* the keyword,
case- and width-insensitive ("Stop", " STOP! ", "ｓｔｏｐ" and "退订。" all
count). A keyword inside a sentence ("please don't stop the offers", "how
do I 退订?") is not acted on automatically: it is kept on the timeline as
a reply and surfaced to the customer's owner, who reads it.

Keywords follow the language of the message the customer is answering:
English keywords work for everyone (carriers require them), and the
message's language adds its own ("TD", "退订" and "取消" for Chinese,
where "回复TD退订" is the customary opt-out line). Single letters like "T"
count only in the language where they are customary. The language is the
one the message was *sent* in, read from its text (:func:`language_of`): a
customer without a stored locale got the default locale's message, and a
locale changed since does not change what they read. The customer's
stored locale adds its words too, so an opt-out is never missed because
the message was in another language than the one they write in.
"""

from __future__ import annotations

import re
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


#: how to recognise a message written in each language that has words of its own: Chinese
#: has Han characters and no Japanese kana
_WRITTEN_IN = {
    "zh": lambda text: _HAN.search(text) is not None and _KANA.search(text) is None,
}
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile("[\u3040-\u30ff]")


def language_of(message: str | None) -> str | None:
    """The language of a message careflow sent, among those with keywords of their own;
    None for any other (a reply to it is read with the universal keywords only).

    A message with Chinese in it counts as Chinese, so one that quoted a Chinese
    name in an English text lets its reader answer "TD" too: a stray opt-out
    honoured costs less than an opt-out missed.
    """
    if not message:
        return None
    return next((lang for lang, found in _WRITTEN_IN.items() if found(message)), None)


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


def classify(text: str | None, *locales: str | None) -> Intent | None:
    """The keyword ``text`` is, with the words of each of ``locales`` (languages or BCP 47
    tags: the answered message's, the customer's) and everyone's; None for anything else."""
    if not text:
        return None
    word = normalise(text).replace(" ", "")
    if not word:
        return None
    for locale in locales:
        language = (locale or "").replace("_", "-").split("-")[0].lower()
        if word in _BY_LANGUAGE.get(language, {}):
            return _BY_LANGUAGE[language][word]
    return _EVERYONE.get(word)

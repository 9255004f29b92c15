"""careflow's own secrets (the unsubscribe key, the Sinch path token): long, not guessable.

A length rule alone lets through 32 spaces or ``abcabc...``. So a secret
must also score at least two bits per required character in
:func:`estimated_bits`, a deliberately low estimate of its entropy: a
random key of the required length scores three to six bits a character, a
repeated, sequential or few-character one well under one. Each failure is
one line naming the setting and how to make a good one.
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import pairwise

from careflow.errors import ConfigError

MAKE_ONE = 'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


def _entropy(symbols: bytes) -> float:
    """Shannon entropy of the sequence's own symbol counts, times its length (bits)."""
    n = len(symbols)
    return -sum(c * math.log2(c / n) for c in Counter(symbols).values())


def estimated_bits(secret: bytes) -> float:
    """A low estimate of how many bits of chance ``secret`` holds.

    The entropy of its bytes, or of the steps between neighbouring bytes
    (which gives ``abcdef`` and ``123456`` away) if that is lower, scaled by
    the share of its three-byte runs that are new (which gives a repeated
    word away)."""
    if len(secret) < 3:
        return 0.0
    steps = bytes((b - a) % 256 for a, b in pairwise(secret))
    runs = len(secret) - 2
    novel = len({secret[i : i + 3] for i in range(runs)}) / runs
    return min(_entropy(secret), _entropy(steps)) * novel


def check_secret(value: str | bytes | None, setting: str, *, min_bytes: int) -> bytes:
    """``value`` as bytes when it is long and random enough; else ConfigError naming ``setting``."""
    key = value.encode("utf-8") if isinstance(value, str) else bytes(value or b"")
    if not key:
        raise ConfigError(f"{setting} is missing: {MAKE_ONE}")
    if len(key) < min_bytes:
        raise ConfigError(f"{setting} must be at least {min_bytes} bytes; {MAKE_ONE}")
    if estimated_bits(key) < 2 * min_bytes:
        raise ConfigError(
            f"{setting} is too easy to guess (repeated, sequential or few different "
            f"characters); {MAKE_ONE}"
        )
    return key

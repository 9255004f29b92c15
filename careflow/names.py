"""Names a marketer gives: campaigns and journeys are folders under templates/ and their
names are keys in the ledger, so both follow one rule."""

from __future__ import annotations

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
NAME_RULE = (
    "lowercase letters, digits and underscores, starting with a letter, at most 64 characters"
)

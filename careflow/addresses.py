"""Turning a customer's stored contact point into something a channel can use.

Each function returns the normalised address, or raises ``InvalidContact``
with a short reason. Flows call these before rendering, so a malformed number
becomes ``skipped: invalid_contact`` for that one customer and the outbox
shows exactly what a live channel would have been given.
"""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from careflow.errors import InvalidContact


def normalize_phone(raw: str, default_region: str = "CN") -> str:
    """E.164 form of ``raw`` (``+8613812345678``), parsed in ``default_region`` when local."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidContact(f"unparseable phone number {raw!r}: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidContact(f"not a valid phone number: {raw!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    """Normalised address; syntax only, no DNS look-ups (runs offline, in bulk)."""
    try:
        return validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidContact(f"invalid email {raw!r}: {exc}") from None


def mask_address(address: str | None) -> str:
    """An address recognisable to its owner and useless to anyone else, for logs,
    artifacts and pages: ``w***@example.com``, ``+86138****5678``."""
    if not address:
        return "***"
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    digits = address.strip()
    if len(digits) <= 6:
        return "***"
    return f"{digits[:6]}{'*' * (len(digits) - 10 if len(digits) > 10 else 2)}{digits[-4:]}"

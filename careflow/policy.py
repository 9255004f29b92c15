"""The contact policy stage: who may be contacted, on which channel, at what address.

Runs between selection and rendering. Today it applies consent and picks
each customer's channel from the campaign's preference order, normalising
the address on the way; quiet hours and frequency caps will slot in here
as further rules returning the same ``Decision``.

Skip reasons (recorded in the ledger and counted in reports):
- ``opted_out``: the customer could only be reached on channels they opted out of
- ``no_consent``: CAREFLOW_CONSENT_REQUIRED is on and no opt-in is recorded
- ``no_contact``: no address on file for any usable channel
- ``invalid_contact``: addresses on file, but none is usable (detail says why)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from babel import Locale

from careflow.addresses import normalize_email, normalize_phone
from careflow.errors import InvalidContact
from channels.base import CONTACT_FIELD


@dataclass(frozen=True)
class Decision:
    customer_id: int
    channel: str | None = None
    address: str | None = None
    skip_reason: str | None = None
    detail: str | None = None


@lru_cache(maxsize=1)
def _country_codes() -> dict[str, str]:
    names = {name.lower(): code for code, name in Locale("en").territories.items()}
    names.update({"uk": "GB", "usa": "US", "eire": "IE", "rsa": "ZA"})
    return names


def phone_region(country: str | None, default_region: str) -> str:
    """Region to read a national-format number in: the customer's country, else the default."""
    if country:
        c = country.strip()
        if len(c) == 2 and c.isalpha():
            return c.upper()
        return _country_codes().get(c.lower(), default_region)
    return default_region


def normalize_address(channel: str, raw: str, *, country: str | None, default_region: str) -> str:
    if channel == "email":
        return normalize_email(raw)
    return normalize_phone(raw, phone_region(country, default_region))


def decide(
    customer: dict,
    channels: Sequence[str],
    consent: dict[str, bool],
    *,
    consent_required: bool,
    default_region: str,
) -> Decision:
    """Pick the first channel in ``channels`` the customer may and can receive."""
    cid = customer["id"]
    allowed = [
        ch
        for ch in channels
        if consent.get(ch, not consent_required)  # explicit opt-out always wins
    ]
    if not allowed:
        reason = "no_consent" if consent_required and not any(consent.values()) else "opted_out"
        return Decision(cid, skip_reason=reason, detail=f"channels: {', '.join(channels)}")
    problems = []
    for ch in allowed:
        raw = customer.get(CONTACT_FIELD[ch])
        if not raw or not str(raw).strip():
            continue
        try:
            address = normalize_address(
                ch, str(raw), country=customer.get("country"), default_region=default_region
            )
        except InvalidContact as exc:
            problems.append(f"{ch}: {exc}")
            continue
        return Decision(cid, channel=ch, address=address)
    if problems:
        return Decision(cid, skip_reason="invalid_contact", detail="; ".join(problems))
    blocked = [ch for ch in channels if ch not in allowed and customer.get(CONTACT_FIELD[ch])]
    if blocked:  # reachable only where they said no
        return Decision(cid, skip_reason="opted_out", detail=f"opted out of {'/'.join(blocked)}")
    return Decision(cid, skip_reason="no_contact", detail=f"no {'/'.join(allowed)} on file")

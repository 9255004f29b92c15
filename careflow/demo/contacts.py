"""Demo contact points: phone, fax and email as people really write them.

Numbers are drawn until libphonenumber accepts them (numbering plans are
irregular) and written in the local styles customers type into forms, so
the policy stage has real normalising to do. Emails use only the reserved
example domains (RFC 2606).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date

import phonenumbers

EMAIL_DOMAINS = ["example.com", "example.net", "example.org"]

CN_MOBILE_PREFIXES = [
    *range(130, 140),
    150,
    151,
    152,
    153,
    155,
    156,
    157,
    158,
    159,
    166,
    173,
    175,
    176,
    177,
    178,
    *range(180, 190),
    191,
    198,
    199,
]


def _digits(rng: random.Random, n: int) -> str:
    return f"{rng.randrange(10**n):0{n}d}"


def _valid(region: str, make: Callable[[], str]) -> str:
    """Draw from ``make`` until libphonenumber accepts it: numbering plans are irregular."""
    while True:
        raw = make()
        if phonenumbers.is_valid_number(phonenumbers.parse(raw, region)):
            return raw


# region: (prefixes, digits after the prefix, split points, written styles).
# {a}{b}{c} are the national number's parts, {a1} is {a} without its trunk 0.
_MOBILE_PLANS: dict[str, tuple[tuple[str, ...], int, tuple[int, int], tuple[str, ...]]] = {
    "US": (
        ("212", "646", "718", "917", "347"),  # New York; Los Angeles below
        7,
        (3, 6),
        ("({a}) {b}-{c}", "{a}-{b}-{c}", "+1 {a} {b} {c}", "{a}{b}{c}"),
    ),
    "GB": (("074", "075", "077", "078", "079"), 8, (5, 5), ("{a} {c}", "+44 {a1} {c}", "{a}{c}")),
    "AU": (("04",), 8, (4, 7), ("{a} {b} {c}", "+61 {a1} {b} {c}", "{a}{b}{c}")),
    "NZ": (("021", "022", "027"), 7, (3, 6), ("{a} {b} {c}", "+64 {a1} {b} {c}", "{a}{b}{c}")),
}


def mobile_number(rng: random.Random, *, zh: bool, country: str, zone: str) -> str:
    """A valid mobile number for the customer's country, written the way people do."""
    if zh:
        n = f"{rng.choice(CN_MOBILE_PREFIXES)}{_digits(rng, 8)}"
        a, b, c = n[:3], n[3:7], n[7:]
        if country != "CN":  # a mainland number kept abroad is written internationally
            return rng.choice((f"+86 {n}", f"+86 {a} {b} {c}"))
        return rng.choice((f"{a} {b} {c}", n, f"+86 {n}", f"+86 {a} {b} {c}", f"{a}-{b}-{c}"))
    prefixes, length, (i, j), styles = _MOBILE_PLANS[country]
    if zone == "America/Los_Angeles":
        prefixes = ("213", "310", "323", "424", "562", "626", "818")

    def make() -> str:
        n = rng.choice(prefixes) + _digits(rng, length)
        a, b, c = n[:i], n[i:j], n[j:]
        return rng.choice(styles).format(a=a, a1=a.lstrip("0"), b=b, c=c)

    return _valid(country, make)


def fax_number(rng: random.Random, region: str) -> str:
    """An office landline (a fax number), local or international."""
    code = phonenumbers.country_code_for_region(region)
    area, length = {
        "CN": ("21", 8),
        "HK": ("", 8),
        "TW": ("2", 8),
        "US": ("212", 7),
        "GB": ("20", 8),
        "AU": ("2", 8),
        "NZ": ("9", 7),
    }[region]

    def make() -> str:
        n = _digits(rng, length)
        spaced = f"{n[: length // 2]} {n[length // 2 :]}"
        if region in ("US", "HK") or rng.random() < 0.5:
            return " ".join(x for x in (f"+{code}", area, spaced) if x)
        return f"0{area}-{spaced}"

    return _valid(region, make)


def email_address(
    rng: random.Random, given: str, family: str, birthday: date | None, taken: set[str]
) -> str:
    year = birthday.year if birthday else rng.randint(1950, 2005)
    local = rng.choice(
        (
            f"{given}.{family}",
            f"{family}.{given}",
            f"{given}{family}",
            f"{family}{given}{year % 100:02d}",
            f"{given[0]}{family}",
            f"{family}_{given}{year}",
        )
    )
    domain = rng.choice(EMAIL_DOMAINS)
    address, n = f"{local}@{domain}", 1
    while address in taken:  # people with the same name pick a number
        n += 1
        address = f"{local}{n}@{domain}"
    taken.add(address)
    return address

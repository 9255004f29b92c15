"""holiday: customers whose country has a public holiday on as-of (or ``days_before`` later).

Holidays come from the ``holidays`` package (maintained, on PyPI: the
Open World Holidays Framework), per country and year, public holidays only.
A holiday that lasts several days (China's Spring Festival, National Day) is
greeted once, on its first day; a country with two holidays on one day
(Christmas and a saint's day) is greeted for the first in the package's order.

Only real holidays are occasions, not the days off arranged around them:

- **Substituted days** (China's 调休, "Day off (substituted from 01/04/2026)",
  and the same in Russia, Vietnam, Hungary, Latvia, Taiwan...): a working
  weekend day swapped for a weekday to make a long break. Left out, by the
  package's own label for them.
- **Bridge and additional days** (Argentina's and Thailand's "Bridge Public
  Holiday", Kyrgyzstan's and Uzbekistan's additional days off, Malaysia's
  "Eid al-Fitr (additional holiday)", South Korea's temporary holidays,
  Cambodia's replacement holidays, China's 2020 extended Spring Festival,
  days off to vote, and days off with only a generic name: Chile's
  "National Holiday", Ghana's "Public Holiday", the Philippines' special
  non-working days): days off with nothing to celebrate. Left out by name
  (``DAYS_OFF``).
- **Later days of one holiday** under another name (Botswana's "New Year's
  Day Holiday" on 2 January, the UAE's "Eid al-Fitr Holiday" around Eid):
  the holiday is greeted once, on the first day of the run.
- **Observed days** (the US's Independence Day on Monday 5 July 2027 when
  the 4th is a Sunday, the UK's Christmas moved to the 27th): the holiday
  is greeted on its own date, the day people celebrate it, never on the day
  off that stands in for it (the package is asked for no observed days).

A customer's ``country`` may be an ISO 3166 code (``CN``) or the country's
English name (``China``, ``United Kingdom``, as the Online Retail file has
it; a few common spellings like ``USA``, ``EIRE`` and ``Hong Kong`` too),
in any case. Customers without a known country are never selected.

Columns: customer_id, country, holiday (in English), holiday_local (in the
country's own language, e.g. 春节), holiday_date, and ``local_date`` (the
holiday's date too), so a campaign with ``occasion: daily`` greets a
customer once per holiday, whichever day before it the run happens on.

The country list is worked out in Python when the select is built (a
calendar, not data); the database only matches countries.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from functools import lru_cache
from typing import Annotated

import holidays as holiday_calendars
from babel import Locale
from pydantic import Field, field_validator
from sqlalchemy import Date, Select, String, cast, column, false, func, literal, select, values

from careflow.db.models import Customer
from careflow.segments._params import SegmentParams
from careflow.segments._registry import Segment

#: spellings of countries that are neither an ISO code nor CLDR's English name
ALIASES = {
    "USA": "US", "UK": "GB", "EIRE": "IE", "RSA": "ZA", "HONG KONG": "HK",
    "CZECH REPUBLIC": "CZ", "SOUTH KOREA": "KR", "KOREA": "KR", "TAIWAN": "TW",
    "MACAU": "MO", "MACAO": "MO", "RUSSIA": "RU", "VIETNAM": "VN", "TURKEY": "TR",
}  # fmt: skip


def supported_countries() -> tuple[str, ...]:
    """ISO 3166 alpha-2 codes the holidays package has calendars for."""
    return tuple(sorted(c for c in holiday_calendars.list_supported_countries() if len(c) == 2))


class HolidayParams(SegmentParams):
    """Parameters of ``holiday``."""

    days_before: int = Field(
        0, strict=True, ge=0, le=60,
        description="Greet this many days before the holiday (0: on the day).",
    )
    countries: Annotated[list[str], Field(min_length=1)] | None = Field(
        None,
        description="Only these countries (ISO codes such as CN, GB); null: every country.",
        json_schema_extra={"allowed": "a list of ISO 3166 country codes such as [CN, GB], "
                                      "or null"},
    )
    holidays: Annotated[list[str], Field(min_length=1)] | None = Field(
        None,
        description="Only holidays whose English name contains one of these words "
        "(e.g. [Spring Festival, Mid-Autumn, National Day, New Year]); null: every public "
        "holiday.",
        json_schema_extra={"allowed": "a list of words such as [Spring Festival, New Year], "
                                      "or null"},
    )

    @field_validator("countries")
    @classmethod
    def _known_countries(cls, codes: list[str] | None) -> list[str] | None:
        if codes is None:
            return None
        known = set(supported_countries())
        upper = [str(c).strip().upper() for c in codes]
        unknown = [c for c in upper if c not in known]
        if unknown:
            raise ValueError(f"no holiday calendar for {', '.join(unknown)}")
        return list(dict.fromkeys(upper))


@lru_cache(maxsize=4096)
def _calendar(code: str, year: int, language: str | None) -> dict[date, str]:
    found = holiday_calendars.country_holidays(
        code, years=year, observed=False, language=language
    )
    return dict(found.items())


@lru_cache(maxsize=512)
def _own_language(code: str) -> str | None:
    """The country's own language: explicit, since the package otherwise follows LANG."""
    return holiday_calendars.country_holidays(code).default_language


@lru_cache(maxsize=512)
def _english(code: str) -> str | None:
    languages = holiday_calendars.country_holidays(code).supported_languages
    return next((lang for lang in ("en_US", "en_GB") if lang in languages), None)


#: English names of days off that are no occasion (module docs): a bridge between a
#: holiday and a weekend, a day added to, extending or replacing one, a day off to vote,
#: and days off with only a generic name ("Public Holiday", Chile's "National Holiday")
DAYS_OFF = re.compile(
    r"^(day off|bridge|additional|temporary)\b|\badditional holiday\b|\belection"
    r"|\b(extended|replacement) holiday$|special \(non-working\) day$"
    r"|^(special public|public|national|bank) holiday$|\bpresidential decree\b",
    re.IGNORECASE,
)
#: what a name says beyond its holiday, stripped in this order: "Eid al-Fitr Holiday
#: (estimated)" is Eid al-Fitr, "New Year's Holiday" is New Year's (Day)
_NOT_THE_NAME = (r"\s*\(estimated\)", r"\s+holiday$", r"\s+day$")


@lru_cache(maxsize=512)
def _substituted_prefix(code: str) -> str | None:
    """How the package names a country's substituted working days in English ("Day off
    (substituted from 01/04/2026)": China's 调休), up to the date; None when it has none."""
    found = holiday_calendars.country_holidays(code, language=_english(code))
    label = getattr(found, "substituted_label", None)
    if not getattr(found, "has_substituted_holidays", False) or not label:
        return None
    return found.tr(label).split("%")[0].strip()


def _occasions(code: str, day: date, language: str | None) -> list[str]:
    """The holidays on ``day`` in ``language``, in the package's order (it joins same-day
    holidays with ';'); substituted and bridging days off are None."""
    names = _calendar(code, day.year, language).get(day)
    if names is None:
        return []
    english = _calendar(code, day.year, _english(code))[day].split(";")
    prefix = _substituted_prefix(code)
    return [
        None if DAYS_OFF.search(en.strip()) or (prefix and en.strip().startswith(prefix))
        else name.strip()
        for en, name in zip(english, names.split(";"), strict=False)
    ]


def _same_holiday(a: str, b: str) -> bool:
    """True when two days' names are one holiday: "Botswana Day" and the "Botswana Day
    Holiday" after it, "Eid al-Fitr (estimated)" and "Eid al-Fitr Holiday (estimated)"."""
    return _base(a) == _base(b)


def _base(name: str) -> str:
    for part in _NOT_THE_NAME:
        name = re.sub(part, "", name, flags=re.IGNORECASE)
    return name.casefold()


@lru_cache(maxsize=64)
def greetings(day: date, countries: tuple[str, ...], words: tuple[str, ...]) -> dict:
    """{country code: (English name, local name)} of holidays that start on ``day``
    (a calendar: worked out once per day and countries, not once per batch)."""
    out = {}
    for code in countries:
        english = _english(code)
        before = [n for n in _occasions(code, day - timedelta(days=1), english) if n]
        # the first holiday of the day that is not a later day of yesterday's
        first = next(
            (
                (i, name)
                for i, name in enumerate(_occasions(code, day, english))
                if name and not any(_same_holiday(b, name) for b in before)
            ),
            None,
        )
        if first is None:
            continue
        index, name = first
        if words and not any(w.casefold() in name.casefold() for w in words):
            continue
        local = _occasions(code, day, _own_language(code))
        out[code] = (name, local[index] if index < len(local) and local[index] else name)
    return out


@lru_cache(maxsize=1)
def _spellings() -> dict[str, set[str]]:
    """Every spelling of each country's name a customer record may hold, upper case."""
    names = Locale("en").territories
    out: dict[str, set[str]] = {code: {code} for code in supported_countries()}
    for code in out:
        if code in names:
            out[code].add(names[code].upper())
    for alias, code in ALIASES.items():
        out.setdefault(code, {code}).add(alias)
    return out


def holiday(
    as_of: date, p: HolidayParams, *, id_range: tuple[int, int] | None = None
) -> Select:
    """Customers whose country has a holiday starting ``days_before`` days after as-of."""
    target = as_of + timedelta(days=p.days_before)
    found = greetings(target, tuple(p.countries or supported_countries()), tuple(p.holidays or ()))
    spellings = _spellings()
    country = func.upper(func.trim(Customer.country))
    if not found:
        return select(
            Customer.id.label("customer_id"), Customer.country,
            cast(literal(None), String).label("holiday"),
            cast(literal(None), String).label("holiday_local"),
            literal(target, Date).label("holiday_date"), literal(target, Date).label("local_date"),
        ).where(false())

    # each spelling of a greeted country once, with its holiday: a lookup table the
    # database joins (a CASE over every country and spelling cost ~40 us a customer).
    # Written into the SQL as literals (names from the holidays package and country
    # spellings, no customer data): on Christmas Day its ~400 rows as bound parameters
    # cost ~60 ms of Python a batch to build, compile and hand to psycopg, as literals 26.
    greeted: dict[str, tuple[str, str]] = {}
    for code, names in found.items():
        for spelling in sorted(spellings[code]):
            greeted.setdefault(spelling, names)
    table = (
        values(
            column("spelling", String),
            column("holiday", String),
            column("holiday_local", String),
            name="greetings",
            literal_binds=True,
        )
        .data([(spelling, *names) for spelling, names in greeted.items()])
        .cte("greetings")
    )
    where = [Customer.id.between(*id_range)] if id_range is not None else []
    return (
        select(
            Customer.id.label("customer_id"),
            Customer.country,
            table.c.holiday,
            table.c.holiday_local,
            literal(target, Date).label("holiday_date"),
            literal(target, Date).label("local_date"),
        )
        .join(table, table.c.spelling == country)
        .where(*where)
    )


SEGMENT = Segment(
    "holiday",
    holiday,
    HolidayParams,
    "Customers whose country has a public holiday on as-of (or `days_before` later).",
)

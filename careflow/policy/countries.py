"""Per-country rules as data: sending windows, public holidays, consent regimes.

The shipped table is ``countries.yaml`` beside this module; a site adds or
replaces countries with CAREFLOW_COUNTRY_RULES_FILE. Both are validated at
start-up and a problem is one line naming the file, the country and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from babel import Locale
from pydantic import BaseModel, ValidationError, field_validator

from careflow.errors import ConfigError
from careflow.policy.timing import WEEKDAYS, Holidays, Hours, Window

SHIPPED = Path(__file__).with_name("countries.yaml")
CATEGORIES = ("care", "marketing", "transactional")
Regime = Literal["opt_in", "opt_out"]


class _WindowSpec(BaseModel):
    model_config = {"extra": "forbid"}

    days: list[Literal[WEEKDAYS]] = list(WEEKDAYS)  # type: ignore[valid-type]
    hours: str | None = None
    public_holidays: bool = False
    channels: list[str] | None = None
    categories: list[Literal[CATEGORIES]] = ["marketing", "care"]  # type: ignore[valid-type]

    @field_validator("hours")
    @classmethod
    def _hours(cls, value):
        if value is not None:
            Hours.parse(value)
        return value

    @field_validator("days")
    @classmethod
    def _some_day(cls, value):
        if not value:
            raise ValueError("at least one day must be open")
        return value


class _HolidaySpec(BaseModel):
    model_config = {"extra": "forbid"}

    fixed: list[str] = []
    easter: list[int] = []
    dates: list[date] = []

    @field_validator("fixed")
    @classmethod
    def _month_day(cls, value):
        for md in value:
            try:
                date.fromisoformat(f"2000-{md}")  # a leap year: 02-29 is a date
            except ValueError:
                raise ValueError(f"{md!r} is not a month and day (MM-DD)") from None
        return value


class _CountrySpec(BaseModel):
    model_config = {"extra": "forbid"}

    source: str = ""
    window: _WindowSpec | None = None
    holidays: _HolidaySpec | None = None
    consent: dict[str, Regime] = {}


@dataclass(frozen=True)
class CountryRules:
    code: str
    window: Window | None = None
    consent: Mapping[str, str] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class Countries:
    """The table in force: ISO code -> rules."""

    rules: Mapping[str, CountryRules] = field(default_factory=dict)

    def get(self, code: str | None) -> CountryRules | None:
        return self.rules.get(code) if code else None

    def window(self, code: str | None, channel: str, category: str) -> Window | None:
        rules = self.get(code)
        if rules is None or rules.window is None:
            return None
        return rules.window if rules.window.applies(channel, category) else None

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.rules)))


def _build(code: str, spec: _CountrySpec, where: str) -> CountryRules:
    window = None
    if spec.window is not None:
        w = spec.window
        holidays = None
        if w.public_holidays:
            h = spec.holidays
            if h is None or not (h.fixed or h.easter or h.dates):
                raise ConfigError(
                    f"{where}: {code}.window.public_holidays is true but {code}.holidays lists none"
                )
            holidays = Holidays(
                fixed=frozenset(tuple(int(x) for x in md.split("-")) for md in h.fixed),
                easter=frozenset(h.easter),
                dates=frozenset(h.dates),
            )
        window = Window(
            country=code,
            days=frozenset(WEEKDAYS.index(d) for d in w.days),
            hours=Hours.parse(w.hours) if w.hours else None,
            holidays=holidays,
            channels=frozenset(w.channels) if w.channels is not None else None,
            categories=frozenset(w.categories),
            source=spec.source,
        )
    return CountryRules(code, window, dict(spec.consent), spec.source)


def _read(path: Path) -> dict[str, _CountrySpec | None]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"CAREFLOW_COUNTRY_RULES_FILE {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected countries by ISO code, e.g. 'FR:'")
    out: dict[str, _CountrySpec | None] = {}
    for code, body in raw.items():
        if not (isinstance(code, str) and len(code) == 2 and code.isalpha() and code.isupper()):
            raise ConfigError(f"{path}: {code!r} is not an ISO 3166 country code such as FR")
        if body is None:
            out[code] = None
            continue
        try:
            out[code] = _CountrySpec.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, (code, *e['loc'])))}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"{path}: {problems}") from None
    return out


def load_countries(override: Path | None = None) -> Countries:
    """The shipped table, with ``override``'s countries replacing (or, ``null``, removing)
    shipped ones. ConfigError (one line) for anything malformed. Read again when the
    override file changes."""
    try:
        info = Path(override).stat() if override is not None else None
        stamp = (info.st_mtime_ns, info.st_size) if info else None
    except OSError:
        stamp = None  # _read names the problem
    return _load_countries(override, stamp)


@lru_cache(maxsize=8)
def _load_countries(override: Path | None, _stamp: tuple | None) -> Countries:
    specs = _read(SHIPPED)
    where = {code: str(SHIPPED) for code in specs}
    if override is not None:
        for code, spec in _read(Path(override)).items():
            specs[code] = spec
            where[code] = str(override)
    rules = {
        code: _build(code, spec, where[code]) for code, spec in specs.items() if spec is not None
    }
    return Countries(rules)


@lru_cache(maxsize=1)
def _country_names() -> dict[str, str]:
    names = {name.lower(): code for code, name in Locale("en").territories.items()}
    names.update({"uk": "GB", "usa": "US", "eire": "IE", "rsa": "ZA"})
    return names


def country_code(country: str | None) -> str | None:
    """ISO alpha-2 code for a customer's country as written (``GB``, ``United Kingdom``)."""
    if not country:
        return None
    c = country.strip()
    if len(c) == 2 and c.isalpha():
        return c.upper()
    return _country_names().get(c.lower())

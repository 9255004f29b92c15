"""One typed settings object, read from the environment (``CAREFLOW_*``).

Everything careflow can be configured with is a field here, with its default
and meaning. Secrets are ``SecretStr`` and only unwrapped at the call site
that needs them. Channel credentials may also come from Prefect Secret blocks
(see channels/credentials.py); the environment always wins.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from careflow.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREFLOW_", extra="ignore")

    # --- where things live -------------------------------------------------
    home: Path = Field(
        default=PROJECT_ROOT / ".careflow",
        description="Working folder for the embedded default: SQLite file, outbox, reports.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Default: sqlite under CAREFLOW_HOME. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db",
    )
    templates_dir: Path = Field(default=PROJECT_ROOT / "templates")
    outbox_dir: Path | None = Field(
        default=None, description="Readable copies of outbox messages. Default: CAREFLOW_HOME/outbox"
    )

    # --- behaviour -----------------------------------------------------------
    delivery: Literal["outbox", "live"] = Field(
        default="outbox",
        description="outbox: every channel writes to the local outbox (no credentials). "
        "live: SMS, email and fax go to their providers.",
    )
    workers: int = Field(default=4, ge=1, le=64, description="Batches processed at once per run.")
    time_zone: str = Field(
        default="UTC",
        description="Business time zone: a plain --as-of date means noon of that date here.",
    )
    default_locale: str = Field(default="en", description="Locale for customers without one.")
    batch_size: int = Field(default=1000, ge=1, le=50_000, description="Customers per Prefect task.")
    feb29_birthdays_on: str = Field(
        default="feb28", description="Where Feb 29 birthdays fall in non-leap years: feb28 or mar1."
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("feb29_birthdays_on")
    @classmethod
    def _feb29(cls, value: str) -> str:
        if value not in {"feb28", "mar1"}:
            raise ValueError("must be 'feb28' or 'mar1'")
        return value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'careflow.db'}"

    @property
    def effective_outbox_dir(self) -> Path:
        return self.outbox_dir or self.home / "outbox"


def load_settings(**overrides) -> Settings:
    """Read settings from the environment; raise ConfigError naming the bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            problems.append(f"CAREFLOW_{field.upper()}: {err['msg']}")
        raise ConfigError("bad configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return load_settings()

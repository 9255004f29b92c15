"""Typed settings, read from the environment (``CAREFLOW_*``).

Everything careflow can be configured with is a field here, with its default
and meaning. Each provider has its own model (``TwilioSettings``,
``SendGridSettings``, ``FaxSettings``, the ``DeliverySettings`` they share,
``ServeSettings``); ``Settings`` composes them with the core's fields.
Secrets are ``SecretStr`` and only unwrapped at the call site that needs
them. Channel credentials may also come from Prefect Secret blocks (see
careflow/channels/credentials.py); the environment always wins.

Nothing is cached: the CLI and each flow run read settings once and pass them
down explicitly.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from careflow.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: the demo's home: its SQLite database, outbox and reports, in the checkout
DEMO_HOME = PROJECT_ROOT / ".careflow"


def home_for_database(url: str) -> Path:
    """The default CAREFLOW_HOME of a database named by CAREFLOW_DATABASE_URL: a folder
    of its own under the user's data folder ($XDG_DATA_HOME, else ~/.local/share), so
    production files (outbox, reports, the journal a run replays into its database, the
    unsubscribe key) never mix with the demo's in the checkout, nor with another
    database's. The folder's name reads as the database (``careflow-127.0.0.1-5432``)
    and ends with a hash of the URL without its password, so two databases of one name
    on two servers, or two SQLite files of one name, get two folders."""
    from sqlalchemy.engine import make_url  # here: reading settings needs no SQLAlchemy

    try:
        parts = make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: the run says so; keep a folder anyway
        shown, identity = "database", url
    else:
        backend, database = parts.get_backend_name(), parts.database or ""
        if backend == "sqlite":
            shown = Path(database).stem or "memory"
            where = str(Path(database).resolve()) if database else ":memory:"
        else:
            shown = "-".join(w for w in (database, parts.host, str(parts.port or "")) if w)
            where = f"{parts.host}:{parts.port}/{database}"
        # what names the database: neither the password nor the driver does
        identity = f"{backend}|{parts.username or ''}|{where}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", shown)[:80] or "database"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "careflow" / f"{slug}-{digest}"

#: the From address of the outbox (and the demo) while CAREFLOW_SENDGRID_FROM_EMAIL is unset
STAND_IN_FROM_EMAIL = "care@example.com"


class _FromEnvironment(BaseSettings):
    # an empty variable counts as unset (a deployment passing through an unset one)
    model_config = SettingsConfigDict(env_prefix="CAREFLOW_", extra="ignore", env_ignore_empty=True)


# --- one model per provider -----------------------------------------------------
# Each channel takes the model of its provider (the registry entry names it);
# ``Settings`` composes them all, so the environment is read in one place and
# every variable keeps its CAREFLOW_<FIELD> name. Credentials may instead come
# from Prefect Secret blocks named careflow-<field-with-dashes>
# (careflow/channels/credentials.py); docs/channels.md describes every field.


class DeliverySettings(_FromEnvironment):
    """What every live channel shares: retries, timeouts, rate limits, phone regions."""

    sms_default_region: str = Field(default="CN", description="Region for numbers without +.")
    rate_limit_backend: Literal["auto", "local"] = Field(
        default="auto",
        description="auto: Prefect global concurrency limits when the limit exists, else an "
        "in-process token bucket; local: always the in-process bucket.",
    )
    credentials_from_prefect_blocks: bool = Field(
        default=True,
        description="Look credentials missing from the environment up in Prefect blocks.",
    )
    credentials_block: str = Field(
        default="careflow",
        description="Name of careflow's credentials blocks (careflow/channels/blocks.py) to read.",
    )
    delivery_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Seconds to wait for a connection to a provider."
    )
    delivery_read_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        description="Seconds to wait for a provider's answer (then: timeout_unknown).",
    )
    delivery_max_attempts: int = Field(
        default=4,
        ge=1,
        le=10,
        description="Attempts per message at failures the provider surely did not accept.",
    )
    delivery_backoff_base_seconds: float = Field(
        default=0.5, ge=0, description="First retry backoff, doubling per attempt, full jitter."
    )
    delivery_backoff_max_seconds: float = Field(
        default=30.0, ge=0, description="Longest retry backoff."
    )
    delivery_max_retry_after_seconds: float = Field(
        default=60.0, ge=0, description="A longer Retry-After fails the message as retryable."
    )


class TwilioSettings(DeliverySettings):
    """SMS through Twilio (careflow/channels/sms.py)."""

    twilio_account_sid: str | None = Field(default=None, description="Twilio Account SID (AC...).")
    twilio_auth_token: SecretStr | None = Field(default=None, description="Twilio Auth Token.")
    twilio_from_number: str | None = Field(
        default=None, description="Sender: E.164 number or alphanumeric sender ID."
    )
    twilio_messaging_service_sid: str | None = Field(
        default=None, description="Messaging Service (MG...); used instead of the from number."
    )
    twilio_status_callback_url: str | None = Field(
        default=None, description="Webhook Twilio posts delivery status to."
    )
    twilio_api_base_url: str = Field(
        default="https://api.twilio.com", description="Twilio API host (a proxy or test server)."
    )
    sms_max_segments: int = Field(default=3, ge=1, le=10, description="Longest SMS allowed.")
    sms_optout_zh: str = Field(
        default="回复TD退订", description="Appended to zh-CN marketing SMS; empty disables."
    )
    sms_concurrency: int = Field(
        default=64,
        ge=1,
        le=1000,
        description="Requests in flight at once per batch (async, one event loop); the rate "
        "limit still decides how many start per second.",
    )
    sms_rate_per_second: float = Field(
        default=10.0, gt=0, description="The Twilio account's messages per second."
    )
    sms_rate_limit_name: str = Field(
        default="twilio-sms", description="Prefect global concurrency limit shared by all runs."
    )


class SendGridSettings(DeliverySettings):
    """Email through SendGrid, and its unsubscribe links (careflow/channels/email.py)."""

    sendgrid_api_key: SecretStr | None = Field(default=None, description="SendGrid API key (SG.).")
    sendgrid_from_email: str | None = Field(
        default=None, description="Sender address (a verified sender or authenticated domain)."
    )
    sendgrid_from_name: str | None = Field(default=None, description="Sender display name.")

    @property
    def from_email(self) -> str:
        """The From address email goes out with: CAREFLOW_SENDGRID_FROM_EMAIL, else the
        outbox's stand-in (the live channel refuses to start without the setting)."""
        return self.sendgrid_from_email or STAND_IN_FROM_EMAIL

    sendgrid_reply_to: str | None = Field(default=None, description="Reply-To address.")
    sendgrid_api_base_url: str = Field(
        default="https://api.sendgrid.com", description="EU: https://api.eu.sendgrid.com"
    )
    email_concurrency: int = Field(
        default=64,
        ge=1,
        le=1000,
        description="Requests in flight at once per batch (async, one event loop); the rate "
        "limit still decides how many start per second.",
    )
    email_rate_per_second: float = Field(
        default=50.0, gt=0, description="Mail Send calls per second."
    )
    email_rate_limit_name: str = Field(
        default="sendgrid-email", description="Prefect global concurrency limit shared by all runs."
    )
    unsubscribe_base_url: str | None = Field(
        default=None, description="Public URL receiving one-click unsubscribes (?token=...)."
    )
    unsubscribe_secret: SecretStr | None = Field(
        default=None, description="HMAC key signing unsubscribe tokens (>= 32 bytes)."
    )
    unsubscribe_token_max_age_days: int = Field(
        default=60, ge=30, description="Days an unsubscribe link keeps working (at least 30)."
    )


class FaxSettings(SendGridSettings):
    """Fax through Sinch, or an email-to-fax gateway over SendGrid (careflow/channels/fax.py)."""

    fax_provider: Literal["sinch", "email_gateway"] = Field(
        default="sinch",
        description="sinch: the Sinch Fax API; email_gateway: an email-to-fax gateway.",
    )
    sinch_project_id: str | None = Field(default=None, description="Sinch project id.")
    sinch_key_id: str | None = Field(default=None, description="Sinch access key id.")
    sinch_key_secret: SecretStr | None = Field(default=None, description="Sinch access key secret.")
    sinch_fax_api_base_url: str = Field(
        default="https://fax.api.sinch.com",
        description="Sinch Fax API host (regional hosts, a proxy, a test server).",
    )
    fax_from_number: str | None = Field(default=None, description="Sender fax number (E.164).")
    fax_callback_url: str | None = Field(default=None, description="Fax-completed webhook.")
    fax_email_gateway_address: str | None = Field(
        default=None, description="Email-to-fax address template, e.g. {e164}@fax.example.net"
    )
    fax_font_path: Path | None = Field(
        default=None, description="CJK TrueType/OpenType font for fax PDFs; default: searched."
    )
    fax_concurrency: int = Field(
        default=2, ge=1, le=16, description="Faxes rendered and sent at once."
    )
    fax_rate_per_second: float = Field(default=1.0, gt=0, description="Fax API calls per second.")
    fax_rate_limit_name: str = Field(
        default="sinch-fax", description="Prefect global concurrency limit shared by all runs."
    )


#: what an event source may be called (POST /events, CAREFLOW_EVENT_SOURCES)
EVENT_SOURCE = re.compile(r"[a-z0-9][a-z0-9-]{0,23}")
#: the shortest secret an event source may sign with
EVENT_SECRET_MIN = 24


def event_secrets(value: SecretStr | str | None) -> dict[str, bytes]:
    """CAREFLOW_EVENT_SOURCES read as {source: secret}; ValueError names a bad source,
    never a secret."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
    out: dict[str, bytes] = {}
    for number, pair in enumerate(raw.split(","), 1):
        name, sep, secret = pair.strip().partition("=")
        name, secret = name.strip(), secret.strip()
        if not sep or not EVENT_SOURCE.fullmatch(name):
            raise ValueError(
                f"pair {number} must be SOURCE=SECRET with SOURCE 1-24 lowercase letters, "
                "digits or dashes"
            )
        if len(secret) < EVENT_SECRET_MIN:
            raise ValueError(f"the secret of source {name} is shorter than {EVENT_SECRET_MIN}")
        if name in out:
            raise ValueError(f"source {name} is named twice")
        out[name] = secret.encode()
    return out


class ServeSettings(_FromEnvironment):
    """Hearing back: `careflow serve` (docs/responses.md)."""

    public_base_url: str | None = Field(
        default=None,
        description="The URL providers call careflow serve at (https://care.example.com), "
        "as seen from outside any reverse proxy: Twilio signs the URL it called. Required "
        "when the Twilio receiver is on (CAREFLOW_TWILIO_AUTH_TOKEN), except for "
        "`careflow serve --local`.",
    )
    sendgrid_webhook_public_key: str | None = Field(
        default=None,
        description="Verification key of SendGrid's Signed Event Webhook (base64, from the "
        "SendGrid console).",
    )
    webhook_tolerance_seconds: int = Field(
        default=300,
        ge=30,
        le=3600,
        description="How old a signed SendGrid request may be before it counts as a replay.",
    )
    sinch_callback_token: SecretStr | None = Field(
        default=None,
        description="Secret path token in the fax callback URL (Sinch signs nothing); "
        ">= 24 characters.",
    )
    attribution_window_days: int = Field(
        default=7,
        ge=1,
        le=90,
        description="An order this soon after a delivered message converts it (last touch).",
    )
    serve_max_body_bytes: int = Field(
        default=5_000_000,
        ge=10_000,
        description="Largest SendGrid or Sinch request accepted (a SendGrid batch carries "
        "many events). Twilio forms (64 KiB) and unsubscribe posts (16 KiB) have fixed, "
        "smaller bounds.",
    )

    event_sources: SecretStr | None = Field(
        default=None,
        description="The shop's event sources for POST /events and the secret each signs "
        "with, as SOURCE=SECRET pairs separated by commas (shop=...,pos=...); a source is "
        "1-24 lowercase letters, digits or dashes, a secret at least 24 characters "
        "(docs/events.md). Turns the events receiver on.",
    )
    event_tolerance_seconds: int = Field(
        default=300,
        ge=30,
        le=3600,
        description="How far a POST /events signature's timestamp may be from the service's "
        "clock before the post counts as a replay and is refused.",
    )
    event_max_age_hours: int = Field(
        default=72,
        ge=1,
        description="An event that happened longer ago than this is recorded but triggers "
        "nothing (no attribution, Prefect event or journey entry) unless its post is a "
        "backfill.",
    )
    event_max_body_bytes: int = Field(
        default=1_000_000,
        ge=10_000,
        description="Largest POST /events body accepted (413 above it).",
    )
    event_max_batch: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="Most events one POST /events may carry (400 above it).",
    )

    @field_validator("event_sources")
    @classmethod
    def _event_sources(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            event_secrets(value)  # raises ValueError, naming the source, never the secret
        return value

    @field_validator("public_base_url")
    @classmethod
    def _public_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                "must be the scheme and host providers call, like https://care.example.com"
            )
        return value.rstrip("/")


class Settings(FaxSettings, TwilioSettings, ServeSettings):
    """Everything careflow reads from the environment: the core, and every provider's model."""

    # --- where things live -------------------------------------------------
    home: Path = Field(
        default=None,  # filled in by _home_of_the_database
        validate_default=False,
        description="Working folder: SQLite file, outbox, reports, journal, unsubscribe key. "
        "Default: the checkout's .careflow/ for the demo's database; with "
        "CAREFLOW_DATABASE_URL set, a folder of that database's own under the user's "
        "data folder (home_for_database).",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Default: sqlite under CAREFLOW_HOME. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db",
    )
    templates_dir: Path = Field(
        default=PROJECT_ROOT / "templates", description="Where campaigns live."
    )
    outbox_dir: Path | None = Field(
        default=None,
        description="Readable copies of outbox messages. Default: CAREFLOW_HOME/outbox",
    )
    outbox_files: bool = Field(
        default=True,
        description="false: the outbox builds each message as it would write it (a fax "
        "without its font still fails) and reports it sent, but writes no file; what "
        "`careflow journey simulate` runs its days with.",
    )

    # --- behaviour -----------------------------------------------------------
    delivery: Literal["outbox", "live"] = Field(
        default="outbox",
        description="outbox: every channel writes to the local outbox (no credentials). "
        "live: SMS, email and fax go to their providers.",
    )
    brand_name: str = Field(
        default="Lotus & Pine", description="Shop name templates sign messages with."
    )
    postal_address: str | None = Field(
        default=None,
        description="The shop's postal address, in every email's footer (CAN-SPAM wants a "
        "real one in marketing email: live marketing email refuses to start without it; "
        "unset, the outbox shows the demo shop's).",
    )
    contact_line: str | None = Field(
        default=None,
        description="How customers reach the shop, in every email's footer (e.g. "
        "'care@yourshop.com · +44 20 7946 0000'; unset: the demo shop's).",
    )
    main_currency: str | None = Field(
        default=None,
        description="The shop's main currency (a 3-letter code such as CNY): what `report "
        "pyramid` and `report clv` rank in when no --param currency is given; unset: the "
        "currency with the most revenue.",
    )
    consent_required: bool = Field(
        default=False,
        description="Older spelling of CAREFLOW_CONSENT_REGIME=opt_in: true means an opt-in "
        "is needed on every channel.",
    )
    time_zone: str = Field(
        default="UTC",
        description="Business time zone: a plain --as-of date means noon of that date here.",
    )
    default_locale: str = Field(default="en", description="Locale for customers without one.")
    render_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Longest one message may take to render (template_error)."
    )
    render_max_chars: int = Field(
        default=200_000, ge=1_000, description="Longest rendered message, all parts together."
    )
    render_max_memory_mb: int = Field(
        default=256,
        ge=32,
        description="Memory the render worker process may use beyond its own (template_error).",
    )
    reservation_lease_seconds: int = Field(
        default=900,
        ge=1,
        description="How long a message may stay reserved or sending before it counts as "
        "left behind by a run that died. Longer than any batch takes.",
    )
    send_chunk_size: int = Field(
        default=50,
        ge=1,
        le=5000,
        description="Messages marked 'sending' and handed to a provider's channel at a time. "
        "A crash leaves at most this many per batch in doubt. The outbox takes 1,000.",
    )
    batch_size: int = Field(
        default=5000,
        ge=1,
        le=50_000,
        description="Customers per Prefect task. Each task costs 10-50 ms of orchestration; "
        "5,000 keeps that to a few percent of a run, and of a re-run that sends nothing.",
    )
    batch_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Batches of one run in progress at once on threads of the flow's "
        "process. Empty: 1 on SQLite, whose one writer makes threads wait on each other "
        "(four at once made a re-run a third slower), 4 on PostgreSQL, where threads "
        "overlap the database's round trips (one at a time made a re-run half again as "
        "slow); bench/README.md. More throughput comes from more processes (Dask, Prefect "
        "workers).",
    )

    spam_rate_limit: float = Field(
        default=0.003,
        gt=0,
        lt=1,
        description="Spam-report rate (reports / delivered, one UTC day, the sending "
        "domain's SendGrid events) past which an email campaign pauses itself until "
        "`careflow campaign resume`: 0.003 is Gmail's and Yahoo's bulk-sender limit "
        "(docs/compliance.md).",
    )
    spam_rate_min_delivered: int = Field(
        default=1000,
        ge=1,
        description="Delivered messages a day needs before its spam-report rate is judged: "
        "below 1,000 one report alone is 0.1% or more, and a single complaint would pause "
        "a small shop's campaigns (docs/compliance.md).",
    )

    @property
    def effective_batch_concurrency(self) -> int:
        if self.batch_concurrency is not None:
            return self.batch_concurrency
        return 1 if self.effective_database_url.startswith("sqlite") else 4

    # --- where batch tasks run (careflow/flows/runners.py, docs/production.md) -------
    task_runner: Literal["threads", "dask"] = Field(
        default="threads",
        description="threads: a flow run's batches run on threads of its own process "
        "(CAREFLOW_BATCH_CONCURRENCY of them); dask: on a Dask cluster "
        "through prefect-dask (CAREFLOW_DASK_ADDRESS).",
    )
    dask_address: str | None = Field(
        default=None,
        description="Scheduler of a running Dask cluster (tcp://host:8786). Empty: each flow "
        "run starts a LocalCluster of CAREFLOW_DASK_WORKERS processes and stops it at the end.",
    )
    dask_workers: int = Field(
        default=2, ge=1, le=256, description="Worker processes of the LocalCluster."
    )
    dask_threads_per_worker: int = Field(
        default=2, ge=1, le=64, description="Batches each LocalCluster worker runs at once."
    )

    # ======================================================================
    # --- contact policy (docs/policy.md); campaign.yaml `policy:` overrides ---
    # ======================================================================
    consent_regime: Literal["opt_out", "opt_in", "by_country"] = Field(
        default="opt_out",
        description="opt_out: contact unless the customer said no; opt_in: only with a "
        "recorded opt-in for the campaign's category (or the channel); by_country: as the "
        "country table says, opt-in where a country is not listed. Transactional messages "
        "never need an opt-in.",
    )
    quiet_hours: str = Field(
        default="21:00-09:00",
        description="Local hours (customer's zone, else CAREFLOW_TIME_ZONE) in which nothing "
        "is sent: messages are deferred to the end of them. 'off' for none.",
    )
    sending_windows: bool = Field(
        default=True,
        description="Apply the per-country sending windows (days, hours, public holidays).",
    )
    country_rules_file: Path | None = Field(
        default=None,
        description="YAML adding or replacing countries of the shipped table "
        "(careflow/policy/countries.yaml).",
    )
    frequency_cap: str = Field(
        default="2/7d",
        description="At most N messages per rolling D days per customer, across campaigns "
        "(N/Dd, e.g. 2/7d; 'off' for none). Counts the categories not set to bypass.",
    )
    frequency_cap_per: Literal["customer", "channel"] = Field(
        default="customer", description="Count the cap per customer overall, or per channel."
    )
    frequency_cap_marketing: Literal["defer", "skip", "bypass"] = Field(
        default="defer",
        description="A capped marketing message is deferred, skipped, or "
        "never capped (bypass: neither capped nor counted).",
    )
    frequency_cap_care: Literal["defer", "skip", "bypass"] = Field(
        default="bypass", description="The same for care messages (birthday, VIP care)."
    )
    frequency_cap_transactional: Literal["defer", "skip", "bypass"] = Field(
        default="bypass", description="The same for transactional messages."
    )
    one_message_per_address: bool = Field(
        default=True,
        description="Customers sharing a phone or email get one message per campaign "
        "occasion at that address; the others are skipped (shared_address).",
    )
    prefer_customer_channel: bool = Field(
        default=True,
        description="Try the customer's preferred channel first, then the campaign's order.",
    )
    holdout: float = Field(
        default=0.10,
        ge=0,
        le=0.5,
        description="Share of the customers a campaign would contact that it holds out, per "
        "occasion, to measure what contact changes (0 disables; campaign.yaml policy.holdout).",
    )
    uplift_baseline_conversion: float = Field(
        default=0.03,
        gt=0,
        lt=1,
        description="Conversion rate assumed without contact when a campaign has no past "
        "results yet: the smallest detectable effect a preview states is worked out from it.",
    )

    experiment_min_power: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Before a campaign's experiment runs (dry runs and previews too), the "
        "chance it must have of finding the rise worth finding at its planned audience "
        "(docs/experiments.md); below it, CAREFLOW_EXPERIMENT_UNDERPOWERED says what "
        "happens. 0 turns the check off.",
    )
    experiment_underpowered: Literal["warn", "refuse"] = Field(
        default="warn",
        description="What a run does when its experiment's power is below "
        "CAREFLOW_EXPERIMENT_MIN_POWER: warn (say so and run) or refuse (one line, exit "
        "non-zero, nothing sent). Previews only warn.",
    )

    consent_proof_retention_days: int = Field(
        default=1095,
        description="Days a consent-proof record is kept before `careflow consent prune` "
        "may delete it (the newest record of each customer, channel and category is kept "
        "however old). At least 180: China's SMS rules keep proof at least 5 months "
        "(docs/preferences.md).",
    )

    @field_validator("consent_proof_retention_days")
    @classmethod
    def _proof_retention(cls, value: int) -> int:
        from careflow.consent_proof import check_retention

        return check_retention(value)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        from careflow.policy.config import parse_quiet_hours

        parse_quiet_hours(value)
        return value

    @field_validator("frequency_cap")
    @classmethod
    def _cap(cls, value: str) -> str:
        from careflow.policy.config import parse_cap

        parse_cap(value)
        return value

    @field_validator("holdout", mode="before")
    @classmethod
    def _holdout(cls, value):
        from careflow.policy.config import parse_share

        return parse_share(value)

    @field_validator("main_currency", mode="before")
    @classmethod
    def _currency_code(cls, value: str | None) -> str | None:
        if value is None or not str(value).strip():
            return None
        code = str(value).strip()
        if not re.fullmatch(r"[A-Za-z]{3}", code):
            raise ValueError(f"{code[:20]!r} is not a 3-letter currency code such as CNY")
        return code.upper()

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _home_of_the_database(self) -> Settings:
        if self.home is None:
            self.home = DEMO_HOME if self.database_url is None else home_for_database(
                self.database_url
            )
        return self

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'careflow.db'}"

    @property
    def effective_outbox_dir(self) -> Path:
        return self.outbox_dir or self.home / "outbox"


def load_settings(**overrides) -> Settings:
    """Read settings from the environment; raise ConfigError naming the bad variable.

    There is no process-wide cached copy: the CLI and each flow run read
    settings once and pass them down explicitly, so a test that changes the
    environment simply reads again.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            problems.append(f"CAREFLOW_{field.upper()}: {err['msg']}")
        raise ConfigError("bad configuration: " + "; ".join(problems)) from None

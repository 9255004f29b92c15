"""When each campaign runs: the schedules prefect.yaml gives its deployments, and their next run.

Schedules live in one place, ``prefect.yaml``'s ``definitions: schedules:``
block, one entry per campaign; ``prefect deploy --all`` applies them to the
Prefect server. The next run is worked out by Prefect's own schedule models
(``prefect.server.schemas.schedules``, the code its scheduler runs, with its
vendored croniter and daylight-saving rules), so ``careflow campaigns`` and
the Prefect UI agree.

A deployment belongs to a campaign when its ``parameters`` name one
(``campaign: mothers_day``, the generic flow) or its entrypoint is the
campaign's own flow (``careflow/flows/care.py:birthday``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from pydantic import ValidationError

from careflow.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    """One schedule of one campaign's deployment."""

    campaign: str
    deployment: str
    rule: str  # "0 9 * * * Asia/Shanghai", "every 3600 s", an RRULE
    timezone: str
    active: bool
    next_run: datetime | None  # in ``timezone``; None when paused

    def next_run_text(self) -> str:
        if not self.active:
            return "paused (active: false)"
        if self.next_run is None:
            return "never"
        return f"{self.next_run:%Y-%m-%d %H:%M} {self.timezone}"


def read_deployments(path: Path) -> list[dict]:
    """The ``deployments:`` of a prefect.yaml; ConfigError naming the file otherwise."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    deployments = data.get("deployments") if isinstance(data, dict) else None
    if not isinstance(deployments, list):
        raise ConfigError(f"{path}: no 'deployments:' list")
    return [d for d in deployments if isinstance(d, dict)]


def campaign_of(deployment: dict, campaigns: set[str]) -> str | None:
    """The campaign a deployment runs, or None (the reconciliation flow, say)."""
    named = (deployment.get("parameters") or {}).get("campaign")
    if isinstance(named, str):
        return named if named in campaigns else None
    function = str(deployment.get("entrypoint", "")).rpartition(":")[2]
    return function if function in campaigns else None


def _model(entry: dict):
    """Prefect's server-side schedule for one ``schedules:`` entry of prefect.yaml."""
    from prefect.server.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    zone = entry.get("timezone")
    if "cron" in entry:
        return CronSchedule(cron=entry["cron"], timezone=zone, day_or=entry.get("day_or", True))
    if "interval" in entry:
        interval = entry["interval"]
        if isinstance(interval, int | float):
            interval = timedelta(seconds=interval)
        fields = {"interval": interval, "timezone": zone}
        if entry.get("anchor_date"):
            fields["anchor_date"] = entry["anchor_date"]
        return IntervalSchedule(**fields)
    if "rrule" in entry:
        return RRuleSchedule(rrule=entry["rrule"], timezone=zone)
    raise ValueError("a schedule needs cron:, interval: or rrule:")


def _rule(entry: dict) -> str:
    if "cron" in entry:
        return str(entry["cron"])
    if "interval" in entry:
        return f"every {entry['interval']} s"
    return str(entry.get("rrule", "?"))


def next_run(entry: dict, now: datetime) -> datetime | None:
    """The first time on or after ``now`` that ``entry`` fires, in its own time zone."""
    model = _model(entry)
    dates = asyncio.run(model.get_dates(n=1, start=now))
    if not dates:
        return None
    zone = ZoneInfo(model.timezone or "UTC")
    return datetime.fromtimestamp(dates[0].timestamp(), zone)


def campaign_schedules(path: Path, campaigns: set[str], now: datetime) -> list[Schedule]:
    """Every schedule of every campaign deployment in ``path``, with its next run."""
    out = []
    for deployment in read_deployments(path):
        campaign = campaign_of(deployment, campaigns)
        if campaign is None:
            continue
        name = deployment.get("name", "?")
        for entry in deployment.get("schedules") or []:
            if not isinstance(entry, dict):
                raise ConfigError(f"{path}: deployment {name}: a schedule must be a mapping")
            active = entry.get("active", True) is not False
            try:
                when = next_run(entry, now) if active else None
            except (ValidationError, ValueError) as exc:
                why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                raise ConfigError(
                    f"{path}: deployment {name}: schedule {_rule(entry)!r}: {why}"
                ) from None
            out.append(
                Schedule(campaign, name, _rule(entry), entry.get("timezone") or "UTC", active, when)
            )
    return out

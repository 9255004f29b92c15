"""Campaign definitions: ``templates/<campaign>/campaign.yaml``, read and checked.

A campaign is data a marketer edits (segment, parameters, channel
preference, how often the same customer may get it), next to the templates
it sends. ``load_campaign`` validates it and fails fast, naming the file and
field, before a run selects anyone.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from careflow import registry
from careflow.errors import ConfigError
from careflow.money import with_amounts

Occasion = Literal["yearly", "quarterly", "monthly", "weekly", "daily", "last_purchase"]


class CampaignSpec(BaseModel):
    model_config = {"extra": "forbid"}

    name: str
    description: str = ""
    segment: str
    parameters: dict = Field(default_factory=dict)
    channels: list[str] = Field(min_length=1)
    occasion: Occasion = "yearly"
    marketing: bool = True

    @field_validator("channels")
    @classmethod
    def _registered(cls, value: list[str]) -> list[str]:
        allowed = registry.content_names()
        for name in value:
            if name not in allowed:
                raise ValueError(f"{name!r} is not a channel; choose from {', '.join(allowed)}")
        return value


def list_campaigns(templates_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in Path(templates_dir).glob("*/campaign.yaml"))


def load_campaign(name: str, templates_dir: Path) -> CampaignSpec:
    path = Path(templates_dir) / name / "campaign.yaml"
    if not path.is_file():
        known = ", ".join(list_campaigns(templates_dir)) or "none"
        raise ConfigError(f"no campaign {name!r} (looked for {path}); campaigns: {known}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return CampaignSpec(name=name, **raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def occasion_key(spec: CampaignSpec, row: dict, as_of: date) -> str:
    """The occasion a message belongs to: one message per customer per occasion.

    Period occasions use the customer's own date when the segment gives one
    (``local_date`` for birthdays), else ``as_of``. ``last_purchase`` ties
    the message to the purchase that triggered it: one reminder per cycle,
    one win-back per dormant spell.
    """
    day = row.get("local_date") or as_of
    if isinstance(day, str):
        day = date.fromisoformat(day)
    match spec.occasion:
        case "yearly":
            return f"{day:%Y}"
        case "quarterly":
            return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
        case "monthly":
            return f"{day:%Y-%m}"
        case "weekly":
            iso = day.isocalendar()
            return f"{iso.year}-W{iso.week:02d}"
        case "daily":
            return day.isoformat()
        case "last_purchase":
            last = row.get("last_purchase_on")
            if last is None:
                raise ConfigError(
                    f"campaign {spec.name!r}: occasion 'last_purchase' needs a segment that "
                    f"returns last_purchase_on; {spec.segment!r} does not"
                )
            return f"after-{last}"
    raise AssertionError(spec.occasion)


def enrich(row: dict) -> dict:
    """Segment columns as templates want them: dates as dates, whatever the driver
    gave, and money in minor units (``monetary_minor``) as a Decimal amount
    (``monetary``) in the row's currency."""
    out = with_amounts(row)
    if isinstance(out.get("last_purchase_on"), str):
        out["last_purchase_on"] = date.fromisoformat(out["last_purchase_on"][:10])
    return out

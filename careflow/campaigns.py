"""Campaign definitions: ``templates/<campaign>/campaign.yaml``, read and checked.

A campaign is data a marketer edits (segment, parameters, channel
preference, how often the same customer may get it), next to the templates
it sends. ``load_campaign`` validates it and fails fast, naming the file and
field, before a run selects anyone.

A campaign's name is its identity: the ledger keys every message by it and
Prefect names artifacts after it. So it is exactly the folder's name, and a
valid one (:data:`NAME_RULE`); ``birthday/``, ``./birthday`` or ``Birthday``
are refused with a hint rather than resolved to a path, which would send
everyone the same message again under a new ledger name. A folder whose name
breaks the rule is reported by :func:`campaign_folder_problems`, never loaded.
"""

from __future__ import annotations

import difflib
import re
from datetime import date
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from careflow import journey_spec, registry
from careflow.clock import Period, period_key
from careflow.errors import ConfigError
from careflow.journey_spec import SendStep
from careflow.money import with_amounts
from careflow.names import NAME_PATTERN, NAME_RULE
from careflow.policy.config import CampaignPolicy, Category
from careflow.variants import Experiment

Occasion = Literal[(*get_args(Period), "last_purchase")]  # type: ignore[valid-type]


class CampaignSpec(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    segment: str
    parameters: dict = Field(default_factory=dict)
    channels: list[str] = Field(min_length=1)
    occasion: Occasion = "yearly"
    #: care (birthday, VIP notes), marketing (offers, win-back) or transactional; consent,
    #: sending windows and frequency caps go by it (docs/policy.md)
    category: Category = "marketing"
    #: marketing content: the SMS opt-out line and email unsubscribe headers. Follows the
    #: category unless set: true for marketing, false otherwise
    marketing: bool = True
    #: contact policy for this campaign over the CAREFLOW_* defaults (docs/policy.md)
    policy: CampaignPolicy = Field(default_factory=CampaignPolicy)
    #: variants of the message, each customer drawn to one (careflow/variants.py)
    experiment: Experiment | None = None

    @model_validator(mode="before")
    @classmethod
    def _category_and_marketing(cls, data):
        """Either may be given: a campaign written before categories says ``marketing:``."""
        if isinstance(data, dict):
            if "category" not in data and "marketing" in data:
                data = {**data, "category": "marketing" if data["marketing"] else "care"}
            elif "category" in data and "marketing" not in data:
                data = {**data, "marketing": data["category"] == "marketing"}
        return data

    @field_validator("channels")
    @classmethod
    def _registered(cls, value: list[str]) -> list[str]:
        return registry.content_channels(value)


def is_campaign_name(name: str) -> bool:
    """True for a well-formed campaign name (it may still not exist)."""
    return isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) is not None


def _campaign_folders(templates_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in Path(templates_dir).glob("*/campaign.yaml"))


def _folder_name_ok(name: str) -> bool:
    """A valid name that is not one of a journey step's (``j_<journey>__<step>``)."""
    return is_campaign_name(name) and journey_spec.parse_step_campaign(name) is None


def list_campaigns(templates_dir: Path) -> list[str]:
    """The campaigns under ``templates_dir``: folders with a campaign.yaml and a valid name."""
    return [name for name in _campaign_folders(templates_dir) if _folder_name_ok(name)]


def campaign_folder_problems(templates_dir: Path) -> list[str]:
    """One line per folder that has a campaign.yaml but cannot be a campaign's name."""
    out = []
    for name in _campaign_folders(templates_dir):
        if not is_campaign_name(name):
            out.append(
                f"templates folder {name!r} is not a valid campaign name ({NAME_RULE}); rename it"
            )
        elif not _folder_name_ok(name):
            out.append(
                f"templates folder {name!r} is named like a journey step (j_<journey>__<step>); "
                "rename it"
            )
    return out


def _likely_meant(name: str, known: list[str]) -> str | None:
    """The campaign a misspelt name most likely means (birthday/, ./birthday, Birthday...)."""
    tail = re.sub(r"(/\.?)+$", "", name.replace("\\", "/")).rsplit("/", 1)[-1].lower()
    if tail in known:
        return tail
    close = difflib.get_close_matches(tail, known, n=1)
    return close[0] if close else None


def _unknown(name: str, templates_dir: Path) -> ConfigError:
    """The one-line error for a name that is not a campaign, with the likeliest fix."""
    known = list_campaigns(templates_dir)
    if name in _campaign_folders(templates_dir):
        problem = f"{name!r} is not a valid campaign name ({NAME_RULE})"
        hint = f" Rename the folder templates/{name}/."
    else:
        if is_campaign_name(name):
            problem = f"no campaign {name!r} in {templates_dir}"
        else:
            problem = f"{name!r} is not a campaign name ({NAME_RULE})"
        guess = _likely_meant(str(name), known)
        hint = f" Did you mean {guess!r}?" if guess else ""
    return ConfigError(f"{problem}.{hint} Campaigns: {', '.join(known) or 'none'}.")


def load_campaign(name: str, templates_dir: Path) -> CampaignSpec:
    """The campaign called exactly ``name``; ConfigError (one line) for anything else.

    A journey's send step is a campaign too (``j_<journey>__<step>``,
    careflow/journey_spec.py): the route, the follow-up flow and the reports
    find it here like any other."""
    step = journey_spec.step_of_campaign(name, templates_dir)
    if step is not None:
        return journey_step_campaign(*step)
    if not is_campaign_name(name) or name not in list_campaigns(templates_dir):
        raise _unknown(name, templates_dir)
    path = Path(templates_dir) / name / "campaign.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected fields such as 'segment:' and 'channels:'")
        if "name" in raw:
            raise ConfigError(f"{path}: remove 'name': a campaign is named after its folder")
        return CampaignSpec.model_validate({**raw, "name": name})
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def journey_step_campaign(journey: journey_spec.JourneySpec, step: SendStep) -> CampaignSpec:
    """A journey's send step as the campaign the route runs.

    Its segment is the customers on that step (``journey_step``, careflow/segments/):
    those one advancer has claimed, or, for the follow-up flow, those whose message
    waits for its send time. Its occasion is the day the customer entered the journey
    (every entry rule lets a customer in at most once a day), so each entry gets each
    send step's message at most once, and the holdout is the journey's, drawn at entry.
    Its experiment is the step's (``experiment:`` in journey.yaml): the route draws and
    keeps each customer's variant on the ledger row as for any campaign.
    """
    return CampaignSpec(
        name=journey_spec.step_campaign_name(journey.name, step.id),
        description=f"journey {journey.name}, step {step.id}",
        segment="journey_step",
        parameters={
            "journey": journey.name,
            "step": step.id,
            **({"answered": True} if step.answered_first else {}),
        },
        channels=step.channel_order,
        occasion="daily",
        category=journey.category,
        marketing=journey.is_marketing,
        policy=journey.policy.model_copy(update={"holdout": 0.0}),
        experiment=step.experiment,
    )


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
    if spec.occasion != "last_purchase":
        return period_key(spec.occasion, day)
    last = last_purchase_day(row)
    if last is None:
        raise ConfigError(
            f"campaign {spec.name!r}: occasion 'last_purchase' needs a segment that "
            f"returns last_purchase_on; {spec.segment!r} does not"
        )
    return f"after-{last}"


def last_purchase_day(row: dict):
    """The segment's ``last_purchase_on`` as ``enrich`` gives it: SQLite's text read as
    a date (ValueError when unreadable), anything else as the driver gave it."""
    last = row.get("last_purchase_on")
    return date.fromisoformat(last[:10]) if isinstance(last, str) else last


def enrich(row: dict) -> dict:
    """Segment columns as templates want them: dates as dates, whatever the driver
    gave, and money in minor units (``monetary_minor``) as a Decimal amount
    (``monetary``) in the row's currency."""
    out = with_amounts(row)
    if "last_purchase_on" in out:
        out["last_purchase_on"] = last_purchase_day(out)
    return out

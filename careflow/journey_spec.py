"""Journey definitions: ``templates/<journey>/journey.yaml``, read and checked.

A journey is data a marketer edits: who enters (a segment on a schedule, or a
response careflow records), how often a customer may enter again, what ends
it early (``exit_on``) and an ordered list of steps. docs/journeys.md has the
format with a full example; this module is its one definition.

Each step has a stable ``id``. A ``send`` step's message is a campaign of its
own to the route and the ledger, named ``j_<journey>__<step>``
(:func:`step_campaign_name`), so every send is keyed, policed, deferred and
recorded exactly as a campaign's; its templates are the files named after the
step in the journey's folder: ``templates/winback_journey/first_sms.sms.en.j2``
(:func:`template_prefix`). One rule, no second place to look.

A journey's *version* is a hash of its step graph (:func:`version_of`), not of
its wording: a customer waiting on a step keeps waiting on it after an edit,
and a new version that deletes a step someone is on must say where they go
(``moved: {old: new}``; ``careflow lint`` checks it).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from careflow import registry
from careflow.clock import Period
from careflow.errors import ConfigError
from careflow.names import NAME_PATTERN, NAME_RULE
from careflow.policy.config import CampaignPolicy, Category, parse_share
from careflow.shop_events import CUSTOM_NAME
from careflow.variants import Experiment, split_source

#: a step's id: short, so that ``j_<journey>__<step>`` fits the ledger's campaign column
STEP_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
#: what a customer does that careflow records: an entry, a wait_for or an exit waits for it
#: (a reply, a click... from the providers; an order, a sign-up, a cart change from the shop)
EVENTS = ("replied", "clicked", "delivered", "bounced", "ordered", "opted_out", "signed_up",
          "cart_updated")  # fmt: skip
#: a custom event the shop posts (POST /events, ``"type": "custom"``): ``event:<name>``
CUSTOM_EVENT = re.compile(f"event:{CUSTOM_NAME.pattern}")
EVENT_CHOICES = f"{', '.join(EVENTS)} or event:<name> (a custom event from the shop)"


def _event(value: str) -> str:
    if value in EVENTS or (isinstance(value, str) and CUSTOM_EVENT.fullmatch(value)):
        return value
    raise ValueError(f"{value!r}: choose from {EVENT_CHOICES}")


JourneyEvent = Annotated[str, AfterValidator(_event)]
#: in a send step's ``channels``: of the channels listed, the one the customer last
#: replied or clicked on goes first (the rest follow in the file's order)
LAST_ANSWERED = "last_answered"
#: the step where a new position starts: the advancer draws the holdout there
ENTRY_STEP = "_entry"
#: the ledger's campaign name of a journey's send step: ``j_<journey>__<step>``
STEP_CAMPAIGN = re.compile(r"^j_([a-z][a-z0-9_]*?)__([a-z][a-z0-9_]*)$")

_DURATION = re.compile(r"^\s*(\d+)\s*(minutes?|mins?|hours?|h|days?|d|weeks?|w)\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_EVERY = re.compile(r"^\s*every\s+(\d+)\s*days?\s*$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_duration(value) -> timedelta:
    """``"3 days"``, ``"48 hours"``, ``"2 weeks"``, ``"90 minutes"`` -> timedelta."""
    m = _DURATION.match(str(value))
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{value!r} is not a duration such as '3 days' or '12 hours'")
    unit = _UNITS[m.group(2)[0]]
    return timedelta(**{unit: int(m.group(1))})


class _Step(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    id: str = Field(pattern=STEP_PATTERN)

    def targets(self) -> list[str]:
        """The step ids this step may go to explicitly (the following step is implicit)."""
        return []


class _Flowing(_Step):
    #: the step to go to next; the following step in the list unless given
    next: str | None = None

    def targets(self) -> list[str]:
        return [self.next] if self.next else []


class SendStep(_Flowing):
    """A message through the route: policy, render, reserve, send, record."""

    type: Literal["send"]
    #: the channels to try, in order (the customer's preferred channel first, as for
    #: campaigns, when the policy says so); ``last_answered`` puts first, of the others
    #: listed, the one the customer last replied or clicked on
    channels: list[str] = Field(min_length=1)
    #: variants of the step's message, each customer drawn to one, as a campaign's
    #: ``experiment:`` (careflow/variants.py); a variant's templates are
    #: ``<step>.<variant>.<part>`` beside the step's own
    experiment: Experiment | None = None

    @field_validator("channels")
    @classmethod
    def _registered(cls, value: list[str]) -> list[str]:
        allowed = registry.content_names()
        for name in value:
            if name not in allowed and name != LAST_ANSWERED:
                raise ValueError(
                    f"{name!r} is not a channel; choose from {', '.join(allowed)} "
                    f"or {LAST_ANSWERED}"
                )
        if len(set(value)) != len(value):
            raise ValueError("a channel is listed twice")
        if LAST_ANSWERED in value and len(value) == 1:
            raise ValueError(
                f"{LAST_ANSWERED} picks among the channels listed with it: list them too, "
                f"e.g. [{LAST_ANSWERED}, sms, email]"
            )
        return value

    @property
    def answered_first(self) -> bool:
        """Whether the channel the customer last answered on goes first."""
        return LAST_ANSWERED in self.channels

    @property
    def channel_order(self) -> list[str]:
        """The real channels, in the file's order."""
        return [c for c in self.channels if c != LAST_ANSWERED]


class WaitStep(_Flowing):
    """A pause: ``days``/``hours``, or ``until`` a time of day in the customer's zone."""

    type: Literal["wait"]
    days: int | None = Field(None, ge=0, le=3650)
    hours: int | None = Field(None, ge=0, le=24 * 3650)
    until: str | None = None

    @field_validator("until")
    @classmethod
    def _clock(cls, value: str | None) -> str | None:
        if value is not None and not _CLOCK.match(str(value)):
            raise ValueError(f"{value!r} is not a time of day such as '10:00'")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> WaitStep:
        timed = self.days is not None or self.hours is not None
        if timed == (self.until is not None):
            raise ValueError("give days and/or hours, or until (a local time such as '10:00')")
        if timed and not (self.days or self.hours):
            raise ValueError("a wait of 0 days and 0 hours: remove the step instead")
        return self

    @property
    def duration(self) -> timedelta:
        return timedelta(days=self.days or 0, hours=self.hours or 0)


class WaitForStep(_Step):
    """Wait for a response within a window: ``then`` when it comes, ``else`` when not."""

    model_config = {"extra": "forbid", "frozen": True, "populate_by_name": True}

    type: Literal["wait_for"]
    event: list[JourneyEvent] = Field(min_length=1)
    within: str
    then: str | None = None
    otherwise: str | None = Field(None, alias="else")

    @field_validator("event", mode="before")
    @classmethod
    def _one_or_more(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("within")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def window(self) -> timedelta:
        return parse_duration(self.within)

    def targets(self) -> list[str]:
        return [t for t in (self.then, self.otherwise) if t]


class SegmentTest(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    name: str
    parameters: dict = Field(default_factory=dict)


#: customer fields a branch may test
BRANCH_FIELDS = ("locale", "grade", "country", "owner", "preferred_channel", "time_zone")


class Condition(BaseModel):
    """Every field given must hold: a customer field is one of the values (``locale: zh``
    also matches ``zh-CN``), ``segment`` selects the customer now."""

    model_config = {"extra": "forbid", "frozen": True}

    locale: list[str] | None = None
    grade: list[str] | None = None
    country: list[str] | None = None
    owner: list[str] | None = None
    preferred_channel: list[str] | None = None
    time_zone: list[str] | None = None
    segment: SegmentTest | None = None

    @field_validator(*BRANCH_FIELDS, mode="before")
    @classmethod
    def _one_or_more(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("segment", mode="before")
    @classmethod
    def _segment_name(cls, value):
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _something(self) -> Condition:
        if not self.model_dump(exclude_none=True):
            raise ValueError(f"test at least one of {', '.join(BRANCH_FIELDS)}, segment")
        return self


class Case(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    when: Condition
    goto: str


class BranchStep(_Step):
    """The first case whose condition holds decides the next step; else ``default``."""

    type: Literal["branch"]
    cases: list[Case] = Field(min_length=1)
    default: str | None = None

    def targets(self) -> list[str]:
        return [c.goto for c in self.cases] + ([self.default] if self.default else [])


class SplitPath(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    share: float = Field(gt=0, le=1)
    goto: str

    @field_validator("share", mode="before")
    @classmethod
    def _share(cls, value):
        return parse_share(value)


class SplitStep(_Step):
    """A fixed random split: the same customer and entry always take the same path."""

    type: Literal["split"]
    paths: list[SplitPath] = Field(min_length=2)

    @model_validator(mode="after")
    def _whole(self) -> SplitStep:
        total = sum(p.share for p in self.paths)
        if abs(total - 1) > 1e-9:
            raise ValueError(f"the shares add up to {total:.0%}, not 100%")
        return self

    def targets(self) -> list[str]:
        return [p.goto for p in self.paths]


class NotifyOwnerStep(_Flowing):
    """Puts the customer on their owner's list, with a note."""

    type: Literal["notify_owner"]
    note: str = Field(min_length=1, max_length=500)


class ExitStep(_Step):
    """The journey ends here for the customer."""

    type: Literal["exit"]


Step = Annotated[
    SendStep | WaitStep | WaitForStep | BranchStep | SplitStep | NotifyOwnerStep | ExitStep,
    Field(discriminator="type"),
]


class Entry(BaseModel):
    """``segment:`` (+ ``parameters:``) entered on a schedule, or ``event:`` as it comes."""

    model_config = {"extra": "forbid", "frozen": True}

    segment: str | None = None
    parameters: dict = Field(default_factory=dict)
    event: JourneyEvent | None = None

    @model_validator(mode="after")
    def _one(self) -> Entry:
        if (self.segment is None) == (self.event is None):
            raise ValueError("give either segment (with parameters) or event")
        if self.event and self.parameters:
            raise ValueError("parameters go with a segment, not with an event")
        return self


class JourneySpec(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    #: care, marketing or transactional, as for campaigns: consent, windows and caps go by it
    category: Category = "marketing"
    #: marketing content (the SMS opt-out line, unsubscribe headers); follows the category
    marketing: bool | None = None
    entry: Entry
    #: how often a customer may enter: ``forever`` (once), a period (``monthly``: once per
    #: month) or ``every N days``
    once: str = "forever"
    #: share held out at entry (the journey's comparison group); CAREFLOW_HOLDOUT unless given
    holdout: float | None = Field(None, ge=0, le=0.5)
    exit_on: list[str] = Field(default_factory=list)
    #: the send steps' contact policy over the CAREFLOW_* defaults (docs/policy.md)
    policy: CampaignPolicy = Field(default_factory=CampaignPolicy)
    steps: list[Step] = Field(min_length=1)
    #: old step id -> new step id, for customers on a step a new version deletes
    moved: dict[str, str] = Field(default_factory=dict)

    @field_validator("holdout", mode="before")
    @classmethod
    def _share(cls, value):
        return parse_share(value)

    @field_validator("once")
    @classmethod
    def _once(cls, value: str) -> str:
        value = str(value).strip()
        if value in ("forever", *Period.__args__) or _EVERY.match(value):  # type: ignore
            return value
        raise ValueError(
            f"{value!r}: say forever, yearly, quarterly, monthly, weekly, daily or 'every N days'"
        )

    @field_validator("exit_on")
    @classmethod
    def _exits(cls, value: list[str]) -> list[str]:
        for item in value:
            other = item.removeprefix("entered:")
            if item in EVENTS or CUSTOM_EVENT.fullmatch(item) or (
                item != other and re.fullmatch(NAME_PATTERN, other)
            ):
                continue
            raise ValueError(f"{item!r}: choose from {EVENT_CHOICES}, or entered:<journey>")
        return value

    @field_validator("policy")
    @classmethod
    def _no_step_holdout(cls, value: CampaignPolicy) -> CampaignPolicy:
        if value.holdout is not None:
            raise ValueError("a journey holds out at entry: give holdout at the top level")
        return value

    @model_validator(mode="after")
    def _graph(self) -> JourneySpec:
        ids = [s.id for s in self.steps]
        seen = set()
        for i in ids:
            if i in seen:
                raise ValueError(f"step id {i!r} is used twice")
            seen.add(i)
        for s in self.steps:
            for target in s.targets():
                if target not in seen:
                    raise ValueError(f"step {s.id!r} goes to {target!r}, which is no step")
            if isinstance(s, SendStep) and len(step_campaign_name(self.name, s.id)) > 64:
                raise ValueError(
                    f"step {s.id!r}: journey name and step id are too long together for a "
                    f"ledger key (j_<journey>__<step> is at most 64 characters)"
                )
        for old, new in self.moved.items():
            if new not in seen:
                raise ValueError(f"moved: {old!r} goes to {new!r}, which is no step")
        return self

    @property
    def is_marketing(self) -> bool:
        return self.category == "marketing" if self.marketing is None else self.marketing

    def step(self, step_id: str):
        """The step called ``step_id`` (KeyError if none)."""
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def following(self, step_id: str) -> str | None:
        """The step after ``step_id`` in the list (None after the last: the journey is done)."""
        ids = [s.id for s in self.steps]
        i = ids.index(step_id)
        return ids[i + 1] if i + 1 < len(ids) else None

    def next_of(self, step_id: str) -> str | None:
        """Where a step that flows on goes: its ``next``, else the following one."""
        s = self.step(step_id)
        return getattr(s, "next", None) or self.following(step_id)

    def successors(self, step_id: str) -> list[str]:
        """Every step ``step_id`` may lead to (for lint's graph checks)."""
        s = self.step(step_id)
        out = list(s.targets())
        if (isinstance(s, _Flowing) and not s.next) or (isinstance(s, WaitForStep) and not (
            s.then and s.otherwise
        )) or (isinstance(s, BranchStep) and not s.default):
            nxt = self.following(step_id)
            if nxt:
                out.append(nxt)
        return list(dict.fromkeys(out))

    @property
    def version(self) -> str:
        return version_of(self)

    @property
    def every_days(self) -> int | None:
        m = _EVERY.match(self.once)
        return int(m.group(1)) if m else None


def version_of(spec: JourneySpec) -> str:
    """A hash of the step graph: ids, types and what each step does, not the wording of
    descriptions or templates, nor a send step's variants (which message it sends: adding
    an experiment moves nobody) (12 hex digits)."""
    graph = [
        s.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"experiment"})
        for s in spec.steps
    ]
    text = json.dumps(graph, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def step_campaign_name(journey: str, step: str) -> str:
    """The campaign name a journey's send step has in the ledger and the route."""
    return f"j_{journey}__{step}"


def step_campaign_of(name: str) -> str:
    """``<journey>.<step>`` (as an operator names a send step) as its campaign name
    ``j_<journey>__<step>``; any other name as it is."""
    journey, dot, step = (name or "").partition(".")
    if dot and re.fullmatch(NAME_PATTERN, journey) and re.fullmatch(STEP_PATTERN, step):
        return step_campaign_name(journey, step)
    return name


def parse_step_campaign(name: str) -> tuple[str, str] | None:
    """(journey, step) for a journey step's campaign name; None for any other name."""
    m = STEP_CAMPAIGN.match(name or "")
    return (m.group(1), m.group(2)) if m else None


def template_prefix(campaign: str) -> str:
    """Where a campaign's template files start, relative to templates/: ``winback/`` for a
    campaign (``winback/sms.en.j2``), ``winback/b.`` for its experiment's variant b
    (``winback@b``: ``winback/b.sms.en.j2``), ``<journey>/<step>.`` for a journey's
    send step (``winback_journey/first_sms.sms.en.j2``)."""
    campaign, variant = split_source(campaign)
    found = parse_step_campaign(campaign)
    prefix = f"{found[0]}/{found[1]}." if found else f"{campaign}/"
    return f"{prefix}{variant}." if variant else prefix


def list_journeys(templates_dir: Path) -> list[str]:
    """The journeys under ``templates_dir``: folders with a journey.yaml and a valid name."""
    return sorted(
        p.parent.name
        for p in Path(templates_dir).glob("*/journey.yaml")
        if re.fullmatch(NAME_PATTERN, p.parent.name)
    )


def journey_folder_problems(templates_dir: Path) -> list[str]:
    """One line per folder with a journey.yaml that cannot be a journey."""
    out = []
    for p in sorted(Path(templates_dir).glob("*/journey.yaml")):
        name = p.parent.name
        if not re.fullmatch(NAME_PATTERN, name):
            out.append(f"templates folder {name!r} is not a valid journey name ({NAME_RULE})")
        elif (p.parent / "campaign.yaml").exists():
            out.append(f"templates/{name}/ holds both a campaign.yaml and a journey.yaml")
    return out


def _where(loc: tuple, raw: dict) -> str:
    """A validation error's place as the marketer sees it: ``steps[2] (wait_reply).within``."""
    out = ""
    items = list(loc)
    node = raw
    i = 0
    while i < len(items):
        part = items[i]
        if isinstance(part, int):
            label = f"[{part}]"
            if isinstance(node, list) and part < len(node) and isinstance(node[part], dict):
                step_id = node[part].get("id")
                label += f" ({step_id})" if step_id and out == "steps" else ""
                node = node[part]
                # the discriminated union names the step type next: not part of the path
                if i + 1 < len(items) and items[i + 1] == node.get("type"):
                    i += 1
            else:
                node = None
            out += label
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
        i += 1
    return out or "journey"


def load_journey(name: str, templates_dir: Path) -> JourneySpec:
    """The journey called exactly ``name``; ConfigError (one line naming the file and the
    field) for anything else."""
    known = list_journeys(templates_dir)
    if name not in known:
        raise ConfigError(f"no journey {name!r} in {templates_dir}; journeys: "
                          f"{', '.join(known) or 'none'}")
    path = Path(templates_dir) / name / "journey.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected fields such as 'entry:' and 'steps:'")
    if "name" in raw:
        raise ConfigError(f"{path}: remove 'name': a journey is named after its folder")
    try:
        return JourneySpec.model_validate({**raw, "name": name})
    except ValidationError as exc:
        problems = "; ".join(
            f"{_where(e['loc'], raw)}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None


def step_of_campaign(name: str, templates_dir: Path) -> tuple[JourneySpec, SendStep] | None:
    """The journey and send step a campaign name stands for; None if it names no journey
    step; ConfigError if it names one that does not exist (any more)."""
    found = parse_step_campaign(name)
    if found is None:
        return None
    journey, step_id = found
    spec = load_journey(journey, templates_dir)
    try:
        step = spec.step(step_id)
    except KeyError:
        raise ConfigError(f"journey {journey!r} has no step {step_id!r}") from None
    if not isinstance(step, SendStep):
        raise ConfigError(f"step {step_id!r} of journey {journey!r} sends nothing")
    return spec, step

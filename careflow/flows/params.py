"""The flows' parameters as the Prefect UI's run form shows them: a sentence under
each, and a list to pick from where the set is known.

Prefect builds a deployment's form from the flow signature's pydantic schema
(``prefect.utilities.callables.parameter_schema``). It gives every field its own
``title`` (the parameter's name) and ``description`` (from the docstring, else
none), so a ``pydantic.Field`` inside ``Annotated`` loses its text there, and a
``Field`` as the default would reach a direct call of ``flow.fn`` as the default
value itself. Each parameter here is therefore an ``Annotated`` type carrying a
:class:`Describe`, which writes the sentence (and any choices) into the type's own
schema when the schema is built; the value a flow receives is unchanged.

The choices for ``campaign``. Shops add their own campaigns under
CAREFLOW_TEMPLATES_DIR, so a ``Literal`` of the shipped ones would refuse theirs,
and an ``Enum`` read from the folder when the module is imported makes the import
fail (and every flow with it) whenever the folder is unreadable. The list is
instead put into the *schema* when the schema is built (``campaign_choices``,
called when the flow is defined and again while ``prefect deploy`` records the
deployment; an unreadable folder or setting leaves a text box): the form offers the
campaigns found then, and the server refuses any other name for a run of that
deployment before a worker starts it. The type stays ``str``, so a campaign added
since still runs from the command line; a name that is no campaign is refused by
``load_campaign`` in one line (and recorded: ``careflow report runs``). Add a
campaign, deploy again (as for a schedule).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from careflow import registry
from careflow.campaigns import list_campaigns
from careflow.clock import TODAY
from careflow.journey_spec import list_journeys
from careflow.settings import load_settings


class Describe:
    """``Annotated`` metadata: the sentence the run form shows under a parameter, and
    optionally its choices, computed when the schema is built."""

    def __init__(self, text: str, choices: Callable[[], list[str]] | None = None):
        self.text, self.choices = text, choices

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict:
        schema = handler(core_schema)
        schema["description"] = self.text
        names = self.choices() if self.choices else None
        if names:  # on the text choice of ``str | None``: the switch for None stays
            strings = [c for c in schema.get("anyOf", []) if c.get("type") == "string"]
            (strings[0] if strings else schema)["enum"] = names
        return schema


def journey_choices() -> list[str]:
    """The journeys under the templates folder, as ``campaign_choices`` reads campaigns."""
    try:
        return list_journeys(load_settings().templates_dir)
    except Exception:  # no readable folder: the form keeps a text box
        return []


def campaign_choices() -> list[str]:
    """The campaigns under the templates folder (module docs); none when unreadable."""
    try:
        return sorted(list_campaigns(load_settings().templates_dir))
    except Exception:  # no readable folder: the form keeps a text box, the run says why
        return []


#: the run form's first choice for ``channel``, and its default: each customer's own
PREFERRED = "preferred"

#: what the UI's run form offers for ``channel``: preferred, every registered channel, outbox
ChannelChoice = Literal[(PREFERRED, *registry.names())]  # type: ignore[valid-type]


def chosen_channel(value: str | None) -> str | None:
    """The one channel a run was asked to send everyone on; None for each customer's own
    (``preferred``, or None as deployments made before ``preferred`` existed send)."""
    return None if value in (None, "", PREFERRED) else value


def _none_is_preferred(value: Any) -> Any:
    return PREFERRED if value is None or value == "" else value

Campaign = Annotated[
    str,
    Describe(
        "The campaign to run: a folder under templates/ with a campaign.yaml "
        "(the list is the campaigns found when this deployment was made).",
        campaign_choices,
    ),
]

def _today_is_none(value: Any) -> Any:
    """``today`` (the word the CLI, the API and deployments made before the form said it
    send) or nothing is None: today, decided when the run starts."""
    return None if value == "" or value == TODAY else value


class NoneSays:
    """``Annotated`` metadata: the run form's switch for None says ``label`` instead of
    "None", and comes first, so a form left alone sends None (the default).

    The Prefect UI picks the switch it shows for a value by the value's JSON type: any
    string goes to the first string choice. So "today" cannot be a string choice beside a
    date: a picked date would show under the "today" switch, greyed as "a const". None
    is the only choice that is not a string; the server does not check a string's format,
    so ``as_of=today`` from the CLI or the API still reaches the flow (``_today_is_none``).
    """

    def __init__(self, label: str):
        self.label = label

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict:
        schema = handler(core_schema)
        choices = schema.get("anyOf", [])
        none = [{**c, "title": self.label} for c in choices if c.get("type") == "null"]
        schema["anyOf"] = none + [c for c in choices if c.get("type") != "null"]
        return schema


AsOf = Annotated[
    date | datetime | None,
    BeforeValidator(_today_is_none),
    NoneSays(TODAY),
    Describe(
        "today (the default): today's occasions, decided when the run starts, as "
        "schedules run. Or a date (noon of it in the shop's time zone, "
        "CAREFLOW_TIME_ZONE), or an exact date-time.",
    ),
]

Channel = Annotated[
    ChannelChoice,
    BeforeValidator(_none_is_preferred),
    Describe(
        "preferred (the default): each customer's own channel, in the order the "
        "campaign prefers. Or one channel for everyone this run; 'outbox' writes every "
        "message to the local outbox instead of sending it.",
    ),
]

DryRun = Annotated[
    bool,
    Describe(
        "Make every decision a real run would, and send and record nothing.",
    ),
]

AllowPast = Annotated[
    bool,
    Describe(
        "Confirm a real run dated before today: it sends today what was meant "
        "for then. Without it such a run stops before selecting anyone.",
    ),
]

DeferredChannel = Annotated[
    Literal[PREFERRED, "outbox"],
    BeforeValidator(_none_is_preferred),
    Describe(
        "preferred (the default): each deferred message goes on the channel its policy "
        "decided. 'outbox' writes them to the local outbox instead of sending them.",
    ),
]

DeferredAsOf = Annotated[
    date | datetime | None,
    NoneSays("now"),
    Describe(
        "now (the default), as the schedule runs. Or the instant to decide at (a date "
        "is noon of it in the shop's time zone).",
    ),
]

JourneyName = Annotated[
    str | None,
    NoneSays("every journey"),
    Describe(
        "every journey (the default), or only this one: a folder under templates/ with "
        "a journey.yaml (the list is the journeys found when this deployment was made).",
        journey_choices,
    ),
]

FollowFrom = Annotated[
    datetime | None,
    NoneSays("advance once"),
    Describe(
        "Set by the deployment's trigger: the instant of the response that started "
        "this run. None: advance once.",
    ),
]

FollowSeconds = Annotated[
    int,
    Describe(
        "With follow_from: keep taking new responses (every few seconds) until this "
        "many seconds after it, the trigger's window in which it starts no other run.",
    ),
]

PyramidAsOf = Annotated[
    date | datetime | None,
    BeforeValidator(_today_is_none),
    NoneSays(TODAY),
    Describe(
        "today (the default), or the report's date (in the shop's time zone).",
    ),
]

PyramidPrevious = Annotated[
    date | None,
    NoneSays("90 days before"),
    Describe(
        "The earlier date tier movement is counted from: 90 days before the report's "
        "date (the default), or a date.",
    ),
]

PyramidParameters = Annotated[
    dict | None,
    NoneSays("defaults"),
    Describe(
        "The pyramid segment's parameters: its defaults, or your own (window_days, "
        "vip_pct, ...; docs/insight.md).",
    ),
]

PyramidHtml = Annotated[
    bool,
    Describe(
        "Also write the report as an offline HTML page on the worker's disk "
        "(the artifact shows the charts either way).",
    ),
]

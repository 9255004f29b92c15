"""The run form the Prefect UI builds from each flow's parameter schema: every parameter
described, choices where the set is known, nothing typed only None."""

import importlib
import pkgutil

import pytest
from prefect import Flow
from prefect.utilities.callables import parameter_schema

import careflow.flows
from careflow import registry
from careflow.campaigns import list_campaigns
from careflow.settings import load_settings


def _flows() -> list[Flow]:
    found = {}
    for info in pkgutil.iter_modules(careflow.flows.__path__):
        module = importlib.import_module(f"careflow.flows.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Flow) and value.fn.__module__ == module.__name__:
                found[value.name] = value
    return [found[name] for name in sorted(found)]


FLOWS = _flows()
#: flows whose as_of is a day, "today" by default (the follow-up and journeys take "now")
CAMPAIGN_AND_REPORT_FLOWS = {"birthday", "reorder-reminder", "winback", "vip-care", "campaign",
                             "pyramid-report"}


def _choices(prop: dict) -> list | None:
    for part in [prop, *prop.get("anyOf", [])]:
        if "enum" in part:
            return part["enum"]
        if "const" in part:
            return [part["const"]]
    return None


def test_every_flow_is_found():
    assert {"birthday", "campaign", "deferred-messages", "reconcile", "journey-advance",
            "pyramid-report"} <= {f.name for f in FLOWS}  # fmt: skip


@pytest.mark.parametrize("flow", FLOWS, ids=[f.name for f in FLOWS])
def test_every_parameter_is_described_and_none_only_with_a_default(flow):
    properties = parameter_schema(flow.fn).model_dump()["properties"]
    for name, prop in properties.items():
        assert len(prop.get("description", "")) > 20, f"{flow.name}: {name} undescribed"
        may_be_none = any(p.get("type") == "null" for p in prop.get("anyOf", []))
        if may_be_none:  # "None" in the form means something: the default, said in words
            assert "default" in prop or _choices(prop), f"{flow.name}: {name}"
            (none,) = [p for p in prop["anyOf"] if p.get("type") == "null"]
            # what it means: the switch's own label ("today"), or a sentence
            assert none.get("title") or "None: " in prop["description"], f"{flow.name}: {name}"


@pytest.mark.parametrize("flow", FLOWS, ids=[f.name for f in FLOWS])
def test_channel_and_campaign_are_picked_from_a_list(flow):
    properties = parameter_schema(flow.fn).model_dump()["properties"]
    if "channel" in properties:
        assert set(_choices(properties["channel"])) <= {"preferred", *registry.names()}
    if "campaign" in properties:
        shipped = list_campaigns(load_settings().templates_dir)
        assert {"birthday", "winback"} <= set(shipped)
        assert _choices(properties["campaign"]) == sorted(shipped)


def test_campaign_choices_are_the_templates_folder_when_the_schema_is_built(
    tmp_path, monkeypatch
):
    # a shop's own campaign is offered once deployed again; the import never reads the folder
    from careflow.flows.campaign import campaign_flow

    (tmp_path / "mothers_day").mkdir()
    (tmp_path / "mothers_day" / "campaign.yaml").write_text("segment: all\n")
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(tmp_path))
    prop = parameter_schema(campaign_flow.fn).model_dump()["properties"]["campaign"]
    assert _choices(prop) == ["mothers_day"]
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(tmp_path / "missing"))
    prop = parameter_schema(campaign_flow.fn).model_dump()["properties"]["campaign"]
    assert prop["type"] == "string" and "description" in prop  # a text box, still described


@pytest.mark.parametrize("flow", [f for f in FLOWS if f.name in CAMPAIGN_AND_REPORT_FLOWS],
                         ids=lambda f: f.name)
def test_as_of_says_today_instead_of_a_none_switch(flow):
    """Regression (issue 25): the run form's as_of offered 'None' (meaning now, said only
    in the sentence); now its first choice, and default, is a switch named 'today'. It is
    the null choice, titled: the UI shows a string value under the first string choice, so
    a 'today' string before the date made a picked date show as the const 'today'."""
    prop = parameter_schema(flow.fn).model_dump()["properties"]["as_of"]
    assert prop["default"] is None
    choices = prop["anyOf"]
    assert choices[0] == {"title": "today", "type": "null"}
    # the first string choice, where the UI shows a picked date, is the date
    first_string = next(c for c in choices if c.get("type") == "string")
    assert first_string == {"format": "date", "type": "string"}
    assert prop["description"].startswith("today (the default)")


@pytest.mark.parametrize("given", [None, "", "today"])
def test_today_none_and_nothing_are_the_same_run(given):
    """A run with as_of 'today', or None as deployments made before sent, is as of now;
    its name says the day it was scheduled for, not 'today'."""
    from datetime import UTC, datetime

    from careflow.clock import resolve_as_of
    from careflow.flows.care import birthday

    assert birthday.validate_parameters({"as_of": given})["as_of"] is None
    day, at = resolve_as_of(given, "UTC")
    assert day == datetime.now(UTC).date() and at.tzinfo is not None


@pytest.mark.parametrize("flow", [f for f in FLOWS if "channel" in parameter_schema(f.fn)
                                  .model_dump()["properties"]], ids=lambda f: f.name)
def test_channel_is_one_list_whose_default_is_preferred(flow):
    """Regression (issue 25): the run form's channel was a str/None switch (the list behind
    'str', 'None' meaning each customer's own channel, said only in the sentence); now one
    list whose first choice, and default, is 'preferred'."""
    prop = parameter_schema(flow.fn).model_dump()["properties"]["channel"]
    assert "anyOf" not in prop and prop["type"] == "string"
    assert prop["enum"][0] == prop["default"] == "preferred"
    assert "outbox" in prop["enum"]
    assert prop["description"].startswith("preferred (the default)")


@pytest.mark.parametrize("given", [None, "", "preferred"])
def test_preferred_none_and_nothing_are_each_customers_own_channel(given):
    """A run with channel 'preferred', or None as deployments made before sent, sends each
    customer on their own channel: its name names no channel."""
    from careflow.flows.care import birthday
    from careflow.flows.params import chosen_channel

    assert birthday.validate_parameters({"channel": given})["channel"] == "preferred"
    assert chosen_channel(given) is None
    assert chosen_channel("sms") == "sms"


@pytest.mark.parametrize("flow", FLOWS, ids=[f.name for f in FLOWS])
def test_no_run_form_offers_a_bare_none_switch(flow):
    """Regression (issue 25, "type None"): a parameter that may be None showed a switch
    labelled None; every such switch is named for what it means and comes first, so a form
    left alone sends the default."""
    properties = parameter_schema(flow.fn).model_dump()["properties"]
    for name, prop in properties.items():
        choices = prop.get("anyOf", [])
        for i, choice in enumerate(choices):
            if choice.get("type") == "null":
                assert choice.get("title") and i == 0, f"{flow.name}: {name}"
                assert prop.get("default") is None, f"{flow.name}: {name}"


def test_journey_is_picked_from_the_journeys_found_or_left_to_every_journey(
    tmp_path, monkeypatch
):
    from careflow.flows.journey import journey_advance

    prop = parameter_schema(journey_advance.fn).model_dump()["properties"]["journey"]
    assert prop["anyOf"][0] == {"title": "every journey", "type": "null"}
    assert prop["anyOf"][1]["enum"] == ["lapsing_journey"]  # the shipped one
    (tmp_path / "welcome").mkdir()
    (tmp_path / "welcome" / "journey.yaml").write_text("steps: []\n")
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(tmp_path))
    prop = parameter_schema(journey_advance.fn).model_dump()["properties"]["journey"]
    assert prop["anyOf"][1] == {"enum": ["welcome"], "type": "string"}

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
            assert "None: " in prop["description"], f"{flow.name}: {name}"  # what it means


@pytest.mark.parametrize("flow", FLOWS, ids=[f.name for f in FLOWS])
def test_channel_and_campaign_are_picked_from_a_list(flow):
    properties = parameter_schema(flow.fn).model_dump()["properties"]
    if "channel" in properties:
        assert set(_choices(properties["channel"])) <= set(registry.names())
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

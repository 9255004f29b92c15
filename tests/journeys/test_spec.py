"""journey.yaml: one clear line per mistake, with the YAML path of the bad field."""

from __future__ import annotations

import pytest

from careflow import channels  # noqa: F401 - registers the channels send steps name
from careflow.campaigns import list_campaigns, load_campaign
from careflow.errors import ConfigError
from careflow.journey_spec import load_journey, parse_step_campaign, template_prefix
from tests.journeys.conftest import NUDGE, write_journey


def load(tmp_path, text: str):
    write_journey(tmp_path, "trial", text, sends=())
    return load_journey("trial", tmp_path)


def problem(tmp_path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    message = str(err.value)
    assert "\n" not in message
    return message.split("journey.yaml: ", 1)[1]


def test_the_example_loads_with_a_stable_version(tmp_path):
    spec = load(tmp_path, NUDGE)
    assert [s.id for s in spec.steps] == ["first", "answer", "second", "pause", "call", "thanks"]
    assert spec.successors("answer") == ["thanks", "second"]
    assert spec.next_of("call") == "thanks"
    reworded = NUDGE.replace("Win back a dormant customer", "Another description")
    assert load(tmp_path, reworded).version == spec.version  # wording is not the graph
    longer = NUDGE.replace("within: 3 days", "within: 4 days")
    assert load(tmp_path, longer).version != spec.version


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("within: 3 days", "within: soon"), "steps[1] (answer).within: 'soon' is not a duration"),
        (("else: second", "else: nowhere"), "step 'answer' goes to 'nowhere', which is no step"),
        (("channels: [email]", "channels: [pigeon]"), "steps[2] (second).channels"),
        (("type: wait, days: 7", "type: wait, days: 7, until: '10:00'"),
         "steps[3] (pause): give days and/or hours, or until"),
        (("exit_on: [opted_out]", "exit_on: [bored]"), "exit_on: 'bored': choose from"),
        (("category: marketing", "category: spam"), "category: Input should be"),
        (("{id: thanks, type: exit}", "{id: thanks, type: exit, colour: red}"),
         "steps[5] (thanks).colour: Extra inputs are not permitted"),
        (("{id: call,", "{id: first,"), "step id 'first' is used twice"),
        (("  parameters: {days: 30}", "  parameters: {days: 30}\n  event: replied"),
         "entry: give either segment (with parameters) or event"),
    ],
)
def test_a_mistake_is_one_line_naming_the_field(tmp_path, change, expected):
    old, new = change
    assert old in NUDGE
    assert expected in problem(tmp_path, NUDGE.replace(old, new))


def test_once_rules(tmp_path):
    assert load(tmp_path, NUDGE + "once: every 30 days\n").every_days == 30
    assert load(tmp_path, NUDGE + "once: monthly\n").once == "monthly"
    assert "'sometimes': say forever" in problem(tmp_path, NUDGE + "once: sometimes\n")


def test_a_send_step_is_a_campaign_of_its_own(tmp_path):
    write_journey(tmp_path, "nudge", NUDGE)
    spec = load_campaign("j_nudge__first", tmp_path)
    assert spec.segment == "journey_step" and spec.parameters == {"journey": "nudge", "step": "first"}
    assert spec.channels == ["sms", "email"] and spec.policy.holdout == 0.0
    assert parse_step_campaign("j_nudge__first") == ("nudge", "first")
    assert parse_step_campaign("winback") is None
    assert template_prefix("j_nudge__first") == "nudge/first."
    assert template_prefix("winback") == "winback/"
    with pytest.raises(ConfigError, match="sends nothing"):
        load_campaign("j_nudge__pause", tmp_path)
    with pytest.raises(ConfigError, match="no step 'gone'"):
        load_campaign("j_nudge__gone", tmp_path)
    assert "nudge" not in list_campaigns(tmp_path)

"""A campaign has one identity: its folder's valid name, however a user spells it."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from careflow.campaigns import (
    CampaignSpec,
    campaign_folder_problems,
    list_campaigns,
    load_campaign,
)
from careflow.cli.main import main
from careflow.errors import ConfigError
from careflow.settings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "templates"
KNOWN = "Campaigns: birthday, holiday_greetings, reorder_reminder, vip_care, winback."
YAML = "segment: birthday\nchannels: [sms]\n"


@pytest.fixture
def templates(tmp_path):
    """A campaign with a good name next to folders whose names cannot be campaigns."""
    for folder in ("good", "Promo", "2026_sale", "summer-sale"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "campaign.yaml").write_text(YAML)
    (tmp_path / "not_a_campaign").mkdir()  # no campaign.yaml: just a folder
    return tmp_path


@pytest.mark.parametrize(
    "spelling",
    ["birthday/", "./birthday", "birthday/.", "birthday//", "Birthday", "BIRTHDAY",
     "../templates/birthday", " birthday", "birthday\n"],
)  # fmt: skip
def test_other_spellings_of_a_campaign_are_refused_with_the_real_name(spelling):
    # Before: 'birthday/' loaded the birthday campaign under a new ledger name.
    with pytest.raises(ConfigError) as raised:
        load_campaign(spelling, SHIPPED)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{spelling!r} is not a campaign name (lowercase letters")
    assert message.endswith(f"Did you mean 'birthday'? {KNOWN}")


def test_the_canonical_name_loads_as_itself():
    spec = load_campaign("birthday", SHIPPED)
    assert spec.name == "birthday"  # what the ledger keys messages and artifacts by


@pytest.mark.parametrize(
    "name, expected",
    [
        ("birthdy", "no campaign 'birthdy' in "),
        ("easter", "no campaign 'easter' in "),
        ("", "'' is not a campaign name"),
        ("a" * 65, f"'{'a' * 65}' is not a campaign name"),
    ],
)
def test_unknown_or_malformed_names_are_one_line_naming_the_campaigns(name, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)) as raised:
        load_campaign(name, SHIPPED)
    assert str(raised.value).endswith(KNOWN) and "\n" not in str(raised.value)


def test_folders_with_invalid_names_are_reported_not_loaded(templates):
    assert list_campaigns(templates) == ["good"]
    assert campaign_folder_problems(templates) == [
        f"templates folder {name!r} is not a valid campaign name (lowercase letters, digits "
        "and underscores, starting with a letter, at most 64 characters); rename it"
        for name in ("2026_sale", "Promo", "summer-sale")
    ]
    # Before: 'Promo' loaded, sent, then failed on the Prefect artifact key.
    with pytest.raises(ConfigError, match=r"Rename the folder templates/Promo/\. Campaigns: good"):
        load_campaign("Promo", templates)
    assert load_campaign("good", templates).name == "good"


def test_a_spec_cannot_carry_an_invalid_name():
    with pytest.raises(ValidationError):
        CampaignSpec(name="Birthday", segment="birthday", channels=["sms"])
    assert CampaignSpec(name="b" + "_" * 63, segment="birthday", channels=["sms"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: other\n" + YAML, "remove 'name': a campaign is named after its folder"),
        ("- sms\n- email\n", "expected fields such as 'segment:'"),
        ("segment: [unclosed\n", "not valid YAML"),
        (YAML + "category: promo\n", "category: Input should be 'care', 'marketing'"),
        (YAML + "policy: {quiet_hours: '22-8'}\n", "policy.quiet_hours: Value error, '22-8' is not"),
        (YAML + "policy: {frequency_cap: {max: 2}}\n", "policy.frequency_cap.FrequencyCapSpec.days"),
        (YAML + "policy: {when_capped: later}\n", "policy.when_capped: Input should be 'defer'"),
        (YAML + "policy: {quiet: off}\n", "policy.quiet: Extra inputs are not permitted"),
    ],
)
def test_campaign_yaml_problems_are_one_line_config_errors(templates, text, expected):
    (templates / "good" / "campaign.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(expected)) as raised:
        load_campaign("good", templates)
    assert "\n" not in str(raised.value)


@pytest.fixture
def cli_env(templates, tmp_path, monkeypatch):
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(templates))
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'never-made.db'}")
    yield tmp_path


def test_cli_run_refuses_a_path_spelling_before_touching_anything(cli_env):
    result = CliRunner().invoke(main, ["run", "good/"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.startswith("error: 'good/' is not a campaign name")
    assert "Did you mean 'good'?" in result.output and len(result.output.splitlines()) == 1
    assert not (cli_env / "never-made.db").exists()  # no database opened, no flow started


def test_cli_campaigns_lists_valid_ones_and_warns_about_the_rest(cli_env):
    result = CliRunner().invoke(main, ["campaigns"])
    assert result.exit_code == 0
    assert re.search(r"^good\s+birthday\s+sms", result.output, re.MULTILINE)
    assert "warning: templates folder 'Promo' is not a valid campaign name" in result.output


def test_category_and_marketing_follow_each_other(templates):
    (templates / "good" / "campaign.yaml").write_text(YAML + "category: care\n")
    assert load_campaign("good", templates).marketing is False
    (templates / "good" / "campaign.yaml").write_text(YAML + "marketing: true\n")
    assert load_campaign("good", templates).category == "marketing"
    (templates / "good" / "campaign.yaml").write_text(YAML + "policy: {quiet_hours: off}\n")
    assert load_campaign("good", templates).policy.quiet_hours == "off"

"""Campaign schedules: one block of prefect.yaml, read with Prefect's own schedule models."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml
from click.testing import CliRunner

from careflow.cli.main import main
from careflow.errors import ConfigError
from careflow.flows.schedules import campaign_of, campaign_schedules, next_run
from careflow.settings import PROJECT_ROOT

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
CARE = {"birthday", "reorder_reminder", "winback", "vip_care"}
# Thursday 2026-11-26, 10:00 in Shanghai
NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def test_every_campaign_schedule_lives_in_the_definitions_block():
    """A marketer changes a schedule in one place: each campaign deployment's schedule is
    an alias of its entry in `definitions: schedules:` (YAML loads aliases as one object)."""
    data = yaml.safe_load(PREFECT_YAML.read_text())
    defined = data["definitions"]["schedules"]
    assert set(defined) == CARE
    for deployment in data["deployments"]:
        campaign = campaign_of(deployment, CARE)
        for entry in deployment.get("schedules") or []:
            if campaign is not None:
                assert entry is defined[campaign], deployment["name"]


def test_next_runs_of_the_shipped_schedules():
    found = {s.campaign: s for s in campaign_schedules(PREFECT_YAML, CARE, NOW)}
    assert set(found) == CARE
    assert found["birthday"].next_run_text() == "2026-11-27 09:00 Asia/Shanghai"
    assert found["winback"].next_run_text() == "2026-11-30 10:00 Asia/Shanghai"  # Monday
    assert found["vip_care"].next_run_text() == "2026-12-01 10:00 Asia/Shanghai"
    assert found["birthday"].deployment == "birthday-daily"


def test_next_run_follows_daylight_saving_in_the_schedules_zone():
    entry = {"cron": "0 9 * * *", "timezone": "Europe/London"}
    # the clocks go back on Sunday 2026-10-25: 09:00 is 08:00 UTC before, 09:00 UTC after
    before = next_run(entry, datetime(2026, 10, 23, 12, tzinfo=UTC))
    after = next_run(entry, datetime(2026, 10, 24, 12, tzinfo=UTC))
    assert (before.day, before.hour, after.day, after.hour) == (24, 9, 25, 9)
    assert before.utcoffset().total_seconds() == 3600 and after.utcoffset().total_seconds() == 0


def _write(tmp_path, schedules, **deployment):
    path = tmp_path / "prefect.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "deployments": [
                    {"name": "mothers-day", "entrypoint": "careflow/flows/campaign.py:campaign_flow",
                     "parameters": {"campaign": "mothers_day"}, "schedules": schedules,
                     **deployment},
                    {"name": "reconcile-hourly", "entrypoint": "careflow/flows/reconcile.py:reconcile",
                     "schedules": [{"cron": "17 * * * *"}]},
                ]
            }
        )
    )  # fmt: skip
    return path


def test_a_new_campaign_on_the_generic_flow_and_a_paused_schedule(tmp_path):
    path = _write(
        tmp_path,
        [{"cron": "0 8 10 5 *", "timezone": "Asia/Shanghai"},
         {"cron": "0 8 * * *", "timezone": "UTC", "active": False}],
    )  # fmt: skip
    found = campaign_schedules(path, {"mothers_day"}, NOW)
    assert [s.next_run_text() for s in found] == [
        "2027-05-10 08:00 Asia/Shanghai",
        "paused (active: false)",
    ]


def test_a_bad_schedule_is_one_line_naming_the_file_and_deployment(tmp_path):
    path = _write(tmp_path, [{"cron": "61 9 * * *"}])
    with pytest.raises(ConfigError) as raised:
        campaign_schedules(path, {"mothers_day"}, NOW)
    message = str(raised.value)
    assert message.startswith(f"{path}: deployment mothers-day: schedule '61 9 * * *': ")
    assert "Invalid cron string" in message and "\n" not in message


def test_careflow_campaigns_shows_schedule_and_next_run(tmp_path):
    out = CliRunner().invoke(main, ["campaigns"])
    assert out.exit_code == 0, out.output
    header, _, *rows = out.output.splitlines()
    assert header.split()[:6] == ["campaign", "segment", "channels", "schedule", "next", "run"]
    birthday = next(r for r in rows if r.startswith("birthday "))
    assert "0 9 * * * Asia/Shanghai" in birthday and " 09:00 Asia/Shanghai" in birthday
    bad = CliRunner().invoke(main, ["campaigns", "--prefect-yaml", _write(tmp_path, [{"x": 1}])])
    assert bad.exit_code == 0  # mothers_day is not a campaign here: its deployment is ignored
    missing = CliRunner().invoke(main, ["campaigns", "--prefect-yaml", tmp_path / "nope.yaml"])
    assert missing.exit_code == 2 and "nope.yaml: cannot read it" in missing.output

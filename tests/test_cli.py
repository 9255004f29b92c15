"""The CLI: every command has help and is documented; errors are one readable line."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import click
import pytest
from click.testing import CliRunner

from careflow.cli.main import main
from careflow.settings import PROJECT_ROOT
from tests.factories import add_customer, add_orders


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        path = prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path)
        else:
            yield path


COMMANDS = list(_commands(main))


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_command_has_help_and_is_in_the_readme(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert f"careflow {' '.join(path)}" in readme, f"README does not document {path}"


def test_unmigrated_database_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    result = CliRunner().invoke(main, ["report", "last"])
    assert result.exit_code == 2
    assert "careflow db upgrade" in result.output and "Traceback" not in result.output


def test_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("CAREFLOW_TIME_ZONE", "Mars/Base")
    result = CliRunner().invoke(main, ["segment", "count", "dormant"])
    assert result.exit_code == 2
    assert "CAREFLOW_TIME_ZONE" in result.output and "Mars/Base" in result.output


def test_segment_count_list_and_unknown_segment(engine):
    as_of = date(2026, 11, 22)
    for cid, days in [(1, 200), (2, 10)]:
        add_customer(engine, cid)
        add_orders(engine, cid, [as_of - timedelta(days=days)])
    runner = CliRunner()
    out = runner.invoke(main, ["segment", "count", "dormant", "--as-of", "2026-11-22"])
    assert out.exit_code == 0 and out.output.strip() == "1"
    out = runner.invoke(
        main, ["segment", "count", "dormant", "--as-of", "2026-11-22", "--param", "days=5"]
    )
    assert out.output.strip() == "2"
    out = runner.invoke(main, ["segment", "list", "dormant", "--as-of", "2026-11-22"])
    assert re.search(r"^1\s+Customer 1\s+2026-05-06\s+200", out.output, re.MULTILINE)
    out = runner.invoke(main, ["segment", "count", "loyal", "--as-of", "2026-11-22"])
    assert out.exit_code == 2 and "known segments: birthday" in out.output


def test_preview_history_and_report(engine):
    add_customer(
        engine,
        7,
        mobile="+8613812345678",
        locale="zh-CN",
        full_name="李娜",
        birthday=date(1990, 11, 30),  # lunar 10/14: her lunar birthday is 2026-11-22
    )
    runner = CliRunner()
    out = runner.invoke(main, ["preview", "birthday", "--customer", "7", "--as-of", "2026-11-22"])
    assert out.exit_code == 0, out.output
    assert "李娜，祝您生日快乐" in out.output and "sms to +8613812345678" in out.output
    assert "UCS-2" in out.output or "UCS2" in out.output
    out = runner.invoke(main, ["preview", "winback", "--customer", "7"])
    assert out.exit_code == 2 and "not in segment 'dormant'" in out.output
    out = runner.invoke(main, ["history", "7"])
    assert "no contact history" in out.output
    out = runner.invoke(main, ["report", "last", "--json"])
    assert json.loads(out.output) == []


def test_report_lists_failed_and_stopped_runs_with_dates(engine):
    """A failed run used to vanish from `report last`, which showed no dates either."""
    from datetime import datetime

    from careflow.campaigns import CampaignSpec
    from careflow.report import finish_run, start_run

    spec = CampaignSpec(name="winback", segment="dormant", channels=["sms"])
    at = datetime(2026, 11, 20, 12)
    start_run(engine, "ok-1", spec, at, "outbox", False)
    finish_run(engine, "ok-1", {"campaign": "winback", "as_of": "2026-11-20", "dry_run": False,
                                "selected": 5, "sent": 5, "skipped": {}, "failed": {},
                                "already": {}, "would_send": {}})
    start_run(engine, "bad-2", spec, datetime(2026, 11, 21, 12), "outbox", False)
    finish_run(engine, "bad-2", {"campaign": "winback", "as_of": "2026-11-21", "dry_run": False,
                                 "selected": 5, "sent": 1, "skipped": {}, "failed": {},
                                 "already": {}, "would_send": {}, "stopped": "stopped"})
    runner = CliRunner()
    last = runner.invoke(main, ["report", "last"])
    assert last.exit_code == 0 and "stopped" in last.output and "2026-11-21" in last.output
    runs = runner.invoke(main, ["report", "runs"])
    lines = runs.output.splitlines()
    assert "stopped" in lines[2] and "completed" in lines[3]  # newest first
    since = runner.invoke(main, ["report", "runs", "--since", "2099-01-01"])
    assert "no runs yet" in since.output


def test_a_back_dated_real_run_needs_confirmation(engine):
    """`run birthday --as-of <3 weeks ago>` used to send 'happy birthday today' late, silently."""
    past = (date.today() - timedelta(days=22)).isoformat()
    out = CliRunner().invoke(main, ["run", "birthday", "--as-of", past])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "22 day(s) ago" in out.output and "--allow-past" in out.output
    assert "--dry-run" in out.output  # time travel without sending stays free


def test_small_things_a_new_user_meets(engine, tmp_path, monkeypatch):
    """retry with an unknown reason, a channel without templates, Chinese in tables, cut text."""
    from careflow.tables import display_width, shorten, text_table

    runner = CliRunner()
    out = runner.invoke(main, ["retry", "winback", "--reason", "interupted"])
    assert out.exit_code == 2 and "no failed message of winback has reason 'interupted'" in out.output
    add_customer(engine, 7, mobile="+8613812345678", birthday=date(1990, 11, 22))
    out = runner.invoke(main, ["preview", "birthday", "--customer", "7", "--as-of", "2026-11-22",
                               "--channel", "fax"])
    assert out.exit_code == 2 and "has no fax template" in out.output
    table = text_table(["name", "n"], [["李娜", "1"], ["Ann", "2"]]).splitlines()
    # columns line up on screen: a Chinese character takes two columns
    zh, en = table[2], table[3]
    assert display_width(zh[: zh.index("1")]) == display_width(en[: en.index("2")]) == 6
    assert shorten("Happy birthday, Patricia! Thank you for being with us", 30) == (
        "Happy birthday, Patricia!…"
    )
    # Chinese text after a short English brand is not cut back to the brand
    zh = shorten("【Lotus & Pine】尊敬的叶兰，感谢您一直以来的厚爱。作为我们的重要客户，您有任何需要", 70)
    assert zh.startswith("【Lotus & Pine】尊敬的叶兰") and zh.endswith("…")


def test_a_misconfigured_campaign_fails_in_one_line_before_prefect_starts(engine, tmp_path,
                                                                           monkeypatch):
    """Prefect's traceback used to come first, before careflow's one-line error."""
    import shutil

    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    spec = root / "winback" / "campaign.yaml"
    spec.write_text(spec.read_text().replace("{days: 180}", "{days: -5}"))
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    out = CliRunner().invoke(main, ["run", "winback", "--dry-run"])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "templates/winback/campaign.yaml: segment 'dormant': days" in out.output
    assert "Flow run" not in out.output  # Prefect never started


def test_a_run_on_the_embedded_server_prints_no_error_that_is_not_the_users(tmp_path):
    """Regression: run outside `make` (which sets it), `careflow run` left Prefect's
    local server trying to send usage telemetry; with no network that printed an
    ERROR line ("Failed to send telemetry") in the middle of every run. careflow turns
    it off unless the user says otherwise."""
    from tests.embedded import fresh_home, run_careflow

    home, _ = fresh_home(tmp_path)
    code, output = run_careflow(home, "run", "birthday", "--dry-run")
    assert code == 0, output[-3000:]
    assert "Starting temporary server" in output  # the embedded default, as a user gets it
    assert "| ERROR" not in output and "Traceback" not in output, output[-3000:]

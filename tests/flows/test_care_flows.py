"""The care flows on a real (local, temporary) Prefect API."""

from __future__ import annotations

import base64
import re
from datetime import UTC, date, datetime, timedelta
from functools import partial

import pytest
from sqlalchemy import func, select

from careflow.db.models import ContactHistory, Run
from careflow.errors import ConfigError
from tests.factories import add_customer, add_orders

pytestmark = [pytest.mark.prefect, pytest.mark.xdist_group("prefect")]

AS_OF = date(2026, 11, 22)


@pytest.fixture
def shop(engine, monkeypatch, real_clock):
    monkeypatch.setenv("CAREFLOW_BATCH_SIZE", "7")  # several batches from a small shop
    real_clock.set(datetime(2026, 11, 22, 12, tzinfo=UTC))  # real runs send at noon of AS_OF
    for cid in range(1, 31):
        add_customer(
            engine,
            cid,
            mobile=f"+4479111230{cid:02d}",
            country="GB",
            birthday=date(1980, 11, 22) if cid % 3 == 0 else date(1980, 1, 1),
        )
        # everyone bought every 30 days; the last purchase 30..59 days ago
        last = 30 + cid % 30
        add_orders(engine, cid, [AS_OF - timedelta(days=last + 30 * k) for k in range(3)])
    return engine


def test_care_flows_send_once_across_runs(prefect_api, shop):
    from careflow.flows.care import birthday, reorder_reminder

    first = birthday(as_of=AS_OF.isoformat(), allow_past=True)
    assert first["selected"] == 10 and first["sent"] == 10
    again = birthday(as_of=AS_OF.isoformat(), allow_past=True)
    assert again["sent"] == 0 and again["already"] == {"sent": 10}

    due = reorder_reminder(as_of=AS_OF.isoformat(), allow_past=True)
    # median gap 30; due when 30 <= days since < 60: everyone here
    assert due["selected"] == 30 and due["sent"] == 30
    with shop.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ContactHistory)).scalar() == 40
        runs = conn.execute(select(Run.campaign, Run.summary)).all()
    assert sorted(r.campaign for r in runs) == ["birthday", "birthday", "reorder_reminder"]
    assert all(r.summary is not None for r in runs)


def test_dry_run_sends_and_records_nothing(prefect_api, shop):
    from careflow.flows.care import winback

    add_customer(shop, 99, email="old@example.com")
    add_orders(shop, 99, [AS_OF - timedelta(days=400)])
    result = winback(as_of=AS_OF.isoformat(), dry_run=True)
    assert result["selected"] == 1 and result["would_send"] == {"email": 1}
    assert result["samples"][0]["to"] == "o***@example.com"  # masked in summaries
    with shop.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ContactHistory)).scalar() == 0


def test_bad_configuration_fails_before_anyone_is_selected(prefect_api, shop, monkeypatch):
    from prefect.exceptions import ParameterTypeError

    from careflow.clock import resolve_as_of
    from careflow.flows.campaign import campaign_flow

    with pytest.raises(ConfigError, match="no campaign 'nope'"):
        campaign_flow(campaign="nope")
    with pytest.raises(ParameterTypeError, match="as_of"):
        campaign_flow(campaign="birthday", as_of="22/11/2026")
    with pytest.raises(ConfigError, match="not a date"):
        resolve_as_of("22/11/2026", "UTC")
    # nobody was selected; both runs are recorded as refused, each with its reason
    with shop.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ContactHistory)).scalar() == 0
        runs = dict(conn.execute(select(Run.campaign, Run.summary)).all())
    assert runs["nope"]["stopped"].startswith("failed before it started: no campaign 'nope'")
    assert runs["birthday"]["stopped"].startswith(
        "failed before it started: invalid parameters: as_of"
    )


def test_cli_run_prints_the_summary_and_says_what_was_already_sent(prefect_api, shop):
    from click.testing import CliRunner

    from careflow.cli.main import main

    runner = CliRunner()
    first = runner.invoke(main, ["run", "birthday", "--as-of", "2026-11-22", "--allow-past"])
    assert first.exit_code == 0, first.output
    assert "birthday  10        10" in first.output
    again = runner.invoke(main, ["run", "birthday", "--as-of", "2026-11-22", "--allow-past"])
    assert "10 already done by an earlier run, not taken again: 10 got this occasion's message." in again.output
    dry = runner.invoke(main, ["run", "reorder_reminder", "--dry-run", "--as-of", "2026-11-22"])
    assert "(30 would send)" in dry.output and "samples:" in dry.output
    report = runner.invoke(main, ["report", "last"])
    assert "birthday" in report.output and "reorder_reminder" not in report.output  # dry runs


def test_channel_outbox_keeps_a_live_setup_on_the_outbox_for_one_run(prefect_api, shop,
                                                                     monkeypatch):
    from careflow.flows.care import birthday

    monkeypatch.setenv("CAREFLOW_DELIVERY", "live")  # and no provider credentials at all
    result = birthday(as_of=AS_OF.isoformat(), channel="outbox", allow_past=True)
    assert result["sent"] == 10 and result["delivery"] == "outbox"
    with pytest.raises(ConfigError, match="CAREFLOW_TWILIO_ACCOUNT_SID"):
        birthday(as_of=AS_OF.isoformat(), allow_past=True)


def test_a_bad_campaign_parameter_fails_before_the_run(prefect_api, shop, tmp_path, monkeypatch,
                                                       caplog):
    import shutil

    from careflow.flows.campaign import campaign_flow
    from careflow.settings import PROJECT_ROOT

    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    spec = root / "winback" / "campaign.yaml"
    spec.write_text(spec.read_text().replace("{days: 180}", "{dayz: 180}"))
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    with pytest.raises(ConfigError, match="segment 'dormant': unknown parameter 'dayz'"):
        campaign_flow(campaign="winback", as_of=AS_OF, allow_past=True)
    # the failed run's first error line says what is wrong and where to fix it (the run's
    # own log: Prefect's background services may log errors of their own on a busy machine)
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "ERROR" and r.name == "prefect.flow_runs"
    ]
    assert errors and errors[0].startswith("winback did not run: templates/winback/campaign.yaml")
    # nobody was selected; the run is recorded, finished, with the reason (report runs)
    with shop.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ContactHistory)).scalar() == 0
        (run,) = conn.execute(select(Run)).all()
    assert run.finished_at is not None and run.summary["stopped"].startswith(
        "failed before it started: templates/winback/campaign.yaml"
    )


def test_a_run_refused_before_it_started_is_listed_by_report_runs(prefect_api, shop):
    """A typo in the campaign's name from the UI or the API: the run fails, and the
    operator's list of runs says so, in one line, with the reason."""
    from click.testing import CliRunner

    from careflow.cli.main import main
    from careflow.flows.campaign import campaign_flow

    with pytest.raises(ConfigError, match="birthdya"):
        campaign_flow(campaign="birthdya", as_of=AS_OF, dry_run=True)
    with pytest.raises(ConfigError, match="day"):  # back-dated and not confirmed
        campaign_flow(campaign="winback", as_of=AS_OF - timedelta(days=30))
    listed = CliRunner().invoke(main, ["report", "runs"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    typo = next(line for line in lines if "birthdya (dry run)" in line)
    assert "2026-11-22" in typo and "failed before it started: " in typo
    assert "birthdya" in typo.split("failed before it started: ")[1]  # the reason, whole
    backdated = next(line for line in lines if line.split()[2:3] == ["winback"])
    assert "failed before it started: --as-of 2026-10-23 is 30 day(s) ago" in backdated


def test_a_run_tells_the_terminal_how_far_it_has_got(prefect_api, shop):
    """`careflow run` draws a progress bar from these reports (careflow/cli/main.py)."""
    from careflow.flows.care import reorder_reminder
    from careflow.progress import listening

    seen = []
    with listening(lambda stage, done, total: seen.append((stage, done, total))):
        reorder_reminder(as_of=AS_OF.isoformat(), dry_run=True)
    # 30 customers in batches of 7
    assert seen == [("reorder_reminder batches", done, 5) for done in range(1, 6)]


def test_the_follow_up_flow_sends_deferred_messages_once_when_due(prefect_api, shop,
                                                                    real_clock):
    """Auckland customers have their birthday at 01:00 local (12:00 UTC on the 22nd):
    deferred to 09:00 there (20:00 UTC), then sent once by the follow-up flow."""
    from click.testing import CliRunner

    from careflow.cli.main import main
    from careflow.flows.care import birthday
    from careflow.flows.deferred import deferred_flow

    for cid in (101, 102):
        add_customer(shop, cid, mobile=f"+6421555{cid:04d}", country="NZ",
                     time_zone="Pacific/Auckland", birthday=date(1980, 11, 23))  # fmt: skip
    first = birthday(as_of=AS_OF.isoformat(), allow_past=True)
    assert first["sent"] == 10 and first["deferred"] == {"quiet_hours": 2}
    listed = CliRunner().invoke(main, ["deferred", "list"])
    assert "birthday  quiet_hours  2" in listed.output and "2026-11-22 20:00" in listed.output
    real_clock.set(datetime(2026, 11, 22, 19, tzinfo=UTC))
    assert deferred_flow() == []  # not due yet
    dry = CliRunner().invoke(main, ["deferred", "send", "--dry-run", "--as-of",
                                    "2026-11-22T20:05:00+00:00"])  # fmt: skip
    assert "birthday (follow-up)" in dry.output and "(2 would send)" in dry.output
    real_clock.set(datetime(2026, 11, 22, 20, 5, tzinfo=UTC))
    sent = deferred_flow(as_of="2026-11-22T20:05:00+00:00")
    assert [(s["campaign"], s["sent"]) for s in sent] == [("birthday", 2)]
    real_clock.set(datetime(2026, 11, 22, 21, tzinfo=UTC))
    assert deferred_flow(as_of="2026-11-22T21:00:00+00:00") == []
    again = birthday(as_of=AS_OF.isoformat(), allow_past=True)
    assert again["sent"] == 0 and again["already"] == {"sent": 12}


def test_pyramid_report_flow_leaves_artifacts_and_the_html_page(prefect_api, shop, tmp_path):
    from prefect.artifacts import Artifact

    from careflow.flows.insight import pyramid_report_flow

    data = pyramid_report_flow(as_of=AS_OF)
    assert data["buyers"] == 30 and data["as_of"] == AS_OF.isoformat()
    markdown = Artifact.get("pyramid-report")
    assert markdown.type == "markdown" and "### Tiers" in markdown.data
    # the charts reach the UI inside the artifact (issue 25: they were only on the
    # worker's disk), as images the UI's markdown shows: standalone SVG in data: URIs
    images = re.findall(r"!\[([^\]]+)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)",
                        markdown.data)
    assert [alt.split(":")[0].split(" since")[0] for alt, _ in images] == [
        "Customer pyramid", "Revenue share per tier against its share of buyers",
        "RFM heat map", "Tier movement"]  # fmt: skip
    for _, data in images:
        svg = base64.b64decode(data).decode()
        assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and "<rect" in svg
    table = Artifact.get("pyramid-tiers")
    assert table.type == "table" and "VIP" in str(table.data)
    page = tmp_path / "home" / "reports" / f"pyramid-{AS_OF.isoformat()}.html"
    assert page.is_file() and page.read_text().count("<svg") == 4


@pytest.mark.parametrize("flow", ["birthday", "campaign"])
def test_a_real_run_given_a_date_judges_quiet_hours_at_the_real_clock(prefect_api, shop,
                                                                    real_clock, flow):
    """Regression: `careflow run birthday --as-of 2026-12-07` (or the date in the UI's
    run form) judged quiet hours at noon of that date and sent at once: London
    customers got their email at 01:11 local. The date picks the occasion; a real run
    sends now, so it judges send times now. A dry run still rehearses the date's noon."""
    from careflow.flows.campaign import campaign_flow
    from careflow.flows.care import birthday

    run = birthday if flow == "birthday" else partial(campaign_flow, campaign="birthday")
    for cid in (201, 202):
        add_customer(shop, cid, email=f"c{cid}@example.com", country="GB",
                     time_zone="Europe/London", birthday=date(1980, 12, 7))  # fmt: skip
    real_clock.set(datetime(2026, 12, 7, 1, 11, tzinfo=UTC))  # 01:11 in London
    dry = run(as_of="2026-12-07", dry_run=True)
    assert dry["would_send"] == {"email": 2} and dry["deferred"] == {}
    real = run(as_of="2026-12-07")
    assert real["sent"] == 0 and real["deferred"] == {"quiet_hours": 2}
    with shop.connect() as conn:
        due = conn.execute(select(ContactHistory.not_before)).scalars().all()
    assert due == [datetime(2026, 12, 7, 9)] * 2  # 09:00 in London, stored as naive UTC


def test_the_failure_hook_records_a_run_careflow_never_started(engine):
    """A run that failed before careflow's code ran (Prefect refused its parameters, or
    an error before the run was recorded): one row, the reason without Prefect's preamble."""
    from types import SimpleNamespace

    from careflow.flows.campaign import record_failure
    from careflow.report import runs_since

    run = SimpleNamespace(id="r1", parameters={"as_of": "22/11/2026", "channel": "sms"})
    state = SimpleNamespace(message="Flow run encountered an exception: OperationalError: "
                                    "database is locked")  # fmt: skip
    record_failure(SimpleNamespace(name="reorder-reminder"), run, state)
    record_failure(SimpleNamespace(name="reorder-reminder"), run, state)  # once only
    (found,) = runs_since(engine)
    assert (found["campaign"], found["channel"], found["dry_run"]) == ("reorder_reminder", "sms",
                                                                      False)  # fmt: skip
    assert found["status"] == "failed before it started: OperationalError: database is locked"

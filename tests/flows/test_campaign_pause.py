"""A campaign pauses itself when its sending domain's spam reports pass the limit
(careflow/pauses.py): recorded with the numbers, a Prefect event, the refused run's
summary and artifact; dry and real runs say so in one line; `careflow campaign resume`
lets it run again, recorded. Events as SendGrid documents them, through the receiver's
own parse (tests/test_compliance.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from careflow.cli.main import main
from careflow.db.models import CampaignPause, ContactHistory, Run
from careflow.errors import CampaignPaused
from careflow.report import summary_markdown
from tests.factories import add_customer, add_orders
from tests.test_compliance import post, sendgrid_day

pytestmark = [pytest.mark.prefect, pytest.mark.xdist_group("prefect")]

AS_OF = date(2026, 11, 22)
YESTERDAY = AS_OF - timedelta(days=1)


@pytest.fixture
def shop(engine, monkeypatch, real_clock):
    """Three dormant customers win-back would write to (email first), a lower minimum
    volume (200 a day) so the days stay small, and Prefect's events caught."""
    monkeypatch.setenv("CAREFLOW_SPAM_RATE_MIN_DELIVERED", "200")
    monkeypatch.setenv("CAREFLOW_SENDGRID_FROM_EMAIL", "care@shop.example.com")
    real_clock.set(datetime(2026, 11, 22, 12, tzinfo=UTC))
    for cid in (1, 2, 3):
        add_customer(engine, cid, email=f"old{cid}@example.com", mobile=f"+44791112300{cid}",
                     country="GB")
        add_orders(engine, cid, [AS_OF - timedelta(days=400)])
    emitted: list[dict] = []
    monkeypatch.setattr("careflow.flows.campaign.emit_event", lambda **e: emitted.append(e))
    return engine, emitted


def _pauses(engine):
    with engine.connect() as conn:
        return conn.execute(select(CampaignPause).order_by(CampaignPause.id)).all()


def _sent(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(ContactHistory)).scalar()


def _run_summary(engine, dry_run: bool) -> dict:
    with engine.connect() as conn:
        return conn.execute(
            select(Run.summary).where(Run.dry_run.is_(dry_run)).order_by(Run.started_at.desc())
        ).scalars().first()


def test_a_domain_over_the_limit_pauses_its_campaign_until_resumed(prefect_api, shop):
    from careflow.flows.care import winback

    engine, emitted = shop
    post(engine, sendgrid_day(YESTERDAY, delivered=200, spam=1))  # 0.5% of 200

    # a dry run says the campaign would pause, and writes no pause
    with pytest.raises(CampaignPaused, match=r"^winback would pause itself: spam reports on "
                       r"shop\.example\.com were 0\.50% of delivered email on 2026-11-21"):
        winback(as_of=AS_OF.isoformat(), dry_run=True)
    assert _pauses(engine) == [] and emitted == []

    # the real run pauses it, records why, emits the event, and sends nothing
    with pytest.raises(CampaignPaused) as refused:
        winback(as_of=AS_OF.isoformat(), allow_past=True)
    line = str(refused.value)
    assert line.startswith("winback is paused: spam reports on shop.example.com were 0.50%")
    assert "(UTC; 1 of 200), over the 0.30% limit (CAREFLOW_SPAM_RATE_LIMIT)" in line
    assert line.endswith("then resume it with `careflow campaign resume winback`")
    assert "\n" not in line
    (pause,) = _pauses(engine)
    assert (pause.campaign, pause.domain, pause.day) == ("winback", "shop.example.com", YESTERDAY)
    assert (pause.delivered, pause.spam_reports, pause.rate_limit, pause.min_delivered) == (
        200, 1, 0.003, 200)
    assert pause.resumed_at is None
    assert _sent(engine) == 0
    (event,) = emitted
    assert event["event"] == "careflow.campaign.paused"
    assert event["resource"]["prefect.resource.id"] == "careflow.campaign.winback"
    assert event["payload"]["spam_reports"] == 1 and event["payload"]["delivered"] == 200

    # the refused run is recorded, its summary and artifact carry the pause
    summary = _run_summary(engine, dry_run=False)
    assert summary["stopped"] == f"failed before it started: {line}"
    assert summary["paused"]["spam_rate"] == pytest.approx(0.005)
    assert summary["paused"]["run_id"] == pause.run_id
    artifact = summary_markdown(summary)
    assert "**Paused:** spam reports on shop.example.com were 0.50%" in artifact
    assert "`careflow campaign resume winback`" in artifact

    # the next runs refuse at once, the dry run too, without a second pause or event
    runner = CliRunner()
    again = runner.invoke(main, ["run", "winback", "--as-of", AS_OF.isoformat(), "--allow-past"])
    assert again.exit_code == 2
    assert "winback is paused: spam reports on shop.example.com were 0.50%" in again.output
    assert "Traceback" not in again.output
    dry = runner.invoke(main, ["run", "winback", "--dry-run", "--as-of", AS_OF.isoformat()])
    assert dry.exit_code == 2 and "winback is paused:" in dry.output
    assert len(_pauses(engine)) == 1 and len(emitted) == 1 and _sent(engine) == 0
    runs = runner.invoke(main, ["report", "runs"]).output
    assert "failed before it started: winback is paused" in runs
    shown = runner.invoke(main, ["report", "compliance", "--days", "3"]).output
    assert "paused campaigns:\n  winback: spam reports on shop.example.com were 0.50%" in shown

    # an explicit resume, recorded; the day it was about does not pause it again
    resumed = runner.invoke(main, ["campaign", "resume", "winback", "--note", "list cleaned"])
    assert resumed.exit_code == 0, resumed.output
    assert "winback resumed; it had paused because spam reports on" in resumed.output
    (pause,) = _pauses(engine)
    assert pause.resumed_at is not None and pause.resume_note == "list cleaned"
    assert pause.resumed_by
    listed = runner.invoke(main, ["campaign", "pauses", "winback"]).output
    assert "1 of 200 (0.50%)" in listed and "list cleaned" in listed
    assert pause.resumed_by in listed
    sent = winback(as_of=AS_OF.isoformat(), allow_past=True)
    assert sent["sent"] == 3 and _sent(engine) == 3
    twice = runner.invoke(main, ["campaign", "resume", "winback"])
    assert twice.exit_code == 2 and "winback is not paused" in twice.output

    # a later day over the limit pauses it again
    post(engine, sendgrid_day(AS_OF, delivered=300, spam=2, start=5000))  # 0.67%
    with pytest.raises(CampaignPaused, match="were 0.67% of delivered email on 2026-11-22"):
        winback(as_of=AS_OF.isoformat(), allow_past=True)
    assert [p.day for p in _pauses(engine)] == [YESTERDAY, AS_OF] and len(emitted) == 2


def test_under_the_minimum_volume_nothing_pauses(prefect_api, shop):
    from careflow.flows.care import winback

    engine, emitted = shop
    post(engine, sendgrid_day(YESTERDAY, delivered=199, spam=3))  # 1.5%, but of 199
    sent = winback(as_of=AS_OF.isoformat(), allow_past=True)
    assert sent["sent"] == 3
    assert _pauses(engine) == [] and emitted == []
    assert "paused" not in _run_summary(engine, dry_run=False)


def test_days_before_yesterday_do_not_pause_and_sms_runs_are_not_judged(
    prefect_api, shop, real_clock
):
    from careflow.flows.care import winback

    engine, emitted = shop
    post(engine, sendgrid_day(YESTERDAY, delivered=200, spam=2))
    # a run that sends no email is not about the sending domain
    only_sms = winback(as_of=AS_OF.isoformat(), channel="sms", allow_past=True)
    assert only_sms["sent"] == 3 and _pauses(engine) == []
    # two days on, that bad day is history: the report keeps it, runs go on
    real_clock.set(datetime(2026, 11, 24, 12, tzinfo=UTC))
    later = winback(as_of="2026-11-24", dry_run=True)
    assert later["already"] == {"sent": 3} and _pauses(engine) == [] and emitted == []


def test_a_paused_campaigns_deferred_messages_wait_until_it_is_resumed(prefect_api, shop,
                                                                       real_clock):
    from careflow.flows.care import winback
    from careflow.flows.deferred import deferred_flow

    engine, emitted = shop
    # 01:00 in Auckland: quiet hours defer this customer's message to their morning
    add_customer(engine, 4, email="night@example.com", time_zone="Pacific/Auckland",
                 country="NZ")
    add_orders(engine, 4, [AS_OF - timedelta(days=400)])
    first = winback(as_of=AS_OF.isoformat(), allow_past=True)
    assert first["sent"] == 3 and first["deferred"] == {"quiet_hours": 1}

    post(engine, sendgrid_day(AS_OF, delivered=250, spam=1))  # 0.4% today
    real_clock.set(datetime(2026, 11, 22, 21, tzinfo=UTC))  # 10:00 in Auckland
    assert deferred_flow() == []  # the follow-up pauses the campaign; the message waits
    (pause,) = _pauses(engine)
    assert pause.campaign == "winback" and len(emitted) == 1
    with engine.connect() as conn:
        states = dict(conn.execute(select(ContactHistory.customer_id, ContactHistory.state)).all())
    assert states[4] == "deferred"

    assert CliRunner().invoke(main, ["campaign", "resume", "winback"]).exit_code == 0
    (done,) = deferred_flow()
    assert done["sent"] == 1

"""careflow/pauses.py without Prefect: where the limit and the minimum fall, one pause
when two runs judge at once, resume. The flows' side is tests/flows/test_campaign_pause.py."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from careflow import pauses
from careflow.db.models import CampaignPause
from careflow.errors import ConfigError
from careflow.settings import load_settings
from tests.test_compliance import post, sendgrid_day

DAY = date(2026, 11, 21)
NOW = datetime(2026, 11, 21, 18)


def _rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(CampaignPause)).all()


@pytest.mark.parametrize(
    ("delivered", "spam", "paused"),
    [
        (999, 4, False),  # 0.4%, but under the default minimum of 1,000 delivered
        (1000, 3, False),  # exactly 0.3%: at the limit, not past it
        (1000, 4, True),  # 0.4% of 1,000
    ],
)
def test_the_default_limit_and_minimum(engine, delivered, spam, paused):
    post(engine, sendgrid_day(DAY, delivered=delivered, spam=spam))
    found = pauses.check(engine, load_settings(), "winback", "run-1", now=NOW)
    assert (found is not None) == paused
    assert len(_rows(engine)) == int(paused)


def test_two_runs_judging_at_once_record_one_pause(engine, monkeypatch):
    """The second run read no pause before the first wrote it: the partial unique index
    refuses its insert, and it returns the first's pause."""
    post(engine, sendgrid_day(DAY, delivered=1000, spam=5))
    first = pauses.check(engine, load_settings(), "winback", "run-1", now=NOW)
    with pytest.raises(IntegrityError), engine.begin() as conn:  # a second one in force
        conn.execute(insert(CampaignPause.__table__).values(
            campaign="winback", domain="example.com", day=DAY, delivered=1, spam_reports=1,
            rate_limit=0.003, min_delivered=1, paused_at=NOW))  # fmt: skip

    real, reads = pauses.in_force, []

    def stale_first(conn, campaign):  # the second run's first read saw no pause yet
        reads.append(campaign)
        return None if len(reads) == 1 else real(conn, campaign)

    monkeypatch.setattr(pauses, "in_force", stale_first)
    second = pauses.check(engine, load_settings(), "winback", "run-2", now=NOW)
    monkeypatch.undo()
    (row,) = _rows(engine)
    assert row.run_id == first.run_id == second.run_id == "run-1"
    # another campaign pauses on its own
    pauses.check(engine, load_settings(), "vip_care", "run-3", now=NOW)
    assert sorted(r.campaign for r in _rows(engine)) == ["vip_care", "winback"]


def test_resume_records_who_and_why_and_refuses_a_campaign_not_paused(engine):
    post(engine, sendgrid_day(DAY, delivered=1000, spam=5))
    pauses.check(engine, load_settings(), "winback", "run-1", now=NOW)
    pauses.resume(engine, "winback", "list cleaned", by="ops-anna")
    (row,) = _rows(engine)
    assert (row.resumed_by, row.resume_note) == ("ops-anna", "list cleaned")
    assert row.resumed_at is not None
    with pytest.raises(ConfigError, match="winback is not paused"):
        pauses.resume(engine, "winback")
    (told,) = pauses.history(engine, "winback")
    assert told["resumed_by"] == "ops-anna" and told["spam_reports"] == 5
    # the day it was about does not pause it again
    assert pauses.check(engine, load_settings(), "winback", "run-2", now=NOW) is None

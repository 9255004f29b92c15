"""The route for one batch, without Prefect: outcomes for everyone, exactly once."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update

from careflow.campaigns import load_campaign
from careflow.db.models import ContactHistory
from careflow.messages import State
from careflow.settings import PROJECT_ROOT, get_settings
from flows.route import process_batch
from tests.factories import add_customer, set_consent

AS_OF = date(2026, 6, 1)
AT = datetime(2026, 6, 1, 12, tzinfo=UTC)
BDAY = date(1990, 6, 1)


@pytest.fixture
def templates(tmp_path, monkeypatch):
    """The shipped templates plus a campaign whose template breaks for some customers."""
    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    broken = root / "fragile"
    broken.mkdir()
    (broken / "campaign.yaml").write_text(
        "segment: birthday\nchannels: [sms]\noccasion: yearly\nmarketing: false\n"
    )
    # grade is None for some customers: calling .upper() on it fails for just them
    (broken / "sms.en.j2").write_text("Hi {{ name }}, grade {{ customer.grade.upper() }}")
    promo = root / "promo"
    promo.mkdir()
    (promo / "campaign.yaml").write_text(
        "segment: birthday\nchannels: [sms]\noccasion: yearly\nmarketing: true\n"
    )
    (promo / "sms.zh-CN.j2").write_text("{{ name }}，生日当月全场九折。")
    (promo / "sms.en.j2").write_text("{{ name }}, " + "a very long offer " * 40)
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    get_settings.cache_clear()
    return root


@pytest.fixture
def people(engine):
    bday = {"birthday": BDAY}
    add_customer(engine, 1, mobile="+44 7911 123451", country="GB", grade="a", **bday)
    add_customer(engine, 2, mobile="12", email=None, country="GB", grade="b", **bday)  # malformed
    add_customer(engine, 3, mobile=None, email=None, **bday)  # nothing on file
    add_customer(engine, 4, mobile="+447911123452", email=None, country="GB", **bday)
    set_consent(engine, 4, "sms", False)  # opted out of the only channel it could use
    add_customer(engine, 5, email="five@example.com", locale="zh-CN", full_name="王小明", **bday)
    add_customer(engine, 6, mobile="07911 123456", country="GB", **bday)  # no grade
    add_customer(engine, 7, mobile="+447911123453", birthday=date(1990, 1, 1))  # not today
    return engine


def run(engine, campaign="birthday", run_id="run-1", **kw):
    settings = get_settings()
    return process_batch(
        spec=load_campaign(campaign, settings.templates_dir),
        engine=engine,
        settings=settings,
        run_id=run_id,
        as_of=AS_OF,
        at=AT,
        id_range=(1, 100),
        **kw,
    )


def ledger(engine) -> dict[int, ContactHistory]:
    with engine.connect() as conn:
        return {r.customer_id: r for r in conn.execute(select(ContactHistory.__table__))}


def test_every_selected_customer_gets_one_recorded_outcome(people, templates):
    result = run(people)
    assert result.selected == 6
    assert result.sent == 3
    assert dict(result.skipped) == {"invalid_contact": 1, "no_contact": 1, "opted_out": 1}
    rows = ledger(people)
    assert set(rows) == {1, 2, 3, 4, 5, 6}
    assert rows[6].recipient == "+447911123456"  # national format read in the customer's country
    assert rows[1].state == State.SENT and rows[1].channel == "sms"
    assert rows[1].recipient == "+447911123451" and "Happy birthday" in rows[1].body
    assert rows[5].channel == "email" and "生日快乐" in rows[5].subject
    assert rows[2].reason == "invalid_contact" and "12" in rows[2].detail
    outbox = Path(get_settings().effective_outbox_dir)
    assert (outbox / "birthday" / "sms" / "1-2026.txt").read_text().startswith("To: +447911123451")


def test_running_again_sends_nothing_new(people, templates):
    run(people, run_id="run-1")
    again = run(people, run_id="run-2")
    assert again.sent == 0
    assert again.already["sent"] == 3
    # skipped customers are looked at again (they may have a phone now) and skipped again
    assert sum(again.skipped.values()) == 3
    assert sum(1 for r in ledger(people).values() if r.state == State.SENT) == 3


def test_a_broken_template_fails_only_its_recipients(people, templates):
    result = run(people, campaign="fragile")
    rows = ledger(people)
    assert rows[1].state == State.SENT and rows[1].body == "Hi C1, grade A"
    assert rows[6].state == State.FAILED and rows[6].reason == "template_error"
    assert "fragile/sms.en.j2" in rows[6].detail and "upper" in rows[6].detail
    assert result.sent == 1 and result.failed == {"template_error": 1}


def test_dry_run_records_nothing(people, templates):
    result = run(people, dry_run=True)
    assert result.would_send == {"sms": 2, "email": 1}
    assert result.samples and ledger(people) == {}


def test_rows_left_sending_by_a_dead_run_are_never_resent(people, templates):
    run(people, run_id="run-1")
    with people.begin() as conn:  # pretend run-1 died while handing customer 1 to the channel
        conn.execute(
            update(ContactHistory)
            .where(ContactHistory.customer_id == 1)
            .values(state=State.SENDING)
        )
    again = run(people, run_id="run-1")  # the task retried inside the same run
    assert again.sent == 0 and again.failed["interrupted"] == 1
    assert ledger(people)[1].state == State.FAILED and ledger(people)[1].reason == "interrupted"


class ExplodingChannel:
    name = "sms"
    max_body_chars = None
    rate_per_second = None

    def send_batch(self, messages):
        raise RuntimeError("provider SDK bug")


def test_a_channel_that_raises_fails_its_batch_with_a_reason(people, templates, monkeypatch):
    import flows.route

    real = flows.route.get_channel
    monkeypatch.setattr(
        flows.route,
        "get_channel",
        lambda name, settings: ExplodingChannel() if name == "sms" else real(name, settings),
    )
    result = run(people)
    rows = ledger(people)
    assert rows[1].state == State.FAILED and rows[1].reason == "channel_error"
    assert not rows[1].retryable  # it may have gone out: never resend automatically
    assert rows[5].state == State.SENT  # the email went out regardless
    assert result.failed["channel_error"] == 2  # customers 1 and 6 were on sms


def test_sms_is_recorded_as_sent_opt_out_line_and_length_limit(people, templates):
    add_customer(people, 8, mobile="13812345678", locale="zh-CN", full_name="李娜", birthday=BDAY)
    result = run(people, campaign="promo")
    rows = ledger(people)
    # zh-CN marketing SMS carry the opt-out line, in the ledger and the outbox alike
    assert rows[8].body == "李娜，生日当月全场九折。回复TD退订"
    outbox = Path(get_settings().effective_outbox_dir) / "promo" / "sms" / "8-2026.txt"
    assert outbox.read_text(encoding="utf-8").rstrip().endswith("回复TD退订")
    # the English text is over CAREFLOW_SMS_MAX_SEGMENTS: failed with the reason, not sent
    assert rows[1].state == State.FAILED and rows[1].reason == "sms_too_long"
    assert "segments" in rows[1].detail
    assert result.failed["sms_too_long"] == 2  # customers 1 and 6 (English)

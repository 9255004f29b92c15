"""The route for one batch, without Prefect: outcomes for everyone, exactly once."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update

from careflow.campaigns import load_campaign
from careflow.channels import get_channel
from careflow.db.models import ContactHistory
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.messages import Outcome, State
from careflow.settings import PROJECT_ROOT, load_settings
from tests.factories import add_customer, set_consent

AS_OF = date(2026, 6, 1)
AT = datetime(2026, 6, 1, 12, tzinfo=UTC)
BDAY = date(1990, 6, 1)
# zh-CN customers keep the lunar birthday: born on lunar 4/16, greeted on 2026-06-01 too
LUNAR_BDAY = date(1990, 5, 10)


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
    return root


@pytest.fixture
def people(engine):
    bday = {"birthday": BDAY}
    add_customer(engine, 1, mobile="+44 7911 123451", country="GB", grade="a", **bday)
    add_customer(engine, 2, mobile="12", email=None, country="GB", grade="b", **bday)  # malformed
    add_customer(engine, 3, mobile=None, email=None, **bday)  # nothing on file
    add_customer(engine, 4, mobile="+447911123452", email=None, country="GB", **bday)
    set_consent(engine, 4, "sms", False)  # opted out of the only channel it could use
    add_customer(engine, 5, email="five@example.com", locale="zh-CN", full_name="王小明",
                 birthday=LUNAR_BDAY)  # fmt: skip
    add_customer(engine, 6, mobile="07911 123456", country="GB", **bday)  # no grade
    add_customer(engine, 7, mobile="+447911123453", birthday=date(1990, 1, 1))  # not today
    return engine


def plan(settings, spec, run_id, **options) -> RunPlan:
    """A run of ``spec`` as of AS_OF, AT."""
    return RunPlan(spec=spec, run_id=run_id, as_of=AS_OF, at=AT, settings=settings, **options)


def run(engine, campaign="birthday", run_id="run-1", dry_run=False, channel_factory=None):
    settings = load_settings()
    spec = load_campaign(campaign, settings.templates_dir)
    route = Route.for_run(plan(settings, spec, run_id, dry_run=dry_run))
    if channel_factory is not None:
        route.channel_factory = channel_factory
    return process_batch(route, (1, 100))


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
    outbox = Path(load_settings().effective_outbox_dir)
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
    # samples travel to artifacts and the runs table: contact details masked
    assert "+447911123451" not in str(result.samples)
    assert any(s["to"] == "+44791***3451" for s in result.samples)


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

    def send_batch(self, messages):
        raise RuntimeError("provider SDK bug")


def test_a_channel_that_raises_fails_its_batch_with_a_reason(people, templates):
    settings = load_settings()
    result = run(
        people,
        channel_factory=lambda name: (
            ExplodingChannel() if name == "sms" else get_channel(name, settings)
        ),
    )
    rows = ledger(people)
    assert rows[1].state == State.FAILED and rows[1].reason == "channel_error"
    assert not rows[1].retryable  # it may have gone out: never resend automatically
    assert rows[5].state == State.SENT  # the email went out regardless
    assert result.failed["channel_error"] == 2  # customers 1 and 6 were on sms


def test_sms_is_recorded_as_sent_opt_out_line_and_length_limit(people, templates):
    add_customer(people, 8, mobile="13812345678", locale="zh-CN", full_name="李娜",
                 birthday=LUNAR_BDAY)  # fmt: skip
    result = run(people, campaign="promo")
    rows = ledger(people)
    # zh-CN marketing SMS carry the opt-out line, in the ledger and the outbox alike
    assert rows[8].body == "李娜，生日当月全场九折。回复TD退订"
    outbox = Path(load_settings().effective_outbox_dir) / "promo" / "sms" / "8-2026.txt"
    assert outbox.read_text(encoding="utf-8").rstrip().endswith("回复TD退订")
    # the English text is over CAREFLOW_SMS_MAX_SEGMENTS: failed with the reason, not sent
    assert rows[1].state == State.FAILED and rows[1].reason == "sms_too_long"
    assert "segments" in rows[1].detail
    assert result.failed["sms_too_long"] == 2  # customers 1 and 6 (English)


# --- regressions: dry runs tell the truth, bad rows, subjects, stopping -------------------
def test_a_dry_run_after_a_real_run_would_send_nothing(people, templates):
    """It used to ignore the contact history and report every customer again."""
    real = run(people, run_id="run-1")
    dry = run(people, run_id="dry-1", dry_run=True)
    assert real.sent == 3
    assert dry.would_send == {} and dry.already["sent"] == 3
    assert sum(dry.skipped.values()) == sum(real.skipped.values())


def test_a_dry_run_counts_what_a_real_run_then_does(people, templates):
    dry = run(people, run_id="dry-1", dry_run=True)
    assert ledger(people) == {}  # nothing written
    real = run(people, run_id="run-1")
    assert sum(dry.would_send.values()) == real.sent
    assert dry.skipped == real.skipped and dry.failed == real.failed


def _store_raw_birthday(engine, cid: int, text: str) -> None:
    from sqlalchemy import text as sql

    with engine.begin() as conn:  # SQLite keeps any text in a DATE column
        conn.execute(sql("UPDATE customers SET birthday = :b WHERE id = :i"), {"b": text, "i": cid})


@pytest.mark.parametrize("stored", ["2023-02-29", "0000-11-23", "not a date"])
def test_one_unreadable_row_is_that_customers_outcome_not_a_batch_failure(
    people, templates, stored
):
    """It used to fail the whole batch (and the run) on SQLite, without a summary."""
    if people.dialect.name != "sqlite":
        pytest.skip("PostgreSQL refuses such a value on insert")
    from datetime import timedelta

    from tests.factories import add_orders

    add_customer(people, 9, mobile="+447911123459", country="GB")
    for cid in (1, 9):  # both dormant: the win-back campaign selects them
        add_orders(people, cid, [AS_OF - timedelta(days=400)])
    _store_raw_birthday(people, 9, stored)
    result = run(people, campaign="winback")
    rows = ledger(people)
    assert result.selected == 2
    assert rows[1].state == State.SENT  # the rest of the batch goes out
    assert rows[9].state == State.SKIPPED and rows[9].reason == "invalid_data"
    assert "birthday" in rows[9].detail and stored[:10] in rows[9].detail


def test_an_unreadable_date_is_reported_when_the_segment_selects_it(people, templates):
    if people.dialect.name != "sqlite":
        pytest.skip("PostgreSQL refuses such a value on insert")
    # SQLite's date functions read 2026-02-30 as March 2nd; Python cannot
    add_customer(people, 9, mobile="+447911123459", birthday=BDAY)
    _store_raw_birthday(people, 9, "1990-06-01x")
    with people.begin() as conn:
        from sqlalchemy import text as sql

        conn.execute(sql("UPDATE customers SET created_at = 'yesterday' WHERE id = 1"))
    result = run(people)
    rows = ledger(people)
    assert rows[1].state == State.SKIPPED and rows[1].reason == "invalid_data"
    assert "created_at" in rows[1].detail
    assert rows[6].state == State.SENT
    assert result.skipped["invalid_data"] >= 1


def test_a_subject_longer_than_the_ledger_keeps_fails_before_sending(people, templates):
    long = templates / "longsubject"
    long.mkdir()
    (long / "campaign.yaml").write_text(
        "segment: birthday\nchannels: [email]\noccasion: yearly\nmarketing: false\n"
    )
    (long / "email.en.subject.j2").write_text("{{ 'Happy birthday ' * 40 }}")
    (long / "email.en.txt.j2").write_text("Hello {{ name }}")
    result = run(people, campaign="longsubject")
    rows = ledger(people)
    assert rows[5].state == State.FAILED and rows[5].reason == "subject_too_long"
    assert result.sent == 0 and result.failed["subject_too_long"] >= 1
    outbox = Path(load_settings().effective_outbox_dir) / "longsubject"
    assert not outbox.exists()  # nothing went out


def test_recording_never_fails_on_a_long_recipient(engine):
    from careflow.ledger import ContactLedger
    from careflow.messages import Outcome

    add_customer(engine, 1)
    led = ContactLedger(engine)
    claim = led.claim("c", "r", [(1, "2026")])
    cid = claim.owned[(1, "2026")]
    led.mark_sending([cid], "email", "r")
    led.record([Outcome.sent(cid, "p" * 500)], "r", {cid: {"recipient": "x" * 1000}})
    row = ledger(engine)[1]
    assert row.state == State.SENT and len(row.recipient) == 254 and row.recipient.endswith("…")


class CountingChannel:
    """Accepts everything, counts it, and answers as a provider may: an id and, for the
    second message, an error text with a NUL and a lone surrogate in it."""

    name = "sms"

    def __init__(self):
        self.sent = []

    def send_batch(self, messages):
        self.sent += messages
        out = [Outcome.sent(m.contact_id, f"SM\x00{m.contact_id}\udc80" + "x" * 200)
               for m in messages[:1]]  # fmt: skip
        out += [Outcome.failed(m.contact_id, "provider_error:\x0030007",
                               detail="refused: \x00\ud800 " + "y" * 10_000)
                for m in messages[1:]]  # fmt: skip
        return out


@pytest.mark.parametrize("bad", ["Happy birthday\x00", "Happy birthday \udc80"])
def test_a_message_the_ledger_cannot_store_fails_before_sending(people, templates, bad):
    """Regression: on PostgreSQL a rendered message with a NUL character went to the
    channel, then its record failed (PostgreSQL refuses NUL in text), the row stayed
    'sending' and became 'failed: interrupted' with the cause reported nowhere, and a
    retry would send it again. The ledger's limits are checked before sending."""
    nul = templates / "nul"
    nul.mkdir()
    (nul / "campaign.yaml").write_text(
        "segment: birthday\nchannels: [sms]\noccasion: yearly\nmarketing: false\n"
    )
    (nul / "sms.en.j2").write_text("{{ name }}: {{ text }}")
    channel = CountingChannel()
    settings = load_settings()
    spec = load_campaign("nul", settings.templates_dir)
    route = Route.for_run(plan(settings, spec, "run-1", params={}))
    route.channel_factory = lambda name: channel
    original = route.renderer.render_many

    def render_many(requests, *args, **kwargs):  # customer 6 only: the bad text
        return original(
            [
                (campaign, name, locale, {**context, "text": bad})
                if context["customer"]["id"] == 6
                else (campaign, name, locale, {**context, "text": "Happy birthday"})
                for campaign, name, locale, context in requests
            ],
            *args,
            **kwargs,
        )

    route.renderer.render_many = render_many
    result = process_batch(route, (1, 100))
    rows = ledger(people)
    assert rows[6].state == State.FAILED and rows[6].reason == "invalid_content"
    assert "body" in rows[6].detail and ("NUL" in rows[6].detail or "Unicode" in rows[6].detail)
    assert 6 not in {m.customer_id for m in channel.sent}  # never handed to the channel
    assert rows[1].state == State.SENT and result.failed == {"invalid_content": 1}


def test_recording_never_fails_on_what_a_provider_answers(people, templates):
    """Provider ids and error texts are written after the send: a NUL, a lone surrogate
    or a 10,000-character error text must never make that write fail (PostgreSQL
    refused them: the rows became 'failed: interrupted' and the answer was lost)."""
    channel = CountingChannel()
    settings = load_settings()
    spec = load_campaign("fragile", settings.templates_dir)
    people_with_grades(people)
    route = Route.for_run(plan(settings, spec, "run-1"))
    route.channel_factory = lambda name: channel
    result = process_batch(route, (1, 100))
    assert len(channel.sent) == 2 and result.sent == 1
    rows = ledger(people)
    sent, failed = rows[channel.sent[0].customer_id], rows[channel.sent[1].customer_id]
    assert sent.state == State.SENT and sent.provider_id.startswith("SM\ufffd")
    assert len(sent.provider_id) == 128
    assert failed.state == State.FAILED and failed.reason == "provider_error:\ufffd30007"
    assert "\x00" not in failed.detail and len(failed.detail) == 2000


def people_with_grades(engine) -> None:
    with engine.begin() as conn:
        conn.execute(update(ContactHistory.__table__.metadata.tables["customers"])
                     .values(grade="a"))  # fmt: skip


def test_a_stopped_batch_releases_what_it_reserved_for_the_next_run(people, templates):
    import threading

    from careflow.ledger import ContactLedger

    settings = load_settings()
    spec = load_campaign("birthday", settings.templates_dir)
    stop = threading.Event()
    route = Route.for_run(plan(settings, spec, "run-1"), stop)
    claim = route.ledger.claim

    def claim_then_stop(*args, **kwargs):
        claimed = claim(*args, **kwargs)
        stop.set()  # SIGTERM arrived just after the claim: the flow set the stop event
        return claimed

    route.ledger.claim = claim_then_stop
    stopped = process_batch(route, (1, 100))
    # nothing sent; what it holds is counted as what the flow makes of it
    assert stopped.sent == 0 and stopped.skipped["run_stopped"] == 3
    released, interrupted = ContactLedger(people).release("run-1")
    assert interrupted == 0 and released == 3  # the three sendable customers
    assert {r.state for r in ledger(people).values()} == {State.SKIPPED}
    again = run(people, run_id="run-2")  # the next run takes them at once
    assert again.sent == 3


def test_a_batch_starting_after_the_stop_reserves_nobody(people, templates):
    """Regression: a batch queued behind others started after the stop, claimed its
    customers and only then noticed the stop (while the flow was settling)."""
    import threading

    from careflow.flows.route import RunStopped

    settings = load_settings()
    spec = load_campaign("birthday", settings.templates_dir)
    stop = threading.Event()
    stop.set()
    route = Route.for_run(plan(settings, spec, "run-1"), stop)
    with pytest.raises(RunStopped):
        process_batch(route, (1, 100))
    assert ledger(people) == {}

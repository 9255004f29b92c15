"""Held-out customers through the real route and ledger, on SQLite and PostgreSQL: recorded,
never contacted for their occasion, whatever re-runs, retries and the follow-up flow do."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from careflow.campaigns import load_campaign
from careflow.channels.recorder import RecordingChannel
from careflow.db.models import ContactHistory
from careflow.flows.preview import preview_message
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.ledger import ContactLedger, DryRunLedger
from careflow.messages import State
from careflow.policy.holdout import holdout_draw
from careflow.report import summary_markdown
from careflow.settings import PROJECT_ROOT, load_settings
from careflow.uplift import uplift_report
from tests.factories import add_customer

AT = datetime(2026, 6, 1, 12, tzinfo=UTC)  # noon UTC
ALL = (1, 10_000)
SHARE = 0.3


def campaign(root, name, holdout=SHARE):
    folder = root / name
    folder.mkdir()
    (folder / "campaign.yaml").write_text(
        "segment: birthday\nchannels: [sms]\noccasion: yearly\ncategory: marketing\n"
        f"policy:\n  holdout: {holdout}\n  frequency_cap: 'off'\n"
    )
    (folder / "sms.en.j2").write_text(f"{name}: hello {{{{ name }}}}")


@pytest.fixture
def templates(tmp_path, monkeypatch):
    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    campaign(root, "promo")
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    return root


class Clock:
    def __init__(self, now: datetime):
        self.now = now.astimezone(UTC).replace(tzinfo=None)

    def __call__(self) -> datetime:
        return self.now


class Counting:
    """Every message handed to any channel of the test, across runs."""

    def __init__(self):
        self.to: list[int] = []

    def __call__(self, name):
        outer = self

        class Channel(RecordingChannel):
            def send_batch(self, messages):
                outer.to += [m.customer_id for m in messages]
                return super().send_batch(messages)

        return Channel()


def run(name="promo", *, run_id="run-1", now=None, deferred_only=False, dry_run=False,
        channels=None):  # fmt: skip
    settings = load_settings()
    spec = load_campaign(name, settings.templates_dir)
    day = AT.astimezone(ZoneInfo(settings.time_zone)).date()
    run = RunPlan(
        spec=spec, run_id=run_id, as_of=day, at=AT, settings=settings, dry_run=dry_run, now=now,
        deferred_only=deferred_only,
    )  # fmt: skip
    route = Route.for_run(run)
    route.ledger = (DryRunLedger if dry_run else ContactLedger)(
        route.engine, clock=Clock(now or AT)
    )
    if channels is not None:
        route.channel_factory = channels
    result = process_batch(route, ALL)
    DryRunLedger(route.engine).forget(run_id)
    return result


def rows(engine) -> dict[int, object]:
    with engine.connect() as conn:
        return {r.customer_id: r for r in conn.execute(select(ContactHistory.__table__))}


def person(engine, cid, zone="UTC", **kw):
    local = AT.astimezone(ZoneInfo(zone)).date()
    kw.setdefault("mobile", f"+4479111{cid:05d}")
    return add_customer(
        engine, cid, time_zone=zone, country="GB", email=None,
        birthday=date(1990, local.month, local.day), **kw,
    )  # fmt: skip


def held(cids) -> set[int]:
    return {c for c in cids if holdout_draw("promo", c, "2026") < SHARE}


def test_held_out_customers_are_recorded_and_never_sent_across_reruns(engine, templates):
    cids = range(1, 61)
    for cid in cids:
        person(engine, cid)
    expected = held(cids)
    assert 5 < len(expected) < 40  # the fixture holds some out and contacts the rest
    sent = Counting()
    first = run(channels=sent)
    assert first.held_out == len(expected) and first.sent == 60 - len(expected)
    ledger = rows(engine)
    assert {c for c, r in ledger.items() if r.state == State.HELD_OUT} == expected
    assert all(ledger[c].reason == "holdout" and ledger[c].sent_at is None for c in expected)
    assert all(ledger[c].recipient is None and ledger[c].body is None for c in expected)
    assert not set(sent.to) & expected and len(sent.to) == len(set(sent.to))

    # a re-run, and one after the holdout was switched off: held out stays final, like sent
    again = run(run_id="run-2", channels=sent)
    assert again.sent == 0 and again.already == {"sent": 60 - len(expected), "held_out": len(expected)}
    campaign_yaml = templates / "promo" / "campaign.yaml"
    campaign_yaml.write_text(campaign_yaml.read_text().replace(f"holdout: {SHARE}", "holdout: 0"))
    assert run(run_id="run-3", channels=sent).sent == 0
    # a retry an operator releases is for failures: held-out rows are not failures
    assert ContactLedger(engine).allow_retry("promo", "holdout") == 0
    assert run(run_id="run-4", channels=sent).sent == 0
    assert not set(sent.to) & expected and len(sent.to) == 60 - len(expected)


def test_the_holdout_is_drawn_before_quiet_hours_and_the_follow_up_never_sends_it(
    engine, templates
):
    # 08:00 in New York at the run: everyone there is in quiet hours until 13:00 UTC
    cids = range(1, 41)
    for cid in cids:
        person(engine, cid, "America/New_York")
    expected = held(cids)
    sent = Counting()
    first = run(channels=sent)
    assert first.held_out == len(expected) and first.deferred == {"quiet_hours": 40 - len(expected)}
    ledger = rows(engine)
    assert {c for c, r in ledger.items() if r.state == State.HELD_OUT} == expected
    # nothing waits for them, but the row keeps when their message would have gone out
    assert all(ledger[c].not_before == datetime(2026, 6, 1, 13) for c in expected)
    assert ContactLedger(engine).due_deferred(datetime(2026, 6, 2, tzinfo=UTC), 100)[0].count == (
        40 - len(expected)
    )
    # the report compares them only once their contacted twins' morning has come
    before = uplift_report(engine, "promo", window_days=7, shop_zone="UTC",
                           now=datetime(2026, 6, 1, 12, 30))  # fmt: skip
    assert before["waiting"] == {"contacted": 40 - len(expected), "held_out": len(expected)}
    assert before["groups"]["held_out"]["customers"] == 0

    due = datetime(2026, 6, 1, 13, 5, tzinfo=UTC)
    for attempt in range(2):  # the follow-up flow's route, twice: the second sends nothing
        follow = run(run_id=f"follow-{attempt}", now=due, deferred_only=True, channels=sent)
        assert follow.sent == (40 - len(expected) if attempt == 0 else 0)
        assert follow.held_out == 0
    assert set(sent.to) == set(cids) - expected and len(sent.to) == len(set(sent.to))
    assert {r.state for r in rows(engine).values()} == {State.SENT, State.HELD_OUT}
    after = uplift_report(engine, "promo", window_days=7, shop_zone="UTC",
                          now=datetime(2026, 6, 1, 14))  # fmt: skip
    assert after["waiting"] == {"contacted": 0, "held_out": 0}
    assert after["groups"]["held_out"]["customers"] == len(expected)
    assert after["groups"]["contacted"]["customers"] == 40 - len(expected)


def test_customers_who_cannot_be_contacted_are_not_counted_as_held_out(engine, templates):
    cids = range(1, 41)
    for cid in cids:
        person(engine, cid, mobile=None)  # nothing to send to
    result = run()
    assert result.held_out == 0 and result.skipped == {"no_contact": 40}


def test_dry_run_and_preview_show_the_holdout_decision(engine, templates):
    cids = range(1, 41)
    for cid in cids:
        person(engine, cid)
    expected = held(cids)
    dry = run(run_id="dry", dry_run=True)
    assert dry.held_out == len(expected) and sum(dry.would_send.values()) == 40 - len(expected)
    assert any(d["reason"] == "holdout" and d["action"] == "held_out" for d in dry.decisions)
    assert rows(engine) == {}

    settings = load_settings()
    one = min(expected)
    text = preview_message(engine, "promo", one, AT.isoformat(), None, settings)
    assert "would be held out: holdout" in text and "never sends" in text
    # regression: a held-out customer's preview showed no message (and html exited 2)
    assert "as it would have gone" in text and "promo: hello" in text
    assert "holdout 30%" in text and "40 selected" in text
    assert "smallest detectable difference in conversion:" in text
    other = min(set(cids) - expected)
    text = preview_message(engine, "promo", other, AT.isoformat(), None, settings)
    assert "channel: sms" in text and "promo: hello" in text


def test_a_run_summary_states_what_its_split_can_detect(engine, templates, prefect_api,
                                                        real_clock):
    from careflow.flows.campaign import campaign_flow

    for cid in range(1, 41):
        person(engine, cid, external_ref=f"R{cid:03d}")
    summary = campaign_flow(campaign="promo", as_of=AT, dry_run=True)
    split = summary["split"]
    assert split["share"] == SHARE and split["held_out"] == len(held(range(1, 41)))
    assert split["baseline_source"].startswith("default")
    assert split["mde_points"] is not None and split["mde_points"] > 10  # 40 people: coarse
    assert summary["uplift"] is None  # nobody held out yet: nothing to compare

    summary = campaign_flow(campaign="promo", as_of=AT, allow_past=True)
    assert summary["held_out"] == split["held_out"]
    assert summary["uplift"]["groups"]["held_out"]["customers"] == split["held_out"]
    text = summary_markdown(summary)
    # a marketer's words first, the statistics beside them
    assert "**Can this run tell whether the campaign works?** Too few customers to tell " \
        f"whether this campaign works: a difference smaller than {split['mde_points']:.1f} " \
        "points in how many buy would go unnoticed (" in text
    assert "held out (30%); 80% power" in text
    assert "**So far:** Too few customers so far to tell whether this campaign works: " in text
    assert "Did contact pay?" in text and "too few customers to tell" in text
    # who was held out: name and reference beside the id, never an address
    held_line = next(line for line in text.splitlines() if "held_out holdout" in line)
    assert held_line.startswith("- **Customer ") and "(ref R" in held_line
    assert "+4479111" not in text

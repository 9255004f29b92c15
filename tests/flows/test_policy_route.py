"""The contact policy through the real route and ledger, on SQLite and PostgreSQL.

Shared addresses, quiet hours that defer and a follow-up that sends once,
frequency caps across campaigns running at the same time, consent by
category and channel fallback. Clocks are fake: the route takes its
instants (``at``, ``now``) and the ledger its clock.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select, update

from careflow.campaigns import load_campaign
from careflow.db.models import Consent, ContactHistory, Customer
from careflow.flows.preview import preview_message
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.ledger import ContactLedger, DryRunLedger, deferred_summary
from careflow.messages import State
from careflow.settings import PROJECT_ROOT, load_settings
from tests.factories import add_customer

AT = datetime(2026, 6, 1, 12, tzinfo=UTC)  # noon UTC
ALL = (1, 10_000)


def campaign(root, name, category="marketing", channels="[sms, email]", policy=""):
    folder = root / name
    folder.mkdir()
    (folder / "campaign.yaml").write_text(
        f"segment: birthday\nchannels: {channels}\noccasion: yearly\ncategory: {category}\n"
        + (f"policy:\n{policy}" if policy else "")
    )
    (folder / "sms.en.j2").write_text(f"{name}: hello {{{{ name }}}}")
    (folder / "email.en.txt.j2").write_text(f"{name}: hello {{{{ name }}}}")
    (folder / "email.en.subject.j2").write_text(f"{name} for you")


@pytest.fixture
def templates(tmp_path, monkeypatch):
    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    campaign(root, "promo")
    campaign(root, "promo_two")
    campaign(root, "promo_three")
    campaign(root, "greeting", category="care", policy="  one_per_address: false\n")
    campaign(root, "promo_skip", policy="  when_capped: skip\n")
    campaign(root, "promo_email_first", channels="[email, sms]")
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    return root


def person(engine, cid, zone="UTC", at=AT, **kw):
    """A customer whose birthday is the local date at ``at`` in ``zone``: the birthday
    segment selects them."""
    local = at.astimezone(ZoneInfo(zone)).date()
    return add_customer(
        engine, cid, time_zone=zone, birthday=date(1990, local.month, local.day), **kw
    )


class Clock:
    """The ledger's clock, moved by hand."""

    def __init__(self, now: datetime):
        self.now = now.astimezone(UTC).replace(tzinfo=None)

    def __call__(self) -> datetime:
        return self.now


def route_for(name, *, run_id="run-1", at=AT, now=None, dry_run=False, deferred_only=False,
              clock=None, prepared=False):  # fmt: skip
    settings = load_settings()
    spec = load_campaign(name, settings.templates_dir)
    local_day = at.astimezone(ZoneInfo(settings.time_zone)).date()
    run = RunPlan(
        spec=spec, run_id=run_id, as_of=local_day, at=at, settings=settings, dry_run=dry_run,
        now=now, deferred_only=deferred_only,
        params=spec.parameters if prepared else None,  # as segments.prepare gives a run's batches
    )  # fmt: skip
    route = Route.for_run(run)
    clock = clock or Clock(now or at)
    route.ledger = (DryRunLedger if dry_run else ContactLedger)(route.engine, clock=clock)
    return route


def run(name, **kw):
    return process_batch(route_for(name, **kw), ALL)


def rows(engine, name=None) -> dict[int, object]:
    query = select(ContactHistory.__table__)
    if name:
        query = query.where(ContactHistory.campaign == name)
    with engine.connect() as conn:
        return {r.customer_id: r for r in conn.execute(query)}


# --- one address, one message per occasion --------------------------------------------
def test_six_customers_sharing_a_number_get_one_message(engine, templates):
    for cid in range(1, 7):
        person(engine, cid, mobile="+447911123456", email=None, country="GB")
    person(engine, 7, mobile="07911 123456", email="own@example.com", country="GB")  # same no.
    result = run("promo")
    assert result.sent == 2 and result.skipped == {"shared_address": 5}
    ledger = rows(engine)
    assert ledger[1].state == State.SENT and ledger[1].recipient == "+447911123456"
    assert ledger[7].channel == "email"  # their number is taken: their own email instead
    assert "customer 1 shares this sms" in ledger[2].detail
    again = run("promo", run_id="run-2")  # skipped ones are decided again, and skipped again
    assert again.sent == 0 and again.skipped == {"shared_address": 5}


def test_sharing_is_counted_across_batches_and_campaigns_may_opt_out(engine, templates):
    for cid in (1, 500):
        person(engine, cid, mobile="+447911123456", email=None, country="GB")
    first = process_batch(route_for("promo"), (1, 100))
    second = process_batch(route_for("promo"), (101, 1000))
    assert first.sent == 1 and second.skipped == {"shared_address": 1}
    assert run("greeting").sent == 2  # a personal greeting: each customer gets their own


def test_dry_run_counts_shared_addresses_like_the_real_run(engine, templates):
    for cid in (1, 2, 500):
        person(engine, cid, mobile="+447911123456", email=None, country="GB")
    route = route_for("promo", run_id="dry", dry_run=True)
    first = process_batch(route, (1, 100))
    second = process_batch(route, (101, 1000))
    route.ledger.forget("dry")
    assert first.would_send == {"sms": 1} and second.skipped == {"shared_address": 1}
    assert rows(engine) == {}


# --- quiet hours defer; the follow-up sends once ------------------------------------------
ZONES = {
    1: "Europe/London",  # 13:00: sent now
    2: "Asia/Shanghai",  # 20:00: sent now
    3: "America/New_York",  # 08:00: deferred to 09:00 EDT (13:00 UTC)
    4: "Pacific/Kiritimati",  # UTC+14, 02:00: deferred to 09:00 (19:00 UTC)
    5: "Etc/GMT+12",  # UTC-12, 00:00: deferred to 09:00 (21:00 UTC)
    6: "Australia/Sydney",  # 22:00: deferred to 09:00 next day (23:00 UTC)
}
DUE = {
    3: datetime(2026, 6, 1, 13),
    4: datetime(2026, 6, 1, 19),
    5: datetime(2026, 6, 1, 21),
    6: datetime(2026, 6, 1, 23),
}


def add_email(engine, cid):
    with engine.begin() as conn:
        conn.execute(
            update(Customer).where(Customer.id == cid).values(email=f"c{cid}@example.com")
        )


@pytest.fixture
def world(engine):
    for cid, zone in ZONES.items():
        person(engine, cid, zone, mobile=f"+4479111234{cid:02d}", email=None, country="GB")
    return engine


def test_quiet_hours_defer_to_nine_local_and_the_follow_up_sends_each_once(world, templates):
    first = run("promo")
    assert first.sent == 2 and first.deferred == {"quiet_hours": 4}
    ledger = rows(world)
    assert {c: r.not_before for c, r in ledger.items() if r.state == State.DEFERRED} == DUE
    assert ledger[3].recipient == "+447911123403"  # the address it will go to

    # re-running the campaign before anything is due sends nothing and keeps them waiting
    again = run("promo", run_id="run-2", now=AT + timedelta(minutes=30))
    assert again.sent == 0 and again.already == {"sent": 2, "deferred": 4}

    sent_by: Counter = Counter()
    for step, now in enumerate(
        [datetime(2026, 6, 1, 13, 5), datetime(2026, 6, 1, 21, 0), datetime(2026, 6, 2, 6, 0)]
    ):
        for attempt in range(2):  # the follow-up twice at each step: the second sends nothing
            result = run(
                "promo",
                run_id=f"follow-{step}-{attempt}",
                now=now.replace(tzinfo=UTC),
                deferred_only=True,
            )
            sent_by[step] += result.sent
            if attempt:
                assert result.sent == 0
    assert dict(sent_by) == {0: 1, 1: 2, 2: 1}
    ledger = rows(world)
    assert all(r.state == State.SENT for r in ledger.values())
    assert run("promo", run_id="run-3", now=datetime(2026, 6, 2, 7, tzinfo=UTC)).sent == 0


def test_a_campaign_run_also_sends_a_due_deferral_once_and_the_follow_up_then_nothing(
    world, templates
):
    run("promo")
    later = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)  # all due, and day time everywhere
    assert run("promo", run_id="run-2", now=later).sent == 4
    assert run("promo", run_id="follow", now=later, deferred_only=True).selected == 0


def test_a_follow_up_killed_after_claiming_leaves_the_message_to_the_next_one_once(
    world, templates
):
    """Regression: a follow-up that died holding a due message took it out of
    ``deferred`` for good: no later follow-up found it, ``deferred list`` showed
    nothing, and only a campaign run that selected the customer again sent it."""
    run("promo")
    due = datetime(2026, 6, 1, 13, 5, tzinfo=UTC)  # customer 3 is due
    clock = Clock(due)
    dead = route_for("promo", run_id="dead", now=due, deferred_only=True, clock=clock)
    ledger = dead.ledger
    key = (3, "2026")
    claim = ledger.claim("promo", "dead", [key], now=due)  # ...and then the process dies
    assert claim.owned
    pending = {r["reason"]: (r["count"], r["taken"]) for r in deferred_summary(world)}
    assert pending == {"quiet_hours": (4, 1)}  # still listed: taken, not sent
    assert run("promo", run_id="next", now=due, deferred_only=True, clock=clock).sent == 0
    clock.now += timedelta(minutes=16)  # the dead run's lease has passed
    assert [(d.campaign, d.lo, d.count) for d in ledger.due_deferred(due, 100)] == [
        ("promo", 3, 1)
    ]
    taken = route_for("promo", run_id="next", now=due, deferred_only=True, clock=clock)
    assert process_batch(taken, ALL).sent == 1  # the next follow-up takes it over
    assert rows(world)[3].state == State.SENT and rows(world)[3].not_before is None
    assert run("promo", run_id="run-2", now=due, clock=clock).sent == 0
    assert run("promo", run_id="again", now=due, deferred_only=True, clock=clock).selected == 0


def test_a_stopped_follow_up_puts_what_it_took_back_as_due(world, templates):
    """Regression: a follow-up stopped (SIGTERM) released the messages it had taken as
    ``skipped: run_stopped``, which no follow-up looks for: they were never sent."""
    run("promo")
    later = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)  # all four due
    clock = Clock(later)
    ledger = ContactLedger(world, clock=clock)
    keys = [(c, "2026") for c in (3, 4, 5, 6)]
    assert len(ledger.claim("promo", "stopping", keys, now=later).owned) == 4
    assert ledger.release("stopping") == (4, 0)  # the stop's clean-up
    ledger_rows = rows(world)
    assert {ledger_rows[c].state for c in (3, 4, 5, 6)} == {State.DEFERRED}
    assert ledger_rows[3].reason == "quiet_hours" and ledger_rows[3].not_before == DUE[3]
    assert sum(d.count for d in ledger.due_deferred(later, 100)) == 4
    result = run("promo", run_id="next", now=later, deferred_only=True, clock=clock)
    assert result.sent == 4


def deferred_by_an_sms_run(world):
    """Everyone with an email too, deferred (quiet hours) by a ``--channel sms`` run of a
    campaign whose own order puts email first; returns (settings, spec)."""
    for cid in ZONES:
        add_email(world, cid)
    settings = load_settings()
    spec = load_campaign("promo_email_first", settings.templates_dir)
    sms_run = RunPlan(
        spec=spec, run_id="sms-run", as_of=AT.date(), at=AT, settings=settings, only_channel="sms"
    )
    assert process_batch(Route.for_run(sms_run), ALL).deferred == {"quiet_hours": 4}
    return settings, spec


def test_a_message_deferred_by_a_run_limited_to_sms_goes_by_sms(
    prefect_api, world, templates, real_clock
):
    """Regression: the follow-up flow sent messages deferred by a ``--channel sms`` run on
    the campaign's own channel order (email first here)."""
    from careflow.flows.deferred import deferred_flow

    deferred_by_an_sms_run(world)
    later = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)  # all four due
    real_clock.set(later)  # a real follow-up judges send times at the real clock
    [summary] = deferred_flow(as_of=later)
    assert summary["sent"] == 4
    assert {r.channel for r in rows(world).values()} == {"sms"}


def test_a_follow_up_killed_while_sending_never_sends_again(world, templates):
    run("promo")
    due = datetime(2026, 6, 1, 13, 5, tzinfo=UTC)
    clock = Clock(due)
    ledger = ContactLedger(world, clock=clock)
    cid = ledger.claim("promo", "dead", [(3, "2026")], now=due).owned[(3, "2026")]
    ledger.mark_sending([cid], "sms", "dead")  # handed to the provider, then killed
    clock.now += timedelta(minutes=16)
    result = run("promo", run_id="next", now=due, clock=clock)
    assert result.sent == 0 and result.failed == {"interrupted": 1}


def test_dry_run_and_preview_show_when_a_deferred_message_goes(world, templates):
    result = run("promo", dry_run=True, run_id="dry")
    DryRunLedger(world).forget("dry")
    assert result.deferred == {"quiet_hours": 4}
    notes = {d["customer_id"]: d for d in result.decisions}
    assert notes[4]["until"] == "2026-06-01T19:00+00:00"
    assert "Pacific/Kiritimati" in notes[4]["detail"]
    settings = load_settings()
    text = preview_message(world, "promo", 6, AT.isoformat(), None, settings)
    assert "would be deferred: quiet_hours" in text
    assert "until: 2026-06-01 23:00 UTC" in text and "Australia/Sydney" in text
    run("promo")
    text = preview_message(world, "promo", 6, AT.isoformat(), None, settings)
    assert "ledger: deferred (quiet_hours) until 2026-06-01 23:00 UTC" in text


def test_a_deferred_customers_preview_shows_the_message_and_when_it_goes(world, templates):
    """Regression: preview showed no message for a customer the policy defers (quiet hours
    here), only the deferral; the message and the time it would go out, in the customer's
    zone and in UTC, belong side by side."""
    text = preview_message(world, "promo", 6, AT.isoformat(), None, load_settings())
    assert "would be deferred: quiet_hours" in text
    assert "until: 2026-06-01 23:00 UTC (2026-06-02 09:00 Australia/Sydney" in text
    assert "channel: sms to +447911123406" in text
    assert "promo: hello" in text  # the message itself


def test_a_deferred_customers_html_preview_is_the_email_with_its_time(engine, templates):
    """Regression: `preview --format html` exited 2 for a customer who would be deferred."""
    from click.testing import CliRunner

    from careflow.cli.main import main

    person(engine, 9, "Australia/Sydney", email="kai@example.com", country="AU")
    out = CliRunner().invoke(
        main,
        ["preview", "promo_email_first", "--customer", "9", "--as-of", AT.isoformat(),
         "--format", "html"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "promo_email_first: hello" in out.stdout and out.stdout.lstrip().startswith("<")
    assert "would be deferred: quiet_hours" in out.stderr
    assert "until: 2026-06-01 23:00 UTC (2026-06-02 09:00 Australia/Sydney" in out.stderr


# --- frequency caps across campaigns ---------------------------------------------------------
def test_the_cap_counts_across_campaigns_and_defers_until_a_slot_frees(engine, templates):
    person(engine, 1, "Europe/London", mobile="+447911123401", country="GB")
    clock = Clock(AT)
    assert run("promo", clock=clock).sent == 1
    clock.now += timedelta(hours=1)
    assert run("promo_two", clock=clock).sent == 1
    clock.now += timedelta(hours=1)
    # regression: a capped customer's preview showed no message; now it, and when the
    # cap frees a slot
    text = preview_message(
        engine, "promo_three", 1, (AT + timedelta(hours=2)).isoformat(), None, load_settings()
    )
    assert "would be deferred: frequency_cap" in text and "promo_three: hello" in text
    assert "until: 2026-06-08 12:00 UTC (2026-06-08 13:00 Europe/London" in text
    third = run("promo_three", clock=clock, now=AT + timedelta(hours=2))
    assert third.deferred == {"frequency_cap": 1}
    row = rows(engine, "promo_three")[1]
    assert row.not_before == datetime(2026, 6, 8, 12)  # the first one leaves the 7 days
    assert "promo sms to customer 1, sent 2026-06-01 12:00 UTC" in row.detail
    assert "promo_two" in row.detail
    assert run("promo_skip", clock=clock).skipped == {"frequency_cap": 1}
    assert run("greeting", clock=clock).sent == 1  # care bypasses the cap, and is not counted
    later = datetime(2026, 6, 8, 12, 5, tzinfo=UTC)
    clock.now = later.replace(tzinfo=None)
    follow = run("promo_three", run_id="follow", now=later, deferred_only=True, clock=clock)
    assert follow.sent == 1


@pytest.mark.parametrize("rounds", [6])
def test_two_campaigns_running_at_once_never_both_take_the_last_slot(engine, templates, rounds):
    """Each customer has one marketing message this week: one slot left under 2/7d. Two
    campaigns claim at the same moment, again and again; exactly one gets each slot."""
    customers = range(1, 41)
    for cid in customers:
        person(engine, cid, "Europe/London", mobile=f"+4479112{cid:05d}", country="GB")
    run("promo")  # one each: one slot left
    for n in range(rounds):
        barrier = threading.Barrier(2)
        results = {}

        def go(name, n=n, barrier=barrier, results=results):
            route = route_for(name, run_id=f"{name}-{n}", now=AT + timedelta(minutes=n))
            barrier.wait()
            results[name] = process_batch(route, ALL)

        threads = [threading.Thread(target=go, args=(c,)) for c in ("promo_two", "promo_three")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent = sum(r.sent for r in results.values())
        assert n > 0 or sent == len(customers)
        with engine.begin() as conn:  # the next round races from the same start again
            conn.execute(
                ContactHistory.__table__.delete().where(
                    ContactHistory.campaign.in_(["promo_two", "promo_three"])
                )
            )
        assert sent == len(customers), results
        deferred = sum(sum(r.deferred.values()) for r in results.values())
        assert deferred == len(customers)


def test_per_channel_caps_fall_back_to_another_channel(engine, templates, monkeypatch):
    monkeypatch.setenv("CAREFLOW_FREQUENCY_CAP", "1/7d")
    monkeypatch.setenv("CAREFLOW_FREQUENCY_CAP_PER", "channel")
    person(engine, 1, mobile="+447911123401", email="one@example.com", country="GB")
    assert rows(engine) == {} and run("promo").sent == 1
    assert run("promo_two").sent == 1
    assert rows(engine, "promo_two")[1].channel == "email"
    assert run("promo_three").deferred == {"frequency_cap": 1}


# --- consent by category, fallback order ----------------------------------------------------
def consent(engine, cid, channel, category, granted, when):
    with engine.begin() as conn:
        conn.execute(
            insert(Consent.__table__),
            [{"customer_id": cid, "channel": channel, "category": category,
              "granted": granted, "updated_at": when}],
        )  # fmt: skip


def test_consent_by_category_the_later_decision_wins(engine, templates):
    person(engine, 1, mobile="+447911123401", email=None, country="GB")
    consent(engine, 1, "sms", "marketing", False, datetime(2026, 1, 1))
    assert run("promo").skipped == {"opted_out": 1}
    assert run("greeting").sent == 1  # care is another category
    # a later yes for the whole channel (START) outweighs the older marketing no
    consent(engine, 1, "sms", "all", True, datetime(2026, 2, 1))
    assert run("promo", run_id="run-2").sent == 1


def test_opt_in_regime_by_category(engine, templates, monkeypatch):
    monkeypatch.setenv("CAREFLOW_CONSENT_REGIME", "opt_in")
    person(engine, 1, mobile="+447911123401", email="one@example.com", country="GB")
    assert run("promo").skipped == {"no_consent": 1}
    consent(engine, 1, "email", "marketing", True, datetime(2026, 1, 1))
    assert run("promo", run_id="run-2").sent == 1
    assert rows(engine, "promo")[1].channel == "email"  # the only channel with a yes
    assert run("greeting").skipped == {"no_consent": 1}  # a marketing yes is not a care yes


def test_preferred_channel_first_and_fallback_in_the_campaigns_order(engine, templates):
    person(engine, 1, mobile="+447911123401", email="one@example.com", country="GB",
           preferred_channel="email")  # fmt: skip
    person(engine, 2, mobile="+447911123402", email="two@example.com", country="GB")
    person(engine, 3, mobile="+447911123403", email="three@example.com", country="GB",
           preferred_channel="email")  # fmt: skip
    consent(engine, 3, "email", "all", False, datetime(2026, 1, 1))
    run("promo")
    ledger = rows(engine)
    assert (ledger[1].channel, ledger[2].channel, ledger[3].channel) == ("email", "sms", "sms")


def test_a_customer_who_left_the_segment_is_not_sent_by_the_follow_up(world, templates):
    run("promo")
    with world.begin() as conn:  # customer 3's birthday was a typo, fixed since
        conn.execute(
            update(ContactHistory.__table__)
            .where(ContactHistory.customer_id == 3)
            .values(occasion="1999")
        )
    result = run("promo", run_id="follow", now=datetime(2026, 6, 2, 6, tzinfo=UTC),
                 deferred_only=True)  # fmt: skip
    assert result.sent == 3
    assert rows(world)[3].reason == "no_longer_selected"


# --- last_purchase occasions: an address is held since the purchase day, in the shop's zone
@pytest.mark.parametrize(
    ("zone", "first_sent", "held"),
    [
        # 21:00 on 1 June in New York, before the second customer's purchase day
        ("America/New_York", datetime(2026, 6, 2, 1), False),
        # 07:00 on 2 June in Shanghai, the second customer's purchase day
        ("Asia/Shanghai", datetime(2026, 6, 1, 23), True),
    ],
)
def test_a_shared_address_is_held_since_the_purchase_day_in_the_shops_zone(
    engine, templates, monkeypatch, zone, first_sent, held
):
    """Regression: 'any message of the campaign to that address since this customer's
    purchase' compared the UTC date of the earlier message with the purchase day, a day
    of the shop's calendar: west of UTC a message of the evening before the purchase
    held the address (the customer was skipped), east of UTC one of the purchase day's
    morning did not (the address got a second message for it)."""
    from tests.factories import add_orders

    monkeypatch.setenv("CAREFLOW_TIME_ZONE", zone)
    monkeypatch.setenv("CAREFLOW_QUIET_HOURS", "off")
    monkeypatch.setenv("CAREFLOW_SENDING_WINDOWS", "false")
    folder = templates / "comeback"
    folder.mkdir()
    (folder / "campaign.yaml").write_text(
        "segment: dormant\nparameters: {days: 30}\nchannels: [email]\n"
        "occasion: last_purchase\ncategory: marketing\n"
    )
    (folder / "email.en.txt.j2").write_text("come back {{ name }}")
    (folder / "email.en.subject.j2").write_text("we miss you")
    shared = {"email": "family@example.com", "mobile": None}
    add_customer(engine, 1, time_zone=zone, **shared)
    add_orders(engine, 1, [date(2026, 3, 1)])
    add_customer(engine, 2, time_zone=zone, **shared)
    add_orders(engine, 2, [date(2026, 6, 2)])

    def run_at(run_id, at):
        return process_batch(route_for("comeback", run_id=run_id, at=at, prepared=True), ALL)

    first = run_at("run-1", first_sent.replace(tzinfo=UTC))
    assert first.sent == 1 and rows(engine)[1].state == State.SENT  # only 1 is dormant yet
    second = run_at("run-2", datetime(2026, 7, 15, 12, tzinfo=UTC))
    row = rows(engine)[2]
    if held:
        assert second.skipped == {"shared_address": 1} and row.reason == "shared_address"
    else:
        assert second.sent == 1 and row.state == State.SENT


def test_a_deferred_message_in_doubt_and_released_is_sent_by_the_follow_up(world, templates):
    """A follow-up killed while sending leaves the message in doubt; once reconciliation
    (or a person) releases it, the next follow-up sends it: a campaign run might never
    select the customer again."""
    run("promo")
    due = datetime(2026, 6, 1, 13, 5, tzinfo=UTC)
    clock = Clock(due)
    ledger = ContactLedger(world, clock=clock)
    cid = ledger.claim("promo", "dead", [(3, "2026")], now=due).owned[(3, "2026")]
    ledger.mark_sending([cid], "sms", "dead", {cid: ("+447911123403", None, "promo: hi")})
    clock.now += timedelta(minutes=16)
    follow = run("promo", run_id="next", now=due, deferred_only=True, clock=clock)
    assert follow.sent == 0 and follow.failed == {"interrupted": 1}
    assert rows(world)[3].body == "promo: hi"  # what reconciliation matches on
    ledger.allow_retry("promo", "interrupted")  # reconciliation found it never went out
    assert [r["reason"] for r in deferred_summary(world)] == ["interrupted", "quiet_hours"]
    assert run("promo", run_id="last", now=due, deferred_only=True, clock=clock).sent == 1
    assert rows(world)[3].state == State.SENT


def test_a_campaign_run_leaves_a_message_limited_to_sms_to_the_follow_up(world, templates):
    """Regression: a run of the campaign without ``--channel`` took due messages deferred
    by a ``--channel sms`` run and sent them on the campaign's own order (email)."""
    settings, spec = deferred_by_an_sms_run(world)
    later = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)  # all due
    full = RunPlan(
        spec=spec, run_id="full-run", as_of=AT.date(), at=AT, settings=settings, now=later
    )
    result = process_batch(Route.for_run(full), ALL)
    assert result.sent == 0 and result.already == {"sent": 2, "deferred": 4}
    follow = replace(full, run_id="follow", only_channel="sms", deferred_only=True)
    assert process_batch(Route.for_run(follow), ALL).sent == 4
    assert {r.channel for r in rows(world).values()} == {"sms"}

"""Send-time optimisation through the real route and ledger, on SQLite and PostgreSQL: each
message goes once, at the customer's best hour or (the comparison group) at the campaign's
time, says why on its ledger row, is never moved again by the follow-up, and the report's
counts add up."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import event, insert, select

from careflow.campaigns import load_campaign
from careflow.db.models import ContactEvent, ContactHistory, Order
from careflow.flows.preview import preview_message
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.ledger import ContactLedger, DryRunLedger
from careflow.messages import State
from careflow.policy.send_time import BEST, FIXED, arm_of
from careflow.send_time_report import send_time_report
from careflow.settings import PROJECT_ROOT, load_settings
from tests.factories import add_customer
from tests.flows.test_holdout_route import Clock, Counting

AT = datetime(2026, 6, 1, 2, tzinfo=UTC)  # 10:00 in Shanghai
EVENING = datetime(2026, 6, 1, 11, tzinfo=UTC)  # 19:00 in Shanghai: their best hour
ALL = (1, 10_000)
ZONE = "Asia/Shanghai"


def campaign(root, name="promo", quiet="'off'"):
    folder = root / name
    folder.mkdir()
    (folder / "campaign.yaml").write_text(
        "segment: birthday\nchannels: [sms]\noccasion: yearly\ncategory: marketing\n"
        f"policy:\n  holdout: 0\n  frequency_cap: 'off'\n  quiet_hours: {quiet}\n"
        "  send_time: {optimise: true, fixed_share: 0.3}\n"
    )
    (folder / "sms.en.j2").write_text(f"{name}: hello {{{{ name }}}}")


@pytest.fixture
def templates(tmp_path, monkeypatch):
    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    campaign(root)
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    return root




def run(*, run_id="run-1", now=None, deferred_only=False, channels=None, dry_run=False):
    settings = load_settings()
    spec = load_campaign("promo", settings.templates_dir)
    day = AT.astimezone(ZoneInfo(settings.time_zone)).date()
    plan = RunPlan(
        spec=spec, run_id=run_id, as_of=day, at=AT, settings=settings, now=now,
        deferred_only=deferred_only, dry_run=dry_run,
    )  # fmt: skip
    route = Route.for_run(plan)
    route.ledger = (DryRunLedger if dry_run else ContactLedger)(
        route.engine, clock=Clock(now or AT)
    )
    if channels is not None:
        route.channel_factory = channels
    return process_batch(route, ALL)


def rows(engine) -> dict[int, object]:
    with engine.connect() as conn:
        return {r.customer_id: r for r in conn.execute(select(ContactHistory.__table__))}


def person(engine, cid, evenings=3, **kw):
    """A customer in Shanghai whose birthday is today, with ``evenings`` orders at 19:00."""
    local = AT.astimezone(ZoneInfo(ZONE)).date()
    add_customer(
        engine, cid, time_zone=ZONE, country="CN", email=None, mobile=f"1381234{cid:04d}",
        birthday=date(1990, local.month, local.day), **kw,
    )  # fmt: skip
    with engine.begin() as conn:
        for k in range(evenings):  # the shop's clock is UTC: 11:00 is 19:00 in Shanghai
            at = EVENING - timedelta(days=30 * (k + 1))
            conn.execute(
                insert(Order.__table__),
                [{"id": cid * 100 + k, "customer_id": cid, "ordered_at": at.replace(tzinfo=None),
                  "ordered_on": at.date(), "currency": "CNY", "amount_minor": 1000}],
            )  # fmt: skip


def test_best_hour_and_fixed_time_each_go_once_and_the_follow_up_never_moves_again(
    engine, templates
):
    cids = list(range(1, 31))
    for cid in cids:
        person(engine, cid, personal_send_time=False if cid == 30 else None)
    fixed = {c for c in cids[:-1] if arm_of("promo", c, 0.3) == FIXED}
    best = set(cids[:-1]) - fixed
    assert fixed and best
    sent = Counting()
    first = run(channels=sent)
    assert first.sent == len(fixed) + 1 and first.deferred == {"best_hour": len(best)}
    ledger = rows(engine)
    for c in fixed:
        assert ledger[c].state == State.SENT and ledger[c].send_time_arm == FIXED
        assert ledger[c].detail.startswith("the fixed-time comparison group")
    assert ledger[30].state == State.SENT and ledger[30].send_time_arm is None
    assert "personalised send times are off" in ledger[30].detail
    for c in best:
        r = ledger[c]
        assert (r.state, r.reason, r.send_time_arm) == (State.DEFERRED, "best_hour", BEST)
        assert r.not_before == EVENING.replace(tzinfo=None)
        assert r.detail.startswith(
            "their best hour 19:00 Asia/Shanghai (from 3 of their orders, replies and clicks)"
        )

    # the follow-up runs four and a half hours late (23:30 there): it sends, once, and does
    # not move them to tomorrow's 19:00
    late = EVENING + timedelta(hours=4, minutes=30)
    followup = run(run_id="followup-1", now=late, deferred_only=True, channels=sent)
    assert followup.sent == len(best) and not followup.deferred
    ledger = rows(engine)
    for c in best:
        assert ledger[c].state == State.SENT and ledger[c].send_time_arm == BEST
        assert ledger[c].detail.startswith("their best hour 19:00 Asia/Shanghai")
    # a second follow-up and a campaign re-run find nothing to do
    assert run(run_id="followup-2", now=late, deferred_only=True, channels=sent).sent == 0
    assert run(run_id="run-2", now=late, channels=sent).sent == 0
    assert sorted(sent.to) == cids


def test_a_campaign_run_after_the_best_hour_sends_a_due_deferral_without_moving_it(
    engine, templates
):
    for cid in range(1, 11):
        person(engine, cid)
    best = {c for c in range(1, 11) if arm_of("promo", c, 0.3) == BEST}
    run()
    # not the follow-up: a regular run the next morning (09:00 there) takes the due rows
    again = run(run_id="run-2", now=EVENING + timedelta(hours=14))
    assert again.sent == len(best) and not again.deferred


def test_history_is_read_with_one_query_per_batch_whatever_its_size(engine, templates):
    for cid in range(1, 41):
        person(engine, cid, evenings=2)
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        run(dry_run=True, run_id="dry")
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    # one for the batch's histories (orders and answers together), two for the shop's
    # pattern (read here because the plan was not opened with it)
    assert sum("orders" in s and "contact_events" in s for s in statements) == 1
    assert sum("GROUP BY" in s and "orders" in s for s in statements) == 1


def test_replies_and_clicks_count_and_opens_never_do(engine, templates):
    person(engine, 1, evenings=0)
    best = next(c for c in range(2, 500) if arm_of("promo", c, 0.3) == BEST)
    person(engine, best, evenings=0)
    at_8 = datetime(2026, 5, 20, 0, tzinfo=UTC)  # 08:00 in Shanghai
    at_22 = datetime(2026, 5, 20, 14, tzinfo=UTC)  # 22:00
    with engine.begin() as conn:
        conn.execute(insert(ContactEvent.__table__), [
            {"customer_id": best, "kind": kind, "occurred_at": at.replace(tzinfo=None) + timedelta(days=k),
             "provider": "test", "event_id": f"{kind}-{k}"}
            for kind, at in (("replied", at_22), ("clicked", at_22), ("opened", at_8))
            for k in range(6)
        ])  # fmt: skip
    run()
    r = rows(engine)[best]
    assert r.reason == "best_hour" and "best hour 22:00" in r.detail
    assert "from 12 of their orders, replies and clicks" in r.detail


def test_preview_and_dry_runs_say_why_it_goes_at_that_hour(engine, templates):
    settings = load_settings()
    for cid in range(1, 21):
        person(engine, cid)
    fixed = next(c for c in range(1, 21) if arm_of("promo", c, 0.3) == FIXED)
    best = next(c for c in range(1, 21) if arm_of("promo", c, 0.3) == BEST)
    text = preview_message(engine, "promo", fixed, AT.isoformat(), None, settings)
    assert "send time: the fixed-time comparison group" in text
    text = preview_message(engine, "promo", best, AT.isoformat(), None, settings)
    assert "would be deferred: best_hour" in text
    assert "why: their best hour 19:00 Asia/Shanghai (from 3 of their" in text
    dry = run(dry_run=True, run_id="dry")
    notes = [d for d in dry.decisions if d["reason"] == "best_hour"]
    assert notes and notes[0]["detail"].startswith("their best hour 19:00")
    # the sends a dry run samples say why now (`careflow run --dry-run` prints it)
    assert dry.samples and all(
        s["send_time"].startswith("the fixed-time comparison group") for s in dry.samples
    )
    assert not rows(engine)  # a dry run writes nothing


def test_the_reports_counts_add_up_and_conversions_count_by_arm(engine, templates):
    cids = list(range(1, 41))
    for cid in cids:
        person(engine, cid, evenings=1)
    run()
    ledger = rows(engine)
    best = {c for c, r in ledger.items() if r.send_time_arm == BEST}
    fixed = {c for c, r in ledger.items() if r.send_time_arm == FIXED}
    # half of each arm orders within the window
    buyers = set(sorted(best)[::2]) | set(sorted(fixed)[::2])
    with engine.begin() as conn:
        conn.execute(insert(Order.__table__), [
            {"id": 90_000 + c, "customer_id": c, "ordered_at": (AT + timedelta(days=2)).replace(tzinfo=None),
             "ordered_on": (AT + timedelta(days=2)).date(), "currency": "CNY", "amount_minor": 500}
            for c in buyers
        ])  # fmt: skip
    settings = load_settings()
    kw = dict(window_days=settings.attribution_window_days, shop_zone=settings.time_zone)
    waiting = send_time_report(engine, "promo", **kw)
    assert waiting["arms"][BEST]["waiting"] == len(best) and waiting["difference"] is None
    run(run_id="followup", now=EVENING, deferred_only=True)
    found = send_time_report(engine, "promo", **kw)
    b, f = found["arms"][BEST], found["arms"][FIXED]
    assert b["rows"] + f["rows"] == len(cids)
    for arm, group in ((b, best), (f, fixed)):
        assert arm["rows"] == arm["customers"] + arm["waiting"] + arm["not_sent"] == len(group)
        assert arm["converted"] == len(buyers & group)
    assert found["difference"]["ci"][0] < found["difference"]["points"] < found["difference"]["ci"][1]
    # the command line gives the same numbers
    from careflow.cli import main

    out = CliRunner().invoke(main, ["report", "send-time", "promo", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["arms"] == found["arms"]
    text = CliRunner().invoke(main, ["report", "send-time", "promo"])
    assert "best hour" in text.output and "fixed time" in text.output


def test_the_report_commands_docs_policy_md_shows_work_as_written(engine, templates):
    import re
    import shlex

    from careflow.cli import main

    section = (PROJECT_ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    section = section.split("## Send-time optimisation", 1)[1].split("\n## ", 1)[0]
    commands = [
        shlex.split(line)[1:]
        for block in re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
        for line in block.splitlines()
        if line.startswith("careflow ")
    ]
    assert len(commands) == 2
    for words in commands:
        out = CliRunner().invoke(main, words)
        assert out.exit_code == 0 and "Traceback" not in out.output, (words, out.output)
    # a misspelt campaign is one line, no traceback
    out = CliRunner().invoke(main, ["report", "send-time", "winbak"])
    assert out.exit_code != 0 and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_a_held_out_twin_would_have_gone_at_its_best_hour(engine, templates):
    yaml = templates / "promo" / "campaign.yaml"
    yaml.write_text(yaml.read_text().replace("holdout: 0\n", "holdout: 0.5\n"))
    for cid in range(1, 41):
        person(engine, cid)
    run()
    held = [r for r in rows(engine).values() if r.state == State.HELD_OUT]
    best = [r for r in held if arm_of("promo", r.customer_id, 0.3) == BEST]
    assert best and all(r.send_time_arm is None for r in held)  # never sent: in no arm
    # so the holdout comparison waits for both at the same hour (careflow/uplift.py)
    assert all(r.not_before == EVENING.replace(tzinfo=None) for r in best)
    assert all("would have been sent at 2026-06-01 11:00 UTC" in r.detail for r in best)


def test_a_customer_without_history_gets_the_shops_hour_in_their_own_zone(engine, templates):
    # the shop's clock is UTC; its customers order at 11:00 UTC, 19:00 in Shanghai
    for cid in range(1, 21):
        person(engine, cid)
    new = next(c for c in range(21, 500) if arm_of("promo", c, 0.3) == BEST)
    person(engine, new, evenings=0)
    london = next(c for c in range(new + 1, 900) if arm_of("promo", c, 0.3) == BEST)
    local = AT.astimezone(ZoneInfo("Europe/London")).date()
    add_customer(engine, london, time_zone="Europe/London", country="GB", email=None,
                 mobile="+447911123456", birthday=date(1990, local.month, local.day))  # fmt: skip
    run()
    ledger = rows(engine)
    assert ledger[new].not_before == EVENING.replace(tzinfo=None)
    assert ledger[new].detail.startswith(
        "the shop's best hour 19:00 Asia/Shanghai (from none of their own yet)"
    )
    # the shop's pattern is in each customer's own hours: 19:00 in London, not 19:00 UTC
    assert ledger[london].not_before == datetime(2026, 6, 1, 18)  # 19:00 BST
    assert "the shop's best hour 19:00 Europe/London" in ledger[london].detail


def test_the_shops_pattern_is_read_once_when_the_run_opens_and_its_batches_reuse_it(
    engine, templates
):
    import logging

    from careflow.flows.campaign import open_run

    for cid in range(1, 11):
        person(engine, cid, evenings=2)
    settings = load_settings()
    spec = load_campaign("promo", settings.templates_dir)
    plan = RunPlan(spec=spec, run_id="opened", as_of=AT.date(), at=AT, settings=settings,
                   dry_run=True)  # fmt: skip
    plan, _ = open_run(engine, plan, logging.getLogger("test"))
    # twenty orders at 19:00 Shanghai, in the customers' own hours
    assert plan.shop_send_hours[19] == 20 and sum(plan.shop_send_hours) == 20
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        route = Route.for_run(plan, engine=engine)
        route.ledger = DryRunLedger(engine, clock=Clock(AT))
        for lo in (1, 6):  # two batches
            process_batch(route, (lo, lo + 4))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert sum("GROUP BY" in s and "orders" in s for s in statements) == 0
    assert sum("orders" in s and "contact_events" in s for s in statements) == 2


def test_the_report_as_a_page_with_charts(engine, templates, tmp_path):
    import re

    from careflow.cli import main

    for cid in range(1, 21):
        person(engine, cid, evenings=1)
    run()
    run(run_id="followup", now=EVENING, deferred_only=True)
    best = sorted(c for c, r in rows(engine).items() if r.send_time_arm == BEST)
    with engine.begin() as conn:  # every other best-hour customer orders two days on
        conn.execute(insert(Order.__table__), [
            {"id": 90_000 + c, "customer_id": c, "ordered_at": (AT + timedelta(days=2)).replace(tzinfo=None),
             "ordered_on": (AT + timedelta(days=2)).date(), "currency": "CNY", "amount_minor": 500}
            for c in best[::2]
        ])  # fmt: skip
    page = tmp_path / "promo.html"
    out = CliRunner().invoke(main, ["report", "send-time", "promo", "--html", str(page)])
    assert out.exit_code == 0, out.output
    assert f"wrote {page}" in out.output
    html = page.read_text()
    assert html.count("<svg") == 2  # conversion per arm, the difference
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']?https?:|url\(|@import""", html)
    found = send_time_report(engine, "promo", window_days=30, shop_zone="UTC")
    bought = f"best hour: {len(best[::2])} of {found['arms'][BEST]['customers']} bought"
    assert bought in html and "fixed time" in html and "best - fixed" in html
    assert found["verdict"].split(" (")[0] in html


def test_a_real_run_publishes_the_report_as_an_artifact(prefect_api, engine, templates,
                                                        real_clock):  # fmt: skip
    from prefect.artifacts import Artifact

    from careflow.flows.campaign import campaign_flow

    for cid in range(1, 11):
        person(engine, cid)
    real_clock.set(AT)
    def latest():  # the Prefect server is the session's: another test may have published
        page = Artifact.get("promo-send-time")
        return page and str(page.flow_run_id)

    dry = campaign_flow(campaign="promo", as_of="2026-06-01", dry_run=True)
    assert latest() != dry["run_id"], "a dry run publishes nothing"
    real = campaign_flow(campaign="promo", as_of="2026-06-01")
    assert latest() == real["run_id"]
    page = Artifact.get("promo-send-time")
    assert page.type == "markdown"
    assert "## promo: does the best hour pay?" in page.data
    assert "| best hour |" in page.data and "| fixed time |" in page.data
    assert page.data.count("(data:image/svg+xml;base64,") == 2  # the charts, as images

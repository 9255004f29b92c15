"""Issue 23's "done when" for the preference centre: a customer opens the centre from a
real outbox email, in either language, pauses marketing for a month, and the next run's
dry run says why they are skipped."""

from __future__ import annotations

import email
import email.policy
import json
import re
import urllib.parse
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from careflow.cli.main import main
from careflow.flows.route import process_batch
from careflow.ledger import DryRunLedger
from careflow.settings import load_settings
from tests.flows.test_policy_route import ALL, person, route_for, templates  # noqa: F401
from tests.service.test_preference_centre import get, post

LINK = re.compile(r"https?://[^\s\"<>]+/p/([A-Za-z0-9_-]{31})")


def link_in(message_file) -> str:
    """The preference-centre link in an .eml file, from its text part as a reader sees it."""
    parsed = email.message_from_bytes(message_file.read_bytes(), policy=email.policy.default)
    text = parsed.get_body(preferencelist=("plain",)).get_content()
    found = LINK.search(text)
    assert found, text
    return found.group(0)


@pytest.mark.usefixtures("templates")
def test_open_the_centre_from_an_outbox_email_pause_a_month_and_the_dry_run_says_why(
    served, engine, monkeypatch
):
    # the links are signed at the wall clock, so the run is judged at it too: without
    # quiet hours, or the evening's suite would defer the first email (a regression seen
    # at 22:26 UTC)
    monkeypatch.setenv("CAREFLOW_QUIET_HOURS", "off")
    now = datetime.now(UTC).replace(microsecond=0)
    served.clock.now = now  # the service's clock: the links were issued just now
    person(engine, 1, at=now, email="ann@example.com", mobile="+447911123401",
           locale="en", country="GB")
    person(engine, 2, at=now, email="wang@example.com", mobile="+447911123402",
           locale="zh-CN", country="GB", birthday_calendar="solar")
    person(engine, 3, at=now, email="bob@example.com", mobile="+447911123403",
           locale="en", country="GB")
    first = process_batch(route_for("promo_email_first", at=now, run_id="first"), ALL)
    assert first.sent == 3
    outbox = load_settings().effective_outbox_dir / "promo_email_first" / "email"
    pages = {}
    for cid, words, paused in ((1, "Offers and news are paused until", "Pause until a date"),
                               (2, "优惠与资讯已暂停", "暂停至指定日期")):
        [eml] = outbox.glob(f"{cid}-*.eml")
        link = link_in(eml)
        # the email's link points at careflow serve; here it listens on a loopback port
        url = served.url + urllib.parse.urlsplit(link).path
        code, page = get(url)
        assert code == 200 and 'name="cadence"' in page
        until = (now + timedelta(days=31)).date().isoformat()
        code, page = post(url, [
            ("shown", "email,sms"), ("c.care.email", "on"), ("c.care.sms", "on"),
            ("c.marketing.email", "on"), ("c.marketing.sms", "on"),
            ("cadence", "paused"), ("until", until), ("action", "save"),
        ])
        assert code == 200 and f"{paused}: {until}" in page
        pages[cid] = get(url)[1]
        assert words in pages[cid]
    # the next marketing run, rehearsed: the two who paused are skipped, and it says why
    dry = process_batch(route_for("promo", at=now, run_id="next-dry", dry_run=True), ALL)
    DryRunLedger(engine).forget("next-dry")
    assert dry.skipped == {"paused": 2} and sum(dry.would_send.values()) == 1
    why = {d["customer_id"]: d["detail"] for d in dry.decisions if d["reason"] == "paused"}
    assert set(why) == {1, 2}
    assert all("paused marketing until" in detail for detail in why.values())
    # careflow consent show lists each pause with its evidence: the link's token id
    for cid, locale in ((1, "en"), (2, "zh-CN")):
        shown = CliRunner().invoke(main, ["consent", "show", str(cid), "--json"])
        assert shown.exit_code == 0, shown.output
        [pause] = [r for r in json.loads(shown.output)["records"] if r["cadence"]]
        assert pause["cadence"]["after"].startswith(f"paused until {until}")
        assert pause["source"] == "page" and pause["locale"] == locale
        assert pause["evidence"]["token_id"]

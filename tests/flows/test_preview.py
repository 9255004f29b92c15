"""Preview as the customer sees it (HTML email, fax PDF), and test sends that stay tests."""

from __future__ import annotations

import email
import re
from datetime import date, timedelta
from email import policy
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from careflow.channels.outbox import OutboxChannel
from careflow.cli.main import main
from careflow.db.models import ContactHistory, Customer
from careflow.flows.preview import (
    PREVIEW_TOKEN,
    TEST_CUSTOMER_REF,
    key_for_test_sends,
    preview_html,
    send_test,
    walk_route,
)
from careflow.ledger import ContactLedger
from careflow.messages import State
from careflow.settings import load_settings
from careflow.unsubscribe import UnsubscribeTokens, local_tokens
from tests.factories import add_customer, add_orders
from tests.providers.fault_server import FaultServer
from tests.providers.kit import UNSUB_SECRET, live_settings

AS_OF = date(2026, 11, 22)


@pytest.fixture
def dormant(engine):
    """Customer 7, dormant for 200 days: in winback's segment, email first."""
    add_customer(engine, 7, given_name="Mei", fax="+862155550100", owner="Chen Jie")
    add_orders(engine, 7, [AS_OF - timedelta(days=200)])
    return 7


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# --- preview ------------------------------------------------------------------------------
def test_html_preview_is_the_email_the_outbox_holds(engine, dormant, tmp_path):
    """`--format html` shows what a mail client shows: the same HTML the outbox writes,
    footer and unsubscribe link in place; only the link's token does not work."""
    out = cli("preview", "winback", "--customer", dormant, "--as-of", AS_OF, "--format", "html")
    assert out.exit_code == 0, out.output
    page = out.output
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "<h1>We miss you, Mei</h1>" in page and "Unsubscribe from these emails" in page
    assert f"unsubscribe?token={PREVIEW_TOKEN}" in page and "%unsubscribe_url%" not in page

    settings = load_settings()
    found = walk_route(engine, "winback", dormant, str(AS_OF), "email", settings)
    [outcome] = OutboxChannel.from_settings(settings).send_batch([found.message])
    eml = settings.effective_outbox_dir / outcome.provider_id.removeprefix("outbox:")
    mail = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    sent = mail.get_body(("html",)).get_content()
    # the preference centre's link (careflow/preferences.py) carries a token of its own
    assert "/p/" in page and "/p/" in sent

    def tokens_out(html: str) -> str:
        return re.sub(r"/p/[\w-]{31}", "/p/TOKEN", html)

    sent = re.sub(r"token=[\w.-]+", f"token={PREVIEW_TOKEN}", sent)
    assert tokens_out(sent) == tokens_out(page.rstrip("\n") + "\n")


def test_html_preview_of_a_text_only_email(engine, dormant, tmp_path, monkeypatch):
    import shutil

    from careflow.settings import PROJECT_ROOT

    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    (root / "winback" / "email.en.html.j2").unlink()
    (root / "winback" / "email.zh-CN.html.j2").unlink()
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    page = preview_html(engine, "winback", dormant, str(AS_OF), load_settings())
    assert "<pre" in page and "Hi Mei," in page and "Unsubscribe: http" in page


def test_pdf_preview_is_the_fax(engine, dormant, tmp_path):
    out_file = tmp_path / "fax.pdf"
    args = ["preview", "vip_care", "--customer", dormant, "--as-of", AS_OF, "--format", "pdf"]
    out = cli(*args, "--out", out_file)
    assert out.exit_code == 0, out.output
    assert out_file.read_bytes().startswith(b"%PDF") and f"wrote {out_file}" in out.output
    needs_file = cli(*args)
    assert needs_file.exit_code == 2 and "add --out FILE.pdf" in needs_file.output


def test_format_and_channel_must_agree(engine, dormant):
    out = cli("preview", "winback", "--customer", dormant, "--format", "html", "--channel", "sms")
    assert out.exit_code == 2 and "--format html shows the email" in out.output


def test_previewing_a_channel_the_campaign_has_no_template_for_is_an_error(engine, dormant):
    """It used to exit 0 with 'would fail: template_error'."""
    out = cli("preview", "winback", "--customer", dormant, "--as-of", AS_OF, "--channel", "fax")
    assert out.exit_code == 2
    assert "campaign 'winback' has no fax template in templates/winback/" in out.output


def test_a_customer_without_the_channel_gets_a_one_line_reason(engine):
    add_customer(engine, 8, email=None, mobile="+8613812345678")
    add_orders(engine, 8, [AS_OF - timedelta(days=200)])
    out = cli("preview", "winback", "--customer", 8, "--as-of", AS_OF, "--format", "html")
    assert out.exit_code == 2
    assert "customer 8 would get no email: would be skipped: no_contact" in out.output


# --- test sends ---------------------------------------------------------------------------
def _rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(ContactHistory)).mappings().all()


def _test_customer(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(Customer.id).where(Customer.external_ref == TEST_CUSTOMER_REF)
        ).scalar_one()


def test_a_test_send_goes_through_the_outbox_and_is_recorded_as_a_test(engine, tmp_path):
    out = cli("test-send", "winback", "--to", "Me@Example.com", "--as-of", AS_OF)
    assert out.exit_code == 0, out.output
    assert (
        "sent a test email of winback to Me@example.com (outbox:test_winback/email/" in out.output
    )
    assert "rendered for sample customer (en, every field)" in out.output

    [row] = _rows(engine)
    tester = _test_customer(engine)
    assert (row["campaign"], row["customer_id"], row["state"]) == ("test:winback", tester, "sent")
    assert row["recipient"] == "Me@example.com" and row["occasion"].startswith("test-")
    assert "test send of winback to Me@example.com" in row["detail"]

    eml = load_settings().effective_outbox_dir / row["provider_id"].removeprefix("outbox:")
    mail = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert mail["To"] == "Me@example.com" and mail["Subject"] == "We miss you, Ada"
    assert "Unsubscribe from these emails" in mail.get_body(("html",)).get_content()
    # what the test address does with the link lands on the test record, never a customer
    token = parse_qs(urlsplit(mail["List-Unsubscribe"].strip("<>")).query)["token"][0]
    asked = local_tokens(load_settings()).verify(token)
    assert (asked.customer_id, asked.campaign) == (tester, "test:winback")

    history = cli("history", tester)
    assert "test:winback email  (test send)" in history.output
    assert "why:" not in history.output


def test_a_test_send_with_a_customers_data_never_counts_as_their_message(engine, dormant):
    out = cli("test-send", "winback", "--to", "me@example.com", "--customer", dormant,
              "--as-of", AS_OF)  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "rendered for customer 7" in out.output and "subject: We miss you, Mei" in out.output
    [row] = _rows(engine)
    assert row["customer_id"] != dormant and row["campaign"] == "test:winback"
    assert "winback" not in cli("history", dormant).output  # only their order
    # the real send is not blocked: the route would still send customer 7 their occasion
    found = walk_route(engine, "winback", dormant, str(AS_OF), None, load_settings())
    assert not any(line.startswith("ledger:") for line in found.lines)
    assert found.message is not None and found.message.campaign == "winback"
    claim = ContactLedger(engine).claim("winback", "run-1", [(dormant, found.message.occasion)])
    assert list(claim.owned) == [(dormant, found.message.occasion)]


def test_a_customer_outside_the_segment_gets_sample_columns(engine):
    add_customer(engine, 9, given_name="Lin")  # no orders: not dormant
    done = send_test(engine, "winback", "me@example.com", load_settings(), customer_id=9,
                     as_of=str(AS_OF))  # fmt: skip
    assert done.outcome.state == State.SENT and "Hi Lin," in done.body
    assert "not in segment 'dormant'" in done.rendered_for


def test_a_test_sms_in_chinese_carries_the_opt_out_line(engine):
    out = cli("test-send", "winback", "--to", "13812345678", "--locale", "zh-CN", "--as-of", AS_OF)
    assert out.exit_code == 0, out.output
    assert "sent a test sms of winback to +8613812345678" in out.output
    [row] = _rows(engine)
    assert row["body"].startswith("【Lotus & Pine】李娜，好久不见") and row["body"].endswith(
        "回复TD退订"
    )


def test_a_test_fax_is_the_pdf(engine):
    done = send_test(engine, "vip_care", "+862155550100", load_settings(), channel="fax",
                     as_of=str(AS_OF))  # fmt: skip
    assert done.outcome.provider_id.endswith(".pdf")
    path = load_settings().effective_outbox_dir / done.outcome.provider_id.removeprefix("outbox:")
    assert path.read_bytes().startswith(b"%PDF")


def test_test_sends_repeat_and_share_one_record(engine):
    for _ in range(2):
        assert cli("test-send", "birthday", "--to", "me@example.com").exit_code == 0
    rows = _rows(engine)
    assert len(rows) == 2 and len({r["occasion"] for r in rows}) == 2
    assert len({r["customer_id"] for r in rows}) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--to", "not-an-address@"], "--to: invalid email 'not-an-address@'"),
        (["--to", "12"], "--to: not a valid phone number: '12' (the sms channel sends to"),
        (["--to", "me@example.com", "--channel", "fax"], "has no fax template"),
        (["--to", "me@example.com", "--customer", "404"], "--customer 404: no such customer"),
    ],
)
def test_test_send_refuses_with_one_line(engine, args, message):
    out = cli("test-send", "birthday", *args)
    assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output
    assert _rows(engine) == []


def test_a_test_send_goes_live_through_the_provider(engine):
    """CAREFLOW_DELIVERY=live: the test goes to the provider, as a test."""
    with FaultServer() as server:
        settings = live_settings(server.base_url)
        done = send_test(engine, "winback", "me@example.com", settings, as_of=str(AS_OF))
        [body] = server.bodies
    assert done.outcome.state == State.SENT and server.accepted["me@example.com"] == 1
    assert body["personalizations"][0]["to"] == [{"email": "me@example.com"}]
    assert body["categories"] == ["test:winback"]
    unsubscribe = body["personalizations"][0]["headers"]["List-Unsubscribe"]
    token = parse_qs(urlsplit(unsubscribe.strip("<>")).query)["token"][0]
    assert UnsubscribeTokens(UNSUB_SECRET).verify(token).customer_id == _test_customer(engine)
    [row] = _rows(engine)
    assert row["provider_id"] == done.outcome.provider_id and row["campaign"] == "test:winback"


def test_the_test_key_fits_the_ledger_column():
    assert key_for_test_sends("winback") == "test:winback"
    long = "a" * 64
    key = key_for_test_sends(long)
    assert len(key) <= 64 and key.startswith("test:") and key != key_for_test_sends("a" * 63 + "b")

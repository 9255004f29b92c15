"""The outbox holds exactly what a provider would receive."""

from __future__ import annotations

import email
import errno
import os
from email import policy
from urllib.parse import parse_qs, urlsplit

import pytest

from careflow.channels.outbox import OutboxChannel
from careflow.errors import ChannelDown
from careflow.messages import State
from careflow.settings import load_settings
from careflow.unsubscribe import local_tokens
from tests.providers.kit import make_message


def test_email_is_the_mime_message_with_both_parts_and_one_click_headers(tmp_path, monkeypatch):
    """It used to hold the text part only: no HTML, no unsubscribe footer or headers."""
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path / "home"))
    settings = load_settings()
    outbox = OutboxChannel.from_settings(settings)
    msg = make_message(7, "email", "wang@example.com", marketing=True, locale="zh-CN")
    [outcome] = outbox.send_batch([msg])
    path = settings.effective_outbox_dir / outcome.provider_id.removeprefix("outbox:")
    assert path.suffix == ".eml"
    mail = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert mail["To"] == "wang@example.com" and mail["Subject"] == "生日快乐"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "顾客7" in text and "退订" in text and "退订</a>" in html
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = mail["List-Unsubscribe"].strip("<>")
    token = parse_qs(urlsplit(url).query)["token"][0]
    # the link works with the key a local `careflow serve` uses
    asked = local_tokens(load_settings()).verify(token)
    assert (asked.customer_id, asked.campaign) == (7, "birthday")


def test_an_email_reads_back_as_written_whatever_its_text(tmp_path):
    """The outbox writes its MIME messages itself (the standard library's took 1.7 ms
    each). A mail client must read back what was meant: a Chinese sender name and
    subject, an HTML line too long for SMTP, text without a final line break, a
    subject a template broke over lines."""
    minified = "<html><body>" + "<p>九折</p>" * 400 + "</body></html>"  # one 4,000-byte line
    outbox = OutboxChannel(tmp_path / "outbox", from_email="care@example.com", from_name="花店 关怀")
    msg = make_message(
        5, "email", "li@example.com", marketing=False, html=minified,
        body="第一行\n第二行", subject="您好，\n  老朋友",
    )  # fmt: skip
    [outcome] = outbox.send_batch([msg])
    raw = (tmp_path / "outbox" / outcome.provider_id.removeprefix("outbox:")).read_bytes()
    assert max(len(line) for line in raw.splitlines()) <= 998
    mail = email.message_from_bytes(raw, policy=policy.default)
    assert mail["From"].addresses[0].display_name == "花店 关怀"
    assert mail["From"].addresses[0].addr_spec == "care@example.com"
    assert mail["Subject"] == "您好， 老朋友" and mail["X-Careflow-Key"] == msg.key
    assert mail.get_body(("plain",)).get_content() == "第一行\n第二行\n"
    assert mail.get_body(("html",)).get_content() == minified + "\n"
    assert not mail.defects and all(not part.defects for part in mail.walk())


def test_care_email_has_no_unsubscribe_footer(tmp_path, monkeypatch):
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path / "home"))
    outbox = OutboxChannel.from_settings(load_settings())
    [outcome] = outbox.send_batch([make_message(1, "email", "a@example.com", marketing=False)])
    mail = email.message_from_bytes(
        (tmp_path / "home" / "outbox" / outcome.provider_id.removeprefix("outbox:")).read_bytes(),
        policy=policy.default,
    )
    assert "List-Unsubscribe" not in mail


def test_fax_is_the_pdf(tmp_path, monkeypatch):
    """It used to be a .txt of the text, not the pages a fax provider gets."""
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path / "home"))
    outbox = OutboxChannel.from_settings(load_settings())
    [outcome] = outbox.send_batch([make_message(3, "fax", "+862112345678")])
    path = tmp_path / "home" / "outbox" / outcome.provider_id.removeprefix("outbox:")
    assert path.suffix == ".pdf" and path.read_bytes().startswith(b"%PDF")


def test_a_folder_removed_during_a_run_is_made_again(tmp_path):
    """The outbox makes each folder once per channel, not once per message; a folder a
    person clears away mid-run must not turn the rest of the run into write errors."""
    import shutil

    outbox = OutboxChannel(tmp_path / "outbox")
    first = outbox.send_batch([make_message(1, "sms", "+8613800000001")])
    shutil.rmtree(tmp_path / "outbox")
    second = outbox.send_batch([make_message(2, "sms", "+8613800000002")])
    for [outcome] in (first, second):
        assert outcome.state == "sent"
    path = tmp_path / "outbox" / second[0].provider_id.removeprefix("outbox:")
    assert path.read_text(encoding="utf-8").startswith("To: +8613800000002")


@pytest.mark.parametrize(
    "code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO, errno.EMFILE]
)
def test_a_fault_of_the_outbox_stops_the_channel_and_leaves_no_file(tmp_path, monkeypatch, code):
    """Regression: every later message failed one by one (not retryable), and the file
    being written stayed behind empty or cut short. A fault that would fail every
    message stops the channel at the first one; it is retryable (it did not go out);
    the messages after it have no outcome (the run leaves them to the next run)."""
    from careflow.channels import outbox

    real, writes = os.write, []

    def write(fd, data):
        writes.append(fd)
        if len(writes) == 3:
            real(fd, bytes(data[:10]))  # a part of it, then the fault
            raise OSError(code, os.strerror(code))
        return real(fd, data)

    monkeypatch.setattr(outbox.os, "write", write)
    outbox = OutboxChannel(tmp_path / "outbox")
    messages = [make_message(i, "sms", f"+86138000000{i:02d}") for i in range(6)]
    with pytest.raises(ChannelDown, match=os.strerror(code)) as down:
        outbox.send_batch(messages)
    assert [(o.state, o.retryable) for o in down.value.outcomes] == [
        (State.SENT, False), (State.SENT, False), (State.FAILED, True),
    ]  # fmt: skip
    files = [p for p in (tmp_path / "outbox").rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["0-2026.txt", "1-2026.txt"]


def test_a_fault_of_one_message_fails_that_message_only(tmp_path):
    """A name the file system refuses is that message's problem, not the outbox's."""
    outbox = OutboxChannel(tmp_path / "outbox")
    long = make_message(1, "sms", "+8613800000001", occasion="x" * 300)
    fine = make_message(2, "sms", "+8613800000002")
    bad, good = outbox.send_batch([long, fine])
    assert (bad.state, bad.reason, bad.retryable) == (State.FAILED, "outbox_write_error", False)
    assert good.state == State.SENT


def test_without_files_every_message_is_built_and_reported_but_nothing_is_written(
    tmp_path, monkeypatch
):
    """CAREFLOW_OUTBOX_FILES=false (what a simulation's days run with): the same outcomes,
    provider ids included, and a message that cannot be built still fails; no file."""
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CAREFLOW_OUTBOX_FILES", "false")
    settings = load_settings()
    outbox = OutboxChannel.from_settings(settings)
    monkeypatch.setattr("careflow.channels.fax.find_cjk_font", _no_font)
    sms = make_message(7, "sms", "+447911100007")
    mail = make_message(8, "email", "li@example.com", marketing=True)
    fax = make_message(9, "fax", "+442071838750")
    sent_sms, sent_mail, no_fax = outbox.send_batch([sms, mail, fax])
    assert (sent_sms.state, sent_mail.state) == (State.SENT, State.SENT)
    assert sent_sms.provider_id == "outbox:birthday/sms/7-2026.txt"
    assert sent_mail.provider_id.endswith(".eml")
    assert (no_fax.state, no_fax.reason) == (State.FAILED, "fax_font_missing")
    assert not settings.effective_outbox_dir.exists()


def _no_font(path=None):
    from careflow.errors import ConfigError

    raise ConfigError("no CJK font")

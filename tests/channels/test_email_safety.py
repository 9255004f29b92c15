"""Customer data in an email stays data: it cannot bend the headers or move the unsubscribe link.

A name may hold control characters, bidi overrides and line breaks (a header
injection), or the very placeholder a template writes where the unsubscribe
link goes. The subject and sender name come out as one clean line, and the
link goes where the template put it (or in the footer), never into the name.
"""

from __future__ import annotations

import email
import re
from datetime import date
from email import policy

from careflow.campaigns import load_campaign
from careflow.channels.email import SendGridEmail
from careflow.channels.outbox import OutboxChannel
from careflow.flows.preview import segment_sample
from careflow.flows.route import render_message
from careflow.messages import Message
from careflow.rendering import Renderer
from careflow.settings import load_settings
from tests.providers.fault_server import FaultServer
from tests.providers.kit import live_settings, make_message

DAY = date(2026, 11, 22)
HOSTILE = "%unsubscribe_url% Ann\x1b]8;;https://evil.example/\x07\u202eeciovni\u2066\r\nBcc: x@evil.example"
ACTIVE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _outbox_mail(tmp_path, monkeypatch, name: str):
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("CAREFLOW_SENDGRID_FROM_NAME", "Lotus\u202e & Pine\x1b[0m\r\nBcc: y@evil.example")
    settings = load_settings()
    spec = load_campaign("winback", settings.templates_dir)
    customer = {"id": 5, "full_name": name, "given_name": name, "family_name": None,
                "locale": "en", "email": "ann@example.com", "grade": "A", "owner": None}
    row = {**segment_sample(spec, DAY), **customer}
    rendered = render_message(spec, Renderer.from_settings(settings), settings, row, "email", DAY)
    message = Message(
        contact_id=1, campaign="winback", customer_id=5, occasion="2026", channel="email",
        to="ann@example.com", body=rendered.body, subject=rendered.subject,
        html=rendered.html, locale="en", marketing=True,
    )  # fmt: skip
    [outcome] = OutboxChannel.from_settings(settings).send_batch([message])
    path = tmp_path / "outbox" / outcome.provider_id.removeprefix("outbox:")
    return email.message_from_bytes(path.read_bytes(), policy=policy.default)


def test_a_name_holding_the_placeholder_keeps_the_footer(tmp_path, monkeypatch):
    mail = _outbox_mail(tmp_path, monkeypatch, HOSTILE)
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    link = "http://127.0.0.1:8080/unsubscribe?token=v2."
    # the link is in the footer, once per part; the name keeps its text, not a link
    assert text.count(link) == 1 and re.search(r"Unsubscribe: \S+token=v2\.\S+\s*$", text)
    assert html.count(link) == 1
    footer = html[html.index('class="cf-footer"'):]
    assert link in footer
    assert "unsubscribe_url%" in text  # the customer's own text, shown as text


def test_subject_and_sender_name_are_one_clean_line(tmp_path, monkeypatch):
    mail = _outbox_mail(tmp_path, monkeypatch, HOSTILE)
    assert mail["Bcc"] is None
    for header in ("Subject", "From"):
        value = str(mail[header])
        assert not ACTIVE.search(value), (header, value)
    assert "Ann" in str(mail["Subject"]) and "Lotus & Pine" in str(mail["From"])


def test_sendgrid_subject_and_sender_name(fault_server: FaultServer) -> None:
    message = make_message(1, "email", "a@example.com", subject=f"Hi {HOSTILE}")
    settings = live_settings(fault_server.base_url, sendgrid_from_name="Lotus\u202e & Pine\x1b[0m")
    with SendGridEmail(settings) as channel:
        channel.send_batch([message])
    [body] = fault_server.bodies
    assert not ACTIVE.search(body["subject"]) and body["subject"].startswith("Hi %unsubscribe")
    assert body["from"]["name"] == "Lotus & Pine[0m"

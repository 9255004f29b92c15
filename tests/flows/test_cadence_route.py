"""Cadence preferences are policy: paused and fewer on the ledger with their reasons, in
dry runs and previews, and a change made during a run wins for every message not yet
handed to a provider (careflow/policy/cadence.py, careflow/ledger/withheld.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from careflow.cli.main import main
from careflow.consent_proof import proof_of
from careflow.flows.preview import preview_message
from careflow.flows.route import process_batch
from careflow.ledger import ContactLedger, DryRunLedger
from careflow.messages import State
from careflow.preferences import PreferenceTokens, apply_change, view
from careflow.preferences import State as Wanted
from careflow.settings import load_settings
from tests.flows.test_policy_route import (  # noqa: F401  (fixtures)
    ALL,
    AT,
    Clock,
    person,
    route_for,
    rows,
    run,
    templates,
)

NAIVE_AT = AT.replace(tzinfo=None)
pytestmark = pytest.mark.usefixtures("templates")


def change(engine, cid, *, at=NAIVE_AT, cadence="normal", until=None, **allowed):
    """What the page's form would post for customer ``cid``: ``marketing_sms=False`` ..."""
    settings = load_settings()
    state = view(engine, cid, settings, at).state
    wanted = dict(state.allowed)
    for name, on in allowed.items():
        category, channel = name.split("_")
        wanted[(category, channel)] = on
    return apply_change(
        engine, cid, Wanted(cadence, until, wanted),
        locale="en", token_id="t" * 16, at=at, settings=settings,
    )


def test_a_paused_customer_is_skipped_with_the_reason_in_dry_run_preview_and_ledger(engine):
    person(engine, 1, mobile="+447911123401", country="GB")
    person(engine, 2, mobile="+447911123402", country="GB")
    change(engine, 1, cadence="paused", until=datetime(2026, 7, 1))
    dry = run("promo", dry_run=True, run_id="dry")
    DryRunLedger(engine).forget("dry")
    assert dry.skipped == {"paused": 1} and sum(dry.would_send.values()) == 1
    [note] = [d for d in dry.decisions if d["customer_id"] == 1]
    assert "paused marketing until 2026-07-01 00:00 UTC" in note["detail"]
    text = preview_message(engine, "promo", 1, AT.isoformat(), None, load_settings())
    assert "would be skipped: paused" in text
    real = run("promo")
    assert real.skipped == {"paused": 1} and real.sent == 1
    assert (rows(engine, "promo")[1].state, rows(engine, "promo")[1].reason) == (
        State.SKIPPED, "paused")
    # care is not marketing: the pause does not hold a birthday greeting back
    assert run("greeting").sent == 2


def test_a_pause_that_has_ended_lets_marketing_through_again(engine):
    person(engine, 1, mobile="+447911123401", country="GB")
    change(engine, 1, at=NAIVE_AT - timedelta(days=40), cadence="paused",
           until=NAIVE_AT - timedelta(days=1))
    assert run("promo").sent == 1


def test_fewer_defers_a_second_marketing_message_within_fourteen_days(engine):
    person(engine, 1, mobile="+447911123401", country="GB")
    person(engine, 2, mobile="+447911123402", country="GB")
    change(engine, 1, cadence="fewer")
    clock = Clock(AT)
    assert run("promo", clock=clock).sent == 2
    clock.now += timedelta(hours=1)
    second = run("promo_two", clock=clock, now=AT + timedelta(hours=1))
    # customer 2 (normal) gets a second one: the default cap is 2 per 7 days
    assert second.sent == 1 and second.deferred == {"fewer": 1}
    row = rows(engine, "promo_two")[1]
    assert row.state == State.DEFERRED and row.not_before == datetime(2026, 6, 15, 12)
    assert "at most 1 marketing message(s) per 14 days" in row.detail
    assert "promo sms sent 2026-06-01 12:00 UTC" in row.detail


class PausesMidRun:
    """A channel that, as it is handed its first chunk, lets customer ``cid`` pause
    marketing through the page's one write, then delivers as the real channel does."""

    def __init__(self, inner, engine, cid):
        self.inner, self.engine, self.cid, self.done = inner, engine, cid, False
        self.send_chunk_size = 1
        self.handed: list[int] = []

    def send_batch(self, messages, *args):
        if not self.done:
            self.done = True
            change(self.engine, self.cid, cadence="paused", until=datetime(2026, 7, 1))
        self.handed += [m.customer_id for m in messages]
        return self.inner.send_batch(messages, *args)

    def close(self):
        return getattr(self.inner, "close", lambda: None)()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_a_pause_made_while_a_run_is_sending_wins_for_every_message_not_yet_handed_over(engine):
    for cid in (1, 2, 3):
        person(engine, cid, mobile=f"+44791112340{cid}", country="GB")
    route = route_for("promo")
    made = route.channel_factory
    channels = []

    def factory(name):
        channel = PausesMidRun(made(name), engine, 3)
        channels.append(channel)
        return channel

    route.channel_factory = factory
    result = process_batch(route, ALL)
    # the policy let customer 3 through; the pause came after, before their message was
    # handed to the provider: withheld by the ledger as it marked the chunk
    assert result.sent == 2 and result.skipped == {"paused": 1}
    assert 3 not in [cid for ch in channels for cid in ch.handed]
    row = rows(engine, "promo")[3]
    assert (row.state, row.reason) == (State.SKIPPED, "paused")
    assert "while the run was sending" in row.detail
    # the next run decides again, and the policy now skips them
    assert run("promo", run_id="run-2").skipped == {"paused": 1}


def test_a_refusal_made_after_the_claim_is_honoured_when_marking_sending(engine):
    """The ledger's last check covers the page's per-channel choice, not only the pause."""
    person(engine, 1, mobile="+447911123401", country="GB")
    ledger = ContactLedger(engine, clock=Clock(AT))
    contact = ledger.claim("promo", "run-x", [(1, "2026")]).owned[(1, "2026")]
    from sqlalchemy import update

    from careflow.db.models import ContactHistory

    with engine.begin() as conn:
        conn.execute(update(ContactHistory).where(ContactHistory.id == contact).values(
            category="marketing", recipient="+447911123401"))
    change(engine, 1, marketing_sms=False, at=NAIVE_AT + timedelta(minutes=1))
    held: dict = {}
    assert ledger.mark_sending([contact], "sms", "run-x", None, held) == set()
    assert held == {contact: ("opted_out", held[contact][1])}
    # the channel-wide answer still wins when given later: START after the page's no
    change(engine, 1, marketing_sms=True, at=NAIVE_AT + timedelta(minutes=2))
    contact2 = ledger.claim("promo", "run-y", [(1, "2026")]).owned[(1, "2026")]
    assert ledger.mark_sending([contact2], "sms", "run-y") == {contact2}


def test_the_one_write_returns_what_a_proof_needs(engine):
    person(engine, 1, mobile="+447911123401", email="a@example.com", country="GB")
    made = change(engine, 1, cadence="paused", until=datetime(2026, 7, 1), marketing_email=False)
    assert made.customer_id == 1 and made.locale == "en" and made.token_id == "t" * 16
    assert made.at == NAIVE_AT
    assert made.before.cadence == "normal" and made.after.cadence == "paused"
    assert made.changed == [
        "cadence: normal -> paused until 2026-07-01 00:00 UTC",
        "marketing/email: on -> off",
    ]
    assert datetime(2026, 7, 1, tzinfo=UTC) > AT
    # the consent and the cadence it changed have their proof, written with them
    # (careflow/consent_proof.py), which careflow consent show lists
    with engine.connect() as conn:
        proofs = {p["channel"]: p for p in proof_of(conn, 1)}
    assert set(proofs) == {"email", "all"}
    email, paused = proofs["email"], proofs["all"]
    assert (email["source"], email["category"]) == ("page", "marketing")
    assert email["consent"] == {"before": "granted", "after": "withdrawn"}
    assert (paused["source"], paused["category"], paused["consent"]) == ("page", "marketing", None)
    assert paused["cadence"] == {"before": "normal", "after": "paused until 2026-07-01 00:00 UTC"}
    assert paused["change"] == "cadence normal→paused until 2026-07-01 00:00 UTC"
    for proof in (email, paused):
        assert proof["evidence"] == {"token_id": "t" * 16} and proof["locale"] == "en"
        assert "preference centre" in proof["shown"]
    shown = CliRunner().invoke(main, ["consent", "show", "1"])
    assert shown.exit_code == 0 and "cadence normal→paused until 2026-07-01" in shown.output


def test_a_live_channels_marks_withhold_a_message_paused_after_the_claim(engine):
    """Live channels mark their requests one by one (SendingMarks): a pause made after
    the claim keeps the message from being requested, and the route records why."""
    from careflow.flows.route import SendingMarks

    person(engine, 1, mobile="+447911123401", country="GB")
    route = route_for("promo")
    contact = route.ledger.claim("promo", "run-1", [(1, "2026")]).owned[(1, "2026")]
    from sqlalchemy import update

    from careflow.db.models import ContactHistory

    with engine.begin() as conn:
        conn.execute(update(ContactHistory).where(ContactHistory.id == contact).values(
            category="marketing", recipient="+447911123401"))
    change(engine, 1, cadence="paused", until=datetime(2026, 7, 1))
    marks = SendingMarks(route, "sms", [contact], rate=10.0)
    assert marks.mark([contact]) == set()
    assert marks.held[contact][0] == "paused"
    assert marks.owned([contact]) == set()  # the channel does not request it


def test_an_sms_template_gets_the_short_link_for_marketing_and_nothing_for_transactional(
    engine, tmp_path
):
    """An SMS template writes %preferences_url%: marketing and care texts carry the
    customer's own short link (it opens their page), transactional ones nothing."""
    from careflow.unsubscribe import local_tokens
    from tests.flows.test_policy_route import campaign

    root = tmp_path / "templates"  # the templates fixture's folder
    campaign(root, "promo_link", channels="[sms]")
    (root / "promo_link" / "sms.en.j2").write_text(
        "Hi {{ name }}! Prefs: %preferences_url%")
    campaign(root, "order_note", category="transactional", channels="[sms]")
    (root / "order_note" / "sms.en.j2").write_text("Order shipped.%preferences_url%")
    # a name that reads like the placeholder stays a name: only the template's gets a link
    person(engine, 1, mobile="+447911123401", country="GB", given_name="%preferences_url%",
           full_name="%preferences_url%")
    assert run("promo_link").sent == 1 and run("order_note").sent == 1
    outbox = load_settings().effective_outbox_dir
    [text] = [p.read_text() for p in (outbox / "promo_link" / "sms").iterdir()]
    assert text.count("/p/") == 1
    link = text.split("Prefs: ")[1].strip()
    assert link.startswith("http://127.0.0.1:8080/p/") and len(link.rsplit("/", 1)[1]) == 31
    grant = PreferenceTokens(local_tokens(load_settings())).verify(link.rsplit("/", 1)[1])
    assert grant.customer_id == 1
    [text] = [p.read_text() for p in (outbox / "order_note" / "sms").iterdir()]
    assert text.rstrip().endswith("\n\nOrder shipped.") and "/p/" not in text


def test_two_posts_for_one_customer_at_once_both_land_and_each_sees_the_others(engine):
    """Two changes for one customer at the same moment (a double submit, two tabs) take
    turns: both are written, and the second one's "before" holds the first one's result
    (PostgreSQL: the customer's row locked; SQLite: the write lock from the start)."""
    import threading

    person(engine, 1, mobile="+447911123401", email="a@example.com", country="GB")
    start = threading.Barrier(2)
    made, errors = [], []

    def post(channel):
        start.wait()
        try:  # each changes one choice and leaves the rest as it finds them
            made.append(apply_change(
                engine, 1, Wanted("normal", None, {("marketing", channel): False}),
                locale="en", token_id=channel * 4, at=NAIVE_AT, settings=load_settings()))
        except Exception as exc:  # what a failed post would answer: 503
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(ch,)) for ch in ("sms", "email")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _, second = sorted(made, key=lambda m: len([v for v in m.before.allowed.values() if v]),
                           reverse=True)
    assert not all(second.before.allowed.values())  # it saw the first one's change
    final = view(engine, 1, load_settings(), NAIVE_AT).state.allowed
    assert final[("marketing", "sms")] is False and final[("marketing", "email")] is False

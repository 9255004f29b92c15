"""careflow/consent_proof.py: one record per change, append-only in the database itself,
kept as long as the law asks, exported by ``careflow consent show``."""

from __future__ import annotations

import importlib.util
import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError

from careflow import consent_proof
from careflow.cli.main import main
from careflow.clock import utcnow
from careflow.consent_proof import LEGAL_MINIMUM_DAYS, record
from careflow.db.models import ConsentProof
from careflow.errors import ConfigError
from careflow.settings import PROJECT_ROOT, load_settings
from tests.factories import add_customer

P = ConsentProof.__table__


def _withdrawal(conn, customer_id=1, key="twilio:SM1", now=None, **kw):
    return record(
        conn,
        customer_id,
        source=kw.pop("source", "reply"),
        channel=kw.pop("channel", "sms"),
        consent=kw.pop("consent", (True, False)),
        evidence_key=key,
        now=now,
        **kw,
    )


def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(P)).scalar_one()


def test_the_same_evidence_is_recorded_once(engine):
    add_customer(engine, 1)
    with engine.begin() as conn:
        assert _withdrawal(conn, shown="STOP", evidence={"provider_message_id": "SM1"}) is True
    with engine.begin() as conn:  # the provider's retry of the same request
        assert _withdrawal(conn, shown="STOP") is False
    with engine.begin() as conn:  # a second STOP, another message: its own proof
        assert _withdrawal(conn, key="twilio:SM2", consent=(False, False)) is True
    assert _count(engine) == 2


def test_a_proof_written_in_a_transaction_that_fails_is_not_kept(engine):
    """Same transaction as the change: if the change is rolled back, so is its proof."""
    add_customer(engine, 1)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        _withdrawal(conn)
        raise RuntimeError("the change failed")
    assert _count(engine) == 0


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"source": "guess"}, "is not one of"),
        ({"consent": None}, "change of consent, suppression or cadence"),
        ({"evidence": {"token": "v2.abc.def"}}, "may not hold 'token'"),
        ({"evidence": {"Signature": "x"}}, "may not hold 'signature'"),
    ],
)
def test_a_record_that_proves_nothing_or_holds_a_secret_is_refused(engine, change, says):
    add_customer(engine, 1)
    with pytest.raises(ValueError, match=says), engine.begin() as conn:
        _withdrawal(conn, **change)
    assert _count(engine) == 0


def test_a_token_is_kept_only_as_its_id():
    token = "v2.eyJhIjoxfQ.c2lnbmF0dXJl"
    kept = consent_proof.token_id(token)
    assert kept.startswith("sha256:") and token not in kept and "c2lnbmF0dXJl" not in kept
    assert kept == consent_proof.token_id(token) != consent_proof.token_id(token + "x")


# --- append-only, enforced by the database ------------------------------------------------


def _one_record(engine, age_days: float = 0) -> int:
    add_customer(engine, 1)
    with engine.begin() as conn:
        _withdrawal(conn, now=utcnow() - timedelta(days=age_days))
        return conn.execute(select(P.c.id)).scalar_one()


def test_a_record_is_never_updated(engine):
    pid = _one_record(engine, age_days=1000)  # however old
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(update(P).where(P.c.id == pid).values(consent_after="granted"))
    with engine.connect() as conn:
        assert conn.execute(select(P.c.consent_after)).scalar_one() == "withdrawn"


def test_a_record_younger_than_the_legal_minimum_is_never_deleted(engine):
    _one_record(engine, age_days=LEGAL_MINIMUM_DAYS - 1)
    with pytest.raises(DBAPIError, match="kept at least 180 days"), engine.begin() as conn:
        conn.execute(delete(P))
    assert _count(engine) == 1


def test_a_record_older_than_the_legal_minimum_may_be_deleted(engine):
    _one_record(engine, age_days=LEGAL_MINIMUM_DAYS + 1)
    with engine.begin() as conn:
        conn.execute(delete(P))
    assert _count(engine) == 0


@pytest.mark.postgres
def test_postgresql_refuses_to_truncate_the_proof(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's")
    _one_record(engine, age_days=1000)
    with pytest.raises(DBAPIError, match="never truncated"), engine.begin() as conn:
        conn.execute(text("TRUNCATE consent_proof"))
    assert _count(engine) == 1


def test_the_migration_keeps_the_same_legal_minimum_as_the_code():
    path = PROJECT_ROOT / "careflow/db/migrations/versions/0014_consent_proof.py"
    spec = importlib.util.spec_from_file_location("migration_0014", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.LEGAL_MINIMUM_DAYS == LEGAL_MINIMUM_DAYS


# --- retention -------------------------------------------------------------------------------


@pytest.mark.parametrize("days", ["179", "0", "-5"])
def test_a_retention_below_the_legal_minimum_is_a_one_line_config_error(monkeypatch, days):
    monkeypatch.setenv("CAREFLOW_CONSENT_PROOF_RETENTION_DAYS", days)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "CAREFLOW_CONSENT_PROOF_RETENTION_DAYS" in message and "at least 180 days" in message
    assert "\n" not in message


def test_the_retention_setting_takes_the_minimum_and_more(monkeypatch):
    monkeypatch.setenv("CAREFLOW_CONSENT_PROOF_RETENTION_DAYS", "180")
    assert load_settings().consent_proof_retention_days == 180
    monkeypatch.delenv("CAREFLOW_CONSENT_PROOF_RETENTION_DAYS")
    assert load_settings().consent_proof_retention_days == 1095


def test_the_prune_command_refuses_a_retention_below_the_minimum(engine, monkeypatch):
    monkeypatch.setenv("CAREFLOW_CONSENT_PROOF_RETENTION_DAYS", "30")
    out = CliRunner().invoke(main, ["consent", "prune"])
    assert out.exit_code == 2
    [line] = out.output.strip().splitlines()
    assert line.startswith("error: bad configuration: CAREFLOW_CONSENT_PROOF_RETENTION_DAYS")


def test_prune_deletes_old_records_but_keeps_the_proof_of_todays_state(engine, monkeypatch):
    add_customer(engine, 1)
    add_customer(engine, 2)
    now = utcnow()
    with engine.begin() as conn:
        # customer 1, sms: withdrawn 900 days ago, granted again 800 days ago, both old
        _withdrawal(conn, 1, "k1", now - timedelta(days=900))
        _withdrawal(conn, 1, "k2", now - timedelta(days=800), consent=(False, True))
        # customer 1, email: old, then young
        _withdrawal(conn, 1, "k3", now - timedelta(days=700), channel="email")
        _withdrawal(conn, 1, "k4", now - timedelta(days=10), channel="email")
        # customer 2: one old record, the only one of its kind
        _withdrawal(conn, 2, "k5", now - timedelta(days=900))
    monkeypatch.setenv("CAREFLOW_CONSENT_PROOF_RETENTION_DAYS", "365")
    out = CliRunner().invoke(main, ["consent", "prune", "--dry-run", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["deleted"] == 2 and _count(engine) == 5

    out = CliRunner().invoke(main, ["consent", "prune"])
    assert out.exit_code == 0, out.output
    assert "deleted 2 consent proof record(s)" in out.output
    with engine.connect() as conn:
        kept = set(conn.execute(select(P.c.evidence_key)).scalars())
    # the older sms record and the older email record go; the newest of each stays
    assert kept == {"k2", "k4", "k5"}
    out = CliRunner().invoke(main, ["consent", "prune"])
    assert "deleted 0 consent proof record(s)" in out.output


# --- the export ------------------------------------------------------------------------------


def test_show_lists_a_customers_changes_with_their_evidence(engine):
    add_customer(engine, 7, external_ref="C-7", mobile="+8613812345678", locale="zh-CN")
    add_customer(engine, 8, external_ref="C-8")
    at = utcnow().replace(microsecond=0)
    with engine.begin() as conn:
        record(conn, 7, source="reply", channel="sms", consent=(None, False),
               suppression=(None, "opted_out"), address="+8613812345678", shown="退订",
               locale="zh-CN", evidence_key="twilio:SM9",
               evidence={"provider_message_id": "SM9", "answered_message_id": "SM1"},
               occurred_at=at - timedelta(hours=2))  # fmt: skip
        # a bounce for their number that arrived without a customer
        record(conn, None, source="provider", channel="sms", suppression=(None, "landline"),
               address="+8613812345678", evidence_key="twilio:SM5:undelivered",
               occurred_at=at - timedelta(hours=1))  # fmt: skip
        record(conn, 8, source="import", channel="email", consent=(None, True),
               evidence_key="import:abc:2", occurred_at=at)  # fmt: skip
    runner = CliRunner()
    for who in ("7", "#7", "C-7"):
        out = runner.invoke(main, ["consent", "show", who])
        assert out.exit_code == 0, out.output
        lines = out.output.splitlines()
        assert lines[0] == "consent proof for customer #7 (C-7), times in UTC:"
        assert lines[1].split() == ["time", "(UTC)", "source", "channel", "change", "evidence"]
        reply, bounce = lines[3], lines[4]
        assert reply.startswith(f"{at - timedelta(hours=2):%Y-%m-%d %H:%M}  reply")
        assert "consent none→withdrawn; suppressed (opted_out)" in reply
        assert "provider_message_id=SM9" in reply and "answered_message_id=SM1" in reply
        assert "provider" in bounce and "suppressed (landline)" in bounce
        assert len(lines) == 5  # nothing of customer 8's

    out = runner.invoke(main, ["consent", "show", "C-7", "--json"])
    data = json.loads(out.output)
    assert (data["customer_id"], data["customer_ref"]) == (7, "C-7")
    first = data["records"][0]
    assert first["source"] == "reply" and first["shown"] == "退订" and first["locale"] == "zh-CN"
    assert first["consent"] == {"before": "none", "after": "withdrawn"}
    assert first["suppression"] == {"before": "none", "after": "opted_out"}
    assert first["evidence"] == {"provider_message_id": "SM9", "answered_message_id": "SM1"}
    assert first["occurred_at"] == f"{at - timedelta(hours=2):%Y-%m-%dT%H:%M:%S}Z"
    assert [r["evidence_key"] for r in data["records"]] == ["twilio:SM9", "twilio:SM5:undelivered"]


def test_show_says_when_a_customer_has_no_records(engine):
    add_customer(engine, 3, external_ref="C-3")
    out = CliRunner().invoke(main, ["consent", "show", "C-3"])
    assert out.exit_code == 0
    assert out.output.strip() == (
        "no consent proof for customer #3 (C-3): careflow has recorded no change of their consent"
    )
    out = CliRunner().invoke(main, ["consent", "show", "3", "--json"])
    assert json.loads(out.output)["records"] == []


@pytest.mark.parametrize("who", ["99", "#99", "C-404", "ref:3", "x" * 300])
def test_an_unknown_customer_is_a_one_line_error(engine, who):
    add_customer(engine, 3, external_ref="C-3")
    out = CliRunner().invoke(main, ["consent", "show", who])
    assert out.exit_code == 2
    [line] = out.output.strip().splitlines()
    assert line.startswith("error: no customer")


def test_digits_that_are_one_customers_id_and_anothers_ref_must_be_said_which(engine):
    add_customer(engine, 17)
    add_customer(engine, 5, external_ref="17")
    out = CliRunner().invoke(main, ["consent", "show", "17"])
    assert out.exit_code == 2 and "write #17 for the id or ref:17 for the ref" in out.output
    out = CliRunner().invoke(main, ["consent", "show", "ref:17"])
    assert out.exit_code == 0 and "customer #5 (17)" in out.output
    out = CliRunner().invoke(main, ["consent", "show", "#17"])
    assert out.exit_code == 0 and "customer #17:" in out.output


# --- docs/preferences.md: its commands run, its example is what careflow prints ----------------

DOC = PROJECT_ROOT / "docs" / "preferences.md"


def _doc_blocks(kind: str) -> list[str]:
    """The fenced blocks of docs/preferences.md opened with ```kind, in order."""
    blocks, open_kind, lines = [], None, []
    for line in DOC.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("```"):
            if open_kind is None:
                open_kind, lines = line[3:].strip(), []
            else:
                if open_kind == kind:
                    blocks.append("".join(lines))
                open_kind = None
        elif open_kind is not None:
            lines.append(line)
    return blocks


def _the_docs_customer(engine, tmp_path):
    """Customer #1 (C-1001) with the docs' history: an imported opt-in, then 退订 by SMS."""
    from datetime import datetime

    from careflow.events import EventKind, InboundEvent
    from careflow.importers.consents import import_consents
    from careflow.ledger import ContactLedger
    from careflow.messages import Outcome
    from careflow.responses import record_events

    add_customer(engine, 1, external_ref="C-1001", mobile="+8613812345678", locale="zh-CN")
    path = tmp_path / "consents.csv"
    path.write_text(
        "customer,channel,granted,source,when\nC-1001,email,yes,web_signup,2026-01-05 08:00\n"
    )
    import_consents(engine, path)
    led = ContactLedger(engine)
    row = led.claim("winback", "r", [(1, "2026")]).owned[(1, "2026")]
    led.mark_sending([row], "sms", "r")
    led.record([Outcome.sent(row, "SM2b0e6c1f")], "r", {row: {"recipient": "+8613812345678"}})
    record_events(engine, [InboundEvent(
        provider="twilio", kind=EventKind.REPLIED, event_id="SM8f3a91d2",
        occurred_at=datetime(2026, 11, 22, 9, 14), channel="sms",
        provider_message_id="SM8f3a91d2", recipient="+8613812345678", text="退订")])  # fmt: skip


def test_the_docs_example_is_what_consent_show_prints(engine, tmp_path):
    _the_docs_customer(engine, tmp_path)
    [example] = [b for b in _doc_blocks("") if b.startswith("consent proof for")]
    out = CliRunner().invoke(main, ["consent", "show", "C-1001"])
    assert out.exit_code == 0 and out.output == example


def test_every_command_the_docs_show_runs(engine, tmp_path):
    import shlex

    _the_docs_customer(engine, tmp_path)
    lines = [
        line.split("#")[0].strip()
        for block in _doc_blocks("sh")
        for line in block.splitlines()
        if line.strip().startswith("careflow ")
    ]
    assert len(lines) >= 5
    for line in lines:
        out = CliRunner().invoke(main, shlex.split(line)[1:])
        assert out.exit_code == 0, f"{line}: {out.output}"


def test_an_operator_changes_what_a_customer_asked_for_with_its_proof(engine):
    """A customer phones the shop: no more SMS offers, and a month's pause of marketing.
    `careflow consent set` writes it as the preference centre would, proof included."""
    from careflow.preferences import view

    add_customer(engine, 7, external_ref="C-7", mobile="+8613812345678")
    runner = CliRunner()
    out = runner.invoke(main, ["consent", "set", "C-7", "--marketing", "off", "--channel", "sms",
                               "--cadence", "paused", "--until", "2099-01-31",
                               "--reason", "phoned: no more SMS offers", "--by", "alice"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines() == [
        "customer #7 (C-7): changed by alice, with its consent proof "
        "(careflow consent show C-7):",
        "  cadence: normal -> paused until 2099-01-31 00:00 UTC",
        "  marketing/sms: on -> off",
    ]
    state = view(engine, 7, load_settings(), utcnow()).state
    assert state.allowed[("marketing", "sms")] is False
    assert state.allowed[("marketing", "email")] is True, "other channels as they were"
    assert state.allowed[("care", "sms")] is True, "care as it was"
    assert state.cadence == "paused"

    records = json.loads(runner.invoke(main, ["consent", "show", "C-7", "--json"]).output)
    records = records["records"]
    assert {r["source"] for r in records} == {"operator"} and len(records) == 2
    sms = next(r for r in records if r["channel"] == "sms")
    assert sms["consent"] == {"before": "granted", "after": "withdrawn"}
    assert sms["evidence"] == {"operator": "alice"}
    assert "phoned: no more SMS offers" in sms["shown"]

    again = runner.invoke(main, ["consent", "set", "C-7", "--marketing", "off", "--channel",
                                 "sms", "--reason", "phoned again", "--by", "alice"])
    assert again.exit_code == 0 and "nothing changed" in again.output
    assert _count(engine) == 2


@pytest.mark.parametrize(("args", "says"), [
    (["--marketing", "off"], "Missing option '--reason'"),
    (["--reason", "x"], "nothing to change"),
    (["--marketing", "off", "--channel", "fax", "--reason", "x"], "no usable address on fax"),
    (["--cadence", "paused", "--reason", "x"], "a pause needs it"),
])  # fmt: skip
def test_an_operator_change_that_cannot_be_made_says_why_in_one_line(engine, args, says):
    add_customer(engine, 7)
    out = CliRunner().invoke(main, ["consent", "set", "7", "--by", "alice", *args])
    assert out.exit_code == 2 and says in out.output, out.output
    assert _count(engine) == 0

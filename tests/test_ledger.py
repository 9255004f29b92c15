"""ContactLedger: one owner per key, whatever runs race for it."""

from __future__ import annotations

import multiprocessing
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from careflow.clock import utcnow
from careflow.contact_limits import CapCheck, Intent
from careflow.db.models import ContactHistory, DryRunHold
from careflow.events import EventKind, InboundEvent
from careflow.ledger import RESERVATION_LEASE_SECONDS, ContactLedger, DryRunLedger, SendRules
from careflow.ledger.history import contact_history
from careflow.messages import Outcome, State
from careflow.responses import record_events
from tests.factories import add_customer

KEYS = [(cid, "2026") for cid in range(1, 41)]


def _customers(engine):
    for cid, _ in KEYS:
        add_customer(engine, cid)


def test_concurrent_runs_split_the_keys_never_share_them(engine):
    _customers(engine)
    ledger = ContactLedger(engine)
    barrier = threading.Barrier(4)
    claims = {}

    def claim(run):
        barrier.wait()
        claims[run] = ledger.claim("birthday", run, KEYS, chunk=7)

    threads = [threading.Thread(target=claim, args=(f"run-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    owned = [k for c in claims.values() for k in c.owned]
    assert sorted(owned) == sorted(KEYS)  # every key owned exactly once


def test_sent_and_permanent_failures_are_final_skips_and_retryables_are_not(engine):
    _customers(engine)
    ledger = ContactLedger(engine)
    first = ledger.claim("birthday", "run-1", KEYS[:4])
    ids = [first.owned[k] for k in KEYS[:4]]
    ledger.record(
        [
            Outcome.sent(ids[0], "SM1"),
            Outcome.failed(ids[1], "invalid_number"),
            Outcome.failed(ids[2], "provider_5xx", retryable=True),
            Outcome.skipped(ids[3], "no_contact"),
        ],
        "run-1",
    )
    second = ledger.claim("birthday", "run-2", KEYS[:4])
    assert set(second.owned) == {KEYS[2], KEYS[3]}
    assert second.already == {KEYS[0]: "sent", KEYS[1]: "failed"}


def test_a_dead_runs_reservation_is_taken_over_after_the_lease(engine):
    _customers(engine)
    ledger = ContactLedger(engine)
    ledger.claim("birthday", "dead", KEYS[:2])
    assert ledger.claim("birthday", "new", KEYS[:2]).owned == {}  # still leased
    old = utcnow() - timedelta(seconds=RESERVATION_LEASE_SECONDS + 1)
    with engine.begin() as conn:
        conn.execute(update(ContactHistory).values(updated_at=old))
    assert set(ledger.claim("birthday", "new", KEYS[:2]).owned) == set(KEYS[:2])


def test_outcomes_of_another_run_are_not_written_over(engine):
    _customers(engine)
    ledger = ContactLedger(engine)
    cid = ledger.claim("birthday", "run-1", KEYS[:1]).owned[KEYS[0]]
    ledger.record([Outcome.sent(cid, "SM1")], "run-2")  # a stale worker of another run
    with engine.connect() as conn:
        state = conn.execute(select(ContactHistory.state).where(ContactHistory.id == cid)).scalar()
    assert state == State.RESERVED


def test_history_shows_contacts_with_their_events(engine):
    _customers(engine)
    ledger = ContactLedger(engine)
    cid = ledger.claim("birthday", "run-1", KEYS[:1]).owned[KEYS[0]]
    ledger.record(
        [Outcome.sent(cid, "SM1")],
        "run-1",
        {cid: {"channel": "sms", "recipient": "+8613800000000", "body": "Hi"}},
    )
    # the provider's delivery report, recorded as `careflow serve` records it
    delivered = InboundEvent(
        provider="twilio",
        kind=EventKind.DELIVERED,
        event_id="SM1:delivered",
        occurred_at=datetime(2026, 11, 22, 9, 1),
        channel="sms",
        provider_message_id="SM1",
    )
    assert len(record_events(engine, [delivered]).recorded) == 1
    (entry,) = contact_history(engine, 1)
    assert entry["state"] == "sent" and entry["body"] == "Hi" and entry["provider_id"] == "SM1"
    assert [e["kind"] for e in entry["events"]] == ["delivered"]


def test_a_busy_database_does_not_lose_known_outcomes(engine, monkeypatch):
    """The write is retried, so a sent message is recorded sent, not left 'sending'."""
    import sqlalchemy.exc
    from sqlalchemy import event

    import careflow.ledger.state

    monkeypatch.setattr(careflow.ledger.state.time, "sleep", lambda s: None)
    _customers(engine)
    ledger = ContactLedger(engine)
    cid = ledger.claim("birthday", "run-1", KEYS[:1]).owned[KEYS[0]]
    failures = iter([True, True, False])

    def locked_once(conn, cursor, statement, *args):
        if statement.startswith("UPDATE") and next(failures, False):
            raise sqlalchemy.exc.OperationalError(statement, {}, Exception("database is locked"))

    event.listen(engine, "before_cursor_execute", locked_once)
    try:
        ledger.record([Outcome.sent(cid, "SM1")], "run-1")
    finally:
        event.remove(engine, "before_cursor_execute", locked_once)
    with engine.connect() as conn:
        state = conn.execute(select(ContactHistory.state).where(ContactHistory.id == cid)).scalar()
    assert state == State.SENT


def test_an_operator_can_release_interrupted_messages_for_the_next_run(engine):
    _customers(engine)
    ledger = ContactLedger(engine)
    ids = ledger.claim("birthday", "run-1", KEYS[:3]).owned
    ledger.record([Outcome.failed(i, "interrupted") for i in ids.values()], "run-1")
    assert ledger.claim("birthday", "run-2", KEYS[:3]).owned == {}
    assert ledger.allow_retry("birthday", "interrupted", customer_id=1) == 1
    assert set(ledger.claim("birthday", "run-3", KEYS[:3]).owned) == {KEYS[0]}


def _ledger_rows_read(node) -> int:
    """Rows of contact_history an EXPLAIN ANALYZE plan (JSON) read, over all its loops."""
    own = 0
    if node.get("Relation Name") == "contact_history":
        own = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
    return own + sum(_ledger_rows_read(child) for child in node.get("Plans", []))


@contextmanager
def _statements(engine, prefix: str):
    """The (statement, parameters) the engine runs inside the block that start with
    ``prefix``, to be explained afterwards."""
    from sqlalchemy import event

    seen = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith(prefix):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", keep)


def _explained(conn, statement: str, parameters) -> dict:
    import json

    plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters).scalar()
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]


@pytest.mark.postgres
@pytest.mark.parametrize(
    "customers",
    [range(5000, 5500), range(40, 20001, 40)],
    ids=["a batch filling its id range", "a sparse batch"],
)
def test_a_settled_read_looks_up_each_key_whatever_the_statistics_say(
    postgres_server_url, customers
):
    """Regression: after a run wrote a million ledger rows, PostgreSQL still planned
    with the statistics from before it, in which the campaign had no rows. It joined
    each batch's keys against every row of the campaign (re-running Christmas for
    966,667 customers took 198 s instead of about 26), and once keys were looked up
    one by one, it walked the campaign's rows for each key. A read must cost about
    one index lookup per key however stale the statistics."""

    from sqlalchemy import text

    from careflow import db
    from careflow.ledger.plans import keys_query
    from tests.conftest import _reset_postgres

    _reset_postgres(postgres_server_url)
    db.upgrade(postgres_server_url)
    engine = db.engine_for(postgres_server_url)

    def ledger_rows(campaign: str, occasion: str) -> str:
        return (
            "INSERT INTO contact_history (campaign, customer_id, occasion, state, retryable, "
            f"attempts, created_at, updated_at) SELECT '{campaign}', g, '{occasion}', 'sent', "
            "false, 1, now(), now() FROM generate_series(1, 20000) g"
        )

    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE contact_history SET (autovacuum_enabled = false)"))
        conn.execute(text("INSERT INTO customers (id) SELECT g FROM generate_series(1, 20000) g"))
        conn.execute(text(ledger_rows("other", "2025")))
    with engine.begin() as conn:  # the statistics before the run: no 'greet' rows at all
        conn.execute(text("ANALYZE contact_history"))
    with engine.begin() as conn:
        conn.execute(text(ledger_rows("greet", "2026")))
    keys = [(cid, "2026") for cid in customers]
    assert ContactLedger(engine).peek("greet", keys) == dict.fromkeys(keys, State.SENT)

    with engine.connect() as conn:
        query = keys_query(conn, "greet", keys, (ContactHistory.state,))
        sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
        plan = _explained(conn, sql, {})
    assert _ledger_rows_read(plan) <= 2 * len(keys)  # each customer has two rows


@pytest.mark.postgres
def test_a_runs_outcome_writes_go_by_row_whatever_the_statistics_say(postgres_server_url):
    """Regression: PostgreSQL found the rows of an outcome write (and of mark_sending)
    through the run's index, believing from statistics taken before the run that the
    run had no rows. Each write then walked every row the run had written so far: 29 ms
    a batch at 60,000 rows, and a two-worker Dask run settled 250 customers/s. Each
    write of a send chunk must read one row per message however many the run has."""
    from sqlalchemy import text

    from careflow import db
    from tests.conftest import _reset_postgres

    _reset_postgres(postgres_server_url)
    db.upgrade(postgres_server_url)
    engine = db.engine_for(postgres_server_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE contact_history SET (autovacuum_enabled = false)"))
        conn.execute(text("INSERT INTO customers (id) SELECT g FROM generate_series(1, 20500) g"))
        conn.execute(
            text(
                "INSERT INTO contact_history (campaign, customer_id, occasion, state, retryable,"
                " attempts, run_id, created_at, updated_at) SELECT 'greet', g, '2025', 'sent',"
                " false, 1, 'earlier', now(), now() FROM generate_series(1, 20000) g"
            )
        )
    with engine.begin() as conn:  # the statistics before this run: none of its rows
        conn.execute(text("ANALYZE contact_history"))
    ledger = ContactLedger(engine)
    done = ledger.claim("greet", "run", [(cid, "2026") for cid in range(1, 20001)])
    ledger.record([Outcome.sent(i, f"SM{i}") for i in done.owned.values()], "run")
    batch = ledger.claim("greet", "run", [(cid, "2026") for cid in range(20001, 20501)]).owned

    chunk = list(batch.values())[:50]  # one send chunk (send_chunk_size)
    with _statements(engine, "UPDATE contact_history") as writes:
        sending = ledger.mark_sending(chunk, "outbox", "run")
        ledger.record([Outcome.sent(i, f"SM{i}") for i in sending], "run")
    assert sending == set(chunk) and len(writes) == 2
    with engine.connect() as conn:
        for statement, parameters in writes:
            assert _ledger_rows_read(_explained(conn, statement, parameters)) <= 50, statement
            conn.rollback()


def _plan_reads(conn, statement: str, parameters) -> str | int:
    """What a SELECT reads: on PostgreSQL the rows of contact_history EXPLAIN ANALYZE
    counts, with the plans that walk an index (a test table's 20,000 rows are read
    whole faster than looked up; a million are not); on SQLite the query plan's
    lines (it counts no rows)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        return _ledger_rows_read(_explained(conn, statement, parameters))
    plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return "; ".join(r[-1] for r in plan)


def test_address_and_cap_checks_find_rows_by_address_and_customer(engine):
    """Regression: a claim's check of who holds an address (one message per address per
    occasion) and of the frequency cap tested campaign and state in a form the unique
    key and the state index serve. SQLite, which has no statistics, and PostgreSQL,
    with statistics from before the run, walked every row the campaign (or every
    campaign) had sent, for each batch: the Christmas run at a million customers
    slowed from about 2,600 customers/s to 1,054 as the ledger filled. Each check
    must find its rows through the addresses or the customers it is given."""
    from sqlalchemy import text

    from careflow.contact_limits import CapCheck, address_holders, cap_counts

    now = utcnow()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # the statistics before the run: no rows
            conn.execute(text("ALTER TABLE contact_history SET (autovacuum_enabled = false)"))
            conn.execute(text("ANALYZE contact_history"))
        conn.execute(
            text("INSERT INTO customers (id) VALUES (:i)"),
            [{"i": i} for i in range(1, 20001)],
        )
        conn.execute(
            ContactHistory.__table__.insert(),
            [
                {
                    "campaign": "greet", "customer_id": i, "occasion": "2025", "state": "sent",
                    "channel": "sms", "recipient": f"+4477009{i:05d}", "category": "marketing",
                    "retryable": False, "attempts": 1, "run_id": "earlier", "sent_at": now,
                    "created_at": now, "updated_at": now,
                }
                for i in range(1, 20001)
            ],
        )
    asked = [("sms", f"+4477009{i:05d}") for i in range(1001, 2001)]  # one batch's chunk
    with _statements(engine, "SELECT") as seen, engine.connect() as conn:
        holders = address_holders(conn, "greet", asked)
        counted = cap_counts(
            conn, list(range(1001, 2001)), CapCheck(1, 30, False, ("marketing",)), now
        )
    assert len(holders) == 1000 and len(counted) == 1000  # each found its one row
    (address_read, address_parameters), (cap_read, cap_parameters) = seen
    with engine.connect() as conn:
        by_address = _plan_reads(conn, address_read, address_parameters)
        conn.rollback()
        by_customer = _plan_reads(conn, cap_read, cap_parameters)
        conn.rollback()
    if engine.dialect.name == "postgresql":
        assert by_address <= 1000, by_address
        assert by_customer <= 1000, by_customer
    else:
        assert by_address.startswith("SEARCH") and "ix_contact_history_address" in by_address
        assert "ix_contact_history_due" not in by_address, by_address
        assert "ix_contact_history_customer" in by_customer, by_customer
        assert "ix_contact_history_due" not in by_customer, by_customer


# --- the dry run's ledger ---------------------------------------------------------------
FAMILY_PHONE = ("sms", "+447911123456")
ONE_PER_ADDRESS = SendRules(one_per_address=True)


def _dry_claim_in_another_process(url: str, customer_id: int) -> dict:
    """One batch of the dry run ``dry`` claimed in this (spawned) process, as a Dask worker
    would: a ledger of its own, nothing shared with the flow's process but the database."""
    from careflow import db as cdb

    key = (customer_id, "2026")
    claim = DryRunLedger(cdb.engine_for(url)).claim(
        "promo", "dry", [key], intents={key: Intent((FAMILY_PHONE,))}, rules=ONE_PER_ADDRESS
    )
    return claim.chosen


def test_a_dry_runs_batches_in_other_processes_count_a_shared_address_once(engine, db_url):
    """Regression: a dry run kept the addresses it would take in its process's memory, so
    its batches had to run on threads of the flow's process (a dry run on Dask did not use
    the cluster). Batches in other processes now see them too."""
    for cid in (1, 2):
        add_customer(engine, cid, mobile=FAMILY_PHONE[1])
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        first = pool.apply(_dry_claim_in_another_process, (db_url, 1))
    assert first == {(1, "2026"): FAMILY_PHONE}
    key = (2, "2026")
    ledger = DryRunLedger(engine)
    second = ledger.claim(
        "promo", "dry", [key], intents={key: Intent((FAMILY_PHONE,))}, rules=ONE_PER_ADDRESS
    )
    assert second.chosen == {} and second.shared[key].customer_id == 1
    ledger.forget("dry")  # the run's end: another dry run starts from the ledger alone
    again = ledger.claim(
        "promo", "dry", [key], intents={key: Intent((FAMILY_PHONE,))}, rules=ONE_PER_ADDRESS
    )
    assert again.chosen == {key: FAMILY_PHONE}
    ledger.forget("dry")
    with engine.connect() as conn:  # nothing of the dry run is left in the database
        assert conn.execute(select(func.count()).select_from(DryRunHold)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(ContactHistory)).scalar() == 0


@pytest.mark.parametrize("ledger_type", [ContactLedger, DryRunLedger])
def test_a_dry_run_counts_the_cap_slots_its_earlier_batches_would_take(engine, ledger_type):
    """Regression: the dry run's claim counted only the ledger's messages towards a
    frequency cap, not those its own earlier claims would have sent, so it reported a
    message the real run caps."""
    add_customer(engine, 1, mobile=FAMILY_PHONE[1])
    rules = SendRules("marketing", CapCheck(1, 7, False, ("marketing",)))
    ledger = ledger_type(engine)
    claims = [
        ledger.claim(
            "promo", "run", [(1, occasion)], intents={(1, occasion): Intent((FAMILY_PHONE,))},
            rules=rules,
        )
        for occasion in ("spring", "summer")
    ]
    assert claims[0].chosen == {(1, "spring"): FAMILY_PHONE}
    assert claims[1].chosen == {} and list(claims[1].capped) == [(1, "summer")]

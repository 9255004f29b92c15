"""Batch planning follows the customers a segment selects, whatever their ids."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import pytest

from careflow.campaigns import load_campaign
from careflow.flows.campaign import plan_batches
from careflow.settings import load_settings
from tests.factories import add_customer

AS_OF = date(2026, 6, 1)
AT = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_sparse_ids_make_batches_of_selected_customers(engine):
    """One customer with id 9,000,000,000 once meant 9,000,000 id-range batches."""
    for cid in (1, 2, 3, 9_000_000_000):
        add_customer(engine, cid, birthday=date(1990, 6, 1))
    add_customer(engine, 5_000_000_000, birthday=date(1990, 1, 1))  # not selected today
    spec = load_campaign("birthday", load_settings().templates_dir)
    ranges = plan_batches(engine, spec, AS_OF, AT, spec.parameters, batch_size=2)
    assert ranges == [(1, 2), (3, 9_000_000_000)]


def test_no_selected_customer_means_no_batch(engine):
    add_customer(engine, 1, birthday=date(1990, 1, 1))
    spec = load_campaign("birthday", load_settings().templates_dir)
    assert plan_batches(engine, spec, AS_OF, AT, spec.parameters, batch_size=1000) == []


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_a_run_keeps_few_batches_in_flight_whatever_its_size(
    prefect_api, engine, monkeypatch, real_clock
):
    """A run submitted all its batches to an unbounded thread pool: at a million customers
    331 batches held database connections at once and exhausted the pool (batches failed
    with QueuePool TimeoutError). CAREFLOW_BATCH_CONCURRENCY bounds them."""
    from careflow.flows import campaign
    from careflow.flows.care import birthday

    for cid in range(1, 41):
        add_customer(engine, cid, birthday=date(1990, 6, 1))
    monkeypatch.setenv("CAREFLOW_BATCH_SIZE", "1")
    monkeypatch.setenv("CAREFLOW_BATCH_CONCURRENCY", "2")
    lock, now, most = threading.Lock(), [0], [0]
    real = campaign.process_batch

    def counted(route, id_range):
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        try:
            return real(route, id_range)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(campaign, "process_batch", counted)
    summary = birthday(as_of=AS_OF, allow_past=True)
    assert summary["sent"] == 40
    assert 1 <= most[0] <= 2


def test_batches_in_flight_default_to_what_each_database_measured_best_with(monkeypatch):
    """SQLite has one writer: threads wait on each other (a re-run took a third longer
    with four). PostgreSQL overlaps their round trips (half again as long with one)."""
    from careflow.settings import Settings

    monkeypatch.delenv("CAREFLOW_BATCH_CONCURRENCY", raising=False)
    sqlite = Settings(database_url="sqlite:////tmp/shop.db")
    postgresql = Settings(database_url="postgresql+psycopg://careflow@db/careflow")
    assert (sqlite.effective_batch_concurrency, postgresql.effective_batch_concurrency) == (1, 4)
    monkeypatch.setenv("CAREFLOW_BATCH_CONCURRENCY", "3")
    assert Settings(database_url="sqlite:////tmp/shop.db").effective_batch_concurrency == 3

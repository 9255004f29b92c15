"""Batch planning follows the customers a segment selects, whatever their ids."""

from __future__ import annotations

from datetime import UTC, date, datetime

from careflow.campaigns import load_campaign
from careflow.settings import load_settings
from flows.campaign import plan_batches
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

"""The contact ledger: one row per (campaign, customer, occasion), and the only judge of
what still needs sending.

- ``state.py``     the transitions (claim, mark sending, record, release, settle) and
                   what they return (``Claim``, ``DueBatch``) or take (``SendRules``)
- ``plans.py``     how each statement travels on PostgreSQL and SQLite: keys read by
                   index, rows inserted and written by id over arrays, row guards
- ``storable.py``  what a row can hold: asked before sending, applied when recording
- ``history.py``   read models: a customer's history and timeline, deferred and
                   failed messages
- ``dry_run.py``   the ledger as a dry run sees it: every read, no write

Names the rest of careflow uses are here; the others stay in their modules.
"""

from careflow.ledger.dry_run import DryRunLedger
from careflow.ledger.history import deferred_summary, failure_reasons, timeline
from careflow.ledger.state import RESERVATION_LEASE_SECONDS, Claim, ContactLedger, SendRules
from careflow.ledger.storable import unstorable

__all__ = [
    "RESERVATION_LEASE_SECONDS",
    "Claim",
    "ContactLedger",
    "DryRunLedger",
    "SendRules",
    "deferred_summary",
    "failure_reasons",
    "timeline",
    "unstorable",
]

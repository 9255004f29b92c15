"""A sign-up from the shop: the customer it creates or completes, and the consent it gives.

``POST /events`` takes ``{"type": "signup", "customer": ..., "profile": {...},
"consent": {...}}`` (docs/events.md). careflow/shop_record.py calls this module inside
the transaction that records the post's events:

1. :func:`create_customers`, before the post's events are matched: a sign-up for a
   customer careflow does not know creates them (``customers.external_ref``) with the
   profile's fields, so the sign-up and any later event of theirs in the same post are
   theirs. Two receivers creating the same customer at once make one (the unique
   ref; ON CONFLICT DO NOTHING).
2. :func:`apply`, for the sign-ups recorded now (not a retry's duplicate): a customer
   careflow already knew gets the profile's fields it has no value for (an import's
   values are never overwritten by a form); each channel the customer ticked is
   granted for the form's category, unless careflow holds a later decision for it
   (the latest decision wins, as for a consent import), and each grant is proven
   (careflow/consent_proof.py, source ``signup``: the form's wording, the event's
   source and id, the locale) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update

from careflow import consent_proof
from careflow.db import sqlfunc
from careflow.db.models import Consent, Customer
from careflow.shop_events import KINDS, ShopEvent

CUSTOMERS = Customer.__table__
CONSENTS = Consent.__table__
SIGNUP = KINDS["signup"]
#: consent_proof's and the consents table's source of what a sign-up form gave
SOURCE = "signup"



def create_customers(
    conn, events: Sequence[ShopEvent], known: dict[str, int], now: datetime
) -> dict[str, int]:
    """The customers created for ``events``' sign-ups whose customer careflow did not know
    (``known``: ref -> id); ref -> id. The first sign-up of a ref in the post gives the
    fields."""
    rows: dict[str, dict] = {}
    for e in events:
        if e.kind == SIGNUP and e.customer_ref not in known:
            rows.setdefault(e.customer_ref, {**e.profile, "created_at": now})
    if not rows:
        return {}
    refs = sorted(rows)  # ref order: two writers creating the same customers never deadlock
    fields = sorted({name for row in rows.values() for name in row})
    conn.execute(
        sqlfunc.insert(conn, CUSTOMERS).on_conflict_do_nothing(
            index_elements=[CUSTOMERS.c.external_ref]
        ),
        [{"external_ref": ref, **{f: rows[ref].get(f) for f in fields}} for ref in refs],
    )
    return dict(
        conn.execute(
            select(CUSTOMERS.c.external_ref, CUSTOMERS.c.id).where(
                CUSTOMERS.c.external_ref.in_(refs)
            )
        ).all()
    )


def apply(
    conn, events: Sequence[ShopEvent], customers: dict[str, int], created: set[str]
) -> int:
    """Complete the known customers of ``events``' sign-ups (recorded now) and grant what
    they consented to, with its proof (module docs); returns the consents granted."""
    signups = [e for e in events if e.kind == SIGNUP]
    _complete(conn, [e for e in signups if e.profile and e.customer_ref not in created],
              customers)  # fmt: skip
    return _grant(conn, [e for e in signups if e.consent], customers)


def _complete(conn, events: Sequence[ShopEvent], customers: dict[str, int]) -> None:
    """Fill in the fields a known customer has no value for."""
    for e in events:
        c = CUSTOMERS.c
        conn.execute(
            update(CUSTOMERS)
            .where(c.id == customers[e.customer_ref])
            .values({c[name]: func.coalesce(c[name], value) for name, value in e.profile.items()})
        )


def _grant(conn, events: Sequence[ShopEvent], customers: dict[str, int]) -> int:
    if not events:
        return 0
    ids = sorted({customers[e.customer_ref] for e in events})
    t = CONSENTS.c
    stored = {
        (r.customer_id, r.channel, r.category): (r.updated_at, r.granted)
        for r in conn.execute(
            select(t.customer_id, t.channel, t.category, t.updated_at, t.granted).where(
                t.customer_id.in_(ids)
            )
        )
    }
    locales = dict(
        conn.execute(
            select(CUSTOMERS.c.id, CUSTOMERS.c.locale).where(CUSTOMERS.c.id.in_(ids))
        ).all()
    )
    upsert = sqlfunc.insert(conn, CONSENTS)
    upsert = upsert.on_conflict_do_update(
        index_elements=[t.customer_id, t.channel, t.category],
        set_={"granted": upsert.excluded.granted, "source": upsert.excluded.source,
              "updated_at": upsert.excluded.updated_at},
    )  # fmt: skip
    rows, proofs = {}, []
    for e in sorted(events, key=lambda e: (e.occurred_at, e.key)):
        cid, form = customers[e.customer_ref], e.consent
        for channel in form.channels:
            key = (cid, channel, form.category)
            when, before = stored.get(key, (None, None))
            if when is not None and when > e.occurred_at:
                continue  # a later decision (an opt-out since, say) stands
            stored[key] = (e.occurred_at, True)
            rows[key] = dict(customer_id=cid, channel=channel, category=form.category,
                             granted=True, source=SOURCE, updated_at=e.occurred_at)
            proofs.append(consent_proof.Proof(
                cid, source=SOURCE, channel=channel, category=form.category,
                consent=(before, True), shown=form.shown, locale=locales.get(cid),
                evidence={"source": e.source, "event_id": e.event_id},
                evidence_key=f"{SOURCE}:{e.key}:{channel}:{form.category}",
                occurred_at=e.occurred_at,
            ))  # fmt: skip
    if rows:
        conn.execute(upsert, [rows[k] for k in sorted(rows)])
        consent_proof.record_many(conn, proofs)
    return len(rows)


__all__ = ["SOURCE", "apply", "create_customers"]

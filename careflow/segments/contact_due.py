"""contact_due: customers overdue for contact under their grade's cadence.

The playbook (crm-concepts.md, section 3.5) keeps in touch on a cadence and
calls a customer overdue under it a segment of its own. Its cadences are
"daily", "weekly", "twice a month" and "monthly", set by how close someone
is to buying, with long-time owners contacted at least monthly. careflow
knows a customer's ``grade`` (HSBC-style: A high loyalty and value ... D, E
inactive, F possible, G potential), so the cadence is set per grade, in
days, and these defaults are careflow's reading of the playbook, to be
changed in ``cadence``:

====== ============================= ======
grade  who                           days
====== ============================= ======
A      top buyers: act at once       7 (weekly)
B      good buyers                   15 (twice a month)
C, D   long-time owners              30 (monthly)
E      inactive: win them back       30 (monthly)
F      possible buyers, 1-3 months   15 (twice a month)
G      potential, beyond 3 months    30 (monthly)
====== ============================= ======

Grades are compared trimmed and case-blind (``a`` is ``A``). Customers with
no grade, or a grade the cadence does not list, are not in the segment.

What counts as a contact, up to and including as-of (the UTC day):

- a ledger row (``contact_history``) in state ``sent``, of any campaign and
  channel, on the day of its ``sent_at``, unless the provider later said it
  never arrived (delivery state undelivered, failed, bounced or dropped);
  ``skipped``, ``failed``, ``deferred``, held-out and dry-run messages never
  reached the customer and do not count. The delivery state is the latest
  one known, also when replaying an earlier as-of;
- with ``replies_count`` (default on), a reply from the customer
  (``contact_events`` of kind ``replied`` or ``help``): the customer was in
  touch, and ``careflow report replies`` puts it in front of the owner.
  Opens, clicks and opt-outs do not count.

Overdue: more than ``cadence`` days since the last contact (contacted on 1
Nov with a 7-day cadence: due 8 Nov, overdue from 9 Nov, one day overdue on
9 Nov). A customer never contacted is measured from the day their record was
created, and is overdue without a day count when that is unknown; a customer
created after as-of is not a customer yet.

Columns: customer_id, grade (as the cadence spells it), owner, cadence_days,
last_contact_on (null: never), days_since_contact (null: never) and
days_overdue (null: never contacted, record date unknown).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated

from pydantic import Field, field_validator
from sqlalchemy import Select, case, func, literal, or_, select, union_all

from careflow.db.models import ContactEvent, ContactHistory, Customer
from careflow.db.sqlfunc import day_date, day_number, day_number_of
from careflow.segments._params import SegmentParams
from careflow.segments._registry import Segment

MAX_DAYS = 365
DEFAULT_CADENCE = {"A": 7, "B": 15, "C": 30, "D": 30, "E": 30, "F": 15, "G": 30}

#: delivery states saying a sent message never reached the customer (careflow/events.py, rank 4)
NOT_DELIVERED = ("undelivered", "failed", "bounced", "dropped")
#: timeline kinds that are the customer getting in touch
REPLIES = ("replied", "help")

Days = Annotated[int, Field(strict=True, ge=1, le=MAX_DAYS)]


class ContactDueParams(SegmentParams):
    """Parameters of ``contact_due``."""

    cadence: dict[str, Days] = Field(
        default_factory=lambda: dict(DEFAULT_CADENCE),
        description="Days allowed between contacts, per customer grade; customers whose "
        "grade is not listed are left out.",
        json_schema_extra={
            "allowed": f"a mapping of grade to days from 1 to {MAX_DAYS}, such as {{A: 7, B: 15}}"
        },
    )
    replies_count: bool = Field(
        True,
        strict=True,
        description="Whether a reply from the customer counts as a contact.",
    )

    @field_validator("cadence")
    @classmethod
    def _grades(cls, cadence: dict[str, int]) -> dict[str, int]:
        out: dict[str, int] = {}
        for grade, days in cadence.items():
            key = str(grade).strip().upper()
            if not key or len(key) > 8:
                raise ValueError(f"cadence: grade {grade!r} must be 1 to 8 characters")
            if key in out:
                raise ValueError(f"cadence: grade {key!r} is listed twice")
            out[key] = days
        if not out:
            raise ValueError("cadence must list at least one grade")
        return out


def _grade_key():
    return func.upper(func.trim(Customer.grade))


def contacts_up_to(
    as_of: date, id_range: tuple[int, int] | None, replies_count: bool = True
) -> Select:
    """(customer_id, at): every contact that counts, on or before as-of (UTC day)."""
    end = datetime.combine(as_of + timedelta(days=1), time())
    ch, ce = ContactHistory.__table__, ContactEvent.__table__
    sent = select(ch.c.customer_id, ch.c.sent_at.label("at")).where(
        ch.c.state == "sent",
        ch.c.sent_at < end,
        or_(ch.c.delivery_state.is_(None), ch.c.delivery_state.not_in(NOT_DELIVERED)),
    )
    if id_range is not None:
        sent = sent.where(ch.c.customer_id.between(*id_range))
    if not replies_count:
        return sent
    replied = select(ce.c.customer_id, ce.c.occurred_at.label("at")).where(
        ce.c.customer_id.is_not(None), ce.c.kind.in_(REPLIES), ce.c.occurred_at < end
    )
    if id_range is not None:
        replied = replied.where(ce.c.customer_id.between(*id_range))
    return union_all(sent, replied)


def contact_due(
    as_of: date, p: ContactDueParams, *, id_range: tuple[int, int] | None = None
) -> Select:
    """Customers whose grade's cadence says they should have been contacted by as-of."""
    touches = contacts_up_to(as_of, id_range, p.replies_count).subquery("touches")
    last = (
        select(touches.c.customer_id, func.max(touches.c.at).label("last_at"))
        .group_by(touches.c.customer_id)
        .subquery("last_contact")
    )
    today = literal(day_number_of(as_of))
    last_day = day_number(last.c.last_at)
    since = case((last.c.last_at.is_not(None), last_day), else_=day_number(Customer.created_at))
    days = case(*[(_grade_key() == g, literal(d)) for g, d in p.cadence.items()])
    end = datetime.combine(as_of + timedelta(days=1), time())
    query = (
        select(
            Customer.id.label("customer_id"),
            _grade_key().label("grade"),
            Customer.owner,
            days.label("cadence_days"),
            day_date(last_day).label("last_contact_on"),
            (today - last_day).label("days_since_contact"),
            (today - since - days).label("days_overdue"),
        )
        .outerjoin(last, last.c.customer_id == Customer.id)
        .where(
            _grade_key().in_(list(p.cadence)),
            or_(Customer.created_at.is_(None), Customer.created_at < end),
            or_(since.is_(None), today - since > days),
        )
    )
    if id_range is not None:
        query = query.where(Customer.id.between(*id_range))
    return query


SEGMENT = Segment(
    "contact_due",
    contact_due,
    ContactDueParams,
    "Customers overdue for contact under their grade's cadence.",
)

__all__ = ["DEFAULT_CADENCE", "SEGMENT", "ContactDueParams", "contact_due", "contacts_up_to"]

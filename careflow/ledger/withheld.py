"""The customer's last word: why a reserved message must not go out after all.

The policy decides from what it read when the batch started; a customer may
open the preference centre, unsubscribe or reply STOP while the run is still
sending. So the statement that moves a message to ``sending`` (the moment it is
handed to a provider, careflow/ledger/state.py ``mark_sending``) asks again, in
the same statement, and a row whose customer has since said no is recorded
``skipped`` with the reason instead of sent. Asked per row, in SQL: the answer
is as of that statement, after every change committed before it.

A row is withheld when, for its customer, channel and category:

- ``paused``: the customer paused marketing and the pause has not ended;
- ``opted_out``: the latest consent decision (the channel-wide ``all`` or the
  category's, the later one; a tie goes to the category's, as the policy reads
  them) is a no;
- the suppression's reason (``unsubscribed``, ``bounced``, ...): the address is
  suppressed;
- ``fewer``: the customer asked for fewer marketing messages and another one is
  being sent or was sent within the window (a later run defers it properly).

On PostgreSQL two runs marking one ``fewer`` customer's messages of two
campaigns in the same instant may both pass this check (each statement sees
only committed rows); the policy's rule, which ran before, holds them back
in every other case.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, case, exists, false, literal, or_, select, true

from careflow.db.models import Consent, ContactHistory, Preference, Suppression
from careflow.messages import State
from careflow.policy.cadence import CADENCE_CATEGORY, FEWER_DAYS

CH = ContactHistory.__table__
_P = Preference.__table__
_S = Suppression.__table__

#: what a withheld row's detail says, by reason (a suppression's reason falls to the last)
DETAILS = {
    "paused": "the customer paused marketing in the preference centre while the run was sending",
    "fewer": "the customer asked for fewer marketing messages and another one went out "
    "while the run was sending",
    "opted_out": "the customer said no to this channel while the run was sending",
}
SUPPRESSED_DETAIL = "the address was suppressed ({reason}) while the run was sending"


def reason(channel: str, now: datetime):
    """SQL over a ``contact_history`` row about to go out on ``channel`` at ``now`` (naive
    UTC): the reason it is withheld, or NULL to send it."""
    mine = Consent.__table__.alias("mine")
    later = Consent.__table__.alias("later")
    other = CH.alias("other")

    def of_row(t):
        return or_(t.c.category == "all", t.c.category == CH.c.category)

    paused = exists().where(
        _P.c.customer_id == CH.c.customer_id,
        _P.c.cadence == "paused",
        _P.c.paused_until > now,
    )
    refused = exists().where(
        mine.c.customer_id == CH.c.customer_id,
        mine.c.channel == channel,
        of_row(mine),
        mine.c.granted == false(),
        ~exists().where(
            later.c.customer_id == mine.c.customer_id,
            later.c.channel == channel,
            of_row(later),
            later.c.granted == true(),
            or_(
                later.c.updated_at > mine.c.updated_at,
                and_(
                    later.c.updated_at == mine.c.updated_at,
                    later.c.category != "all",
                    mine.c.category == "all",
                ),
            ),
        ),
    )
    suppressed = (
        select(_S.c.reason)
        .where(_S.c.channel == channel, _S.c.address == CH.c.recipient)
        .limit(1)
        .scalar_subquery()
    )
    since = now - timedelta(days=FEWER_DAYS)
    fewer = and_(
        exists().where(_P.c.customer_id == CH.c.customer_id, _P.c.cadence == "fewer"),
        exists().where(
            other.c.customer_id == CH.c.customer_id,
            other.c.id != CH.c.id,
            other.c.category == CADENCE_CATEGORY,
            or_(
                and_(other.c.state == State.SENT, other.c.sent_at >= since),
                other.c.state == State.SENDING,
            ),
        ),
    )
    marketing = CH.c.category == CADENCE_CATEGORY
    return case(
        (and_(marketing, paused), literal("paused")),
        (refused, literal("opted_out")),
        (suppressed.is_not(None), suppressed),
        (and_(marketing, fewer), literal("fewer")),
        else_=None,
    )


def detail(why: str) -> str:
    return DETAILS.get(why) or SUPPRESSED_DETAIL.format(reason=why)

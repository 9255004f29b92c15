"""journey_step: the customers on one send step of a journey (careflow/journeys/).

Not offered to campaigns (``listed=False``): a journey's send step is a
campaign of its own (careflow/campaigns.py ``journey_step_campaign``) and this
is its segment, so the route selects, keys and sends its messages unchanged.
With ``claim`` it selects the positions one advancer holds on the step; without,
those whose message waits for its send time (the follow-up flow,
careflow/flows/deferred.py, selects them again when it is due).

Columns: customer_id, local_date (the day the customer entered: the message's
occasion in the ledger), entry_key; with ``answered``, last_answered: the channel
of the customer's latest reply or click (the policy's channel preference puts it
first, careflow/policy/).
"""

from __future__ import annotations

from datetime import date

from pydantic import Field
from sqlalchemy import Select, select

from careflow.db.models import ContactEvent, JourneyPosition
from careflow.segments._params import SegmentParams
from careflow.segments._registry import Segment

P = JourneyPosition.__table__.c
CE = ContactEvent.__table__.c
#: what counts as answering on a channel
ANSWERS = ("replied", "clicked")


class JourneyStepParams(SegmentParams):
    """Parameters of ``journey_step``."""

    journey: str = Field("", description="The journey's name.")
    step: str = Field("", description="The send step's id.")
    claim: str | None = Field(
        None,
        description="Only the positions this advancer's claim holds (null: those waiting "
        "for their message's send time).",
    )
    answered: bool = Field(
        False,
        description="Also give last_answered: the channel of the customer's latest reply "
        "or click (a send step with channels: [last_answered, ...]).",
    )


def journey_step(
    as_of: date, p: JourneyStepParams, *, id_range: tuple[int, int] | None = None
) -> Select:
    """The customers on send step ``step`` of ``journey``."""
    query = select(
        P.customer_id, P.entered_on.label("local_date"), P.entry_key
    ).where(P.journey == p.journey, P.step == p.step)
    if p.claim is not None:
        query = query.where(P.claimed_by == p.claim, P.state.in_(("active", "waiting")))
    else:
        query = query.where(P.state == "waiting", P.waiting_for == "message")
    if id_range is not None:
        query = query.where(P.customer_id.between(*id_range))
    if p.answered:
        last = (
            select(CE.channel)
            .where(CE.customer_id == P.customer_id, CE.kind.in_(ANSWERS),
                   CE.channel.is_not(None))
            .order_by(CE.occurred_at.desc(), CE.id.desc())
            .limit(1)
            .scalar_subquery()
        )  # fmt: skip
        query = query.add_columns(last.label("last_answered"))
    return query


SEGMENT = Segment(
    "journey_step",
    journey_step,
    JourneyStepParams,
    "Customers on one send step of a journey (careflow builds it; not for campaigns).",
    listed=False,
)

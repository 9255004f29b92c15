"""The database schema: SQLAlchemy 2 typed models.

Migrations in careflow/db/migrations create exactly these tables; a test
checks that ``alembic upgrade head`` and these models agree.

Dates and times: ``orders.ordered_at`` is stored as given by the source
(naive, the shop's clock) and ``orders.ordered_on`` is its calendar day, so
segments can count calendar days with an index instead of parsing
timestamps. Ledger timestamps are UTC.

Money: amounts are exact integers in the currency's minor unit
(``amount_minor``, see careflow/money.py), never floats or SQL NUMERIC
(SQLite keeps NUMERIC as a binary float). An order carries its currency;
its lines are in the same currency.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names so migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BigInteger keys autoincrement on PostgreSQL; SQLite only autoincrements INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    external_ref: Mapped[str | None] = mapped_column(String(64), unique=True)
    full_name: Mapped[str | None] = mapped_column(String(200))
    given_name: Mapped[str | None] = mapped_column(String(100))
    family_name: Mapped[str | None] = mapped_column(String(100))
    mobile: Mapped[str | None] = mapped_column(String(40))
    email: Mapped[str | None] = mapped_column(String(254))
    fax: Mapped[str | None] = mapped_column(String(40))
    locale: Mapped[str | None] = mapped_column(String(16))
    time_zone: Mapped[str | None] = mapped_column(String(64))
    birthday: Mapped[date | None] = mapped_column(Date)
    #: solar or lunar: the calendar the birthday is kept on; None: by locale
    #: (careflow/birthday_calendar.py)
    birthday_calendar: Mapped[str | None] = mapped_column(String(8))
    grade: Mapped[str | None] = mapped_column(String(8))
    owner: Mapped[str | None] = mapped_column(String(100))
    country: Mapped[str | None] = mapped_column(String(64))
    preferred_channel: Mapped[str | None] = mapped_column(String(16))
    #: False: messages go at the campaign's own time, never at a best hour worked out from
    #: their history (PIPL art. 24's non-personalised option); None or True: allowed
    #: (careflow/policy/send_time.py)
    personal_send_time: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime | None] = mapped_column(DateTime)


class Consent(Base):
    """Consent per customer, channel and category. No row means 'not asked' (see policy).

    ``category`` is ``all`` for a decision about the whole channel (a STOP
    reply, an import without a category) or a campaign category (``care``,
    ``marketing``, ``transactional``). Of a channel's ``all`` row and its
    category row, the later decision wins (careflow/policy/consent.py).
    """

    __tablename__ = "consents"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    category: Mapped[str] = mapped_column(
        String(16), primary_key=True, default="all", server_default="all"
    )
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Product(Base):
    __tablename__ = "products"

    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(300))
    #: days one unit lasts a customer, when known (rice, water filters, ink...)
    replenish_days: Mapped[int | None] = mapped_column(Integer)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_customer_day", "customer_id", "ordered_on"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    external_ref: Mapped[str | None] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    ordered_at: Mapped[datetime] = mapped_column(DateTime)
    ordered_on: Mapped[date] = mapped_column(Date, index=True)
    #: ISO 4217 code (careflow.money)
    currency: Mapped[str] = mapped_column(String(3))
    #: the order total in minor units of ``currency``: 3999 is 39.99 GBP
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    #: True for an order the shop posted (POST /events) that happened longer ago than
    #: CAREFLOW_EVENT_MAX_AGE_HOURS, outside a backfill: it counts in the purchase history,
    #: and attribution and journeys pass it by (careflow/shop_record.py)
    quiet: Mapped[bool | None] = mapped_column(Boolean)


class OrderLine(Base):
    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    sku: Mapped[str] = mapped_column(ForeignKey("products.sku"))
    quantity: Mapped[int] = mapped_column(Integer)
    #: minor units of the order's currency, like the order total
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)
    amount_minor: Mapped[int] = mapped_column(BigInteger)


class Campaign(Base):
    """Campaigns that have run, as recorded by the ledger (definitions live in templates/)."""

    __tablename__ = "campaigns"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class ContactHistory(Base):
    """The ledger: one row per campaign x customer x occasion.

    The unique key deliberately leaves the channel out: a customer gets one
    message per occasion whichever channel carries it, so re-running with
    ``--channel email`` after an SMS run cannot contact anyone twice.
    """

    __tablename__ = "contact_history"
    __table_args__ = (
        UniqueConstraint("campaign", "customer_id", "occasion", name="uq_contact_key"),
        Index("ix_contact_history_run", "run_id", "state"),
        Index("ix_contact_history_customer", "customer_id", "created_at"),
        # the follow-up flow finds deferred messages that are due
        Index("ix_contact_history_due", "state", "not_before"),
        # one message per address per occasion: who else has this campaign at this address
        # (recipient first: only uq_contact_key may start with the campaign, migration 0007)
        Index("ix_contact_history_address", "recipient", "campaign"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    campaign: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    occasion: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    retryable: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    recipient: Mapped[str | None] = mapped_column(String(254))
    subject: Mapped[str | None] = mapped_column(String(300))
    body: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: the latest delivery state the provider reported (careflow/events.py ranks them)
    delivery_state: Mapped[str | None] = mapped_column(String(16))
    delivery_rank: Mapped[int | None] = mapped_column(Integer)
    delivery_updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: the campaign's category (care, marketing, transactional): frequency caps count by it
    category: Mapped[str | None] = mapped_column(String(16))
    #: a deferred message is due at this instant (UTC); a later run or the follow-up sends it
    not_before: Mapped[datetime | None] = mapped_column(DateTime)
    #: the run's as-of instant (UTC) that selected the customer: the follow-up re-selects at it
    selected_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: the one channel the run that claimed the row was limited to (``--channel``): a
    #: deferred message goes by it and no other; None: the campaign's channel order
    only_channel: Mapped[str | None] = mapped_column(String(16))
    #: the experiment's variant this message is (campaign.yaml ``experiment:``): set when
    #: it is first rendered, never changed (careflow/variants.py)
    variant: Mapped[str | None] = mapped_column(String(32))
    #: send-time optimisation's arm (``best``: at the customer's best hour, ``fixed``: at
    #: the campaign's time, the comparison group): set once, when the message is first
    #: timed, never changed (careflow/policy/send_time.py)
    send_time_arm: Mapped[str | None] = mapped_column(String(8))


class ExperimentDecision(Base):
    """A campaign's experiment decided: the winner its pre-registered rule declared, with
    the evidence (counts per variant, the interval, the rule) at the time. Written once
    per campaign and never changed (careflow/experiment_decisions.py); later occasions
    send the winner."""

    __tablename__ = "experiment_decisions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    #: one decision per campaign's experiment: a second one (asked twice, or by two runs
    #: at once) is refused by this key and the first is kept
    campaign: Mapped[str] = mapped_column(String(64), unique=True)
    winner: Mapped[str] = mapped_column(String(32))
    control: Mapped[str] = mapped_column(String(32))
    #: the rule, in words, as campaign.yaml said it when the decision was taken
    rule: Mapped[str] = mapped_column(Text)
    #: JSON: variant -> {customers, converted}, held_out included
    counts: Mapped[str] = mapped_column(Text)
    #: the winner's difference from the control, in points, and its always-valid interval
    points: Mapped[float] = mapped_column(Float)
    lower: Mapped[float] = mapped_column(Float)
    upper: Mapped[float] = mapped_column(Float)
    #: who took it: "run <id>" or "careflow report experiment --decide"
    decided_by: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[datetime] = mapped_column(DateTime)


class DryRunHold(Base):
    """What a dry run would take, kept while it runs: its batches, on threads or in other
    processes, count it as a real run counts its reserved rows (an address for one
    message per address per occasion, a frequency-cap slot). Nothing else reads it, and
    the run drops its rows when it ends (careflow/ledger/dry_run.py)."""

    __tablename__ = "dry_run_holds"
    __table_args__ = (Index("ix_dry_run_holds_address", "run_id", "recipient"),)

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    occasion: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(254))
    #: the campaign's category: frequency caps count by it
    category: Mapped[str | None] = mapped_column(String(16))
    #: the instant the run decides at (UTC; a dry run may rehearse any): from when it holds
    decided_at: Mapped[datetime] = mapped_column(DateTime)
    #: when the hold was written (UTC, the real clock): a dead dry run's holds go by it
    created_at: Mapped[datetime] = mapped_column(DateTime)


class ContactEvent(Base):
    """Everything that happens after a send: delivery status, replies, opt-outs, orders.

    ``(provider, event_id)`` is unique: providers retry and duplicate, and the
    same event is recorded once. An event whose message or customer is not
    (yet) known keeps ``contact_id``/``customer_id`` empty and is matched
    when the send it belongs to is recorded (a status callback can outrun
    the ledger write of its own send).
    """

    __tablename__ = "contact_events"
    __table_args__ = (
        Index("ix_contact_events_customer", "customer_id", "occurred_at"),
        # a day's events of a kind, by provider, from the index alone: the compliance
        # monitors (careflow/compliance.py), read before every email run (careflow/pauses.py)
        Index("ix_contact_events_kind_day", "kind", "occurred_at", "provider"),
        UniqueConstraint("provider", "event_id", name="uq_contact_events_provider_event"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contact_history.id", ondelete="SET NULL"), index=True
    )
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(DateTime)
    provider_id: Mapped[str | None] = mapped_column(String(128), index=True)
    payload: Mapped[dict | None] = mapped_column(JSON)
    provider: Mapped[str | None] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(160))
    channel: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime | None] = mapped_column(DateTime)


class Preference(Base):
    """A customer's cadence, as they set it in the preference centre (careflow/preferences.py).

    No row means ``normal``. The page's per-category and per-channel choices are
    consents (source ``preference_centre``), not kept here.
    """

    __tablename__ = "preferences"
    __table_args__ = (
        CheckConstraint("cadence IN ('normal', 'fewer', 'paused')", name="cadence"),
        CheckConstraint(
            "(cadence = 'paused') = (paused_until IS NOT NULL)", name="pause"
        ),
    )

    customer_id: Mapped[int] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    cadence: Mapped[str] = mapped_column(String(8), server_default="normal")
    paused_until: Mapped[datetime | None] = mapped_column(DateTime)  # naive UTC
    locale: Mapped[str | None] = mapped_column(String(16))
    #: the id of the token that made the change (careflow/preferences.py ``token_id``)
    token_id: Mapped[str | None] = mapped_column(String(24))
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Suppression(Base):
    """Addresses that must receive nothing (more): opt-outs, bounces, spam reports.

    Kept by address, not customer, so a number shared by a household or a
    number no customer record matches is blocked all the same.
    """

    __tablename__ = "suppressions"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    address: Mapped[str] = mapped_column(String(254), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    source: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Run(Base):
    """One campaign run and its summary, for `careflow report`."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign: Mapped[str] = mapped_column(String(64), index=True)
    as_of: Mapped[datetime] = mapped_column(DateTime)
    channel: Mapped[str | None] = mapped_column(String(32))
    dry_run: Mapped[bool] = mapped_column(Boolean)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    summary: Mapped[dict | None] = mapped_column(JSON)


class CampaignPause(Base):
    """A campaign that paused itself because its sending domain's spam-report rate passed
    CAREFLOW_SPAM_RATE_LIMIT on a day, with the numbers that caused it, and the
    operator's resume (careflow/pauses.py). A pause without ``resumed_at`` refuses the
    campaign's runs; a campaign has at most one such pause (the partial unique index),
    so two runs judging at once record it once."""

    __tablename__ = "campaign_pauses"
    __table_args__ = (
        Index(
            "uq_campaign_pauses_active",
            "campaign",
            unique=True,
            sqlite_where=text("resumed_at IS NULL"),
            postgresql_where=text("resumed_at IS NULL"),
        ),
        Index("ix_campaign_pauses_campaign", "campaign", "day"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    campaign: Mapped[str] = mapped_column(String(64))
    #: the From address's domain whose rate was judged
    domain: Mapped[str] = mapped_column(String(254))
    #: the UTC day judged, and its counts of SendGrid events
    day: Mapped[date] = mapped_column(Date)
    delivered: Mapped[int] = mapped_column(Integer)
    spam_reports: Mapped[int] = mapped_column(Integer)
    #: the limit and minimum volume in force when it paused
    rate_limit: Mapped[float] = mapped_column(Float)
    min_delivered: Mapped[int] = mapped_column(Integer)
    #: the run that found it (that run was refused)
    run_id: Mapped[str | None] = mapped_column(String(64))
    paused_at: Mapped[datetime] = mapped_column(DateTime)
    resumed_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: who resumed it (the operating system's user name) and what they said
    resumed_by: Mapped[str | None] = mapped_column(String(64))
    resume_note: Mapped[str | None] = mapped_column(Text)


class PurchaseFacts(Base):
    """Each customer's purchase history summed up, for segments (careflow/purchase_facts.py).

    Days are day numbers (careflow/db/sqlfunc.py). Kept current by triggers
    on orders, order_lines and products (migration 0005), which mark the
    customers they concern in ``purchase_facts_dirty``; segments compute
    those from their orders until a refresh catches up, so they are exact
    at any moment.
    """

    __tablename__ = "purchase_facts"

    customer_id: Mapped[int] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    first_day: Mapped[int] = mapped_column(Integer)
    last_day: Mapped[int] = mapped_column(Integer, index=True)
    #: distinct days with an order: several orders on one day are one purchase
    purchase_days: Mapped[int] = mapped_column(Integer)
    orders: Mapped[int] = mapped_column(Integer)
    #: the median gap in days between purchase days (None with a single purchase day)
    median_gap: Mapped[float | None] = mapped_column(Float)
    #: max(quantity x replenish_days) over the last purchase day's lines, when known
    product_days: Mapped[int | None] = mapped_column(Integer)


class PurchaseFactsDirty(Base):
    """Customers whose purchase facts may be out of date (filled by triggers)."""

    __tablename__ = "purchase_facts_dirty"

    customer_id: Mapped[int] = mapped_column(Id, primary_key=True)
    marked_at: Mapped[datetime | None] = mapped_column(
        DateTime, server_default=func.current_timestamp()
    )


class PurchaseWindow(Base):
    """Each buyer's purchases in a trailing window, for the pyramid
    (careflow/purchase_windows.py): one row per window and buyer, as of the day
    its ``PurchaseWindowState`` records."""

    __tablename__ = "purchase_windows"

    window_key: Mapped[str] = mapped_column(
        ForeignKey("purchase_window_state.window_key", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[int] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    #: money spent in the window, in minor units
    monetary_minor: Mapped[int] = mapped_column(BigInteger)
    #: the one currency of those orders; None when they are in several
    currency: Mapped[str | None] = mapped_column(String(3))
    #: distinct days with an order in the window
    frequency: Mapped[int] = mapped_column(Integer)
    #: day number of the last purchase in the window
    last_day: Mapped[int] = mapped_column(Integer)
    #: where the buyer stands among equal values (careflow.purchase_windows.tie_key)
    tie_key: Mapped[int] = mapped_column(BigInteger)


# best first in each of the pyramid's orders, ties by tie key then id: the customer at
# a rank is a walk along an index, not a sort of every buyer
for _name, _measure in (
    ("money", PurchaseWindow.monetary_minor),
    ("frequency", PurchaseWindow.frequency),
    ("recency", PurchaseWindow.last_day),
):
    Index(
        f"ix_purchase_windows_{_name}",
        PurchaseWindow.window_key,
        _measure.desc(),
        PurchaseWindow.tie_key,
        PurchaseWindow.customer_id,
    )


class PurchaseWindowState(Base):
    """One kept window: its length, currency and the day it is as of."""

    __tablename__ = "purchase_window_state"

    #: "365" or "365:GBP"
    window_key: Mapped[str] = mapped_column(String(16), primary_key=True)
    window_days: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str | None] = mapped_column(String(3))
    #: day number of the as-of day the rows are exact for (None while being built)
    as_of_day: Mapped[int | None] = mapped_column(Integer)
    used_at: Mapped[datetime] = mapped_column(DateTime)


class Journey(Base):
    """Journeys that have run (definitions live in templates/<journey>/journey.yaml): the
    version last advanced and, for event entries, how far their events have been read
    (careflow/journeys/advance.py, ENTRY_SETTLE)."""

    __tablename__ = "journeys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str | None] = mapped_column(String(16))
    #: event entries: the table read (contact_events or orders), the id up to which every
    #: row has been read for entries, and the newest id as of entry_seen_at
    entry_source: Mapped[str | None] = mapped_column(String(32))
    entry_read_from: Mapped[int | None] = mapped_column(BigInteger)
    entry_seen: Mapped[int | None] = mapped_column(BigInteger)
    entry_seen_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class JourneyPosition(Base):
    """Where one customer stands in one entry of a journey (careflow/journeys/).

    One row per (journey, customer, entry key): the entry key says how often a
    customer may enter (``once``, ``2026-11`` for once a month, the entry day for
    every N days), so entering twice is a conflict the database refuses. The
    advancer claims due rows with a lease (``claimed_by``, ``claim_until``) like the
    ledger's reservations; ``due_at`` is when the row next needs it (UTC).
    """

    __tablename__ = "journey_positions"
    __table_args__ = (
        UniqueConstraint("journey", "customer_id", "entry_key", name="uq_journey_positions_key"),
        # the advancer's scan for due rows
        Index("ix_journey_positions_due", "state", "due_at"),
        # a step's customers: the journey_step segment, status and lint's version check
        Index("ix_journey_positions_step", "journey", "step", "state"),
        Index("ix_journey_positions_customer", "customer_id", "entered_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    journey: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    entry_key: Mapped[str] = mapped_column(String(64))
    #: the entry's day (the shop's zone): the ledger occasion of its send steps
    entered_on: Mapped[date] = mapped_column(Date)
    #: the journey's version (a hash of its step graph) the customer follows
    version: Mapped[str] = mapped_column(String(16))
    step: Mapped[str] = mapped_column(String(64))
    #: how many times this entry has reached ``step`` (a loop comes back to it)
    visit: Mapped[int] = mapped_column(Integer, default=1)
    #: active (due to run its step), waiting, held_out, done, exited
    state: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: what a waiting row waits for: an event kind list, ``time`` or ``message`` (its
    #: send step's message deferred to its send time)
    waiting_for: Mapped[str | None] = mapped_column(String(64))
    #: a wait_for counts what happened since this instant (UTC)
    waiting_since: Mapped[datetime | None] = mapped_column(DateTime)
    #: when the customer reached ``step``
    arrived_at: Mapped[datetime] = mapped_column(DateTime)
    entered_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    exit_reason: Mapped[str | None] = mapped_column(String(64))
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claim_until: Mapped[datetime | None] = mapped_column(DateTime)


class JourneyStepRecord(Base):
    """One executed step visit, append-only: the journey's part of a customer's timeline.

    The unique key makes each visit of each step happen once, whichever advancer
    records it first; the position moves in the same transaction.
    """

    __tablename__ = "journey_steps"
    __table_args__ = (
        UniqueConstraint(
            "journey", "customer_id", "entry_key", "step", "visit", name="uq_journey_steps_visit"
        ),
        Index("ix_journey_steps_customer", "customer_id", "at"),
        Index("ix_journey_steps_journey", "journey", "step", "outcome"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    journey: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    entry_key: Mapped[str] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(64))
    visit: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(16))
    #: what the visit did: sent, skipped, failed, held_out (a send step's ledger state),
    #: waited, happened, timed_out, branched, split, notified, ended (an exit step),
    #: exited (an exit rule), entered, moved (a new version)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    #: the step it led to (None: the journey ended)
    next_step: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime)


class ConsentProof(Base):
    """One change of consent or suppression, as proof: append-only (careflow/consent_proof.py).

    Who (``customer_id``; None for an address no customer matched, kept by ``address``),
    through what (``source``: reply, one_click, page, bounce, spam_report, provider,
    import, operator), on which ``channel`` and ``category``, what changed (consent
    ``granted``/``withdrawn``/``none`` and the suppression reason or ``none``, before and
    after; None where that part was not touched), what the customer was shown or sent
    (``shown``), in which ``locale``, when (``occurred_at``: the customer's act;
    ``recorded_at``: careflow's write, which retention counts from) and the request's
    ``evidence`` (ids and hashes, never a secret or a whole token). ``evidence_key`` is
    unique: a provider's retry or a re-imported file records nothing twice. Triggers
    (migration 0014) refuse an UPDATE of a row and a DELETE of a young one; no foreign
    key, so deleting a customer cannot cascade into their proof.
    """

    __tablename__ = "consent_proof"
    __table_args__ = (
        UniqueConstraint("evidence_key", name="uq_consent_proof_evidence"),
        Index("ix_consent_proof_customer", "customer_id", "occurred_at"),
        Index("ix_consent_proof_address", "channel", "address"),
        Index("ix_consent_proof_recorded", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(254))
    consent_before: Mapped[str | None] = mapped_column(String(16))
    consent_after: Mapped[str | None] = mapped_column(String(16))
    suppression_before: Mapped[str | None] = mapped_column(String(32))
    suppression_after: Mapped[str | None] = mapped_column(String(32))
    #: the preference centre's cadence (normal, fewer, paused until ...), before and after
    cadence_before: Mapped[str | None] = mapped_column(String(64))
    cadence_after: Mapped[str | None] = mapped_column(String(64))
    shown: Mapped[str | None] = mapped_column(Text)
    locale: Mapped[str | None] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(DateTime)
    recorded_at: Mapped[datetime] = mapped_column(DateTime)
    evidence_key: Mapped[str] = mapped_column(String(240))
    evidence: Mapped[dict | None] = mapped_column(JSON)

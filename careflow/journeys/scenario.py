"""A simulation's scenario: what the customers do, the responses ``careflow journey
simulate --events scenario.yaml`` records as days go by (docs/journeys.md, "Simulating").

Two kinds of lines: **responses** of a share of those a send step sent to ("20% of
those sent `first_sms` reply within 2 days") and **events** of named customers at
given instants. Each is recorded as careflow records the real thing: a reply, a
click, a delivery, a bounce or an opt-out as a contact event, an order as an order,
so waits, exits and entries read them exactly as they would read the real ones.

A response is drawn, once and for good, from the scenario's ``seed``, the rule, the
journey, the step, the customer and their entry: the same scenario gives the same
events on every run, and advancing for real with the same scenario recorded
(``record_due`` on the real database) gives the same events at the same instants.
Every event carries an id made of that draw (``provider`` ``simulated``, or the
order's ``external_ref``), so recording again records nothing new.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import Engine, select

from careflow.db.models import ContactEvent, Customer, JourneyStepRecord, Order
from careflow.errors import ConfigError
from careflow.journey_spec import JourneySpec, SendStep, parse_duration
from careflow.journeys.events import naive
from careflow.policy.config import parse_share

S = JourneyStepRecord.__table__.c
PROVIDER = "simulated"

Event = Literal["replied", "clicked", "delivered", "bounced", "opted_out", "ordered"]


class Response(BaseModel):
    """``share`` of the customers step ``after`` sent to do ``event`` within ``within`` of
    that send (at an instant drawn evenly over the window)."""

    model_config = {"extra": "forbid", "frozen": True}

    after: str
    event: Event
    share: float = Field(ge=0, le=1)
    within: str
    #: an order's total, in the shop's main currency (orders only)
    amount: float = Field(default=25.0, gt=0)

    @field_validator("share", mode="before")
    @classmethod
    def _share(cls, value):
        return parse_share(value)

    @field_validator("within")
    @classmethod
    def _within(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def window(self) -> timedelta:
        return parse_duration(self.within)


class Happening(BaseModel):
    """One customer's event at an instant (UTC unless the instant names its offset)."""

    model_config = {"extra": "forbid", "frozen": True}

    customer: int
    event: Event
    at: datetime
    amount: float = Field(default=25.0, gt=0)

    @property
    def instant(self) -> datetime:
        return naive(self.at if self.at.tzinfo else self.at.replace(tzinfo=UTC))


class Scenario(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    seed: int = 0
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    responses: list[Response] = []
    events: list[Happening] = []

    def check_against(self, spec: JourneySpec, source: str) -> None:
        """Each response follows a send step of ``spec``: a one-line ConfigError if not."""
        sends = [s.id for s in spec.steps if isinstance(s, SendStep)]
        for i, r in enumerate(self.responses):
            if r.after not in sends:
                raise ConfigError(
                    f"{source}: responses[{i}].after: {r.after!r} is no send step of journey "
                    f"{spec.name!r} (its send steps: {', '.join(sends) or 'none'})"
                )


def check_customers(engine: Engine, scenario: Scenario, source: str) -> None:
    """Each named customer is in the database: a one-line ConfigError if not."""
    named = sorted({h.customer for h in scenario.events})
    with engine.connect() as conn:
        known = set()
        for start in range(0, len(named), 1000):
            known.update(conn.execute(
                select(Customer.id).where(Customer.id.in_(named[start : start + 1000]))
            ).scalars())  # fmt: skip
    for i, h in enumerate(scenario.events):
        if h.customer not in known:
            raise ConfigError(f"{source}: events[{i}].customer: no customer {h.customer}")


def load_scenario(path: Path, spec: JourneySpec) -> Scenario:
    """The scenario in ``path`` for ``spec``; ConfigError (one line) for anything wrong."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the scenario ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected 'responses:' and/or 'events:'")
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'scenario'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
    scenario.check_against(spec, str(path))
    return scenario


def _draw(*parts) -> tuple[float, float, str]:
    """Two fixed uniform numbers in [0, 1) and an id, from ``parts``."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    first = int.from_bytes(digest[:8], "big") / 2**64
    second = int.from_bytes(digest[8:16], "big") / 2**64
    return first, second, digest[16:28].hex()


def widest(scenario: Scenario) -> timedelta:
    """The longest window of the scenario's responses."""
    return max((r.window for r in scenario.responses), default=timedelta())


def record_due(
    engine: Engine,
    spec: JourneySpec,
    scenario: Scenario,
    upto: datetime,
    *,
    since: datetime | None,
    shop_zone: str,
    currency: str,
    above_id: int = 0,
) -> int:
    """Record the scenario's events that happened by ``upto`` (naive or aware UTC) and are
    not recorded yet; ``since`` is the last instant this was asked for (None: never), so
    only the send steps' rows from a window before it are read again (``above_id``: the
    caller knows no such row has an id this low, which spares reading them). Returns
    how many events it recorded."""
    upto = naive(upto)
    reach = widest(scenario)
    events: list[dict] = []
    orders: list[dict] = []

    def add(cid: int, what: str, at: datetime, key: str, amount: float) -> None:
        if what == "ordered":
            local = at.replace(tzinfo=UTC).astimezone(ZoneInfo(shop_zone)).replace(tzinfo=None)
            orders.append({
                "external_ref": f"sim-{key}", "customer_id": cid, "ordered_at": local,
                "ordered_on": local.date(), "currency": currency,
                "amount_minor": round(amount * 100),
            })  # fmt: skip
        else:
            events.append({
                "customer_id": cid, "kind": what, "occurred_at": at, "received_at": at,
                "provider": PROVIDER, "event_id": f"sim-{key}",
            })  # fmt: skip

    for h in scenario.events:
        if h.instant <= upto:
            add(h.customer, h.event, h.instant, _draw(scenario.seed, "event", h.customer,
                h.event, h.instant.isoformat())[2], h.amount)  # fmt: skip
    if scenario.responses:
        steps = sorted({r.after for r in scenario.responses})
        query = select(S.customer_id, S.entry_key, S.step, S.visit, S.at).where(
            S.id > above_id, S.journey == spec.name, S.step.in_(steps), S.outcome == "sent",
            S.at <= upto,
        )
        if since is not None:
            query = query.where(S.at >= naive(since) - reach)
        with engine.connect() as conn:
            sent = conn.execute(query).all()
        for i, rule in enumerate(scenario.responses):
            for cid, entry_key, step, visit, at in sent:
                if step != rule.after:
                    continue
                share, when, key = _draw(scenario.seed, i, spec.name, step, cid, entry_key, visit)
                if share >= rule.share:
                    continue
                instant = at + rule.window * when
                if instant <= upto:
                    add(cid, rule.event, instant, key, rule.amount)
    return _insert_new(engine, events, orders)


def _insert_new(engine: Engine, events: list[dict], orders: list[dict]) -> int:
    """Insert the rows whose ids are not there yet."""
    recorded = 0
    with engine.begin() as conn:
        if events:
            known = set()
            ids = [e["event_id"] for e in events]
            for start in range(0, len(ids), 1000):
                known.update(conn.execute(
                    select(ContactEvent.event_id).where(
                        ContactEvent.provider == PROVIDER,
                        ContactEvent.event_id.in_(ids[start : start + 1000]),
                    )
                ).scalars())  # fmt: skip
            fresh = list({e["event_id"]: e for e in events if e["event_id"] not in known}.values())
            if fresh:
                conn.execute(ContactEvent.__table__.insert(), fresh)
            recorded += len(fresh)
        if orders:
            known = set()
            refs = [o["external_ref"] for o in orders]
            for start in range(0, len(refs), 1000):
                known.update(conn.execute(
                    select(Order.external_ref).where(
                        Order.external_ref.in_(refs[start : start + 1000])
                    )
                ).scalars())  # fmt: skip
            fresh = list({o["external_ref"]: o for o in orders
                          if o["external_ref"] not in known}.values())  # fmt: skip
            if fresh:
                conn.execute(Order.__table__.insert(), fresh)
            recorded += len(fresh)
    return recorded


__all__ = ["Scenario", "check_customers", "load_scenario", "record_due", "widest"]

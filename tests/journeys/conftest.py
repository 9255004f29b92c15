"""A shop with a win-back journey, advanced by hand at fake instants."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from careflow.db.models import ContactHistory, JourneyPosition, JourneyStepRecord
from careflow.flows.journey import advance_journeys, sender
from careflow.settings import PROJECT_ROOT, load_settings
from tests.factories import add_customer, add_orders

START = datetime(2026, 6, 1, 12, tzinfo=UTC)  # noon UTC: no quiet hours anywhere near

NUDGE = """\
description: Win back a dormant customer
category: marketing
entry:
  segment: dormant
  parameters: {days: 30}
exit_on: [opted_out]
steps:
  - {id: first, type: send, channels: [sms, email]}
  - id: answer
    type: wait_for
    event: [replied, ordered]
    within: 3 days
    then: thanks
    else: second
  - {id: second, type: send, channels: [email]}
  - {id: pause, type: wait, days: 7}
  - {id: call, type: notify_owner, note: No answer to the SMS or the email}
  - {id: thanks, type: exit}
"""


def write_journey(root, name: str, text: str, sends=("first", "second")) -> None:
    folder = root / name
    folder.mkdir(exist_ok=True)
    (folder / "journey.yaml").write_text(text)
    for step in sends:
        (folder / f"{step}.sms.en.j2").write_text(f"{step}: hello {{{{ name }}}}")
        (folder / f"{step}.email.en.txt.j2").write_text(f"{step}: hello {{{{ name }}}}")
        (folder / f"{step}.email.en.subject.j2").write_text(f"{step} for you")


@pytest.fixture
def templates(tmp_path, monkeypatch):
    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    write_journey(root, "nudge", NUDGE)
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    monkeypatch.setenv("CAREFLOW_QUIET_HOURS", "off")
    return root


def dormant(engine, cid: int, **fields) -> int:
    """A customer the dormant segment selects on START (last order 60 days before)."""
    add_customer(engine, cid, mobile=f"+4479111{cid:05d}", country="GB", **fields)
    add_orders(engine, cid, [date(2026, 4, 2)])
    return cid


def advance(real_clock, at: datetime, journey: str | None = "nudge") -> dict:
    real_clock.set(at)
    (summary,) = advance_journeys(journey, settings=load_settings())
    return summary


def positions(engine, journey="nudge") -> dict[int, object]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(JourneyPosition.__table__).where(JourneyPosition.journey == journey)
        ).all()
    return {r.customer_id: r for r in rows}


def steps(engine, cid: int, journey="nudge") -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(JourneyStepRecord.step, JourneyStepRecord.outcome)
            .where(JourneyStepRecord.journey == journey, JourneyStepRecord.customer_id == cid)
            .order_by(JourneyStepRecord.id)
        ).all()
    return [tuple(r) for r in rows]


def messages(engine, cid: int) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(ContactHistory.campaign, ContactHistory.state, ContactHistory.channel)
            .where(ContactHistory.customer_id == cid)
            .order_by(ContactHistory.id)
        ).all()
    return [tuple(r) for r in rows]


def days(n: float) -> timedelta:
    return timedelta(days=n)


class Crash(Exception):
    """The advancing process dying right after a send step's messages went out."""


def send_then_crash(settings):
    """A send function (careflow/journeys/advance.py ``SendFn``) that sends, then dies
    before the positions move on."""

    def send(*args):
        sender(settings)(*args)
        raise Crash

    return send

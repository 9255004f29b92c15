"""`careflow report overdue`: who should have been contacted and was not, per owner.

The expected report is worked out here by hand, in plain Python over the
same made-up history the database gets: last contact that reached the
customer, days since it, minus the grade's cadence.
"""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import date, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from careflow.cli.main import main
from careflow.db.models import ContactEvent
from careflow.insight.overdue import overdue_report
from tests.factories import add_contact, add_customer

AS_OF = date(2026, 11, 22)
CADENCE = {"A": 7, "B": 15, "C": 30, "D": 30, "E": 30, "F": 15, "G": 30}
OWNERS = ["王芳", "Emma Clarke", "James Wilson", None]


def _history(seed: int = 7):
    """60 customers with random grades, owners, record dates, messages and replies."""
    rnd = random.Random(seed)
    people, contacts, replies = [], [], []
    for cid in range(1, 61):
        grade = rnd.choice(["A", "b", " C", "D", "E", "F", "G", None, "X"])
        created = rnd.choice([None, datetime(2026, 8, 1, 9), datetime(2026, 11, 30, 9)])
        people.append({"id": cid, "grade": grade, "owner": rnd.choice(OWNERS), "created": created})
        for _ in range(rnd.randint(0, 3)):
            when = datetime.combine(AS_OF - timedelta(days=rnd.randint(-10, 60)), datetime.min.time())
            when += timedelta(hours=rnd.randint(0, 23))
            state = rnd.choice(["sent", "sent", "sent", "skipped", "failed"])
            delivery = rnd.choice([None, "delivered", "bounced"]) if state == "sent" else None
            contacts.append((cid, when, state, delivery))
        if rnd.random() < 0.2:
            replies.append((cid, datetime(2026, 11, 1, 12) + timedelta(days=rnd.randint(0, 30))))
    return people, contacts, replies


def _by_hand(people, contacts, replies, as_of: date, owner=None) -> dict[str, list[tuple]]:
    """{owner: [(customer, days overdue or None), ...]} most overdue first."""
    reached: dict[int, list[date]] = {}
    for cid, when, state, delivery in contacts:
        if state == "sent" and delivery != "bounced" and when.date() <= as_of:
            reached.setdefault(cid, []).append(when.date())
    for cid, when in replies:
        if when.date() <= as_of:
            reached.setdefault(cid, []).append(when.date())
    out: dict[str, list[tuple]] = {}
    for p in people:
        grade = (p["grade"] or "").strip().upper()
        if grade not in CADENCE or (p["created"] and p["created"].date() > as_of):
            continue
        if owner is not None and p["owner"] != owner:
            continue
        start = max(reached[p["id"]]) if p["id"] in reached else p["created"] and p["created"].date()
        late = None if start is None else (as_of - start).days - CADENCE[grade]
        if late is None or late > 0:
            out.setdefault(p["owner"] or "(no owner)", []).append((p["id"], late))
    for items in out.values():
        items.sort(key=lambda t: (t[1] is not None, -(t[1] or 0), t[0]))
    return dict(sorted(out.items(), key=lambda kv: (-len(kv[1]), kv[0])))


@pytest.fixture
def world(engine):
    people, contacts, replies = _history()
    for p in people:
        add_customer(engine, p["id"], grade=p["grade"], owner=p["owner"], created_at=p["created"])
    for cid, when, state, delivery in contacts:
        add_contact(engine, cid, when, state, delivery_state=delivery)
    with engine.begin() as conn:
        for n, (cid, when) in enumerate(replies):
            conn.execute(insert(ContactEvent.__table__).values(
                customer_id=cid, kind="replied", occurred_at=when, provider="sinch",
                event_id=f"reply-{n}", detail="ok"))  # fmt: skip
    return engine, (people, contacts, replies)


def _as_lists(report) -> dict[str, list[tuple]]:
    return {
        o["owner"]: [(r["customer_id"], r["days_overdue"]) for r in o["customers"]]
        for o in report.owners
    }


@pytest.mark.parametrize("day", [AS_OF, date(2026, 11, 5)])
def test_report_equals_the_hand_computation(world, day):
    engine, history = world
    expected = _by_hand(*history, day)
    report = overdue_report(engine, day)
    assert _as_lists(report) == expected
    assert list(expected) == [o["owner"] for o in report.owners]  # most overdue owner first
    assert report.overdue == sum(len(v) for v in expected.values()) > 10
    # and one owner's list is that owner's part of it
    mine = overdue_report(engine, day, owner="王芳")
    assert _as_lists(mine) == _by_hand(*history, day, owner="王芳")


def test_cli_text_json_and_csv(world):
    _, history = world
    expected = _by_hand(*history, AS_OF)
    runner = CliRunner()

    out = runner.invoke(main, ["report", "overdue", "--as-of", "2026-11-22", "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["as_of"] == "2026-11-22" and data["cadence"] == CADENCE
    got = {o["owner"]: [(c["customer_id"], c["days_overdue"]) for c in o["customers"]]
           for o in data["owners"]}  # fmt: skip
    assert got == expected

    out = runner.invoke(main, ["report", "overdue", "--as-of", "2026-11-22", "--format", "csv"])
    table = list(csv.DictReader(io.StringIO(out.output)))
    assert [(r["owner"], int(r["customer_id"])) for r in table] == [
        (owner, cid) for owner, items in expected.items() for cid, _ in items
    ]

    out = runner.invoke(main, ["report", "overdue", "--as-of", "2026-11-22", "--limit", "0"])
    assert out.exit_code == 0, out.output
    text = out.output
    total = sum(len(v) for v in expected.values())
    assert f"Overdue for contact as of 2026-11-22: {total} customer(s)" in text
    for owner, items in expected.items():
        assert f"\n{owner}: {len(items)} overdue\n" in text
        cid, late = items[0]
        shown = "never contacted" if late is None else str(late)
        assert any(line.startswith(f"#{cid} ") and line.endswith(shown)
                   for line in text.splitlines()), (owner, cid, shown)  # fmt: skip

    out = runner.invoke(main, ["report", "overdue", "--as-of", "2026-11-22", "--owner", "Emma Clarke"])
    assert "Emma Clarke:" in out.output and "James Wilson:" not in out.output


def test_cadence_from_the_command_line_and_bad_values(world):
    runner = CliRunner()
    out = runner.invoke(main, ["report", "overdue", "--as-of", "2026-11-22",
                               "--param", "cadence={X: 1}", "--format", "json"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert {c["grade"] for o in json.loads(out.output)["owners"] for c in o["customers"]} == {"X"}
    out = runner.invoke(main, ["report", "overdue", "--param", "cadence={A: 0}"])
    assert out.exit_code == 2
    assert out.output.strip().startswith("error: segment 'contact_due': cadence must be")
    assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output


def test_nobody_overdue(engine):
    add_customer(engine, 1, grade="A")
    add_contact(engine, 1, datetime(2026, 11, 21, 9))
    out = CliRunner().invoke(main, ["report", "overdue", "--as-of", "2026-11-22"])
    assert out.exit_code == 0 and "nobody is overdue" in out.output

"""contact_due: overdue for contact under the grade's cadence (careflow/segments/contact_due.py)."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import insert

from careflow import segments
from careflow.db.models import ContactEvent
from careflow.errors import ConfigError
from tests.factories import add_contact, add_customer, ids, rows

AS_OF = date(2026, 11, 22)


def at(day: int, month: int = 11, hour: int = 10) -> datetime:
    return datetime(2026, month, day, hour)


def add_reply(engine, cid: int, when: datetime, kind: str = "replied") -> None:
    with engine.begin() as conn:
        conn.execute(insert(ContactEvent.__table__).values(
            customer_id=cid, kind=kind, occurred_at=when, provider="twilio",
            event_id=f"r{cid}-{when.isoformat()}", detail="call me"))  # fmt: skip


def build(day: date = AS_OF, **params):
    return segments.build("contact_due", day, params)


@pytest.fixture
def book(engine):
    """Customers of every grade with every kind of contact history, as of 22 Nov 2026."""
    add_customer(engine, 1, grade="A")
    add_contact(engine, 1, at(15))  # 7 days ago: on time for weekly
    add_customer(engine, 2, grade="A")
    add_contact(engine, 2, at(14))  # 8 days ago: 1 day overdue
    add_customer(engine, 3, grade=" b ")  # spelt loosely: grade B, twice a month
    add_contact(engine, 3, at(2))  # 20 days ago: 5 overdue
    add_customer(engine, 4, grade="C")
    add_contact(engine, 4, at(23, 10))  # 30 days ago: on time for monthly
    add_customer(engine, 5, grade="C")
    add_contact(engine, 5, at(13, 10))  # 40 days ago: 10 overdue ...
    add_contact(engine, 5, at(21), "skipped")  # ... a skipped message never reached them
    add_contact(engine, 5, at(20), "failed")
    add_contact(engine, 5, at(19), "deferred")
    add_customer(engine, 6, grade="D")
    add_contact(engine, 6, at(18, 10), delivery_state="delivered")  # 35 days ago: 5 overdue
    add_contact(engine, 6, at(20), delivery_state="bounced")  # sent, but it never arrived
    add_customer(engine, 7, grade="E", created_at=datetime(2026, 10, 1, 8))  # never: 52 - 30
    add_customer(engine, 8, grade="G")  # never contacted, record date unknown
    add_customer(engine, 9, grade="F")
    add_contact(engine, 9, at(2))  # 20 days ago, but the customer replied 3 days ago
    add_reply(engine, 9, at(19))
    add_customer(engine, 10, grade=None)  # no grade: no cadence
    add_customer(engine, 11, grade="Z")  # a grade the cadence does not list
    add_customer(engine, 12, grade="A", created_at=datetime(2026, 12, 1))  # not a customer yet
    add_customer(engine, 13, grade="a")
    add_contact(engine, 13, at(12), delivery_state="sent")  # 10 days ago: 3 overdue
    add_reply(engine, 13, at(21), kind="opened")  # an open is no contact
    return engine


def test_overdue_by_grade_with_the_playbook_cadences(book):
    got = rows(book, build())
    overdue = {cid: (r["grade"], r["cadence_days"], r["days_overdue"]) for cid, r in got.items()}
    assert overdue == {
        2: ("A", 7, 1),
        3: ("B", 15, 5),
        5: ("C", 30, 10),
        6: ("D", 30, 5),
        7: ("E", 30, 22),
        8: ("G", 30, None),
        13: ("A", 7, 3),
    }
    assert str(got[6]["last_contact_on"]) == "2026-10-18" and got[6]["days_since_contact"] == 35
    assert got[7]["last_contact_on"] is None and got[7]["days_since_contact"] is None


def test_replies_count_unless_told_not_to(book):
    assert 9 not in ids(book, build())
    got = rows(book, build(replies_count=False))
    assert got[9]["days_overdue"] == 5


def test_cadences_come_from_the_parameters(book):
    got = rows(book, build(cadence={"a": 10, "Z": 1}))
    # A every 10 days: 2 (8 days) and 13 (10 days) are on time; Z is counted, the rest are not
    assert {cid: r["days_overdue"] for cid, r in got.items()} == {11: None}
    assert ids(book, build(cadence={"A": 1})) == {1, 2, 13}


def test_as_of_replays_the_contacts_known_then(book):
    # 22 Nov with a contact on 20 Nov; 19 Nov did not know that contact yet
    add_customer(book, 20, grade="A")
    add_contact(book, 20, at(1))
    add_contact(book, 20, at(20, hour=23))
    add_reply(book, 20, at(25))  # after as-of: does not count
    assert 20 not in ids(book, build())
    assert 20 not in ids(book, build(date(2026, 11, 20)))  # the same day counts
    assert rows(book, build(date(2026, 11, 19)))[20]["days_overdue"] == 18 - 7
    # customer 2 was on time before it became overdue, and 7 was not a customer yet
    earlier = rows(book, build(date(2026, 11, 21)))
    assert 2 not in earlier and earlier[7]["days_overdue"] == 51 - 30
    assert 7 not in ids(book, build(date(2026, 9, 30)))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"cadence": {"A": 0}}, "cadence must be a mapping of grade to days from 1 to 365"),
        ({"cadence": {}}, "cadence must be a mapping"),
        ({"cadence": {"A": 7, "a": 3}}, "cadence must be a mapping"),
        ({"cadence": [7, 15]}, "cadence must be a mapping"),
        ({"replies_count": "yes"}, "replies_count must be true or false"),
    ],
)
def test_bad_parameters_are_one_line(params, message):
    with pytest.raises(ConfigError, match=f"^segment 'contact_due': {message}") as err:
        segments.build("contact_due", AS_OF, params)
    assert "\n" not in str(err.value)

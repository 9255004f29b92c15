"""Demo data: deterministic, realistic, and giving every care campaign an audience."""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter, defaultdict
from datetime import date, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, insert, select

from careflow import db
from careflow.db.models import Consent, Customer, Order, OrderLine, Product
from careflow.demo.data import seed_demo
from careflow.errors import DataError

AS_OF = date(2026, 11, 22)
CUSTOMERS, CONSENTS = Customer.__table__, Consent.__table__
ORDERS, LINES, PRODUCTS = Order.__table__, OrderLine.__table__, Product.__table__


def fingerprint(engine) -> str:
    """A digest of every seeded row, in id order, as Python values."""
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for table, order in [
            (CUSTOMERS, CUSTOMERS.c.id),
            (CONSENTS, (CONSENTS.c.customer_id, CONSENTS.c.channel)),
            (PRODUCTS, PRODUCTS.c.sku),
            (ORDERS, ORDERS.c.id),
            (LINES, LINES.c.id),
        ]:
            order = order if isinstance(order, tuple) else (order,)
            for row in conn.execute(select(table).order_by(*order)):
                digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def fresh_sqlite(tmp_path, name: str):
    url = f"sqlite:///{tmp_path / name}"
    db.upgrade(url)
    return db.engine_for(url)


def test_same_seed_same_data_on_every_dialect(engine, tmp_path):
    counts = seed_demo(engine, as_of=AS_OF, customers=300)
    twin = fresh_sqlite(tmp_path, "twin.db")
    assert seed_demo(twin, as_of=AS_OF, customers=300) == counts
    assert fingerprint(engine) == fingerprint(twin)

    other = fresh_sqlite(tmp_path, "other.db")
    seed_demo(other, as_of=AS_OF, customers=300, seed=7)
    assert fingerprint(other) != fingerprint(twin)


def test_refuses_a_database_that_has_customers(engine):
    seed_demo(engine, as_of=AS_OF, customers=20)
    with pytest.raises(DataError, match="empty database"):
        seed_demo(engine, as_of=AS_OF, customers=20)


def test_ids_keep_working_after_seeding(engine):
    """On PostgreSQL the serial sequences must be moved past the explicit ids."""
    seed_demo(engine, as_of=AS_OF, customers=30)
    with engine.begin() as conn:
        new_id = conn.execute(
            insert(CUSTOMERS).returning(CUSTOMERS.c.id), [{"full_name": "Walk-in"}]
        ).scalar_one()
    assert new_id == 31


_SEEDED: dict[str, tuple] = {}


@pytest.fixture
def demo(engine):
    """A 2,000-customer demo database's rows, read back as plain Python.

    Seeding is the slow part and the data is the same every time (see the
    determinism test), so it is seeded once per dialect and the rows reused.
    """
    if engine.dialect.name not in _SEEDED:
        counts = seed_demo(engine, as_of=AS_OF, customers=2_000)
        with engine.connect() as conn:
            rows = [
                [r._asdict() for r in conn.execute(select(table))]
                for table in (CUSTOMERS, CONSENTS, PRODUCTS, ORDERS)
            ]
            line_sums = dict(
                conn.execute(
                    select(LINES.c.order_id, func.sum(LINES.c.amount_minor)).group_by(LINES.c.order_id)
                ).all()
            )
        _SEEDED[engine.dialect.name] = (counts, *rows, line_sums)
    return _SEEDED[engine.dialect.name]


def test_counts_and_orders_are_consistent(demo):
    counts, customers, consents, products, orders, line_sums = demo
    assert counts["customers"] == len(customers) == 2_000
    assert counts["products"] == len(products) == 40
    assert counts["orders"] == len(orders) > 10_000  # two years of purchases
    assert counts["order_lines"] >= counts["orders"] and counts["consents"] == len(consents)
    assert 15 <= sum(p["replenish_days"] is not None for p in products) <= 25

    by_id = {c["id"]: c for c in customers}
    for o in orders:
        assert o["amount_minor"] == line_sums[o["id"]]
        assert o["ordered_on"] == o["ordered_at"].date()
        assert AS_OF - timedelta(days=730) <= o["ordered_on"] <= AS_OF
        customer = by_id[o["customer_id"]]
        expected = {
            "CN": "CNY",
            "HK": "CNY",
            "TW": "CNY",
            "US": "USD",
            "GB": "GBP",
            "AU": "AUD",
            "NZ": "NZD",
        }[customer["country"]]
        assert o["currency"] == expected
    assert len({o["external_ref"] for o in orders}) == len(orders)


def test_customers_look_like_a_real_crm(demo):
    customers = demo[1]
    zh = [c for c in customers if c["locale"] == "zh-CN"]
    en = [c for c in customers if c["locale"] == "en"]
    assert len(zh) + len(en) == len(customers)
    assert 0.55 <= len(zh) / len(customers) <= 0.65

    for c in zh:
        assert c["full_name"] == c["family_name"] + c["given_name"]
        assert all("\u4e00" <= ch <= "\u9fff" for ch in c["full_name"])
        assert c["time_zone"] in {"Asia/Shanghai", "Asia/Hong_Kong", "Asia/Taipei"}
    for c in en:
        assert c["full_name"] == f"{c['given_name']} {c['family_name']}"
        assert c["time_zone"] in {
            "America/New_York",
            "America/Los_Angeles",
            "Europe/London",
            "Australia/Sydney",
            "Pacific/Auckland",
        }
    for c in customers:
        ZoneInfo(c["time_zone"])  # raises for an unknown IANA name
    assert Counter(c["time_zone"] for c in zh).most_common(1)[0][0] == "Asia/Shanghai"
    assert {c["grade"] for c in customers} == set("ABCDEFG")
    assert len({c["owner"] for c in customers}) >= 5
    assert Counter(c["preferred_channel"] for c in customers).most_common(2)[0][0] in (
        "sms",
        "email",
    )

    birthdays = [c["birthday"] for c in customers if c["birthday"]]
    assert any((b.month, b.day) == (2, 29) for b in birthdays)
    ages = [AS_OF.year - b.year - ((AS_OF.month, AS_OF.day) < (b.month, b.day)) for b in birthdays]
    assert min(ages) >= 18 and max(ages) <= 80
    assert len({(b.month, b.day) for b in birthdays}) > 300  # spread over the whole year


def _phone_ok(raw: str, region: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(raw, region))
    except phonenumbers.NumberParseException:
        return False


def _email_ok(raw: str) -> bool:
    try:
        validate_email(raw, check_deliverability=False)
        return True
    except EmailNotValidError:
        return False


def test_contact_points_are_mostly_valid_with_some_deliberately_bad(demo):
    _, customers, consents, *_ = demo
    n = len(customers)
    mobiles = [(c["mobile"], c["country"]) for c in customers if c["mobile"]]
    bad_mobiles = [m for m, region in mobiles if not _phone_ok(m, region)]
    assert 0 < len(bad_mobiles) <= 0.03 * n
    assert any(" " in m or "-" in m for m, _ in mobiles)  # as humans write them
    assert any(m.startswith("+86") for m, _ in mobiles) and any(
        m.startswith("+44") for m, _ in mobiles
    )

    emails = [c["email"] for c in customers if c["email"]]
    bad_emails = [e for e in emails if not _email_ok(e)]
    assert 0 < len(bad_emails) <= 0.02 * n
    for e in set(emails) - set(bad_emails):
        assert e.rsplit("@", 1)[1] in {"example.com", "example.net", "example.org"}

    faxes = [(c["fax"], c["country"]) for c in customers if c["fax"]]
    assert 0.10 * n <= len(faxes) <= 0.20 * n
    assert all(_phone_ok(f, region) for f, region in faxes)

    unreachable = [c for c in customers if not (c["mobile"] or c["email"] or c["fax"])]
    assert 0.01 * n <= len(unreachable) <= 0.06 * n
    assert all(c["preferred_channel"] is None for c in unreachable)

    addresses = {
        c["id"]: {"sms": c["mobile"], "email": c["email"], "fax": c["fax"]} for c in customers
    }
    assert all(addresses[r["customer_id"]][r["channel"]] for r in consents)
    sms = [r for r in consents if r["channel"] == "sms"]
    opted_out = sum(not r["granted"] for r in sms)
    assert 0 < opted_out <= 0.05 * len(sms)


def test_every_care_segment_has_an_audience_around_as_of(demo):
    """Computed here in plain Python, independent of careflow/segments/."""
    _, customers, _, _, orders, _ = demo
    days: dict[int, set[date]] = defaultdict(set)
    spend: Counter[int] = Counter()
    for o in orders:
        days[o["customer_id"]].add(o["ordered_on"])
        spend[o["customer_id"]] += o["amount_minor"]
    buyers = sorted(spend, key=spend.__getitem__, reverse=True)
    top = sum(spend[c] for c in buyers[: len(buyers) // 100]) / sum(spend.values())
    assert top > 0.1  # the pyramid is heavy at the top
    assert len(customers) - len(days) > 50  # prospects who never bought

    for shift in range(-3, 4):
        today = AS_OF + timedelta(days=shift)
        due = dormant = 0
        for purchase_days in days.values():
            past = sorted(d for d in purchase_days if d <= today)
            if not past:
                continue
            since = (today - past[-1]).days
            dormant += since > 180
            if len(past) >= 3:
                median = statistics.median(b.toordinal() - a.toordinal() for a, b in pairwise(past))
                due += median <= since < 2 * median
        born_today = sum(
            1
            for c in customers
            if c["birthday"]
            and (c["birthday"].month, c["birthday"].day) == (today.month, today.day)
        )
        assert due > 20 and dormant > 100 and born_today > 0, today

"""`careflow import customers` and `careflow import consents`, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from careflow.cli.main import main
from careflow.db.models import Consent, Customer
from careflow.errors import DataError
from careflow.importers.consents import import_consents
from careflow.importers.customers import import_customers
from careflow.importers.report import MAX_MESSAGE

TODAY = date(2026, 11, 22)
CUSTOMERS = """ref,full_name,given_name,family_name,mobile,email,fax,locale,time_zone,birthday,grade,owner,country,preferred_channel
C1,李娜,娜,李,+8613812345678,li@example.com,,zh_CN,Asia/Shanghai,1990-11-22,A,王芳,CN,sms
C2,Ann Lee,Ann,Lee,,ann@example.com,+44 20 7946 0018,en,Europe/London,1985-02-28,B,Emma Clarke,GB,EMAIL
17850.0,Bo Chen,Bo,Chen,,,,,,,,,,
"""


def write(tmp_path: Path, text: str, name: str = "customers.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def customers(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r["external_ref"]: dict(r) for r in conn.execute(select(Customer)).mappings()}


def consents(engine) -> dict[tuple[str, str], tuple]:
    stmt = select(Customer.external_ref, Consent.channel, Consent.granted, Consent.source,
                  Consent.updated_at).join(Customer)  # fmt: skip
    with engine.connect() as conn:
        return {(r[0], r[1]): tuple(r[2:]) for r in conn.execute(stmt)}


def test_customers_are_created_with_every_field(engine, tmp_path):
    report = import_customers(engine, write(tmp_path, CUSTOMERS), today=TODAY)

    assert (report.rows_read, report.customers_created, report.customers_updated) == (3, 3, 0)
    assert report.malformed == {} and report.skipped == {}
    got = customers(engine)
    li = got["C1"]
    assert (li["full_name"], li["mobile"], li["locale"], li["time_zone"]) == (
        "李娜",
        "+8613812345678",
        "zh-CN",  # the form template files are named by
        "Asia/Shanghai",
    )
    assert (li["birthday"], li["grade"], li["owner"], li["preferred_channel"]) == (
        date(1990, 11, 22),
        "A",
        "王芳",
        "sms",
    )
    assert got["C2"]["fax"] == "+44 20 7946 0018" and got["C2"]["preferred_channel"] == "email"
    assert got["17850"]["mobile"] is None  # empty cells are unknown, not ""


def test_known_customers_are_updated_and_empty_cells_change_nothing(engine, tmp_path):
    with engine.begin() as conn:
        conn.execute(
            insert(Customer.__table__),
            [{"external_ref": "C1", "full_name": "Li Na", "mobile": "+8613800000000"}],
        )
    text = "ref,email,mobile,full_name\nC1,li@example.com,,\n"
    report = import_customers(engine, write(tmp_path, text), today=TODAY)

    assert (report.customers_created, report.customers_updated) == (0, 1)
    li = customers(engine)["C1"]
    assert (li["email"], li["mobile"], li["full_name"]) == (
        "li@example.com",
        "+8613800000000",
        "Li Na",
    )


def test_customers_meet_the_orders_imported_for_them(engine, tmp_path):
    from careflow.importers.orders import import_orders

    orders = (
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
    )
    import_orders(engine, write(tmp_path, orders, "orders.csv"))
    report = import_customers(engine, write(tmp_path, CUSTOMERS), today=TODAY)
    assert (report.customers_created, report.customers_updated) == (2, 1)
    assert customers(engine)["17850"]["full_name"] == "Bo Chen"


CUSTOMER_HEADER = "ref,full_name,locale,time_zone,birthday,preferred_channel,email"
BAD_CUSTOMERS = [
    ("no ref", ",Ann,en,UTC,,,", "missing_field", "no customer ref"),
    ("ref too long", f"{'R' * 65},Ann,en,UTC,,,", "too_long", "customer ref too long (65"),
    ("name too long", f"C9,{'N' * 201},en,UTC,,,", "too_long", "full name too long (201"),
    ("NUL in email", "C9,Ann,en,UTC,,,ann\x00@example.com", "bad_text", "NUL"),
    ("unknown locale", "C9,Ann,klingon,UTC,,,", "bad_locale", "bad locale 'klingon'"),
    ("unknown zone", "C9,Ann,en,Mars/Base,,,", "bad_time_zone", "bad time zone 'Mars/Base'"),
    ("not a date", "C9,Ann,en,UTC,someday,,", "bad_date", "bad birthday 'someday'"),
    ("born in 1850", "C9,Ann,en,UTC,1850-01-01,,", "bad_date", "'1850-01-01'"),
    ("born tomorrow", "C9,Ann,en,UTC,2026-11-23,,", "bad_date", "'2026-11-23'"),
    ("by pigeon", "C9,Ann,en,UTC,,pigeon,", "bad_channel", "sms or email or fax"),
    ("a megabyte name", f"C9,{'N' * 1_000_000},en,UTC,,,", "too_long", "(1,000,000 characters)"),
    ("a megabyte zone", f"C9,Ann,en,{'Z' * 1_000_000},,,", "too_long", "time zone too long"),
]


@pytest.mark.parametrize(
    ("bad", "kind", "says"), [c[1:] for c in BAD_CUSTOMERS], ids=[c[0] for c in BAD_CUSTOMERS]
)
def test_a_bad_customer_row_is_reported_with_its_line(engine, tmp_path, bad, kind, says):
    text = f"{CUSTOMER_HEADER}\nC1,Ann,en,UTC,1990-01-01,sms,\n{bad}\nC2,Bo,zh-CN,UTC,,,\n"
    report = import_customers(engine, write(tmp_path, text), today=TODAY)

    assert report.malformed == {kind: 1}
    [(line, message)] = report.examples
    assert line == 3 and says in message and len(message) <= MAX_MESSAGE
    assert report.customers_created == 2 and set(customers(engine)) == {"C1", "C2"}


def test_a_customer_twice_in_one_file(engine, tmp_path):
    text = f"{CUSTOMER_HEADER}\nC1,Ann,en,UTC,,,\nC1,Ann,en,UTC,,,\nC1,Anne,en,UTC,,,\n"
    report = import_customers(engine, write(tmp_path, text), today=TODAY)
    assert report.skipped == {"duplicate_row": 1} and report.duplicates == [(3, 2)]
    assert report.malformed == {"customer_repeated": 1}
    assert report.examples == [(4, "customer 'C1' is already on line 2, with other values")]
    assert customers(engine)["C1"]["full_name"] == "Ann"


CONSENT_HEADER = "customer,channel,granted,source,when"


@pytest.fixture
def two_customers(engine):
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [{"external_ref": "C1"}, {"external_ref": "C2"}])
        c1 = conn.execute(select(Customer.id).where(Customer.external_ref == "C1")).scalar_one()
        conn.execute(
            insert(Consent.__table__),
            [{"customer_id": c1, "channel": "fax", "granted": False, "source": "phone",
              "updated_at": datetime(2026, 3, 1)}],
        )  # fmt: skip
    return engine


def test_consents_latest_decision_wins(two_customers, tmp_path):
    engine = two_customers
    text = f"""{CONSENT_HEADER}
C1,sms,yes,web_signup,2026-01-01
C1,sms,no,store,2026-02-01 09:30:00
C1,email,Opt-In,event,2026-01-02T10:00:00+08:00
C1,fax,yes,web_signup,2026-01-01
C2,email,0,,
"""
    report = import_consents(engine, write(tmp_path, text, "consents.csv"))

    assert report.malformed == {}
    assert report.skipped == {"superseded": 1, "older_than_stored": 1}
    assert (report.consents_created, report.consents_updated) == (3, 0)
    got = consents(engine)
    assert got[("C1", "sms")] == (False, "store", datetime(2026, 2, 1, 9, 30))
    assert got[("C1", "email")] == (True, "event", datetime(2026, 1, 2, 2, 0))  # in UTC
    assert got[("C1", "fax")] == (False, "phone", datetime(2026, 3, 1))  # the newer opt-out
    assert got[("C2", "email")][0] is False and got[("C2", "email")][2] > datetime(2026, 3, 1)

    newer = f"{CONSENT_HEADER}\nC1,fax,yes,web_signup,2026-04-01\n"
    report = import_consents(engine, write(tmp_path, newer, "newer.csv"))
    assert report.consents_updated == 1
    assert consents(engine)[("C1", "fax")] == (True, "web_signup", datetime(2026, 4, 1))


BAD_CONSENTS = [
    ("unknown customer", "C9,sms,yes,web,2026-01-01", "unknown_customer", "no customer 'C9'"),
    ("no channel", "C1,,yes,web,2026-01-01", "missing_field", "no channel"),
    ("by pigeon", "C1,pigeon,yes,web,2026-01-01", "bad_channel", "bad channel 'pigeon'"),
    ("maybe", "C1,sms,maybe,web,2026-01-01", "bad_granted", "bad granted 'maybe' (yes or no)"),
    ("not a date", "C1,sms,yes,web,soon", "bad_date", "bad date 'soon'"),
    ("year 9999", "C1,sms,yes,web,9999-01-01", "bad_date", "'9999-01-01'"),
    ("source too long", f"C1,sms,yes,{'s' * 65},2026-01-01", "too_long", "source too long"),
]


@pytest.mark.parametrize(
    ("bad", "kind", "says"), [c[1:] for c in BAD_CONSENTS], ids=[c[0] for c in BAD_CONSENTS]
)
def test_a_bad_consent_row_is_reported_with_its_line(two_customers, tmp_path, bad, kind, says):
    text = f"{CONSENT_HEADER}\nC1,email,yes,web,2026-01-01\n{bad}\nC2,sms,no,store,2026-01-01\n"
    report = import_consents(two_customers, write(tmp_path, text, "consents.csv"))

    assert report.malformed == {kind: 1}
    [(line, message)] = report.examples
    assert line == 3 and says in message and len(message) <= MAX_MESSAGE
    assert report.consents_created == 2


def test_missing_columns_and_unknown_fields(engine, tmp_path):
    with pytest.raises(DataError, match=r"channel \(column 'channel'\)"):
        import_consents(engine, write(tmp_path, "customer,granted\nC1,yes\n"))
    with pytest.raises(DataError, match="unknown field.*'phone'"):
        import_customers(engine, write(tmp_path, CUSTOMERS), mapping={"phone": "mobile"})


def test_cli_imports_customers_then_consents(engine, tmp_path):
    runner = CliRunner()
    people = write(tmp_path, "id,name,lang\nC1,Ann,en\nC2,Bo,xx\n")
    out = runner.invoke(
        main,
        ["import", "customers", str(people), "--map", "ref=id", "--map", "full_name=name",
         "--map", "locale=lang"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert (
        "customers created            1" in out.output and "line 3: bad locale 'xx'" in out.output
    )

    decisions = write(tmp_path, f"{CONSENT_HEADER}\nC1,sms,yes,web,2026-01-01\n", "c.csv")
    out = runner.invoke(main, ["import", "consents", str(decisions)])
    assert out.exit_code == 0, out.output
    assert "consents created             1" in out.output
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Consent)).scalar_one() == 1

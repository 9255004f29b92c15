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


def test_a_customer_on_several_rows_is_one_customer_whose_later_rows_fill_in_cells(
    engine, tmp_path
):
    """A repeated ref was refused although the README says a row fills in the cells it
    gives: rows of one ref apply in file order, as upserts by ref do."""
    text = (
        "ref,full_name,email,mobile,locale\n"
        "C1,Ann,ann@example.com,,en\n"
        "C1,Ann,ann@example.com,,en\n"  # the same row again: loaded once
        "C1,,,+447911123456,\n"  # fills in the mobile, changes nothing else
        "C1,Anne,,,\n"  # a later name wins
        "C2,Bo,,,\n"
    )
    report = import_customers(engine, write(tmp_path, text), today=TODAY)

    assert report.skipped == {"duplicate_row": 1} and report.duplicates == [(3, 2)]
    assert report.malformed == {} and report.rows_merged == 2
    assert (report.customers_created, report.customers_updated) == (2, 0)
    assert report.rows_read == (
        report.customers_created + report.customers_updated + report.rows_merged
        + sum(report.skipped.values()) + report.malformed_rows
    )  # fmt: skip
    c1 = customers(engine)["C1"]
    assert (c1["full_name"], c1["email"], c1["mobile"], c1["locale"]) == (
        "Anne", "ann@example.com", "+447911123456", "en"
    )  # fmt: skip
    assert "rows merged                  2" in report.summary()


def birthdays(engine) -> dict[str, date | None]:
    return {ref: c["birthday"] for ref, c in customers(engine).items()}


def test_day_first_birthdays_are_read_day_first_when_the_file_proves_it(engine, tmp_path):
    """03/11/1990 and 13/11/1990 in one file were read as 11 March and 13 November."""
    text = "ref,birthday\nC1,03/11/1990\nC2,13/11/1990\nC3,1990-11-22\n"
    report = import_customers(engine, write(tmp_path, text), today=TODAY)

    assert report.malformed == {}
    assert birthdays(engine) == {
        "C1": date(1990, 11, 3), "C2": date(1990, 11, 13), "C3": date(1990, 11, 22)
    }  # fmt: skip
    assert report.date_orders == {
        "birthday": "DD/MM/YYYY (inferred: line 3 '13/11/1990' can only be day first)"
    }
    assert "dates: birthday     DD/MM/YYYY (inferred" in report.summary()


def test_month_first_birthdays_are_read_month_first_when_the_file_proves_it(engine, tmp_path):
    text = "ref,birthday\nC1,03/11/1990\nC2,11/13/1990\n"
    import_customers(engine, write(tmp_path, text), today=TODAY)
    assert birthdays(engine) == {"C1": date(1990, 3, 11), "C2": date(1990, 11, 13)}


def test_a_birthday_that_reads_two_ways_is_refused_with_its_line(engine, tmp_path):
    text = "ref,birthday\nC1,03/11/1990\nC2,05/05/1990\nC3,3 Nov 1990\n"
    report = import_customers(engine, write(tmp_path, text), today=TODAY)

    assert report.malformed == {"ambiguous_date": 1}
    [(line, message)] = report.examples
    assert line == 2 and len(message) <= MAX_MESSAGE
    assert "birthday '03/11/1990' could be 3 November or March 11" in message
    assert "--date-format DD/MM/YYYY" in message
    assert birthdays(engine) == {"C2": date(1990, 5, 5), "C3": date(1990, 11, 3)}


def test_a_declared_date_format_reads_every_row_and_refuses_what_does_not_fit(engine, tmp_path):
    text = "ref,birthday\nC1,03/11/1990\nC2,11/13/1990\nC3,03.11.85\n"
    report = import_customers(
        engine, write(tmp_path, text), today=TODAY, date_format="dd/mm/yyyy"
    )
    assert report.malformed == {"bad_date": 1}
    [(line, message)] = report.examples
    assert line == 3 and "'11/13/1990' is not a DD/MM/YYYY date" in message
    assert birthdays(engine) == {"C1": date(1990, 11, 3), "C3": date(1985, 11, 3)}
    assert report.date_orders == {"birthday": "DD/MM/YYYY (declared with --date-format)"}
    with pytest.raises(DataError, match="--date-format must be DD/MM/YYYY, MM/DD/YYYY"):
        import_customers(engine, write(tmp_path, text), date_format="DD/MM")


def test_a_column_that_mixes_both_orders_reads_none_of_them(engine, tmp_path):
    text = "ref,birthday\nC1,13/11/1990\nC2,11/13/1990\nC3,05/05/1990\n"
    report = import_customers(engine, write(tmp_path, text), today=TODAY)
    assert report.malformed == {"mixed_date_order": 2}
    assert [line for line, _ in report.examples] == [2, 3]
    assert birthdays(engine) == {"C3": date(1990, 5, 5)}
    assert "line 2 '13/11/1990' is day first" in report.date_orders["birthday"]


def test_a_file_whose_every_row_is_malformed_loads_nothing_and_says_why(engine, tmp_path):
    report = import_customers(engine, write(tmp_path, "ref,birthday\nC1,03/11/1990\n"))
    assert report.malformed == {"ambiguous_date": 1} and report.customers_created == 0
    assert report.calendars == {} and customers(engine) == {}


def test_the_birthday_calendar_column_and_the_default_are_stated(engine, tmp_path):
    text = (
        "ref,locale,birthday,birthday_calendar\n"
        "C1,zh-CN,1990-05-02,solar\n"
        "C2,en,1990-05-02,农历\n"
        "C3,zh-CN,1990-05-02,\n"
        "C4,en,1990-05-02,\n"
        "C5,en,1990-05-02,julian\n"
    )
    report = import_customers(engine, write(tmp_path, text), today=TODAY)

    assert report.malformed == {"bad_calendar": 1}
    assert "bad birthday calendar 'julian' (solar or lunar)" in report.examples[0][1]
    got = {ref: c["birthday_calendar"] for ref, c in customers(engine).items()}
    assert got == {"C1": "solar", "C2": "lunar", "C3": None, "C4": None}
    assert report.calendars == {"by locale": 2, "lunar": 1, "solar": 1}
    summary = report.summary()
    assert "birthday calendar   1 lunar, 1 solar" in summary
    assert "2 birthday(s) with no birthday_calendar: lunar for locales zh*" in summary


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



def test_each_applied_consent_row_is_proven_once(two_customers, tmp_path):
    """careflow/consent_proof.py: the file, its line and the state before and after;
    superseded and stale rows changed nothing and prove nothing; the same file again
    proves nothing twice."""
    from careflow.db.models import ConsentProof

    engine = two_customers
    text = f"""{CONSENT_HEADER}
C1,sms,yes,web_signup,2026-01-01
C1,sms,no,store,2026-02-01 09:30:00
C1,fax,yes,web_signup,2026-01-01
C2,email,1,,2026-01-05
"""
    path = write(tmp_path, text, "consents.csv")

    def proof():
        with engine.connect() as conn:
            rows = conn.execute(select(ConsentProof.__table__).order_by(ConsentProof.id))
            return [dict(r) for r in rows.mappings()]

    import_consents(engine, path)
    got = {(p["channel"], p["evidence"]["line"]): p for p in proof()}
    assert set(got) == {("sms", 3), ("email", 5)}  # line 2 superseded, line 4 stale (fax)
    sms = got[("sms", 3)]
    assert (sms["source"], sms["category"]) == ("import", "all")
    assert (sms["consent_before"], sms["consent_after"]) == ("none", "withdrawn")
    assert sms["shown"] == "consents.csv line 3"
    assert sms["occurred_at"] == datetime(2026, 2, 1, 9, 30)
    assert sms["evidence"]["file"] == "consents.csv" and sms["evidence"]["given_at"] == "store"
    assert "given_at" not in got[("email", 5)]["evidence"]  # an empty cell is no evidence

    import_consents(engine, path)  # the same file again: the same rows, no new proof
    assert len(proof()) == 2

    newer = write(tmp_path, f"{CONSENT_HEADER}\nC1,sms,yes,web,2026-03-01\n", "newer.csv")
    import_consents(engine, newer)
    last = proof()[-1]
    assert (last["consent_before"], last["consent_after"]) == ("withdrawn", "granted")
    assert last["evidence"]["file"] == "newer.csv" and last["evidence"]["line"] == 2


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
    with pytest.raises(DataError, match=r"unknown field\(s\) in --map: 'phone'"):
        import_customers(engine, write(tmp_path, CUSTOMERS), mapping={"phone": "mobile"})


def test_cli_imports_customers_then_consents(engine, tmp_path):
    runner = CliRunner()
    people = write(tmp_path, "id,name,lang\nC1,Ann,en\nC2,Bo,xx\n")
    out = runner.invoke(
        main,
        ["import", "customers", str(people), "--map", "ref=id", "--map", "full_name=name",
         "--map", "locale=lang"],
    )  # fmt: skip
    assert out.exit_code == 1, out.output  # a malformed row: the rest loads, the exit says so
    assert (
        "customers created            1" in out.output and "line 3: bad locale 'xx'" in out.output
    )
    assert "1 malformed row(s) not loaded (listed above)" in out.output

    decisions = write(tmp_path, f"{CONSENT_HEADER}\nC1,sms,yes,web,2026-01-01\n", "c.csv")
    out = runner.invoke(main, ["import", "consents", str(decisions)])
    assert out.exit_code == 0, out.output
    assert "consents created             1" in out.output

    day_first = write(tmp_path, f"{CONSENT_HEADER}\nC1,email,yes,web,03/11/2026\n", "d.csv")
    out = runner.invoke(main, ["import", "consents", str(day_first)])
    assert out.exit_code == 1 and "ambiguous_date" in out.output, out.output
    declared = ["--date-format", "DD/MM/YYYY"]
    out = runner.invoke(main, ["import", "consents", str(day_first), *declared])
    assert out.exit_code == 0, out.output
    assert consents(engine)[("C1", "email")][2] == datetime(2026, 11, 3)
    out = runner.invoke(main, ["import", "consents", str(day_first), "--date-format", "someday"])
    assert out.exit_code == 2 and "--date-format must be" in out.output
    with engine.connect() as conn:  # sms, then email
        assert conn.execute(select(func.count()).select_from(Consent)).scalar_one() == 2


def test_the_personalised_send_time_switch_is_imported_and_an_empty_cell_keeps_it(
    engine, tmp_path
):
    report = import_customers(engine, write(tmp_path, (
        "ref,personal_send_time\nC1,no\nC2,Yes\nC3,\nC4,maybe\n"
    )), today=TODAY)  # fmt: skip
    assert report.malformed == {"bad_switch": 1}
    got = {ref: c["personal_send_time"] for ref, c in customers(engine).items()}
    assert got == {"C1": False, "C2": True, "C3": None}
    # a later file without the column, or with an empty cell, leaves the switch as it is
    import_customers(engine, write(tmp_path, "ref,personal_send_time,grade\nC1,,A\n"), today=TODAY)
    assert customers(engine)["C1"]["personal_send_time"] is False

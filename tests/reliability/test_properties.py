"""Property: whatever the data, every selected customer ends with one recorded outcome.

Hypothesis generates a shop (customers with missing, malformed, duplicated
or foreign contact points, odd locales and time zones, unreadable stored
dates on SQLite, purchase histories), a campaign (segment, parameters,
channel preference, occasion, templates built from fragments that may fail
for some customers or for everyone) and run parameters (batch and chunk
sizes, the run's date, a batch retried by its task, a second run). A channel
that misbehaves on demand (raises, loses outcomes, fails retryably or for
good) stands in for the providers.

Whatever is generated:

- no exception escapes planning or a batch;
- every selected customer has exactly one ledger row, settled (sent, or
  skipped/failed/deferred with a reason), and no other customer has one;
- each batch accounts for every customer it selected;
- no (campaign, customer, occasion) is delivered twice: it goes to the
  channel again only after a failure that proved it was not delivered
  (a retryable failure), never after a send or an unknown outcome.

Profiles (tests/reliability/conftest.py): ``ci`` by default, ``slow`` with
CAREFLOW_HYPOTHESIS_PROFILE=slow.
"""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, text

from careflow import segments
from careflow.campaigns import load_campaign
from careflow.db.models import (
    Campaign,
    Consent,
    ContactEvent,
    ContactHistory,
    Customer,
    Order,
    OrderLine,
    Product,
    Run,
)
from careflow.flows.campaign import plan_batches
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.messages import Message, Outcome, State
from careflow.settings import PROJECT_ROOT, load_settings

# --- customers ----------------------------------------------------------------------
_text = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=30,
)
_odd_phones = st.one_of(
    st.none(),
    st.sampled_from(["", "   ", "12", "+", "not a number", "+44 (0) 7911-123-456", "07911 123456"]),
    st.just("１３８１２３４５６７８"),  # full-width digits
    st.just("+8613800000001"),  # shared by several customers
    _text.map(lambda s: s[:40]),
)
_good_phones = st.one_of(
    st.integers(0, 99_999_999).map(lambda n: f"+86138{n:08d}"),
    st.integers(0, 99_999_999).map(lambda n: f"138{n:08d}"),
)
phones = st.one_of(_good_phones, _good_phones, _odd_phones)  # usable two times in three
_odd_emails = st.one_of(
    st.none(),
    st.sampled_from(["", "  ", "not-an-email", "a@b", "UPPER@EXAMPLE.COM", "用户@例子.广告"]),
    st.just("shared@example.com"),  # duplicates across customers
    st.just("x" * 240 + "@example.com"),
    _text,
)
_good_emails = st.integers(0, 10**6).map(lambda n: f"c{n}@example.com")
emails = st.one_of(_good_emails, _odd_emails)
locales = st.one_of(
    st.none(),
    st.sampled_from(["", "en", "zh-CN", "zh", "zh_TW", "EN", "xx-YY", "../birthday", "en-", "-"]),
    _text.map(lambda s: s[:16]),
)
zones = st.one_of(
    st.none(),
    st.sampled_from(
        ["", "UTC", "utc", "Asia/Shanghai", "America/Los_Angeles", "Pacific/Kiritimati",
         "Pacific/Pago_Pago", "Mars/Base", "Europe/London "]
    ),
    _text,
)
countries = st.one_of(st.none(), st.sampled_from(["GB", "CN", "uk", "Narnia", "", "us"]), _text)
names = st.one_of(
    st.none(),
    st.sampled_from(["", "李娜", "{{ 7 * 7 }}", "O'Brien <b>", "x" * 100]),
    _text,
)
#: what SQLite may hold in a DATE column when something other than careflow wrote it
BAD_DATES = ["2026-13-45", "not a date", "", "1990-02-30", "29/02/1990", "0000-00-00", "1990"]


@st.composite
def customer_rows(draw, as_of: date, sqlite: bool):
    """A list of customer rows with unique (possibly sparse, possibly huge) ids."""
    ids = sorted(draw(st.sets(st.integers(1, 10**12), min_size=1, max_size=12)))
    rows, bad_dates = [], {}
    for cid in ids:
        # many birthdays fall on the run's day, so the birthday segment selects someone
        birthday = draw(
            st.one_of(
                st.none(),
                st.integers(1, 90).map(lambda years: _years_before(as_of, years)),
                st.integers(1, 90).map(lambda years: _years_before(as_of, years)),
                st.dates(date(1900, 1, 1), date(2030, 12, 31)),
                st.just(date(2000, 2, 29)),
            )
        )
        row = {
            "id": cid,
            "full_name": draw(names),
            "given_name": draw(names),
            "mobile": draw(phones),
            "email": draw(emails),
            "fax": draw(phones),
            "locale": draw(locales),
            "time_zone": draw(zones),
            "birthday": birthday,
            "grade": draw(st.one_of(st.none(), st.sampled_from(["a", "VIP", "", "ü"]))),
            "country": draw(countries),
            "preferred_channel": draw(st.one_of(st.none(), st.sampled_from(["sms", "pigeon"]))),
            "created_at": datetime(2020, 1, 1),
        }
        for key in ("full_name", "given_name", "country"):
            row[key] = row[key] if row[key] is None else row[key][:64]
        if row["email"] is not None:
            row["email"] = row["email"][:254]
        if row["fax"] is not None:
            row["fax"] = row["fax"][:40]
        rows.append(row)
        if sqlite and draw(st.integers(0, 5)) == 0:
            column = draw(st.sampled_from(["birthday", "created_at"]))
            bad_dates[cid] = (column, draw(st.sampled_from(BAD_DATES)))
    return rows, bad_dates


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # Feb 29
        return day.replace(year=day.year - years, day=28)


@st.composite
def purchases(draw, ids: list[int], as_of: date):
    """Orders (with lines) for some customers: a few purchase days each."""
    orders, lines = [], []
    for cid in ids:
        for k, days_ago in enumerate(
            draw(st.lists(st.integers(-5, 800), max_size=4, unique=True))
        ):
            oid = len(orders) + 1
            day = as_of - timedelta(days=days_ago)
            orders.append(
                {
                    "id": oid,
                    "customer_id": cid,
                    "ordered_at": datetime.combine(day, time(10, k)),
                    "ordered_on": day,
                    "currency": draw(st.sampled_from(["GBP", "CNY"])),
                    "amount_minor": draw(st.integers(0, 500_000)),
                }
            )
            lines.append(
                {
                    "order_id": oid,
                    "sku": draw(st.sampled_from(["RICE", "TEA"])),
                    "quantity": draw(st.integers(1, 3)),
                    "unit_price_minor": 100,
                    "amount_minor": 100,
                }
            )
    return orders, lines


# --- the campaign ------------------------------------------------------------------------
FRAGMENTS = [
    "Hi {{ name }}",
    "{{ customer.full_name }}",
    "{{ customer.grade.upper() }}",  # fails when grade is None
    "{{ as_of | date }}",
    "{{ brand }}",
    "{{ customer.birthday | date('long') }}",
    "{{ days_since }}",  # only some segments have it: an undefined name elsewhere
    "{{ 1 / 0 }}",
    "{{ 'long offer ' * 60 }}",  # too long for an SMS
    "{% for i in range(3) %}{{ i }}{% endfor %}",
    "{{ customer.id }} {{ customer.locale }} {{ customer.time_zone }}",
    "生日快乐，{{ name }}！",
    "{{ name ",  # a syntax error: every recipient of this template fails
]
SEGMENT_PARAMS = {
    "birthday": st.fixed_dictionaries({"feb29_on": st.sampled_from(["feb28", "mar1"])}),
    "dormant": st.fixed_dictionaries({"days": st.integers(1, 400)}),
    "reorder_due": st.fixed_dictionaries({"min_purchase_days": st.integers(3, 4)}),
    "vip": st.fixed_dictionaries(
        {"tiers": st.lists(st.sampled_from(["VIP", "Large", "Medium", "Small"]), min_size=1,
                           max_size=3, unique=True)}
    ),
}


@st.composite
def campaigns(draw):
    """Either a shipped campaign, or a generated one with templates from fragments."""
    if draw(st.booleans()):
        return {"name": draw(st.sampled_from(["birthday", "winback", "reorder_reminder", "vip_care"]))}
    segment = draw(st.sampled_from(sorted(SEGMENT_PARAMS)))
    template = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=3).map(" ".join)
    return {
        "name": "generated",
        "yaml": {
            "segment": segment,
            "parameters": draw(SEGMENT_PARAMS[segment]),
            "channels": draw(st.permutations(["sms", "email", "fax"]))[: draw(st.integers(1, 3))],
            "occasion": draw(st.sampled_from(
                ["yearly", "monthly", "weekly", "daily"]
                + (["last_purchase"] if segment in ("dormant", "reorder_due") else [])
            )),
            "marketing": draw(st.booleans()),
        },
        "templates": {
            f"{part}.{locale}{suffix}": draw(template)
            for locale in draw(st.sampled_from([["en"], ["en", "zh-CN"], ["zh-CN", "en"]]))
            for part, suffix in [
                ("sms", ".j2"), ("fax", ".j2"), ("email", ".subject.j2"), ("email", ".txt.j2")
            ]
        },
    }


#: what the stand-in channel does with one chunk
CHANNEL_MODES = st.sampled_from(["ok", "ok", "ok", "raise", "lose_one", "retryable", "refuse"])


class FlakyChannel:
    """Delivers, fails or raises on demand; counts what it delivered per ledger key."""

    name = "flaky"

    def __init__(self, modes: list[str], log: dict):
        self.modes, self.log = modes, log

    def send_batch(self, messages: list[Message]) -> list[Outcome]:
        mode = self.modes[self.log["chunks"] % len(self.modes)]
        self.log["chunks"] += 1
        for m in messages:
            # noted, not asserted: the route turns a channel's exception into outcomes
            if m.key in self.log["closed"]:
                self.log["again"].append(f"{m.key} after {self.log['closed'][m.key]}")
            self.log["handed"][m.key] += 1
        if mode == "raise":  # outcome unknown: each may have gone out
            for m in messages:
                self.log["closed"][m.key] = "an exception (may have gone out)"
            raise RuntimeError("the provider SDK blew up")
        out = []
        for i, m in enumerate(messages):
            if mode == "lose_one" and i == 0:
                self.log["closed"][m.key] = "a lost outcome (may have gone out)"
                continue
            if mode == "retryable":
                out.append(Outcome.failed(m.contact_id, "provider_busy", retryable=True))
            elif mode == "refuse":
                self.log["closed"][m.key] = "a permanent failure"
                out.append(Outcome.failed(m.contact_id, "rejected"))
            else:
                self.log["closed"][m.key] = "a send"
                self.log["delivered"][m.key] += 1
                out.append(Outcome.sent(m.contact_id, provider_id=f"p-{m.contact_id}"))
        return out

    def close(self) -> None:
        pass


# --- the property -------------------------------------------------------------------------
TABLES = [ContactEvent, ContactHistory, Run, Campaign, Consent, OrderLine, Order, Product, Customer]


def reset(engine) -> None:
    with engine.begin() as conn:
        for model in TABLES:
            conn.execute(delete(model.__table__))
        conn.execute(
            insert(Product.__table__),
            [{"sku": "RICE", "name": "Rice", "replenish_days": 30},
             {"sku": "TEA", "name": "Tea", "replenish_days": None}],
        )


def write_campaign(root: Path, campaign: dict) -> None:
    if campaign["name"] != "generated":
        return
    folder = root / "generated"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "campaign.yaml").write_text(yaml.safe_dump(campaign["yaml"]))
    for name, body in campaign["templates"].items():
        (folder / name).write_text(body, encoding="utf-8")


@st.composite
def scenarios(draw, sqlite: bool):
    as_of = draw(st.dates(date(2024, 1, 1), date(2028, 12, 31)))
    rows, bad = draw(customer_rows(as_of, sqlite))
    ids = [r["id"] for r in rows]
    orders, lines = draw(purchases(ids, as_of))
    consents = [
        {"customer_id": cid, "channel": ch, "granted": granted, "updated_at": datetime(2026, 1, 1)}
        for cid in ids
        for ch, granted in draw(
            st.dictionaries(st.sampled_from(["sms", "email", "fax"]), st.booleans(), max_size=2)
        ).items()
    ]
    return {
        "as_of": as_of,
        "hour": draw(st.integers(0, 23)),
        "rows": rows,
        "bad_dates": bad,
        "orders": orders,
        "lines": lines,
        "consents": consents,
        "campaign": draw(campaigns()),
        "batch_size": draw(st.integers(2, 8)),
        "chunk_size": draw(st.integers(1, 5)),
        "consent_required": draw(st.booleans()),
        "modes": draw(st.lists(CHANNEL_MODES, min_size=1, max_size=6)),
        "retry_a_batch": draw(st.booleans()),
    }


def load(engine, s: dict) -> None:
    reset(engine)
    with engine.begin() as conn:
        for table, rows in [
            (Customer, s["rows"]), (Consent, s["consents"]), (Order, s["orders"]),
            (OrderLine, s["lines"]),
        ]:
            if rows:
                conn.execute(insert(table.__table__), rows)
        for cid, (column, value) in s["bad_dates"].items():  # SQLite keeps any text
            conn.execute(text(f"UPDATE customers SET {column} = :v WHERE id = :id"),
                         {"v": value, "id": cid})


def run_once(engine, s: dict, run_id: str, log: dict, settings) -> tuple[list, int]:
    """Plan and run every batch of one run; returns (batch results, selected by the segment)."""
    spec = load_campaign(s["campaign"]["name"], settings.templates_dir)
    as_of = s["as_of"]
    at = datetime.combine(as_of, time(s["hour"]), tzinfo=UTC)
    with engine.connect() as conn:
        params = segments.prepare(spec.segment, conn, as_of, spec.parameters)
        selected = {
            r.customer_id
            for r in conn.execute(segments.build(spec.segment, as_of, params, at=at))
        }
    ranges = plan_batches(engine, spec, as_of, at, params, s["batch_size"])
    run = RunPlan(spec=spec, run_id=run_id, as_of=as_of, at=at, settings=settings, params=params)
    route = Route.for_run(run)
    route.channel_factory = lambda name: FlakyChannel(s["modes"], log)
    results = [process_batch(route, r) for r in ranges]
    assert sum(r.selected for r in results) == len(selected)
    if s["retry_a_batch"] and ranges:  # Prefect retrying a task: same run, same batch
        results.append(process_batch(route, ranges[0]))
    return results, selected


# Hypothesis warns when the global `random` state changes while it draws. Nothing in
# these strategies uses it; other threads of the process do (a Prefect API harness
# from an earlier test on the same worker, ledger retry jitter), which made this
# test fail once in CI with nothing wrong in what it checks.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@given(data=st.data())
def test_every_selected_customer_ends_with_one_settled_outcome(engine, tmp_path, monkeypatch, data):
    sqlite = engine.dialect.name == "sqlite"
    s = data.draw(scenarios(sqlite), label="scenario")
    root = tmp_path / "templates"
    if not root.exists():
        shutil.copytree(PROJECT_ROOT / "templates", root)
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    monkeypatch.setenv("CAREFLOW_SEND_CHUNK_SIZE", str(s["chunk_size"]))
    monkeypatch.setenv("CAREFLOW_CONSENT_REQUIRED", str(s["consent_required"]).lower())
    write_campaign(root, s["campaign"])
    load(engine, s)
    settings = load_settings()
    log = {"chunks": 0, "handed": Counter(), "delivered": Counter(), "closed": {}, "again": []}

    first, selected = run_once(engine, s, "run-1", log, settings)
    for r in first:  # every customer a batch selected is accounted for in its result
        counted = (
            r.sent
            + sum(r.skipped.values())
            + sum(r.failed.values())
            + sum(r.deferred.values())
            + sum(r.already.values())
        )
        assert counted == r.selected, r.as_dict()
    again, _ = run_once(engine, s, "run-2", log, settings)

    with engine.connect() as conn:
        rows = conn.execute(
            select(ContactHistory.__table__).where(ContactHistory.campaign == s["campaign"]["name"])
        ).all()
    per_customer = Counter(r.customer_id for r in rows)
    assert set(per_customer) == selected
    assert all(n == 1 for n in per_customer.values()), per_customer.most_common(3)
    for r in rows:
        assert r.state in (State.SENT, State.SKIPPED, State.FAILED, State.DEFERRED), (
            r.state,
            r.customer_id,
        )
        if r.state == State.DEFERRED:  # quiet hours in the customer's zone: due later
            assert r.not_before is not None
        if r.state == State.SENT:
            assert r.provider_id and r.reason is None
            assert log["delivered"][f"{r.campaign}:{r.customer_id}:{r.occasion}"] == 1
        else:
            assert r.reason, (r.state, r.customer_id)
    assert all(n == 1 for n in log["delivered"].values()), log["delivered"].most_common(3)
    assert not log["again"], f"handed to the channel again: {log['again'][:5]}"
    event(f"selected: {'none' if not selected else 'some'}")
    for outcome in sorted({f"{r.state}:{r.reason}" for r in rows}):
        event(f"outcome {outcome}")
    assert sum(r.sent for r in first + again) == sum(log["delivered"].values())

"""The segment contract, run over every segment in the registry (``careflow.segments.names()``,
see careflow/segments/_registry.py), on SQLite and PostgreSQL.

A new segment gets these checks by being registered: it builds a select
without touching the database, returns each customer once with a
``customer_id``, ignores orders after ``as_of`` exactly, honours ``id_range``,
and declares its parameters in a model that refuses anything else with a
ConfigError.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, Select, event

from careflow import segments
from careflow.cli.main import main
from careflow.errors import ConfigError
from careflow.segments._params import SegmentParams
from tests.factories import add_contact, add_customer, add_orders, set_product

AS_OF = date(2026, 11, 22)
AT = datetime.combine(AS_OF, time(12), tzinfo=UTC)
NAMES = segments.names()
CUSTOMERS = range(1, 41)


def ago(*days: int) -> list[date]:
    return [AS_OF - timedelta(days=d) for d in days]


@pytest.fixture
def shop(engine: Engine) -> Engine:
    """40 customers with mixed histories, so that every segment selects some and not all.

    Several orders fall on one day (a segment must still count the customer
    once), some birthdays fall on the run's date in different zones, some
    customers are dormant, some due to reorder (by their own rhythm or by a
    product's replenishment period) and spending differs for the pyramid.
    """
    rnd = random.Random(11)
    zones = ["UTC", "Asia/Shanghai", "America/Los_Angeles", "Pacific/Auckland", None]
    for cid in CUSTOMERS:
        born = date(1980 + cid % 20, 11, 22 + cid % 2) if cid % 3 == 0 else date(1990, 6, 1)
        # 22 November is Lebanon's Independence Day (for the holiday segment)
        country = {0: "LB", 1: "Lebanon", 2: "GB"}.get(cid % 5)
        locale = "en"
        if cid in (37, 38):  # born on lunar 10/14, kept on 2026-11-22 (lunar_birthday)
            born, locale = (date(1985, 11, 25), "zh-CN") if cid == 37 else (born, "zh")
        # grades A-G for most (contact_due), none for every fourth
        grade = None if cid % 4 == 0 else "ABCDEFG"[cid % 7]
        add_customer(engine, cid, birthday=born, time_zone=zones[cid % len(zones)],
                     country=country, locale=locale, grade=grade, owner=f"owner {cid % 3}")
        if cid % 2:  # contacted 3 to 40 days ago (contact_due)
            add_contact(engine, cid, AT - timedelta(days=3 + cid))
        if cid <= 5:  # due to reorder: gaps of 20 days, the last purchase 20-39 days ago
            last = 19 + cid * 3
            add_orders(engine, cid, ago(last + 60, last + 40, last + 20, last, last), "25")
        elif cid <= 8:  # due by product: one bag lasts 25 days, bought 30 days ago
            add_orders(engine, cid, ago(30), "40", lines=[("RICE", 1)])
        elif cid <= 16:  # dormant
            add_orders(engine, cid, ago(*rnd.sample(range(200, 700), 3)), str(rnd.randint(5, 90)))
        elif cid <= 36:  # recent buyers, spending differently, some twice a day
            days = rnd.sample(range(1, 300), rnd.randint(1, 4))
            add_orders(engine, cid, ago(*days, days[0]), str(rnd.randint(5, 900)))
        # 37-40 never bought
    set_product(engine, "RICE", 25)
    return engine


def rows(engine: Engine, query: Select) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def by_customer(engine: Engine, query: Select) -> dict[int, dict]:
    return {r["customer_id"]: r for r in rows(engine, query)}


def build(name: str, params: dict | None = None, **kw) -> Select:
    return segments.build(name, AS_OF, params, at=AT, **kw)


def select_from(engine: Engine, name: str, params: dict | None = None, **kw) -> Select:
    """``build``, after ``prepare`` for a segment that selects nothing without it (clv)."""
    if segments.get(name).needs_prepare:
        with engine.connect() as conn:
            params = segments.prepare(name, conn, AS_OF, params)
    return build(name, params, **kw)


@pytest.mark.parametrize("name", NAMES)
def test_builds_a_select_without_touching_the_database(name, shop):
    executed = []

    def spy(conn, cursor, statement, *args):
        executed.append(statement)

    params = None
    if segments.get(name).needs_prepare:  # prepare runs queries; building still must not
        with shop.connect() as conn:
            params = segments.prepare(name, conn, AS_OF, {})
    event.listen(Engine, "before_cursor_execute", spy)
    try:
        query = build(name, params)
    finally:
        event.remove(Engine, "before_cursor_execute", spy)
    assert isinstance(query, Select)
    assert executed == []


@pytest.mark.parametrize("name", NAMES)
def test_each_customer_once_with_a_customer_id(name, shop):
    got = rows(shop, select_from(shop, name))
    ids = [r["customer_id"] for r in got]
    assert len(ids) == len(set(ids))
    # the population is built so that the contract checks are not vacuous
    assert 0 < len(ids) < len(CUSTOMERS), f"{name} selects {len(ids)} of {len(CUSTOMERS)}"
    assert set(ids) <= set(CUSTOMERS)


@pytest.mark.parametrize("name", NAMES)
def test_orders_after_as_of_never_count(name, shop):
    before = by_customer(shop, select_from(shop, name))
    # big, frequent orders the day after as-of and later, for everyone; and a
    # customer whose only purchases lie in the future
    for cid in CUSTOMERS:
        add_orders(shop, cid, [AS_OF + timedelta(days=d) for d in (1, 1, 15, 40)], "5000",
                   lines=[("RICE", 3)])
    add_customer(shop, 41)
    add_orders(shop, 41, [AS_OF + timedelta(days=1)], "9999")
    assert by_customer(shop, select_from(shop, name)) == before


@pytest.mark.parametrize("name", NAMES)
def test_id_range_limits_the_result_and_changes_nothing_else(name, shop):
    whole = by_customer(shop, select_from(shop, name))
    lo, hi = 4, 20
    part = by_customer(shop, select_from(shop, name, id_range=(lo, hi)))
    assert part == {c: r for c, r in whole.items() if lo <= c <= hi}


@pytest.mark.parametrize("name", NAMES)
def test_batches_with_prepared_parameters_add_up_to_the_whole(name, shop):
    """How a flow runs a segment: ``prepare`` once, then one select per id range."""
    whole = by_customer(shop, select_from(shop, name))
    with shop.connect() as conn:
        params = segments.prepare(name, conn, AS_OF, {})
    assert segments.validate_params(name, params) == params  # safe to hand to every batch
    batched: dict[int, dict] = {}
    for lo in range(1, 41, 7):
        part = by_customer(shop, build(name, params, id_range=(lo, lo + 6)))
        assert not part.keys() & batched.keys()
        batched |= part
    assert batched == whole


@pytest.mark.parametrize("name", NAMES)
def test_default_parameters_validate_and_are_documented(name):
    model = segments.get(name).params
    defaults = segments.validate_params(name, {})
    assert segments.validate_params(name, defaults) == defaults
    assert segments.validate_params(name, None) == defaults
    for field, info in model.model_fields.items():
        assert info.description, f"{name}.{field} has no description"
    listed = segments.describe_params(name)
    assert [p["name"] for p in listed] == list(model.public_fields())
    assert all(p["allowed"] and p["description"] for p in listed)
    # the default shown is the one used, also for a field whose default is made by a factory
    assert {p["name"]: p["default"] for p in listed} == {
        field: defaults[field] for field in model.public_fields()
    }
    out = CliRunner().invoke(main, ["segment", "params", name])
    assert out.exit_code == 0 and out.output.startswith(f"{name}: "), out.output


@pytest.mark.parametrize("name", NAMES)
def test_every_segment_declares_a_parameter_model_and_what_it_selects(name):
    entry = segments.get(name)
    assert entry.name == name
    assert issubclass(entry.params, SegmentParams)
    assert entry.description and "\n" not in entry.description
    assert not entry.needs_prepare or entry.prepare is not None


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_parameter_is_a_config_error(name):
    with pytest.raises(ConfigError) as err:
        build(name, {"no_such_parameter": 1})
    message = str(err.value)
    assert f"segment {name!r}" in message and "'no_such_parameter'" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_refuses_a_wrong_type_naming_itself(name):
    """A bad value is a ConfigError from the model, never a ValueError or TypeError from
    deep inside the segment (its build function only ever gets validated parameters)."""
    for field in segments.get(name).params.public_fields():
        with pytest.raises(ConfigError, match=rf"^segment {name!r}: {field} must be .*\(got "):
            build(name, {field: object()})

"""POST /events on a real `careflow serve`, signed as docs/events.md tells a shop to sign."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select, update

from careflow import segments
from careflow.cli.main import main
from careflow.db.models import ContactEvent, Customer, JourneyPosition, Order, OrderLine, Product
from careflow.ledger.history import timeline
from careflow.shop_events import sign
from tests.factories import add_customer, ids
from tests.service.conftest import POS_SECRET, SHOP_SECRET
from tests.service.test_serve import post, row, sent, twilio_post

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def at(served, **delta) -> str:
    """An instant relative to the service's clock, as a shop writes it."""
    return (served.clock.now + timedelta(**delta)).isoformat().replace("+00:00", "Z")


def shop_post(served, events, *, source="shop", secret=SHOP_SECRET, backfill=None,
              signed_at=None, body=None, signature=None, content_type="application/json"):
    envelope = {"events": events} if backfill is None else {"events": events, "backfill": backfill}
    body = json.dumps(envelope).encode() if body is None else body
    stamp = int((signed_at or served.clock.now).timestamp())
    headers = {"Content-Type": content_type, "Careflow-Source": source,
               "Careflow-Signature": signature or sign(secret, stamp, body)}
    code, answer = post(served.url + "/events", body, headers)
    return code, json.loads(answer)


def order(event_id, customer, when, ref, amount="39.99", currency="GBP"):
    return {"id": event_id, "type": "order", "customer": customer, "occurred_at": when,
            "order": {"id": ref, "amount": amount, "currency": currency}}


def shop_events(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(ContactEvent).where(ContactEvent.provider == "shop").order_by(ContactEvent.id)
        ).all()


def orders(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(Order).order_by(Order.id)).all()


@pytest.fixture
def shop(served, engine):
    """The service with two customers the shop knows, its clock at the database's now."""
    add_customer(engine, 1, external_ref="C-1", mobile="+8613812345678")
    add_customer(engine, 2, external_ref="C-2")
    served.clock.now = datetime.now(UTC).replace(microsecond=0)
    return served


def test_each_kind_of_event_is_stored_on_the_timeline_and_becomes_a_prefect_event(shop, engine):
    code, answer = shop_post(shop, [
        order("e1", "C-1", at(shop, minutes=-5), "SO-1"),
        {"id": "e2", "type": "signup", "customer": "C-2", "occurred_at": at(shop, minutes=-4)},
        {"id": "e3", "type": "cart", "customer": "C-1", "occurred_at": at(shop, minutes=-3),
         "data": {"items": 2}},
        {"id": "e4", "type": "custom", "name": "wishlist.added", "customer": "C-1",
         "occurred_at": at(shop, minutes=-2), "data": {"sku": "85123A"}},
    ])
    assert code == 200, answer
    assert answer["accepted"] == 4 and answer["refused"] == answer["duplicate"] == 0
    assert [e["status"] for e in answer["events"]] == ["accepted"] * 4
    assert [(e.kind, e.customer_id) for e in shop_events(engine)] == [
        ("order_placed", 1), ("signed_up", 2), ("cart_updated", 1), ("event:wishlist.added", 1)]
    (o,) = orders(engine)
    assert (o.external_ref, o.customer_id, o.amount_minor, o.currency) == ("SO-1", 1, 3999, "GBP")
    assert [e["event"] for e in shop.emitted] == [
        "careflow.order.placed", "careflow.customer.signed-up", "careflow.cart.updated",
        "careflow.event.wishlist.added"]
    assert shop.emitted[1]["resource"]["prefect.resource.id"] == "careflow.customer.2"
    # careflow history reads the same timeline
    seen = [entry["what"] for entry in timeline(engine, 1)]
    assert {"order", "order_placed", "cart_updated", "event:wishlist.added"} <= set(seen)


def test_a_forged_or_unsigned_post_is_refused_whole_and_changes_nothing(shop, engine):
    events = [order("e1", "C-1", at(shop, minutes=-5), "SO-1")]
    assert shop_post(shop, events, secret=POS_SECRET)[0] == 401  # another source's secret
    assert shop_post(shop, events, source="pos")[0] == 401  # shop's secret, pos's name
    assert shop_post(shop, events, source="nobody")[0] == 401
    code, answer = shop_post(shop, events, signature="t=1,v1=00")
    assert code == 401 and answer["error"] == "bad_signature"
    body = json.dumps({"events": events}).encode()
    good = sign(SHOP_SECRET, int(shop.clock.now.timestamp()), body).split(",v1=")[1]
    for odd in ("t=\u00b2,v1=" + good, "t=1,v1=\u00e9" + good, "t=" + "9" * 5000 + ",v1=00",
                "v1=" + good, "t=1"):
        code, answer = post(shop.url + "/events", body, {
            "Content-Type": "application/json", "Careflow-Source": "shop",
            "Careflow-Signature": odd.encode("latin-1")})
        assert code == 401, odd
    body = json.dumps({"events": events}).encode()
    signed = sign(SHOP_SECRET, int(shop.clock.now.timestamp()), body)
    tampered = body.replace(b"39.99", b"0.01")
    assert shop_post(shop, None, body=tampered, signature=signed)[0] == 401
    assert shop_events(engine) == [] and orders(engine) == [] and shop.emitted == []


def test_a_replay_after_the_tolerance_is_refused_and_within_it_stores_nothing_twice(shop, engine):
    events = [order("e1", "C-1", at(shop, minutes=-5), "SO-1")]
    body = json.dumps({"events": events}).encode()
    signed_at = shop.clock.now
    signature = sign(SHOP_SECRET, int(signed_at.timestamp()), body)
    assert shop_post(shop, None, body=body, signature=signature)[0] == 200
    shop.clock.now += timedelta(seconds=299)  # within CAREFLOW_EVENT_TOLERANCE_SECONDS
    code, answer = shop_post(shop, None, body=body, signature=signature)
    assert code == 200 and answer["events"] == [{"id": "e1", "status": "duplicate"}]
    shop.clock.now += timedelta(seconds=2)
    code, answer = shop_post(shop, None, body=body, signature=signature)
    assert code == 401 and answer["error"] == "expired_signature"
    # signed too far ahead of the service's clock: refused as well
    code, answer = shop_post(shop, events, signed_at=shop.clock.now + timedelta(minutes=6))
    assert code == 401 and answer["error"] == "expired_signature"
    assert len(shop_events(engine)) == 1 and len(orders(engine)) == 1


def test_a_retried_post_and_a_repeat_within_a_post_store_once(shop, engine):
    events = [order("e1", "C-1", at(shop, minutes=-5), "SO-1"),
              order("e1", "C-1", at(shop, minutes=-5), "SO-1")]
    code, answer = shop_post(shop, events)
    assert code == 200 and [e["status"] for e in answer["events"]] == ["accepted", "duplicate"]
    code, answer = shop_post(shop, events)
    assert [e["status"] for e in answer["events"]] == ["duplicate", "duplicate"]
    # the same id from another source is another event; the same order number is one order
    code, answer = shop_post(shop, events[:1], source="pos", secret=POS_SECRET)
    assert answer["events"][0]["status"] == "accepted"
    assert len(shop_events(engine)) == 2 and len(orders(engine)) == 1
    assert [e["event"] for e in shop.emitted].count("careflow.order.placed") == 2


def test_concurrent_posts_of_one_event_store_it_once(shop, engine):
    events = [order("e-race", "C-1", at(shop, minutes=-5), "SO-race")]
    answers, go = [], threading.Barrier(8)

    def one():
        go.wait()
        answers.append(shop_post(shop, events))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(a["events"][0]["status"] for _, a in answers)
    assert [code for code, _ in answers] == [200] * 8
    assert statuses == ["accepted"] + ["duplicate"] * 7
    assert len(shop_events(engine)) == 1 and len(orders(engine)) == 1


def test_an_old_event_is_recorded_but_triggers_nothing_unless_backfilled(shop, engine):
    contact = sent(engine, 1, "winback", "sms", "+8613812345678", "SM1")
    status = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+8613812345678"}
    assert twilio_post(shop, "/webhooks/twilio/status", status)[0] == 204
    sent_at = row(engine, contact).sent_at.replace(tzinfo=UTC)
    shop.clock.now = sent_at + timedelta(hours=80)  # orders a day after the message: 79 h ago
    shop.emitted.clear()
    when = (sent_at + timedelta(hours=1)).isoformat()
    code, answer = shop_post(shop, [order("old-1", "C-1", when, "SO-old")])
    assert code == 200 and answer["events"] == [
        {"id": "old-1", "status": "accepted", "triggers": False}]
    (o,) = orders(engine)
    assert o.quiet is True
    assert [e.kind for e in shop_events(engine)] == ["order_placed"]
    assert shop.emitted == []
    assert _conversions(engine) == []
    # a report later attributes nothing either
    result = CliRunner().invoke(main, ["report", "responses", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["converted"] == 0
    # the same age, marked as a backfill: it acts
    code, answer = shop_post(shop, [order("old-2", "C-1", when, "SO-old-2")], backfill=True)
    assert answer["backfill"] is True and answer["events"][0]["triggers"] is True
    assert [e["event"] for e in shop.emitted] == ["careflow.order.placed",
                                                  "careflow.order.converted"]
    assert [c.payload["order_id"] for c in _conversions(engine)] == [orders(engine)[1].id]


def test_an_old_order_enters_no_journey(shop, engine):
    from careflow.journey_spec import JourneySpec
    from careflow.journeys.advance import enter_events
    from careflow.settings import load_settings

    spec = JourneySpec.model_validate({
        "name": "thanks", "entry": {"event": "ordered"}, "steps": [{"id": "end", "type": "exit"}]})
    settings = load_settings()
    enter_events(engine, spec, settings, shop.clock.now)  # the journey starts reading here
    shop_post(shop, [order("old", "C-1", at(shop, hours=-100), "SO-old")])
    shop_post(shop, [order("new", "C-2", at(shop, hours=-1), "SO-new")])
    enter_events(engine, spec, settings, shop.clock.now)
    with engine.connect() as conn:
        entered = conn.execute(select(JourneyPosition.customer_id)).scalars().all()
    assert entered == [2]


def _conversions(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(ContactEvent).where(ContactEvent.kind == "converted")
        ).all()


def test_an_order_is_a_conversion_in_the_responses_report_without_an_import(shop, engine):
    contact = sent(engine, 1, "winback", "sms", "+8613812345678", "SM1")
    status = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+8613812345678"}
    assert twilio_post(shop, "/webhooks/twilio/status", status)[0] == 204
    sent_at = row(engine, contact).sent_at.replace(tzinfo=UTC)
    shop.clock.now = sent_at + timedelta(days=2)
    shop.emitted.clear()
    when = (sent_at + timedelta(days=1)).isoformat()
    code, _ = shop_post(shop, [order("e1", "C-1", when, "SO-9", amount="49.99")])
    assert code == 200
    (conversion,) = _conversions(engine)  # attributed at once, by the receiver
    assert conversion.contact_id == contact
    assert [e["event"] for e in shop.emitted] == ["careflow.order.placed",
                                                  "careflow.order.converted"]
    assert shop.emitted[1]["related"][0]["prefect.resource.id"] == "careflow.campaign.winback"
    result = CliRunner().invoke(main, ["report", "responses", "--json"])
    assert result.exit_code == 0, result.output
    (winback,) = json.loads(result.output)
    assert winback["converted"] == 1 and winback["revenue"] == {"GBP": "49.99"}


def test_an_order_s_lines_are_kept_as_an_import_keeps_them_and_reorder_reads_them(
    shop, engine
):
    """Posted lines go into order_lines (a new product created under its code and name),
    so the products segments read a posted order as an imported one: two bags of rice
    lasting 15 days each make the customer due for a reorder 30 days later."""
    with engine.begin() as conn:
        conn.execute(insert(Product), [{"sku": "RICE", "name": "Rice 5 kg", "replenish_days": 15}])
    when = shop.clock.now - timedelta(minutes=5)
    lines = [{"sku": "RICE", "quantity": 2, "unit_price": "12.50", "name": "Not this name"},
             {"sku": " TEA-1 ", "quantity": 3, "unit_price": "2.555", "name": "Green tea"}]
    posted = order("e1", "C-1", when.isoformat(), "SO-1", amount="33.67") | {
        "order": {"id": "SO-1", "amount": "33.67", "currency": "GBP", "lines": lines}}
    code, answer = shop_post(shop, [posted])
    assert code == 200 and answer["accepted"] == 1, answer
    assert shop_post(shop, [posted | {"id": "e2"}])[1]["accepted"] == 1  # same order number
    with engine.connect() as conn:
        kept = conn.execute(select(OrderLine.sku, OrderLine.quantity, OrderLine.unit_price_minor,
                                   OrderLine.amount_minor).order_by(OrderLine.sku)).all()
        products = dict(conn.execute(select(Product.sku, Product.name)).all())
    # the amount from the exact price, rounded once: 3 x 2.555 = 7.665 -> 767
    assert [tuple(r) for r in kept] == [("RICE", 2, 1250, 2500), ("TEA-1", 3, 256, 767)]
    assert products == {"RICE": "Rice 5 kg", "TEA-1": "Green tea"}
    due = when.date() + timedelta(days=30)
    assert ids(engine, segments.build("reorder_due", due, {})) == {1}
    assert ids(engine, segments.build("reorder_due", due - timedelta(days=1), {})) == set()


def test_a_bad_order_line_refuses_its_order_alone(shop, engine):
    def with_lines(event_id, lines):
        return order(event_id, "C-1", at(shop, minutes=-1), f"SO-{event_id}") | {"order": {
            "id": f"SO-{event_id}", "amount": "1.00", "currency": "JPY", "lines": lines}}

    line = {"sku": "A", "quantity": 1, "unit_price": "100"}
    code, answer = shop_post(shop, [
        with_lines("zero", [line | {"quantity": 0}]),
        with_lines("half", [line | {"quantity": 1.5}]),
        with_lines("float", [line | {"unit_price": 100}]),
        with_lines("yen", [line | {"unit_price": "-100"}]),
        with_lines("words", [line | {"unit_price": "a hundred"}]),
        with_lines("nosku", [{"quantity": 1, "unit_price": "1"}]),
        with_lines("many", [line] * 501),
        with_lines("fine", [line]),
    ])  # fmt: skip
    assert code == 200, answer
    reasons = {e["id"]: e.get("reason", e["status"]) for e in answer["events"]}
    assert reasons == {
        "zero": "invalid: order.lines[1].quantity must be a whole number from 1 to 1,000,000",
        "half": "invalid: order.lines[1].quantity must be a whole number from 1 to 1,000,000",
        "float": 'invalid: order.lines[1].unit_price must be a decimal string ("2.55")',
        "yen": "invalid: order.lines[1].unit_price is not a price in JPY",
        "words": "invalid: order.lines[1].unit_price is not a price in JPY",
        "nosku": "invalid: order.lines[1].sku must be a non-empty string",
        "many": "invalid: order.lines must be a list of at most 500 lines",
        "fine": "accepted"}  # fmt: skip
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(OrderLine)).scalar_one() == 1


def test_unknown_customers_and_bad_events_are_refused_alone(shop, engine):
    code, answer = shop_post(shop, [{"id": "x", "type": "cart", "customer": "C-404",
                                     "occurred_at": at(shop, minutes=-1)}])
    assert code == 422
    assert answer["events"] == [{"id": "x", "status": "refused", "reason": "unknown_customer"}]
    code, answer = shop_post(shop, [
        order("ok", "C-1", at(shop, minutes=-1), "SO-1"),
        order("float", "C-1", at(shop, minutes=-1), "SO-2") | {"order": {
            "id": "SO-2", "amount": 39.99, "currency": "GBP"}},
        {"id": "naive", "type": "cart", "customer": "C-1", "occurred_at": "2026-12-07T10:00:00"},
        {"id": "future", "type": "cart", "customer": "C-1", "occurred_at": at(shop, hours=1)},
        {"id": "what", "type": "refund", "customer": "C-1", "occurred_at": at(shop, minutes=-1)},
        {"id": "nameless", "type": "custom", "customer": "C-1",
         "occurred_at": at(shop, minutes=-1)},
        "not an object",
        {"id": "stranger", "type": "cart", "customer": "C-404",
         "occurred_at": at(shop, minutes=-1)},
    ])
    assert code == 200
    assert answer["accepted"] == 1 and answer["refused"] == 7
    reasons = {e["id"]: e.get("reason", e["status"]) for e in answer["events"]}
    assert reasons["ok"] == "accepted" and reasons["stranger"] == "unknown_customer"
    assert "order.amount" in reasons["float"] and "offset" in reasons["naive"]
    assert "future" in reasons["future"] and "type" in reasons["what"]
    assert "name" in reasons["nameless"] and reasons[None].startswith("invalid")
    assert [e.event_id for e in shop_events(engine)] == ["shop:ok"]
    assert [o.external_ref for o in orders(engine)] == ["SO-1"]


def test_bad_envelopes_oversized_and_non_json_posts_are_4xx_json(shop, engine):
    code, answer = shop_post(shop, None, body=b"{not json")
    assert code == 400 and answer["error"] == "malformed"
    assert shop_post(shop, None, body=b'{"events": []}')[0] == 400
    assert shop_post(shop, None, body=b'[1, 2]')[0] == 400
    code, answer = shop_post(shop, None, body=b"[" * 50_000 + b"]" * 50_000)
    assert code == 400 and answer["error"] == "malformed"
    assert shop_post(shop, None, body=b'{"events": [], "backfill": "yes"}')[0] == 400
    code, answer = shop_post(shop, None, body=b'{"events": []}', content_type="text/plain")
    assert code == 415 and answer["error"] == "unsupported_media_type"
    many = [{"id": f"e{i}", "type": "cart", "customer": "C-1",
             "occurred_at": at(shop, minutes=-1)} for i in range(501)]
    code, answer = shop_post(shop, many)
    assert code == 400 and answer["error"] == "too_many_events"
    huge = json.dumps({"events": [{"id": "e", "data": "x" * 100_001}]}).encode()
    code, answer = shop_post(shop, None, body=huge)
    assert code == 413 and answer["error"] == "too_large"
    assert shop_events(engine) == []


def test_the_documented_python_example_posts_an_order(shop, engine):
    """docs/events.md's Python example, run as a shop would run it."""
    with engine.begin() as conn:
        conn.execute(update(Customer).where(Customer.id == 1).values(external_ref="C-1001"))
    shop.clock.now = datetime.now(UTC)
    example = re.search(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S).group(1)
    env = {**os.environ, "CAREFLOW_EVENTS_URL": f"{shop.url}/events",
           "SHOP_EVENTS_SECRET": SHOP_SECRET}
    done = subprocess.run([sys.executable, "-c", example], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.startswith("200 "), done.stdout + done.stderr
    assert json.loads(done.stdout[4:])["events"][0]["status"] == "accepted"
    with engine.connect() as conn:
        assert conn.execute(
            select(func.count()).where(Order.external_ref == "SO-88231")).scalar() == 1


def test_events_alone_are_enough_to_serve_and_a_bad_source_list_names_no_secret(
    db_url, monkeypatch
):
    import asyncio

    from careflow import db
    from careflow.errors import ConfigError
    from careflow.service.app import create_app
    from careflow.settings import load_settings
    from tests.service.asgi import request

    for name in ("TWILIO_AUTH_TOKEN", "SENDGRID_WEBHOOK_PUBLIC_KEY", "SINCH_CALLBACK_TOKEN",
                 "UNSUBSCRIBE_SECRET", "UNSUBSCRIBE_BASE_URL"):
        monkeypatch.delenv(f"CAREFLOW_{name}", raising=False)
    monkeypatch.setenv("CAREFLOW_EVENT_SOURCES", f"shop={SHOP_SECRET}")
    app = create_app(load_settings(), db.engine_for(db_url))
    assert [str(r) for r in app.state.receivers if r.on] == ["events: on (/events, sources shop)"]
    # unsigned: refused before the body is read
    call = asyncio.run(request(app, "POST", "/events", headers={"content-type": "application/json"}))
    assert call.status == 401 and call.pulled == 0
    monkeypatch.setenv("CAREFLOW_EVENT_SOURCES", "shop=too-short-a-secret,pos=x")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "shop" in str(refused.value) and "too-short-a-secret" not in str(refused.value)


def test_text_a_database_cannot_keep_is_that_events_refusal(shop, engine):
    body = (
        b'{"events": ['
        b'{"id": "nul", "type": "cart", "customer": "C-1", "occurred_at": "%s", '
        b'"data": {"note": "a\\u0000b"}},'
        b'{"id": "surrogate", "type": "cart", "customer": "C-1", "occurred_at": "%s", '
        b'"data": {"\\ud800": 1}},'
        b'{"id": "nan", "type": "cart", "customer": "C-1", "occurred_at": "%s", '
        b'"data": {"value": NaN}},'
        b'{"id": "ok", "type": "cart", "customer": "C-1", "occurred_at": "%s"}'
        b']}'
    ) % ((at(shop, minutes=-1).encode(),) * 4)
    code, answer = shop_post(shop, None, body=body)
    assert code == 200, answer
    assert [e["status"] for e in answer["events"]] == ["refused"] * 3 + ["accepted"]
    assert [e.event_id for e in shop_events(engine)] == ["shop:ok"]
    # deep data is kept (read without recursion), never a 500
    deep = {"id": "deep", "type": "cart", "customer": "C-1", "occurred_at": at(shop, minutes=-1)}
    body = json.dumps({"events": [deep]}).encode()[:-3] + (
        b', "data": {"a": ' + b"[" * 900 + b"]" * 900 + b"}}]}")
    code, answer = shop_post(shop, None, body=body)
    assert code == 200 and answer["events"][0]["status"] == "accepted"


def two_receivers(engine, batch) -> list:
    """What two `careflow serve` writers recording ``batch`` at the same instant did, each
    on its own engine (connection pool) of the database."""
    from careflow import db
    from careflow.shop_record import record_shop_events

    go, results = threading.Barrier(2), []

    def receiver():
        other = db.engine_for(engine.url.render_as_string(hide_password=False))
        go.wait()
        results.append(record_shop_events(other, batch))

    threads = [threading.Thread(target=receiver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_receivers_writing_the_same_events_at_once_store_them_once(engine):
    """Two `careflow serve` processes on one database: the insert decides, not a read."""
    from careflow.shop_events import OrderFacts, ShopEvent

    add_customer(engine, 1, external_ref="C-1")
    when = datetime(2026, 12, 7, 12)
    batch = [ShopEvent(i, "shop", f"e{i}", "order_placed", "C-1", when, True,
                       order=OrderFacts(f"SO-{i}", 100 * i, "GBP")) for i in range(50)]
    results = two_receivers(engine, batch)
    statuses = [a["status"] for r in results for a in r.answers.values()]
    assert statuses.count("accepted") == 50 and statuses.count("duplicate") == 50
    assert len(shop_events(engine)) == 50 and len(orders(engine)) == 50


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="curl, openssl")
def test_the_documented_curl_example_posts_a_file(shop, engine, tmp_path):
    """docs/events.md's curl example, with this service's URL for care.example.com."""
    shop.clock.now = datetime.now(UTC)
    text = DOCS.read_text(encoding="utf-8")
    script = next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "openssl" in b)
    script = script.replace("https://care.example.com", shop.url)
    (tmp_path / "events.json").write_text(json.dumps({"events": [
        {"id": "curl-1", "type": "cart", "customer": "C-1", "occurred_at": at(shop, minutes=-1)}
    ]}))
    env = {**os.environ, "SHOP_EVENTS_SECRET": SHOP_SECRET}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    assert json.loads(done.stdout)["events"] == [
        {"id": "curl-1", "status": "accepted", "triggers": True}]

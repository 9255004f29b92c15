"""The unsubscribe page and RFC 8058's one-click POST leave their consent proof: what
the customer was shown, in which language, and the token's id (never the token)."""

from __future__ import annotations

from sqlalchemy import select

from careflow.consent_proof import token_id
from careflow.db.models import ConsentProof
from careflow.unsubscribe import UnsubscribeTokens
from tests.factories import add_customer
from tests.service.conftest import UNSUB_SECRET
from tests.service.test_serve import post

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _proof(engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(ConsentProof.__table__).order_by(ConsentProof.id)).mappings()
        return [dict(r) for r in rows]


def test_the_page_and_the_one_click_post_are_proven_once_each(served, engine):
    add_customer(engine, 1, email="wang@example.com", locale="zh-CN")
    add_customer(engine, 2, email="ann@example.com", locale="en")
    tokens = UnsubscribeTokens(UNSUB_SECRET)
    t1 = tokens.make(1, "winback", "2026", now=served.clock.now)
    t2 = tokens.make(2, "birthday", "2026", now=served.clock.now)
    url = f"{served.url}/unsubscribe?token="

    assert post(url + t1, b"confirm=yes", FORM)[0] == 200
    assert post(url + t2, b"List-Unsubscribe=One-Click", FORM)[0] == 200
    assert post(url + t2, b"List-Unsubscribe=One-Click", FORM)[0] == 200  # pressed again
    page, one_click = _proof(engine)

    assert (page["customer_id"], page["source"], page["channel"]) == (1, "page", "email")
    assert page["locale"] == "zh-CN"
    assert page["shown"] == "不再接收Lotus & Pine发送到 w***@example.com 的营销邮件？ [确认退订]"
    assert (page["consent_before"], page["consent_after"]) == ("none", "withdrawn")
    assert (page["suppression_before"], page["suppression_after"]) == ("none", "unsubscribed")
    assert page["evidence"]["token_id"] == token_id(t1)
    assert (page["evidence"]["campaign"], page["evidence"]["occasion"]) == ("winback", "2026")

    assert (one_click["customer_id"], one_click["source"]) == (2, "one_click")
    assert "RFC 8058" in one_click["shown"] and one_click["locale"] == "en"
    assert one_click["evidence"]["token_id"] == token_id(t2)
    for p in (page, one_click):  # the token itself is nowhere in the proof
        assert t1 not in str(p) and t2 not in str(p) and t1.split(".")[2] not in str(p)

"""The unsubscribe pages a customer sees, in their language (zh-CN or English).

Plain, accessible HTML with no scripts or outside resources: it must work
from any mail client's browser. The address is shown masked, enough for a
person to recognise it and no more.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from sqlalchemy import Engine, select

from careflow.addresses import mask_address
from careflow.db.models import Customer
from careflow.settings import Settings

TEXT = {
    "en": {
        "title": "Unsubscribe",
        "ask": "Stop marketing emails from {brand} to {address}?",
        "button": "Unsubscribe",
        "done_title": "You are unsubscribed",
        "done": "{brand} will send no more marketing emails to {address}. "
        "It may take a moment for a message already on its way.",
        "invalid_title": "This link does not work",
        "invalid": "The link is incomplete or too old ({why}). To stop our emails, reply to "
        "any of them with “unsubscribe”.",
    },
    "zh": {
        "title": "退订",
        "ask": "不再接收{brand}发送到 {address} 的营销邮件？",
        "button": "确认退订",
        "done_title": "您已退订",
        "done": "{brand}将不再向 {address} 发送营销邮件。已在途中的邮件可能仍会送达。",
        "invalid_title": "此链接无效",
        "invalid": "链接不完整或已过期（{why}）。如需退订，请直接回复任意一封邮件“退订”。",
    },
}


@dataclass(frozen=True)
class PageCustomer:
    id: int
    email: str | None
    locale: str | None


def customer(engine: Engine, customer_id: int) -> PageCustomer | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(Customer.id, Customer.email, Customer.locale).where(Customer.id == customer_id)
        ).first()
    return PageCustomer(*row) if row else None


def _lang(locale: str | None) -> str:
    return "zh" if (locale or "").lower().startswith("zh") else "en"


def _page(lang: str, title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head>'
        '<meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>body{{font:16px/1.5 system-ui,sans-serif;"
        "max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}button{font:inherit;"
        "padding:.6rem 1.2rem;border:0;border-radius:.4rem;background:#2d5a3d;color:#fff;"
        "cursor:pointer}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


def shown(settings: Settings, who: PageCustomer) -> tuple[str, str]:
    """(language tag, words) of the confirmation page as this customer saw it: the question
    and the button they pressed, for the consent proof (careflow/consent_proof.py)."""
    lang = _lang(who.locale)
    t = TEXT[lang]
    ask = t["ask"].format(brand=settings.brand_name, address=mask_address(who.email))
    return ("zh-CN" if lang == "zh" else "en"), f"{ask} [{t['button']}]"


def confirm(settings: Settings, who: PageCustomer, token: str) -> str:
    lang = _lang(who.locale)
    t = TEXT[lang]
    ask = t["ask"].format(brand=settings.brand_name, address=mask_address(who.email))
    form = (
        f'<form method="post" action="?token={escape(token)}">'
        '<input type="hidden" name="confirm" value="yes">'
        f'<button type="submit">{escape(t["button"])}</button></form>'
    )
    return _page(lang, t["title"], f"<p>{escape(ask)}</p>{form}")


def done(settings: Settings, who: PageCustomer) -> str:
    lang = _lang(who.locale)
    t = TEXT[lang]
    text = t["done"].format(brand=settings.brand_name, address=mask_address(who.email))
    return _page(lang, t["done_title"], f"<p>{escape(text)}</p>")


def invalid(settings: Settings, why: str) -> str:
    t = TEXT["en"]
    return _page("en", t["invalid_title"], f"<p>{escape(t['invalid'].format(why=why))}</p>")

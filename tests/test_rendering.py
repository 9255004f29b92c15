"""Templates: locale fallback, locale-aware filters, and errors that name the template."""

from datetime import date
from decimal import Decimal

import pytest

from careflow.errors import TemplateError
from careflow.rendering import Renderer, greeting_name, locale_chain
from careflow.settings import PROJECT_ROOT


@pytest.fixture
def tpl(tmp_path):
    camp = tmp_path / "c"
    camp.mkdir()
    (camp / "sms.en.j2").write_text(
        "Hi {{ name }}, {{ amount | money }} on {{ day | date('long') }}"
    )
    (camp / "sms.zh.j2").write_text(
        "{{ name }}您好，{{ amount | money }}，{{ day | date('long') }}"
    )
    (camp / "sms.de.j2").write_text("{{ missing_variable }}")
    (camp / "fax.en.j2").write_text("{{ ''.__class__.__mro__ }}")
    (camp / "email.en.subject.j2").write_text("  Hello\n {{ name }}  ")
    (camp / "email.en.txt.j2").write_text("text")
    (camp / "email.en.html.j2").write_text("<p>{{ name }}</p>")
    return Renderer(tmp_path, default_locale="en")


CTX = {"name": "Ann <b>", "amount": Decimal("1234.5"), "day": date(2026, 11, 22), "currency": "CNY"}


def test_english(tpl):
    assert tpl.render("c", "sms", "en", CTX).body == "Hi Ann <b>, CN¥1,234.50 on November 22, 2026"


def test_zh_cn_falls_back_to_zh_and_formats_in_chinese(tpl):
    body = tpl.render("c", "sms", "zh-CN", CTX).body
    assert body == "Ann <b>您好，¥1,234.50，2026年11月22日"


def test_unknown_locale_falls_back_to_default(tpl):
    assert tpl.render("c", "sms", "fr-FR", CTX).body.startswith("Hi ")


def test_missing_variable_is_an_error_naming_the_template(tpl):
    with pytest.raises(TemplateError, match=r"c/sms.de.j2: 'missing_variable' is undefined"):
        tpl.render("c", "sms", "de", CTX)


def test_sandbox_blocks_python_internals(tpl):
    with pytest.raises(TemplateError, match="fax.en.j2"):
        tpl.render("c", "fax", "en", CTX)


def test_email_subject_is_one_line_and_html_is_escaped(tpl):
    r = tpl.render("c", "email", "en", CTX)
    assert r.subject == "Hello Ann <b>"
    assert r.html == "<p>Ann &lt;b&gt;</p>" and r.body == "text"


def test_missing_template_lists_what_was_tried(tpl):
    with pytest.raises(
        TemplateError, match="tried nope/sms.xx-YY.j2, nope/sms.xx.j2, nope/sms.en.j2"
    ):
        tpl.render("nope", "sms", "xx-YY", CTX)


def test_greeting_name_by_locale():
    assert (
        greeting_name({"locale": "zh-CN", "full_name": "王小明", "given_name": "小明"}) == "王小明"
    )
    assert greeting_name({"locale": "en", "full_name": "Ann Lee", "given_name": "Ann"}) == "Ann"
    assert locale_chain("zh-CN", "en") == ["zh-CN", "zh", "en"]


@pytest.mark.parametrize("campaign", ["birthday", "reorder_reminder", "winback", "vip_care"])
@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_shipped_templates_render_for_every_channel(campaign, locale):
    from careflow.campaigns import load_campaign

    spec = load_campaign(campaign, PROJECT_ROOT / "templates")
    r = Renderer(PROJECT_ROOT / "templates")
    ctx = {
        "name": "Ann",
        "brand": "Shop",
        "campaign": campaign,
        "as_of": date(2026, 11, 22),
        "customer": {"full_name": "Ann Lee", "owner": "Li Na", "locale": locale},
        "days_since": 200,
        "last_purchase_on": date(2026, 5, 6),
        "interval_days": 30.0,
        "tier": "VIP",
        "monetary": Decimal(8800),
        "local_date": "2026-11-22",
    }
    for channel in spec.channels:
        out = r.render(campaign, channel, locale, ctx)
        assert out.body and "{{" not in out.body
        if channel == "email":
            assert out.subject

"""careflow lint: every template checked for sample customers; every problem named at once."""

from __future__ import annotations

import shutil
from datetime import date

import jinja2
import pytest
from click.testing import CliRunner

from careflow.campaigns import campaign_folder_problems, list_campaigns
from careflow.cli.main import main
from careflow.flows.preview import sample_context
from careflow.lint import html_problems, lint_templates, markup_of, samples_for
from careflow.settings import PROJECT_ROOT, load_settings

SHIPPED = PROJECT_ROOT / "templates"
DAY = date(2026, 11, 22)


def lint(templates, **settings):
    s = load_settings(templates_dir=templates, **settings)
    return lint_templates(s, lambda spec, sample: sample_context(spec, sample, DAY, s))


@pytest.fixture
def templates(tmp_path):
    root = tmp_path / "templates"
    shutil.copytree(SHIPPED, root)
    return root


def edit(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_shipped_templates_pass():
    report = lint(SHIPPED)
    assert report.problems == []
    assert report.campaigns == len(list_campaigns(PROJECT_ROOT / "templates"))
    # every channel of every campaign, in en and zh-CN, for three sample customers each
    assert report.renders > 4 * 2 * 3 * 2


def test_careflow_lint_exit_codes(templates, monkeypatch):
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(templates))
    clean = CliRunner().invoke(main, ["lint"])
    assert clean.exit_code == 0, clean.output
    assert clean.output.startswith("templates OK: ") and "campaign(s)" in clean.output
    edit(templates / "winback" / "sms.en.j2", "{{ name }}", "{{ nmae }}")
    broken = CliRunner().invoke(main, ["lint"])
    assert broken.exit_code == 1
    assert "winback/sms.en.j2:1: 'nmae' is undefined" in broken.output
    # one campaign at a time
    assert CliRunner().invoke(main, ["lint", "birthday"]).exit_code == 0


def test_every_problem_is_named_with_file_line_and_reason(templates):
    """Many mistakes at once, each reported where it is, with why."""
    edit(templates / "winback" / "sms.en.j2", "{{ name }}", "{{ nmae }}")
    edit(templates / "birthday" / "sms.en.j2", "{{ brand }}.", "{{ brand }.")
    # an undefined name in a branch no sample takes is still found
    (templates / "vip_care" / "fax.en.j2").write_text(
        "To: {{ customer.full_name }}\n"
        "{% if tier == 'Small' %}\nDear {{ customer.nickname }}, {{ discount_code }}\n{% endif %}\n"
        "Your adviser: {{ customer.owner }}\n",
        encoding="utf-8",
    )
    edit(
        templates / "winback" / "email.en.html.j2",
        "<p>Hi {{ name }},</p>",
        '<p>Hi {{ name }},</b>\n<div>\n<img src="logo.png">',
    )
    (templates / "reorder_reminder" / "email.zh-CN.html.j2").unlink()
    edit(templates / "winback" / "campaign.yaml", "[email, sms]", "[email, sms, fax]")
    (templates / "birthday" / "emial.en.txt.j2").write_text("typo", encoding="utf-8")
    edit(templates / "vip_care" / "sms.zh-CN.j2", "感谢您", "感谢您" + "一直以来" * 40)
    edit(templates / "reorder_reminder" / "email.en.html.j2", "{% set marketing = true %}", "")

    found = {p.describe().replace(str(templates) + "/", "") for p in lint(templates).problems}
    expected = [
        "winback/sms.en.j2:1: 'nmae' is undefined: this campaign's templates get as_of, brand,",
        "birthday/sms.en.j2:1: syntax error: unexpected '}'",
        "vip_care/fax.en.j2:3: customer has no field 'nickname'; fields: birthday,",
        "vip_care/fax.en.j2:3: 'discount_code' is undefined",
        "vip_care/fax.en.j2:5: prints None: a value this customer does not have",
        "winback/email.en.html.j2:7: </b> closes nothing: no <b> is open here",
        "winback/email.en.html.j2:7: <p> is never closed",
        "winback/email.en.html.j2:8: <div> is never closed",
        "winback/email.en.html.j2:9: <img> has no alt text",
        "reorder_reminder/email.zh-CN.html.j2: missing: zh-CN customers would get "
        "email.en.html.j2 instead",
        "winback/campaign.yaml:4: channels names fax, but there is no fax template: add fax.en.j2",
        "birthday/emial.en.txt.j2: careflow never reads this file",
        "vip_care/sms.zh-CN.j2: sms_too_long: 4 segments (UCS-2,",
        "reorder_reminder/email.en.html.j2: campaign.yaml says marketing: true, but the HTML "
        "has no %unsubscribe_url% link",
    ]
    for start in expected:
        assert any(line.startswith(start) for line in found), (start, sorted(found))
    # the None comes from the sample without an adviser, and says so
    none = next(line for line in found if "prints None" in line)
    assert "(sample customer: en, only required fields)" in none


def test_a_missing_locale_variant_of_a_whole_channel(templates):
    """zh-CN SMS but no zh-CN email: a zh-CN customer would get the English email."""
    for part in ("subject", "txt", "html"):
        (templates / "winback" / f"email.zh-CN.{part}.j2").unlink()
    found = [p.describe() for p in lint(templates).problems]
    for part in ("subject", "txt", "html"):
        assert any(
            f"winback/email.zh-CN.{part}.j2: missing: zh-CN customers would get "
            f"email.en.{part}.j2 instead" in line
            for line in found
        ), found


def test_no_template_in_the_default_locale(templates):
    for path in (templates / "birthday").glob("*.en.*"):
        path.unlink()
    found = [p.describe() for p in lint(templates).problems]
    assert any("no template in CAREFLOW_DEFAULT_LOCALE=en" in line for line in found), found


def test_a_service_email_must_not_carry_the_unsubscribe_placeholder(templates):
    edit(
        templates / "birthday" / "email.en.html.j2",
        '{% extends "_layouts/email.html.j2" %}',
        '{% extends "_layouts/email.html.j2" %}\n{% set marketing = true %}',
    )
    found = [p.describe() for p in lint(templates).problems]
    assert any(
        "birthday/email.en.html.j2: campaign.yaml says marketing: false, so %unsubscribe_url% "
        "would go out as it stands" in line
        for line in found
    ), found


def test_a_broken_layout_is_named_in_the_layout_once(templates):
    layout = (templates / "_layouts" / "email.html.j2").read_text().splitlines()
    line = next(n for n, text in enumerate(layout, 1) if "{% block content %}" in text)
    edit(templates / "_layouts" / "email.html.j2", "{% block content %}", "{% block content %")
    edit(templates / "winback" / "email.en.html.j2", "_layouts/email", "_layouts/e-mail")
    found = [p.describe().replace(str(templates) + "/", "") for p in lint(templates).problems]
    assert [line for line in found if "syntax error" in line] == [
        f"_layouts/email.html.j2:{line}: syntax error: expected token 'end of statement block', "
        "got '%'"
    ]
    assert "winback/email.en.html.j2:1: template '_layouts/e-mail.html.j2' not found" in found


def test_a_bad_segment_parameter_is_named_in_campaign_yaml(templates):
    edit(templates / "winback" / "campaign.yaml", "{days: 180}", "{days: -5}")
    found = [p.describe() for p in lint(templates).problems]
    assert any("winback/campaign.yaml:3: " in line and "days must be" in line for line in found)


def test_the_layout_folder_is_not_a_campaign():
    assert "_layouts" not in list_campaigns(SHIPPED)
    assert campaign_folder_problems(SHIPPED) == []
    out = CliRunner().invoke(main, ["campaigns"])
    assert out.exit_code == 0 and "warning" not in out.output and "_layouts" not in out.output


def test_samples_cover_both_locales_with_and_without_optional_fields():
    for locale in ("en", "zh-CN"):
        samples = samples_for(locale)
        assert {s.locale for s in samples} == {locale}
        full, bare, long = (s.customer for s in samples)
        assert full["owner"] and full["email"] and bare["owner"] is None
        assert len(long["full_name"]) > len(full["full_name"])
    assert samples_for("zh-CN")[0].customer["full_name"] == "李娜"


# --- HTML as written -------------------------------------------------------------------------
ENV = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)


def test_jinja_is_taken_out_line_for_line():
    source = '<a href="{{ url }}">\n{% if x %}\n<b>{# a\ncomment #}</b>{% endif %}\n</a>'
    markup = markup_of(source, ENV)
    assert markup.splitlines() == ['<a href="">', "", "<b>", "</b>", "</a>"]


@pytest.mark.parametrize(
    "source, expected",
    [
        ("<p>ok</p><br><img src=x alt=''>", []),
        ("<p>a<b>bold</p>", [(1, "<b> is not closed: </p> on line 1 comes first")]),
        (
            "<table>\n<tr><td>x</td>\n</table>",
            [(2, "<tr> is not closed: </table> on line 3 comes first")],
        ),
        ("<div>\n<p>x</p>", [(1, "<div> is never closed")]),
        ("</span>", [(1, "</span> closes nothing: no <span> is open here")]),
        ("<br></br>", [(1, "</br>: <br> takes no end tag")]),
        ("<!--[if mso]><table><![endif]--><p>x</p>", []),
        ("{% if zh %}<p>一</p>{% else %}<p>one</p>{% endif %}", []),
    ],
)
def test_tags_must_pair_up(source, expected):
    assert html_problems(source, ENV) == expected


def test_lint_names_a_template_stuck_in_one_call_and_finishes(templates):
    """Regression: lint rendered in its own process and never came back from a template
    stuck inside one C call (a dict of integers whose hashes collide)."""
    m = 2**61 - 1
    edit(templates / "winback" / "sms.en.j2", "{{ name }}",
         f"{{{{ dict.fromkeys(range(0, 100000 * {m}, {m}))|length }}}}{{{{ name }}}}")  # fmt: skip
    report = lint(templates, render_timeout_seconds=0.2)
    reasons = {(p.path.name, p.reason.split(" (sample")[0]) for p in report.problems}
    assert ("sms.en.j2", "rendering took longer than 0.2 s (CAREFLOW_RENDER_TIMEOUT_SECONDS)") in reasons

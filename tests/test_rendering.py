"""Templates: locale fallback, locale-aware filters, and errors that name the template."""

import multiprocessing
import re
from datetime import date
from decimal import Decimal

import pytest

from careflow import render_worker
from careflow.errors import TemplateError, TemplateLimitError
from careflow.rendering import Renderer, locale_chain
from careflow.settings import PROJECT_ROOT
from careflow.template_env import greeting_name


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


# --- render limits -------------------------------------------------------------------
# Each template below ran for minutes or built a string of a gigabyte or more before
# the limits. Tests assert on the error, never on elapsed time; the short timeout only
# keeps the slow cases quick.
RUNAWAY = {
    "nested_loops": (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "took longer than 0.2 s",
    ),
    "range_sums_in_a_loop": (
        "{% for a in range(100000) %}{% if range(100000)|sum < 0 %}x{% endif %}{% endfor %}",
        "took longer than 0.2 s",
    ),
    "exponential_macro": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(60) }}",
        "took longer than 0.2 s",
    ),
    "string_times_billion": ("{{ 'x' * 1000000000 }}", "a repeated value of 1,000,000,000"),
    "name_times_billion": ("{{ name * 1000000000 }}", "a repeated value of"),
    "list_times_billion": ("{{ ([name] * 100000000)|join }}", "a repeated value of"),
    "huge_integer": ("{{ 7 ** 100000000 }}", "too large for a template"),
    "center_filter": ("{{ name|center(1000000000) }}", "center of 1,000,000,000"),
    "indent_filter": ("{{ 'a\nb\nc'|indent(1000000000) }}", "indent of"),
    "printf_width": ("{{ '%1000000000s'|format(name) }}", "format of"),
    "printf_operator": ("{{ '%*d' % (1000000000, 1) }}", "a formatted string of"),
    "str_format_width": ("{{ '{:>1000000000}'.format(name) }}", "format() of"),
    "ljust_method": ("{{ name.ljust(1000000000) }}", "ljust() of"),
    "zfill_method": ("{{ '1'.zfill(1000000000) }}", "zfill() of"),
    "replace_multiplies": (
        "{% set s = 'x' * 9000 %}{{ s|replace('x', s) }}",
        "replace of 81,000,000",
    ),
    "join_with_big_separator": (
        "{% set s = 'x' * 9000 %}{{ range(50000)|join(s) }}",
        "join of",
    ),
    "join_of_lazy_padding": ("{{ range(100000)|map('center', 9000)|join }}", "join of 18,000"),
    "list_of_lazy_padding": (
        "{{ range(100000)|map('center', 9000)|list|length }}",
        "characters of text for one message",
    ),
    "batch_fill": ("{{ [1]|batch(1000000000, 'x')|list }}", "batch fill of"),
    "quadratic_list_sum": ("{{ range(100000)|batch(1)|sum(start=[])|length }}", "sum of"),
    "output_grows_in_a_loop": (
        "{% for i in range(100000) %}{{ name }} {{ name }} {{ name }}{% endfor %}",
        "the message is longer than 10,000 characters",
    ),
    "buffered_output_grows": (
        "{% set x %}{% for i in range(100000) %}{{ name * 20 }}{% endfor %}{% endset %}"
        "{{ x|length }}",
        "a block of output of",
    ),
    "namespace_string_doubles": (
        "{% set ns = namespace(s=name) %}"
        "{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "a joined string of",
    ),
    "string_grows_by_plus": (
        "{% set ns = namespace(s='') %}"
        "{% for i in range(100000) %}{% set ns.s = ns.s + 'xxxxxxxxxx' %}{% endfor %}",
        "characters of text for one message",
    ),
    "list_cannot_grow_in_place": (
        "{% set l = [1] %}{% for i in range(64) %}{{ l.extend(l) }}{% endfor %}",
        "not allowed in templates",
    ),
}


@pytest.fixture
def limited(tmp_path):
    """A renderer with small limits and a plain SMS template to check it still works."""
    camp = tmp_path / "c"
    camp.mkdir()
    (camp / "sms.en.j2").write_text("Hi {{ name }}, {{ amount | money }}")
    return Renderer(tmp_path, timeout_seconds=0.2, max_chars=10_000)


@pytest.mark.parametrize("case", RUNAWAY, ids=list(RUNAWAY))
def test_runaway_template_is_a_template_error_and_the_renderer_still_works(limited, case):
    source, reason = RUNAWAY[case]
    (limited.templates_dir / "c" / "fax.en.j2").write_text(source)
    with pytest.raises(TemplateError, match=re.escape(reason)) as raised:
        limited.render("c", "fax", "en", CTX)
    assert str(raised.value).startswith("c/fax.en.j2: ") and "\n" not in str(raised.value)
    assert limited.render("c", "sms", "en", CTX).body == "Hi Ann <b>, CN¥1,234.50"


def test_email_parts_share_one_size_limit(tmp_path):
    camp = tmp_path / "c"
    camp.mkdir()
    (camp / "email.en.subject.j2").write_text("Hello")
    (camp / "email.en.txt.j2").write_text("{{ 'x' * 6000 }}")
    (camp / "email.en.html.j2").write_text("<p>{{ 'x' * 6000 }}</p>")
    renderer = Renderer(tmp_path, max_chars=10_000)
    with pytest.raises(TemplateError, match="email.en.html.j2: the message is longer than"):
        renderer.render("c", "email", "en", CTX)


def test_templates_within_the_limits_render_as_before(tmp_path):
    camp = tmp_path / "c"
    camp.mkdir()
    (camp / "sms.en.j2").write_text(
        "{% set ns = namespace(total=0) %}{% for i in range(3) %}{% set ns.total = ns.total + i %}"
        "{% endfor %}{{ ns.total }} {{ 'ab' * 2 }} {{ name|center(9) }}|{{ '%05.1f' % 2.5 }} "
        "{{ '{:>4}'.format(7) }} {{ [1, 2]|join(',') }} {{ [[1], [2]]|sum(start=[]) }} "
        "{{ [1, 2, 3]|batch(2, 0)|list }} {{ 'a b'|replace(' ', '-') }} {{ 2 ** 10 }}"
        "{% set t %}{% for i in range(2) %}<{{ i }}>{% endfor %}{% endset %} {{ t }}"
    )
    body = Renderer(tmp_path, max_chars=1_000).render("c", "sms", "en", {"name": "Ann"}).body
    assert body == "3 abab    Ann   |002.5    7 1,2 [1, 2] [[1, 2], [3, 0]] a-b 1024 <0><1>"


def test_renderer_limits_default_to_the_settings_defaults():
    from careflow.settings import Settings

    settings = Settings(_env_file=None)
    renderer = Renderer.from_settings(settings)
    assert renderer.env.timeout_seconds == settings.render_timeout_seconds == 2.0
    assert renderer.env.max_chars == settings.render_max_chars == 200_000
    assert Renderer(PROJECT_ROOT / "templates").env.max_chars == settings.render_max_chars


# --- the render worker: limits the operating system enforces ----------------------------
# Regression: these ran in the caller's process, where no check could stop them.
COLLIDING = "{{ dict.fromkeys(range(0, 100000 * 2305843009213693951, 2305843009213693951))|length }}"


def test_a_template_stuck_in_one_call_is_stopped_at_its_deadline_and_the_next_renders(limited):
    """A dict of integers whose hashes collide: minutes inside one C call, which nothing
    inside the render can interrupt; the worker is killed at the deadline."""
    (limited.templates_dir / "c" / "fax.en.j2").write_text(COLLIDING)
    out = list(limited.render_many([("c", "sms", "en", CTX), ("c", "fax", "en", CTX),
                                    ("c", "sms", "en", {**CTX, "name": "Bo"})]))  # fmt: skip
    assert isinstance(out[1], TemplateLimitError)
    assert str(out[1]) == "rendering took longer than 0.2 s (CAREFLOW_RENDER_TIMEOUT_SECONDS)"
    assert [out[0].body, out[2].body] == ["Hi Ann <b>, CN¥1,234.50", "Hi Bo, CN¥1,234.50"]


def test_a_template_past_the_memory_limit_is_a_template_error(tmp_path):
    """The size check lets 10^9 characters through here (a limit set that high); the
    worker's address space does not."""
    camp = tmp_path / "c"
    camp.mkdir()
    (camp / "sms.en.j2").write_text("{{ ('x' * 1000000000)|length }}")
    renderer = Renderer(tmp_path, max_chars=10**10, max_memory_mb=64)
    with pytest.raises(TemplateLimitError, match=re.escape("used more than 64 MB of memory")):
        renderer.render("c", "sms", "en", CTX)


def test_a_stop_while_waiting_on_a_stuck_template_kills_its_worker(tmp_path):
    camp = tmp_path / "c"
    camp.mkdir()
    (camp / "sms.en.j2").write_text(COLLIDING)
    renderer = Renderer(tmp_path, timeout_seconds=3600)
    waits = []

    class Stopped(Exception):
        pass

    def check_stop():
        waits.append(1)
        if len(waits) > 3:  # a few waits in: the worker is rendering
            raise Stopped

    with pytest.raises(Stopped):
        list(renderer.render_many([("c", "sms", "en", CTX)], check_stop))
    idle = {worker.process for _, worker in render_worker._idle}
    rendering = [p for p in multiprocessing.active_children() if p.name == "careflow-render"]
    assert set(rendering) <= idle  # the one inside the template is gone


def test_a_worker_whose_caller_went_without_reading_its_results_ends_quietly(tmp_path):
    """Regression: a run killed while its render worker's results sat unread (the kill
    test's SIGKILL) left the worker a reset connection instead of a closed one, and the
    worker died with a traceback in the run's log."""
    camp = tmp_path / "c"
    camp.mkdir()
    (camp / "sms.en.j2").write_text("Hi {{ name }}")
    config = Renderer(tmp_path).worker_config
    worker = render_worker._Worker(config)
    worker.conn.send([((("body", "c/sms.en.j2"),), "en", {"name": "Ann"})])
    assert worker.conn.poll(30)  # its results are there, and nobody reads them
    worker.conn.close()
    worker.process.join(30)
    assert worker.process.exitcode == 0

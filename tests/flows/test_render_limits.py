"""A runaway template fails only its recipient, with a reason, and the batch goes on.

Each template below ran inside one long call before the render worker and the
sandbox's value checks: comparing, printing or serialising a value nested in a
loop, or a dict whose keys' hashes collide. A template that no check inside the
render can see (the colliding keys) is stopped by the render worker's deadline
(careflow/render_worker.py); the others fail fast inside the render. Either way
that customer's message is ``failed: template_error`` with a reason, and the
other customer's message is sent.
"""

from __future__ import annotations

import shutil

import pytest

from careflow.messages import State
from careflow.settings import PROJECT_ROOT
from tests.factories import add_customer
from tests.flows.test_route import BDAY, ledger, run

DOUBLING = (
    "{% set ns = namespace(x=[], y=[]) %}{% for i in range(40) %}"
    "{% set ns.x = [ns.x, ns.x] %}{% set ns.y = [ns.y, ns.y] %}{% endfor %}"
)
NESTING = "{% set ns = namespace(x=[]) %}{% for i in range(900) %}{% set ns.x = [ns.x] %}{% endfor %}"
M = 2**61 - 1  # an int's hash is its value modulo M: these keys all hash alike
TOO_BIG, TOO_DEEP = "characters is over the limit", "levels deep"
SHAPES = {
    "compare_doubled_lists": (DOUBLING + "{{ ns.x == ns.y }}", TOO_BIG),
    "compare_nested_list": (NESTING + "{{ ns.x == ns.x }}", TOO_DEEP),
    "string_of_doubled_list": (DOUBLING + "{{ ns.x|string|length }}", TOO_BIG),
    "pprint": (DOUBLING + "{{ ns.x|pprint|length }}", TOO_BIG),
    "tojson": (NESTING + "{{ ns.x|tojson|length }}", TOO_DEEP),
    "printf_format": (DOUBLING + '{{ "%s"|format(ns.y)|length }}', TOO_BIG),
    "repetition": (DOUBLING + "{{ ([ns.x] * 1000)|length }}", TOO_BIG),
    "range_join": ("{{ range(100000)|join(',')|length }}", "join of"),
    "recursive_macro": (
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "nested too deeply",
    ),
    "dict_repr": (
        "{% set ns = namespace(d={}) %}{% for i in range(40) %}"
        "{% set ns.d = {'a': ns.d, 'b': ns.d} %}{% endfor %}{{ ns.d }}",
        TOO_BIG,
    ),
    "namespace_grown_by_assignment": (
        "{% set ns = namespace(x=0) %}{% for i in range(40) %}{% set n = namespace(l=0, r=0) %}"
        "{% set n.l = ns.x %}{% set n.r = ns.x %}{% set ns.x = n %}{% endfor %}{{ ns.x }}",
        TOO_BIG,
    ),
    "dict_views": (
        "{% set ns = namespace(x=0) %}{% for i in range(40) %}{% set d = {'a': ns.x} %}"
        "{% set ns.x = [d.items(), d.values()] %}{% endfor %}{{ ns.x }}",
        TOO_DEEP,
    ),
    "namespace_holding_itself": (
        "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}",
        TOO_DEEP,
    ),
    "int_to_bytes": ("{{ (1).to_bytes(1000000000, 'big')|length }}", "to_bytes() of"),
    # one C call no check inside a render can predict: only the worker's deadline stops it
    "colliding_dict_keys": (
        f"{{{{ dict.fromkeys(range(0, 100000 * {M}, {M}))|length }}}}",
        "rendering took longer than 1 s",
    ),
}


@pytest.fixture
def runaway(tmp_path, monkeypatch, engine):
    """Two birthday customers; customer 2's message runs the template's runaway part."""
    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates" / "birthday", root / "runaway")
    (root / "runaway" / "campaign.yaml").write_text(
        "segment: birthday\nchannels: [sms]\noccasion: yearly\nmarketing: false\n"
    )
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    monkeypatch.setenv("CAREFLOW_RENDER_TIMEOUT_SECONDS", "1")
    add_customer(engine, 1, mobile="+447911123451", country="GB", grade="a", birthday=BDAY)
    add_customer(engine, 2, mobile="+447911123452", country="GB", grade="z", birthday=BDAY)
    return root / "runaway" / "sms.en.j2"


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_a_runaway_template_fails_its_recipient_and_the_others_are_sent(engine, runaway, shape):
    source, reason = SHAPES[shape]
    runaway.write_text(
        "{% if customer.grade == 'z' %}" + source + "{% endif %}Happy birthday {{ name }}!"
    )
    result = run(engine, campaign="runaway")
    rows = ledger(engine)
    assert rows[1].state == State.SENT and rows[1].body.startswith("Happy birthday C1!")
    assert rows[2].state == State.FAILED and rows[2].reason == "template_error"
    if shape == "colliding_dict_keys":  # killed from outside: no template line to name
        assert rows[2].detail == reason + " (CAREFLOW_RENDER_TIMEOUT_SECONDS)"
    elif "took longer than" not in rows[2].detail:  # stopped inside the render, by its size
        assert rows[2].detail.startswith("runaway/sms.en.j2: "), rows[2].detail
        assert reason in rows[2].detail, rows[2].detail
    # else: on a busy machine the deadline (the render's own check, or the worker killed
    # from outside) may come before the value grows past its limit: a reason either way
    assert result.sent == 1 and result.failed == {"template_error": 1}

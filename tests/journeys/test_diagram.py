"""The journey's Mermaid flowchart with live counts: its structure, and numbers that add
up to the customers' rows, after real advances over fake days."""

from __future__ import annotations

import re
from datetime import timedelta

from click.testing import CliRunner

from careflow.cli.main import main
from careflow.journey_spec import ENTRY_STEP, load_journey
from careflow.journeys.diagram import Counts, live_counts, markdown, mermaid
from careflow.settings import load_settings
from tests.journeys.conftest import START, advance, days, dormant, positions
from tests.journeys.test_advance import event

NODE = re.compile(r'^    (entry|s_[a-z0-9_]+|exited)(\[\[|\[|\(\[|\(\(|\{\{|\{)"([^"]*)"(\]\]|\]|\]\)|\)\)|\}\}|\})$')
EDGE = re.compile(r'^    (entry|s_[a-z0-9_]+) -->\|"([^"|]*)"\| (s_[a-z0-9_]+)$')
EXIT_EDGE = re.compile(r"^    (s_[a-z0-9_]+|entry) -\.-> exited$")
NUMBERS = re.compile(r"now (\d+) · passed (\d+) · exits (\d+)")
CLOSE = {"[": "]", "[[": "]]", "([": "])", "((": "))", "{{": "}}", "{": "}"}


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Nodes (id -> label) and edges (from, label, to); fails on any other line."""
    lines = text.rstrip("\n").split("\n")
    assert lines[0] == "flowchart TD"
    nodes, edges = {}, []
    for line in lines[1:]:
        if m := NODE.match(line):
            assert CLOSE[m.group(2)] == m.group(4), line  # shapes open and close alike
            nodes[m.group(1)] = m.group(3)
        elif m := EDGE.match(line):
            edges.append(m.groups())
        elif m := EXIT_EDGE.match(line):
            edges.append((m.group(1), "", "exited"))
        else:
            raise AssertionError(f"not a node or an edge: {line!r}")
    for src, _, dst in edges:
        assert src in nodes and dst in nodes, (src, dst)
    return nodes, edges


def shop_in_motion(engine, real_clock):
    """Six customers through the nudge journey: two answer, one opts out, the rest run
    on to the owner's call; counted mid-way and at the end."""
    for cid in range(1, 7):
        dormant(engine, cid, owner="Grace")
    advance(real_clock, START)
    event(engine, 1, "replied", START + days(1))
    event(engine, 2, "replied", START + days(1))
    event(engine, 3, "opted_out", START + days(1))


def check_adds_up(spec, counts: Counts) -> None:
    for step in [ENTRY_STEP, *[s.id for s in spec.steps]]:
        arrived = counts.arrived(step)
        assert arrived == counts.at[step] + counts.passed[step] + counts.exits[step], step
        went_on = sum(n for (src, _), n in counts.edges.items() if src == step)
        assert went_on <= counts.passed[step], step  # the rest ended there


def test_the_flowchart_counts_add_up_to_the_rows(engine, templates, real_clock):
    shop_in_motion(engine, real_clock)
    spec = load_journey("nudge", load_settings().templates_dir)
    mid = live_counts(engine, spec)
    assert mid.arrived(ENTRY_STEP) == 6 and mid.at["answer"] == 6  # all sent, waiting
    check_adds_up(spec, mid)
    nodes, edges = parse(mermaid(spec, mid))
    assert NUMBERS.search(nodes["s_answer"]).groups() == ("6", "0", "0")
    assert NUMBERS.search(nodes["s_first"]).groups() == ("0", "6", "0")
    assert ("s_first", "6", "s_answer") in edges

    advance(real_clock, START + days(3))
    advance(real_clock, START + days(10))
    end = live_counts(engine, spec)
    check_adds_up(spec, end)
    nodes, edges = parse(mermaid(spec, end))
    assert {p.state for p in positions(engine).values()} == {"done", "exited"}
    assert NUMBERS.search(nodes["s_answer"]).groups() == ("0", "5", "1")  # 3 opted out
    assert NUMBERS.search(nodes["s_thanks"]).groups() == ("0", "5", "0")
    assert ("s_answer", "replied or ordered · 2", "s_thanks") in edges
    assert ("s_answer", "none in 3 days · 3", "s_second") in edges
    assert ("s_answer", "", "exited") in edges and "exited: 1" in nodes["exited"]
    # every customer is in one place: at a step, ended, or exited
    ended = sum(end.passed.values()) - sum(end.edges.values())
    assert sum(end.at.values()) + ended + sum(end.exits.values()) == 6


def test_journey_show_mermaid_prints_the_same_flowchart(engine, templates, real_clock):
    shop_in_motion(engine, real_clock)
    spec = load_journey("nudge", templates)
    out = CliRunner().invoke(main, ["journey", "show", "nudge", "--mermaid"])
    assert out.exit_code == 0, out.output
    assert out.output == mermaid(spec, live_counts(engine, spec))
    assert parse(out.output)[0]["entry"].startswith("entry: segment dormant<br/>entered 6")


def test_a_step_named_like_a_mermaid_keyword_still_draws(engine, templates, real_clock):
    from tests.journeys.conftest import write_journey

    write_journey(templates, "nudge", """\
entry: {segment: dormant, parameters: {days: 30}}
steps:
  - {id: split, type: split, paths: [{share: 50%, goto: end}, {share: 50%, goto: graph}]}
  - {id: end, type: exit}
  - {id: graph, type: exit}
""", sends=())  # fmt: skip
    dormant(engine, 1)
    advance(real_clock, START)
    spec = load_journey("nudge", templates)
    nodes, edges = parse(mermaid(spec, live_counts(engine, spec)))
    assert {"s_end", "s_graph", "s_split"} <= set(nodes)
    assert ("s_split", "50% · 0", "s_end") in edges or ("s_split", "50% · 1", "s_end") in edges


def test_the_artifact_holds_the_flowchart(engine, templates, real_clock):
    shop_in_motion(engine, real_clock)
    spec = load_journey("nudge", templates)
    counts = live_counts(engine, spec)
    text = markdown(spec, counts, "2026-06-01T12:05")
    fenced = text.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert fenced == mermaid(spec, counts)


def test_the_flow_publishes_the_artifact(prefect_api, engine, templates, real_clock):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from careflow.flows.journey import journey_advance

    dormant(engine, 1)
    real_clock.set(START)
    journey_advance("nudge")
    real_clock.set(START + timedelta(minutes=5))

    async def latest():
        async with get_client() as client:
            found = await client.read_latest_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["journey-nudge"]))
            )
            return found[0].data

    import asyncio

    data = asyncio.run(latest())
    assert "```mermaid\nflowchart TD" in data and "s_answer" in data


def test_an_advance_that_moves_nobody_is_idle(prefect_api, engine, templates, real_clock):
    """Regression: the five-minute journey advance filled the runs list with runs that did
    nothing, which the follow-up and the reconciliation already mark Idle."""
    from careflow.flows.journey import journey_advance

    dormant(engine, 1)
    real_clock.set(START)
    moved = journey_advance("nudge", return_state=True)
    assert moved.name == "Completed"  # the customer entered and was sent the first step
    real_clock.set(START + timedelta(minutes=5))  # waiting for an answer: nothing due
    state = journey_advance("nudge", return_state=True)
    assert state.is_completed() and state.name == "Idle" and state.message == "Nothing due"
    (summary,) = state.result()
    assert summary["journey"] == "nudge" and not summary["steps"]

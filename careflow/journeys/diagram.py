"""A journey drawn as a Mermaid flowchart with its live counts.

Each step is a node labelled with what it does and three numbers read from the
journey's rows: customers **at** it now (active or waiting there), customers
who **passed** it (step rows with any outcome but ``exited``) and **exits**
there (step rows ``exited``: an ``exit_on`` rule held before the step ran).
Each edge carries the customers who went along it (step rows by step and next
step). The counts add up: the customers who arrived at a step (its incoming
edges; for the entry, everyone who entered) are those at it, passed it and
exited there; those who passed it went along one of its edges or ended there.

The journey-advance flow puts this text in a Prefect markdown artifact per
journey after each advance (Prefect's default UI draws Mermaid, tested in
chromium by tests/test_prefect_ui_journey.py);
``careflow journey show JOURNEY --mermaid`` prints it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import Engine, func, select

from careflow.db.models import JourneyPosition, JourneyStepRecord
from careflow.journey_spec import (
    ENTRY_STEP,
    BranchStep,
    JourneySpec,
    SendStep,
    SplitStep,
    WaitForStep,
    WaitStep,
)

P = JourneyPosition.__table__.c
S = JourneyStepRecord.__table__.c


@dataclass
class Counts:
    """The journey's live counts: per step (``_entry`` for the entry) and per edge."""

    at: Counter = field(default_factory=Counter)
    passed: Counter = field(default_factory=Counter)
    exits: Counter = field(default_factory=Counter)
    held_out: int = 0
    #: (step, next step) -> customers who went that way
    edges: Counter = field(default_factory=Counter)
    #: customers on steps this version of the journey no longer has
    stranded: int = 0

    def arrived(self, step: str) -> int:
        """Customers who reached ``step``: along its incoming edges, or by entering."""
        if step == ENTRY_STEP:
            return self.at[ENTRY_STEP] + self.passed[ENTRY_STEP] + self.exits[ENTRY_STEP]
        return sum(n for (_, to), n in self.edges.items() if to == step)


def live_counts(engine: Engine, spec: JourneySpec) -> Counts:
    """The counts of ``spec``'s journey now, in two grouped reads."""
    ids = {ENTRY_STEP} | {s.id for s in spec.steps}
    out = Counts()
    with engine.connect() as conn:
        for step, n in conn.execute(
            select(P.step, func.count())
            .where(P.journey == spec.name, P.state.in_(("active", "waiting")))
            .group_by(P.step)
        ):
            if step in ids:
                out.at[step] = n
            else:
                out.stranded += n
        for step, outcome, nxt, n in conn.execute(
            select(S.step, S.outcome, S.next_step, func.count())
            .where(S.journey == spec.name)
            .group_by(S.step, S.outcome, S.next_step)
        ):
            if outcome == "exited":
                out.exits[step] += n
                continue
            out.passed[step] += n
            if outcome == "held_out":
                out.held_out += n
            if nxt is not None:
                out.edges[step, nxt] += n
    return out


def _node_id(step: str) -> str:
    # prefixed: a step called ``end`` would end a Mermaid flowchart
    return "entry" if step == ENTRY_STEP else f"s_{step}"


_UNSAFE = re.compile(r"[\"'`|<>\[\]{}()#;]")


def _text(value: str) -> str:
    """Text safe inside a quoted Mermaid label (no quotes, brackets or pipes)."""
    return _UNSAFE.sub(" ", value).strip()


def _what(spec: JourneySpec, step) -> str:
    if isinstance(step, SendStep):
        return f"send {' / '.join(step.channels)}"
    if isinstance(step, WaitStep):
        if step.until:
            return f"wait until {step.until} local"
        parts = [f"{step.days} d" if step.days else "", f"{step.hours} h" if step.hours else ""]
        return "wait " + " ".join(p for p in parts if p)
    if isinstance(step, WaitForStep):
        return f"wait for {' or '.join(step.event)} within {step.within}"
    return step.type.replace("_", " ")


_SHAPES = {
    "send": ('["', '"]'),
    "wait": ('(["', '"])'),
    "wait_for": ('{"', '"}'),
    "branch": ('{{"', '"}}'),
    "split": ('{{"', '"}}'),
    "notify_owner": ('[["', '"]]'),
    "exit": ('(("', '"))'),
}


def _edges(spec: JourneySpec, step) -> list[tuple[str, str]]:
    """(target, label) for each way out of ``step``, as the journey's file says."""
    following = spec.following(step.id)
    if isinstance(step, WaitForStep):
        out = [(step.then or following, " or ".join(step.event)),
               (step.otherwise or following, f"none in {step.within}")]  # fmt: skip
    elif isinstance(step, BranchStep):
        out = []
        for case in step.cases:
            tests = case.when.model_dump(exclude_none=True)
            seg = tests.pop("segment", None)
            label = ", ".join(f"{k} {' '.join(v)}" for k, v in tests.items())
            if seg:
                label = ", ".join(x for x in (label, f"in {seg['name']}") if x)
            out.append((case.goto, label))
        out.append((step.default or following, "otherwise"))
    elif isinstance(step, SplitStep):
        out = [(p.goto, f"{p.share:.0%}") for p in step.paths]
    elif step.type == "exit":
        out = []
    else:
        out = [(spec.next_of(step.id), "")]
    return [(t, label) for t, label in out if t is not None]


def mermaid(spec: JourneySpec, counts: Counts) -> str:
    """The flowchart of ``spec`` with ``counts`` on its nodes and edges."""
    lines = ["flowchart TD"]
    entry = spec.entry
    how = f"segment {entry.segment}" if entry.segment else f"event {entry.event}"
    lines.append(
        f'    entry(["entry: {_text(how)}<br/>entered {counts.arrived(ENTRY_STEP)}'
        f" · held out {counts.held_out} · due {counts.at[ENTRY_STEP]}\"])"
    )
    for step in spec.steps:
        left, right = _SHAPES[step.type]
        label = (f"{step.id}: {_text(_what(spec, step))}<br/>now {counts.at[step.id]}"
                 f" · passed {counts.passed[step.id]} · exits {counts.exits[step.id]}")  # fmt: skip
        lines.append(f"    {_node_id(step.id)}{left}{label}{right}")
    edges = [(ENTRY_STEP, spec.steps[0].id, "")]
    for step in spec.steps:
        edges += [(step.id, target, label) for target, label in _edges(spec, step)]
    labels: dict[tuple[str, str], list[str]] = {}
    for src, dst, label in edges:  # two ways to one step (then and else alike): one arrow
        labels.setdefault((src, dst), [])
        if label and label not in labels[src, dst]:
            labels[src, dst].append(label)
    for (src, dst), names in labels.items():
        n = counts.edges[src, dst]
        text = " · ".join(x for x in (_text(" / ".join(names)), str(n)) if x)
        lines.append(f'    {_node_id(src)} -->|"{text}"| {_node_id(dst)}')
    exits = sum(counts.exits.values())
    if exits:
        lines.append(f'    exited(["exited: {exits}"])')
        lines += [f"    {_node_id(s)} -.-> exited" for s in counts.exits if counts.exits[s]]
    return "\n".join(lines) + "\n"


def markdown(spec: JourneySpec, counts: Counts, when: str) -> str:
    """The artifact: a heading, the flowchart, and the customers no step of this version
    holds (stranded after an edit)."""
    text = [f"# Journey {spec.name} (version {spec.version})", "",
            f"Counts at {when}: customers at each step now, who passed it, exits there; "
            "each arrow with the customers who went that way.", "",
            "```mermaid", mermaid(spec, counts).rstrip("\n"), "```"]  # fmt: skip
    if counts.stranded:
        text += ["", f"{counts.stranded} customer(s) on steps this version no longer has "
                 "(map them with `moved:`)."]  # fmt: skip
    return "\n".join(text) + "\n"


__all__ = ["Counts", "live_counts", "markdown", "mermaid"]

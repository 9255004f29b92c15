"""An experiment's winner: its pre-registered rule, and the decision kept as a fact.

The rule is written before any data (campaign.yaml ``experiment:``, or its
defaults) and is the only way a winner is declared::

    a variant wins when its always-valid interval of the difference in
    conversion from the control lies wholly above 0 (at the experiment's
    alpha, shared among the comparisons with the control), once every variant
    has at least ``min_per_arm`` customers; of several, the one with the
    largest difference. The control wins when every other variant's interval
    lies wholly below 0. Otherwise there is no winner yet.

Nothing else declares one: a variant ahead on its point estimate with an
interval still holding 0 is "no winner yet", never "the best anyway".

A decision is one row of ``experiment_decisions`` (migration 0017): the
winner, the rule in words, the counts per variant, the winner's difference
and interval, who took it and when. One per campaign, written with "insert
unless there is one" against its unique key, so two runs starting together,
or a marketer asking twice, keep the first and read it back; it is never
updated. From then on every new message of the campaign (the route's
``variants_of``) gets the winner; a message whose ledger row already has a
variant keeps it. The holdout keeps running beside it.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from careflow.clock import utcnow
from careflow.db.models import ExperimentDecision
from careflow.variants import Experiment

ED = ExperimentDecision.__table__


def rule_text(experiment: Experiment) -> str:
    """The pre-registered rule, in words, with this experiment's numbers."""
    others = len(experiment.variants) - 1
    shared = f", {experiment.alpha:g} shared among {others} comparisons" if others > 1 else ""
    return (
        f"a variant wins when its always-valid {100 * (1 - experiment.alpha):g}% interval of "
        f"the difference in conversion from {experiment.control}{shared} lies above 0, once "
        f"every variant has at least {experiment.min_per_arm:,} customers (of several, the "
        f"largest difference); {experiment.control} wins when every other variant's "
        "interval lies below 0"
    )


def judge(report: dict, experiment: Experiment) -> dict | None:
    """The rule applied to a report's data (careflow/experiment_report.py): the decision
    it makes now (winner, points, interval), or None: no winner yet."""
    groups = report["groups"]
    if any(groups[v]["customers"] < experiment.min_per_arm for v in experiment.names):
        return None
    compared = report["against_control"]
    better = [n for n, c in compared.items() if c["verdict"] == "better"]
    if better:
        best = max(better, key=lambda n: compared[n]["points"])
        c = compared[best]
        return {"winner": best, "points": c["points"], "lower": c["ci"][0], "upper": c["ci"][1]}
    if compared and all(c["verdict"] == "worse" for c in compared.values()):
        # the control against the closest of the others: its margin, sign turned
        nearest = max(compared, key=lambda n: compared[n]["points"])
        c = compared[nearest]
        return {
            "winner": experiment.control,
            "points": -c["points"],
            "lower": -c["ci"][1],
            "upper": -c["ci"][0],
        }
    return None


def record(
    engine: Engine,
    campaign: str,
    experiment: Experiment,
    found: dict,
    counts: dict,
    decided_by: str,
    now: datetime | None = None,
) -> tuple[dict, bool]:
    """Keep ``found`` (from :func:`judge`) as the campaign's decision unless it has one;
    returns the decision that stands (the first, if another got there before) and whether
    this call wrote it."""
    row = {
        "campaign": campaign,
        "winner": found["winner"],
        "control": experiment.control,
        "rule": rule_text(experiment),
        "counts": json.dumps(counts, sort_keys=True),
        "points": found["points"],
        "lower": found["lower"],
        "upper": found["upper"],
        "decided_by": decided_by[:128],
        "decided_at": now or utcnow(),
    }
    with engine.begin() as conn:
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        written = conn.execute(
            insert(ED)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["campaign"])
            .returning(ED.c.id)
        ).all()
    decided = decision_of(engine, campaign)
    assert decided is not None  # written above, or by whoever got there first
    return decided, bool(written)


def decision_of(engine: Engine, campaign: str) -> dict | None:
    """The campaign's decision, as kept: None while it has none."""
    with engine.connect() as conn:
        row = conn.execute(select(ED).where(ED.c.campaign == campaign)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    out.pop("id")
    out["counts"] = json.loads(out["counts"])
    out["decided_at"] = out["decided_at"].isoformat(timespec="seconds")
    return out


def winner_of(engine: Engine, campaign: str) -> str | None:
    """The variant every new message of ``campaign`` gets, once decided; else None."""
    with engine.connect() as conn:
        return conn.execute(
            select(ED.c.winner).where(ED.c.campaign == campaign)
        ).scalar_one_or_none()

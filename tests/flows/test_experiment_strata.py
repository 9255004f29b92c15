"""Stratified assignment (campaign.yaml ``experiment: strata: [locale, channel]``): each
locale and channel of a batch is split evenly between the variants, where single draws
split a small group evenly only on average."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from careflow.campaigns import load_campaign
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.messages import State
from careflow.settings import load_settings
from careflow.variants import Experiment
from tests.factories import add_customer
from tests.flows import test_experiment_decision as decision_tests

templates = decision_tests.templates
rows = decision_tests.rows


def members(n: int) -> list[tuple[int, tuple]]:
    """n customers, most English, a few Chinese, a handful French; SMS or email."""
    out = []
    for cid in range(1, n + 1):
        locale = "fr" if cid % 13 == 0 else "zh-CN" if cid % 5 == 0 else "en"
        out.append((cid, (locale, "sms" if cid % 3 else "email")))
    return out


def test_every_stratum_of_a_batch_is_split_evenly():
    experiment = Experiment(variants=["a", "b"], strata=["locale", "channel"])
    given = members(500)
    assigned = experiment.assign_within("offer", given)
    assert set(assigned) == {cid for cid, _ in given}
    counts = Counter((stratum, assigned[cid]) for cid, stratum in given)
    for stratum in {s for _, s in given}:
        assert abs(counts[(stratum, "a")] - counts[(stratum, "b")]) <= 1, stratum
    assert experiment.assign_within("offer", given) == assigned, "the same batch, the same split"
    # each customer's own draw is even only on average: some stratum is off by more
    drawn = Counter((s, experiment.variant_of("offer", cid)) for cid, s in given)
    assert max(abs(drawn[(s, "a")] - drawn[(s, "b")]) for _, s in given) > 1


def test_weights_split_each_stratum_in_proportion():
    experiment = Experiment(variants=["a", {"name": "b", "weight": 3}], strata=["locale"])
    given = [(cid, ("en",)) for cid in range(1, 41)]
    assert Counter(experiment.assign_within("offer", given).values()) == {"a": 10, "b": 30}
    with pytest.raises(ValidationError, match="whole numbers"):
        Experiment(variants=["a", {"name": "b", "weight": 1.5}], strata=["locale"])


def test_a_run_splits_each_locale_evenly_and_keeps_it(engine, templates):
    folder = templates / "offer"
    (folder / "campaign.yaml").write_text(decision_tests.test_experiment_route.OFFER
                                          + "  strata: [locale]\n")  # fmt: skip
    (folder / "sms.zh-CN.j2").write_text("PLAIN 生日快乐 {{ name }}")
    (folder / "warm.sms.zh-CN.j2").write_text("WARM 生日快乐 {{ name }}")
    for cid in range(1, 52):
        add_customer(engine, cid, mobile=f"+4479111{cid:05d}", country="GB",
                     birthday=date(1990, 6, 1), birthday_calendar="solar",
                     locale="zh-CN" if cid % 4 == 0 else "en")  # fmt: skip
    settings = load_settings()
    spec = load_campaign("offer", settings.templates_dir)
    plan = RunPlan(spec=spec, run_id="run-1", as_of=date(2026, 6, 1),
                   at=datetime(2026, 6, 1, 12, tzinfo=UTC), settings=settings)  # fmt: skip
    process_batch(Route.for_run(plan), (1, 51))
    sent = [r for r in rows(engine) if r.state == State.SENT]
    assert len(sent) == 51, Counter((r.state, r.reason, r.detail) for r in rows(engine))
    zh = {r.customer_id for r in sent if r.body.startswith(("PLAIN 生日", "WARM 生日"))}
    assert zh == {cid for cid in range(1, 52) if cid % 4 == 0}
    counts = Counter((r.customer_id in zh, r.variant) for r in sent)
    for chinese in (True, False):
        assert abs(counts[(chinese, "plain")] - counts[(chinese, "warm")]) <= 1
    assert all(r.body.startswith(r.variant.upper()) for r in sent)
    before = {r.id: r.variant for r in sent}
    process_batch(Route.for_run(plan), (1, 51))  # a re-run changes nobody's variant
    assert {r.id: r.variant for r in rows(engine) if r.state == State.SENT} == before

"""Experiments on a campaign: its variants, and which one each customer gets.

A campaign.yaml may say::

    experiment:
      variants: [a, b]        # or [{name: a}, {name: b, weight: 2}]
      audience: 4000          # customers expected over the whole experiment

The first variant is the **control**: it sends the campaign's own templates
(``sms.en.j2``). Every other variant has its own files beside them, named
after it (``b.sms.en.j2``, ``b.email.en.subject.j2``...). ``careflow lint``
checks that each variant has a template wherever the control has one.

**Assignment** is a fixed draw per (campaign, customer): the same customer
gets the same variant on every occasion, on every machine, salted apart from
the holdout's draw (careflow/policy/holdout.py) so the two are independent.
Only customers who are contacted get one: the holdout is drawn first and
held-out customers are the comparison group of every variant. The draw is
written on the message's ledger row when it is first rendered and never
changed (``contact_history.variant``), so a retry, a deferral or a re-run
renders the same variant even if the campaign file's weights changed since.

With ``strata: [locale, channel]`` (either or both) a batch's customers are split
within each stratum by permuted blocks instead (:meth:`Experiment.assign_within`):
evenly within each small group, where single draws are even only on average. The
ledger row still keeps what a message got; a customer's later occasions are drawn again.

The winner is declared only by the rule of careflow/experiment_decisions.py, with the
numbers given here (``min_per_arm``, ``alpha``), and kept on the ledger; after it every
new message gets the winner (the route's ``variants_of``).

A journey's send step may have one too (``experiment:`` under the step in journey.yaml,
careflow/journey_spec.py): the same draw, on the step's campaign name
(``j_<journey>__<step>``); its variants' templates are ``<step>.<variant>.<part>``.

``audience`` tunes the always-valid intervals of careflow/experiment_stats.py
(narrowest at that size); a wrong guess costs some width, never validity.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator

VARIANT_PATTERN = r"^[a-z][a-z0-9_]{0,15}$"
_SCALE = float(1 << 64)


class Variant(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(pattern=VARIANT_PATTERN)
    #: its share of the contacted customers, relative to the others' weights
    weight: float = Field(default=1.0, gt=0)


def _named(value):
    return {"name": value} if isinstance(value, str) else value


class Experiment(BaseModel):
    model_config = {"extra": "forbid"}

    variants: list[Annotated[Variant, BeforeValidator(_named)]] = Field(min_length=2)
    #: customers expected over the whole experiment, all variants together
    audience: int = Field(default=2_000, gt=0)
    #: the smallest rise in conversion worth finding, in points; the power stated before
    #: launch is the chance of finding it (default: a fifth of the buying rate)
    rise: float | None = Field(default=None, gt=0, lt=100)
    #: the winner rule (careflow/experiment_decisions.py): no winner before every variant
    #: has this many customers
    min_per_arm: int = Field(default=100, ge=1)
    #: the winner rule's chance of naming a false winner, shared among the comparisons
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    #: who applies the rule: ``run`` (each real run's start, and by hand) or ``by_hand``
    #: (only ``careflow report experiment NAME --decide``)
    decide: Literal["run", "by_hand"] = "run"
    #: optional: split each batch's customers evenly within each locale, channel (or both)
    #: instead of by each customer's own draw (:meth:`assign_within`)
    strata: list[Literal["locale", "channel"]] = Field(default_factory=list)

    @field_validator("variants")
    @classmethod
    def _distinct(cls, value: list[Variant]) -> list[Variant]:
        names = [v.name for v in value]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must differ: {', '.join(names)}")
        return value

    @field_validator("strata")
    @classmethod
    def _strata(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"strata must differ: {', '.join(value)}")
        return value

    @model_validator(mode="after")
    def _whole_weights(self) -> Experiment:
        if self.strata and any(v.weight != int(v.weight) or v.weight > 20 for v in self.variants):
            raise ValueError(
                "with strata, variant weights must be whole numbers up to 20 (a block of "
                "customers is split in those proportions)"
            )
        return self

    @property
    def control(self) -> str:
        return self.variants[0].name

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variants]

    def rise_worth_finding(self, baseline: float) -> float:
        """``rise`` as a proportion, or the default: a fifth of the ``baseline`` rate."""
        return self.rise / 100 if self.rise is not None else baseline / 5

    def variant_of(self, campaign: str, customer_id: int) -> str:
        """The variant ``customer_id`` gets in ``campaign``'s experiment."""
        key = f"variant\x1f{campaign}\x1f{customer_id}".encode()
        u = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / _SCALE
        total = sum(v.weight for v in self.variants)
        edge = 0.0
        for v in self.variants:
            edge += v.weight / total
            if u < edge:
                return v.name
        return self.variants[-1].name


    def assign_within(
        self, campaign: str, members: list[tuple[int, tuple]]
    ) -> dict[int, str]:
        """customer id -> variant for one batch's customers, each given with its stratum
        (its locale and/or channel, as ``strata`` says): within each stratum, customers in
        a fixed random order take the slots of permuted blocks (each block holds every
        variant ``weight`` times, in an order drawn for the block), so every stratum of a
        batch is split as evenly as its size allows (off by at most one block's remainder),
        where each customer's own draw splits a small stratum only on average."""
        block = [v.name for v in self.variants for _ in range(int(v.weight))]
        by_stratum: dict[tuple, list[int]] = {}
        for customer_id, stratum in members:
            by_stratum.setdefault(stratum, []).append(customer_id)
        out: dict[int, str] = {}
        for stratum, ids in by_stratum.items():
            ids = sorted(ids, key=lambda c: _u(f"order\x1f{campaign}\x1f{c}"))
            # this batch's own blocks: a stratum's remainder falls on a different variant
            # from batch to batch
            salt = f"{campaign}\x1f{stratum}\x1f{','.join(map(str, sorted(ids)))}"
            for start in range(0, len(ids), len(block)):
                key = f"{salt}\x1f{start}"
                slots = sorted(range(len(block)), key=lambda i: _u(f"{key}\x1f{i}"))
                for customer_id, slot in zip(ids[start : start + len(block)], slots, strict=False):
                    out[customer_id] = block[slot]
        return out


def _u(key: str) -> float:
    """A number in [0, 1), uniform and the same wherever it is computed."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / _SCALE


def template_source(campaign: str, variant: str | None, experiment: Experiment | None) -> str:
    """What the renderer is asked for: the campaign, or ``campaign@variant`` for a variant
    with templates of its own (every variant but the control)."""
    if variant is None or experiment is None or variant == experiment.control:
        return campaign
    return f"{campaign}@{variant}"


def split_source(source: str) -> tuple[str, str | None]:
    """``campaign@variant`` -> (campaign, variant); a plain campaign -> (campaign, None)."""
    campaign, _, variant = source.partition("@")
    return campaign, variant or None

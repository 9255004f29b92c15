"""Send-time optimisation: each customer's best hour, and the rule's arithmetic.

The rule itself is ``BestHourRule`` in careflow/policy/__init__.py (the table).

A campaign opts in with ``policy: {send_time: {optimise: true}}`` in its
campaign.yaml (:class:`careflow.policy.config.SendTimeSpec`). Then:

- **the estimate**: the local hours (in the customer's own zone) of their
  orders, replies and clicks over the last ``history_days`` make a 24-hour
  histogram ``n``; never opens, which Apple Mail Privacy Protection inflates
  and SMS and fax do not have. It is shrunk towards the shop's pattern ``s``
  (every customer's events, each in their own zone, as shares of 1) by
  additive (Dirichlet) smoothing with a prior weight ``k``::

      score(h) = n[h] + k * s[h]

  and the best hour is the highest score (ties: the earlier hour). A
  customer without history gets the shop's best hour; with a lot, their own.
  ``k = 10`` (``prior_weight``): the shop counts as 10 events of the
  customer's own. In a shop whose busiest hour has 8-10 points more of the
  events than an ordinary hour, one event of a customer at an ordinary hour
  about ties with the shop's peak and two at the same hour win, so a single
  odd order (a sleepless night) barely moves anyone. In the simulation
  (bench/send_time.py) any k from 1 to 10 finds the true hour about as often
  (85% against 84% of customers), 30 far less often (72%): 10 is the most
  cautious weight that costs almost nothing. A shop without any
  history gives no best hour: the message goes at the campaign's own time.
  (careflow/send_hours.py reads the histograms: one query per batch, the
  shop's pattern once per run.)
- **the move**: only later, to the next time the customer's clock shows the
  best hour within ``window_hours`` of the run (now, when it is that hour),
  and only where quiet hours and the country's sending window allow *at that
  instant* (:class:`careflow.policy.SendTimeRule` judged at the target; a best
  hour inside quiet hours becomes the next allowed time). The message is
  deferred (``best_hour``) and sent once by the deferral machinery, which
  checks caps when it sends. A message that has been timed once (its ledger
  row has its arm) is never moved again: the follow-up that sends it due,
  however late, judges only quiet hours, windows and caps.
- **the proof**: a fixed share of customers (``fixed_share``, drawn by a
  sticky hash of campaign and customer, salted apart from the holdout's and
  the experiment's draws) is sent at the campaign's own time. The arm
  (``best`` or ``fixed``) is written on the ledger row
  (``contact_history.send_time_arm``) and ``careflow report send-time``
  compares the conversion of the two (careflow/send_time_report.py).
- **the switch**: a customer whose ``personal_send_time`` is false
  (PIPL art. 24: a non-personalised option) is sent at the campaign's time and
  is in neither arm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

HOURS = 24
_SCALE = float(1 << 64)

#: the arms of the comparison, as written on the ledger row
BEST, FIXED = "best", "fixed"
FIXED_DETAIL = "the fixed-time comparison group: sent at the campaign's own time"
SWITCHED_OFF_DETAIL = "sent at the campaign's own time: personalised send times are off for them"


def arm_draw(campaign: str, customer_id: int) -> float:
    """A number in [0, 1), the same for a customer on every occasion of the campaign, and
    independent of the holdout's draw (which has the occasion and no salt) and the
    experiment's (salted ``variant``)."""
    key = f"send_time\x1f{campaign}\x1f{customer_id}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / _SCALE


def arm_of(campaign: str, customer_id: int, fixed_share: float) -> str:
    return FIXED if arm_draw(campaign, customer_id) < fixed_share else BEST


@dataclass(frozen=True)
class BestHour:
    """A customer's best local hour (None: no history anywhere, no move) and how many of
    their own events it rests on."""

    hour: int | None
    events: int


def best_hour(counts: Sequence[int] | None, shop: Sequence[float] | None, k: float) -> BestHour:
    """The hour with the highest ``counts[h] + k * share_of_shop[h]`` (module docs)."""
    own = list(counts) if counts else [0] * HOURS
    events = sum(own)
    total = sum(shop) if shop else 0.0
    if total <= 0:
        return BestHour(None, events)
    scores = [own[h] + k * shop[h] / total for h in range(HOURS)]
    top = max(scores)
    return BestHour(scores.index(top), events)


def shop_best_hour(shop: Sequence[float] | None) -> int | None:
    return best_hour(None, shop, 1.0).hour


@dataclass(frozen=True)
class SendTimeFacts:
    """What the best-hour rule knows of one customer: their 24-hour histogram (local hours),
    the shop's pattern, and whether their message was timed once already."""

    counts: tuple[int, ...] | None
    shop: tuple[float, ...] | None
    timed: bool = False


def next_local_hour(now: datetime, zone, hour: int) -> datetime:
    """``now`` when the customer's clock shows ``hour``, else the next instant it turns it."""
    local = now.astimezone(zone)
    if local.hour == hour:
        return now
    for days in range(3):
        day = local.date() + timedelta(days=days)
        at = datetime.combine(day, time(hour), tzinfo=zone).astimezone(UTC)
        if at > now:
            return at
    raise AssertionError("an hour of the day recurs within three days")


def own_events(n: int) -> str:
    return f"{n} of their orders, replies and clicks" if n else "none of their own yet"

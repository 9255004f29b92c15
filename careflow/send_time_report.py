"""Does sending at each customer's best hour pay? The best-hour arm against the fixed-time arm.

A campaign that optimises send times (careflow/policy/send_time.py) sends a
random share of its customers (``fixed_share``) at its own time and the rest
at their best hour; the arm is on each message's ledger row
(``contact_history.send_time_arm``). This module compares the two arms the way
careflow/uplift.py compares contacted and held-out customers:

- **unit**: one ledger row with an arm (a customer on one occasion);
- **window**: from the moment a run took the customer up (``created_at``, the
  same moment for both arms: it comes before the move) to
  ``CAREFLOW_ATTRIBUTION_WINDOW_DAYS`` later; **conversion**: an order in it;
- **waiting**: a message still deferred is in neither arm's counts yet; one
  that was not sent (a cap, a failure) is counted apart, so the numbers add up
  to the rows with an arm;
- **intervals**: each arm's conversion with a Wilson interval, the
  difference (best minus fixed, in percentage points) with Newcombe's hybrid
  score interval (careflow/uplift_stats.py), at 95%.

Both arms are contacted, so this measures the *timing*, not the contact; the
holdout keeps measuring the contact itself (``careflow report uplift``).
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import Engine, select

from careflow.db.models import ContactHistory
from careflow.messages import State
from careflow.policy.send_time import BEST, FIXED
from careflow.tables import text_table
from careflow.uplift import orders_after, taken_up_between
from careflow.uplift_stats import newcombe, wilson

CH = ContactHistory.__table__
ARMS = (BEST, FIXED)


def send_time_report(
    engine: Engine,
    campaign: str,
    *,
    window_days: int,
    shop_zone: str,
    since: date | None = None,
    until: date | None = None,
) -> dict:
    """The two arms' counts, conversion with intervals and their difference, as data
    (rates and differences in percent / percentage points)."""
    where = [CH.c.campaign == campaign, CH.c.send_time_arm.in_(ARMS)]
    where += taken_up_between(since, until)
    window = timedelta(days=window_days)
    with engine.connect() as conn:
        rows = conn.execute(
            select(CH.c.customer_id, CH.c.state, CH.c.send_time_arm, CH.c.created_at).where(
                *where
            )
        ).all()
        bought = orders_after(conn, where, [r.created_at for r in rows], window, shop_zone)
    arms = {arm: {"rows": 0, "waiting": 0, "not_sent": 0, "customers": 0, "converted": 0}
            for arm in ARMS}  # fmt: skip
    for r in rows:
        a = arms[r.send_time_arm]
        a["rows"] += 1
        if r.state == State.DEFERRED:
            a["waiting"] += 1
        elif r.state != State.SENT:
            a["not_sent"] += 1
        else:
            a["customers"] += 1
            start, times = r.created_at, bought.get(r.customer_id, ())
            a["converted"] += any(start <= t <= start + window for t, _, _ in times)
    for a in arms.values():
        n, x = a["customers"], a["converted"]
        lo, hi = wilson(x, n)
        a["conversion"] = round(100 * x / n, 4) if n else None
        a["conversion_ci"] = [round(100 * lo, 4), round(100 * hi, 4)] if n else None
    out = {
        "campaign": campaign,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "window_days": window_days,
        "arms": arms,
        "difference": None,
    }
    b, f = arms[BEST], arms[FIXED]
    if b["customers"] and f["customers"]:
        d, lo, hi = newcombe(b["converted"], b["customers"], f["converted"], f["customers"])
        out["difference"] = {
            "points": round(100 * d, 4),
            "ci": [round(100 * lo, 4), round(100 * hi, 4)],
        }
    out["verdict"] = verdict(out)
    return out


def verdict(report: dict) -> str:
    """One plain sentence on what the comparison shows."""
    diff = report["difference"]
    if diff is None:
        return "nothing to compare yet: both arms need customers whose messages were sent"
    lo, hi = diff["ci"]
    ci = f"95% CI {lo:+.1f} to {hi:+.1f} points"
    if lo > 0:
        return f"sending at their best hour converts {diff['points']:.1f} points more ({ci})"
    if hi < 0:
        return f"sending at their best hour converts {-diff['points']:.1f} points less ({ci})"
    return f"no clear difference between best hour and fixed time yet ({ci})"


def _rate(arm: dict, between: str) -> str:
    """An arm's conversion with its interval (``between`` its two ends), or ``-``."""
    if arm["conversion"] is None:
        return "-"
    lo, hi = arm["conversion_ci"]
    return f"{arm['conversion']:.1f}% ({lo:.1f}{between}{hi:.1f})"


def send_time_table(report: dict) -> str:
    """The comparison for a terminal."""
    rows = []
    for arm, label in ((BEST, "best hour"), (FIXED, "fixed time")):
        a = report["arms"][arm]
        rate = _rate(a, "-")
        rows.append(
            [label, f"{a['customers']:,}", f"{a['converted']:,}", rate,
             f"{a['waiting']:,}", f"{a['not_sent']:,}"]
        )  # fmt: skip
    head = (
        f"send time: {report['campaign']} (orders within {report['window_days']} days of "
        "being taken up)"
    )
    table = text_table(
        ["arm", "sent", "converted", "conversion (95% CI)", "waiting", "not sent"], rows
    )
    return f"{head}\n{table}\n{report['verdict']}"


def send_time_markdown(report: dict) -> str:
    """The comparison as a Prefect artifact: the verdict, one row per arm."""
    lines = [
        f"## {report['campaign']}: does the best hour pay?",
        "",
        f"**{report['verdict']}.**",
        "",
        "| arm | sent | bought | rate (95% CI) | waiting | not sent |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for arm, label in ((BEST, "best hour"), (FIXED, "fixed time")):
        a = report["arms"][arm]
        rate = _rate(a, " to ")
        lines.append(
            f"| {label} | {a['customers']:,} | {a['converted']:,} | {rate} "
            f"| {a['waiting']:,} | {a['not_sent']:,} |"
        )
    lines += [
        "",
        f"Orders within {report['window_days']} days of the run taking each customer up. "
        "Both arms are contacted: this measures the timing, not the contact.",
    ]
    return "\n".join(lines)

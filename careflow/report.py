"""Run records and the reports an operator reads: one line per campaign, at a glance."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, func, insert, select, update

from careflow.clock import utcnow
from careflow.db.models import Campaign, ContactEvent, ContactHistory, Customer, Run
from careflow.experiment_report import plan_in_words
from careflow.money import from_minor
from careflow.tables import text_table
from careflow.uplift import split_in_words, uplift_in_words, uplift_markdown


def start_run(engine: Engine, run_id: str, spec, at: datetime, channel: str, dry_run: bool) -> None:
    """Record a run (and its campaign, the first time) before any customer is touched."""
    now = utcnow()
    with engine.begin() as conn:
        if conn.execute(select(Campaign.name).where(Campaign.name == spec.name)).first() is None:
            conn.execute(
                insert(Campaign.__table__).values(
                    name=spec.name,
                    segment=spec.segment,
                    description=spec.description,
                    created_at=now,
                )
            )
        _insert_run(conn, run_id, spec.name, at, channel, dry_run, now)


#: what a journey's runs are recorded under in the runs' campaign column
JOURNEY_RUN = "journey:"


def journey_run_name(journey: str) -> str:
    """``journey:<name>``: a journey-advance run's line in `careflow report runs`."""
    return f"{JOURNEY_RUN}{journey}"


def start_journey_run(engine: Engine, run_id: str, journey: str, at: datetime, channel: str):
    """Record one journey's advance as a run (``journey:<name>``) before its batches start:
    its summary, stop request and status are a campaign run's (careflow/flows/journey.py)."""
    with engine.begin() as conn:
        _insert_run(conn, run_id, journey_run_name(journey), at, channel, False, utcnow())


def _insert_run(conn, run_id: str, name: str, at: datetime, channel, dry_run, now) -> None:
    if conn.execute(select(Run.id).where(Run.id == run_id)).first() is None:
        conn.execute(
            insert(Run.__table__).values(
                id=run_id,
                campaign=name,
                as_of=at.replace(tzinfo=None),
                channel=channel,
                dry_run=dry_run,
                started_at=now,
            )
        )


def record_refused(
    engine: Engine,
    run_id: str,
    campaign: str,
    as_of: datetime,
    channel: str | None,
    dry_run: bool,
    why: str,
    extra: dict | None = None,
) -> dict | None:
    """Record a run that stopped before it started (a name that is no campaign, a
    configuration that cannot work, a back-dated date, a paused campaign), finished, with
    the one-line reason and ``extra`` in its summary (``paused``: the pause's numbers), so
    `careflow report runs` lists it. Returns the summary; None (nothing written) when the
    run is recorded already."""
    now = utcnow()
    summary = {
        "campaign": campaign,
        "as_of": as_of.date().isoformat(),
        "dry_run": dry_run,
        "selected": 0,
        "sent": 0,
        **{k: {} for k in ("skipped", "failed", "already", "would_send", "deferred")},
        "stopped": f"failed before it started: {why}",
        **(extra or {}),
    }
    with engine.begin() as conn:
        if conn.execute(select(Run.id).where(Run.id == run_id)).first() is not None:
            return None
        conn.execute(
            insert(Run.__table__).values(
                id=run_id,
                campaign=campaign[:64],
                as_of=as_of.replace(tzinfo=None),
                channel=channel,
                dry_run=dry_run,
                started_at=now,
                finished_at=now,
                summary=summary,
            )
        )
    return summary


def finish_run(engine: Engine, run_id: str, summary: dict) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Run).where(Run.id == run_id).values(finished_at=utcnow(), summary=summary)
        )


def request_stop(engine: Engine, run_id: str, why: str) -> None:
    """Record on an unfinished run that it is stopping (``why``: stopped, failed: ...).

    Batches in other processes (a Dask cluster) look here between chunks
    (careflow/flows/campaign.py, ``RunStopFlag``); ``finish_run`` replaces the mark
    with the run's summary once it has settled what its batches held.
    """
    with engine.begin() as conn:
        conn.execute(
            update(Run)
            .where(Run.id == run_id, Run.finished_at.is_(None))
            .values(summary={"stopping": why})
        )


def stop_requested(engine: Engine, run_id: str) -> bool:
    """Whether the run was asked to stop, or has already finished stopped or failed."""
    with engine.connect() as conn:
        summary = conn.execute(select(Run.summary).where(Run.id == run_id)).scalar()
    return bool(summary) and ("stopping" in summary or "stopped" in summary)


def run_status(row) -> str:
    """completed, stopped, failed: <why>, stopping, or running (or died without a word:
    SIGKILL)."""
    if row.finished_at is None:
        return "stopping" if "stopping" in (row.summary or {}) else "running or died"
    stopped = (row.summary or {}).get("stopped")
    return stopped or "completed"


def runs_since(engine: Engine, since: datetime | None = None, limit: int = 100) -> list[dict]:
    """Every run, newest first: failed, stopped and unfinished ones included."""
    query = select(Run).order_by(Run.started_at.desc(), Run.id.desc()).limit(limit)
    if since is not None:
        query = query.where(Run.started_at >= since)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    out = []
    for r in rows:
        summary = r.summary or {}
        out.append(
            {
                "run_id": r.id,
                "campaign": r.campaign,
                "status": run_status(r),
                "started_at": r.started_at.isoformat(sep=" ", timespec="seconds"),
                "finished_at": r.finished_at.isoformat(sep=" ", timespec="seconds")
                if r.finished_at
                else None,
                "as_of": r.as_of.date().isoformat(),
                "channel": r.channel,
                "dry_run": bool(r.dry_run),
                "selected": summary.get("selected"),
                "sent": summary.get("sent"),
                "would_send": summary.get("would_send", {}),
                "held_out": summary.get("held_out", 0),
                "already": summary.get("already", {}),
                "skipped": summary.get("skipped", {}),
                "deferred": summary.get("deferred", {}),
                "failed": summary.get("failed", {}),
                **({"journey": journey_counts(summary)} if "journey" in summary else {}),
            }
        )
    return out


def journey_counts(summary: dict) -> dict:
    """A journey run's own counts beside its messages': customers who entered, were woken,
    the steps taken by outcome, exits by reason, left waiting (careflow/journeys/advance.py
    ``Tally``)."""
    keys = ("new_entries", "woken", "steps", "exits", "waiting", "stranded")
    return {"name": summary["journey"], **{k: summary.get(k) for k in keys}}


def runs_table(runs: list[dict]) -> str:
    """One line per run: when, what, as of, how, status and counts (:func:`outcome_counts`)."""
    header = ["started (UTC)", "campaign", "as of", "channel", "status", "selected"]
    header += [label for label, _, _ in outcome_counts({})]
    rows = []
    for r in runs:
        counts = (
            [_count_cell(label, n, why) for label, n, why in outcome_counts(r)]
            if r["selected"] is not None
            else ["-"] * (len(header) - 6)
        )
        rows.append(
            [
                r["started_at"],
                r["campaign"] + (" (dry run)" if r["dry_run"] else ""),
                r["as_of"],
                r["channel"] or "-",
                r["status"],
                "-" if r["selected"] is None else str(r["selected"]),
                *counts,
            ]
        )
    return text_table(header, rows)


def last_runs(engine: Engine, include_dry_runs: bool = False) -> list[dict]:
    """The latest run of each campaign, whatever became of it, as summaries.

    A run that failed or was stopped is the latest run all the same: hiding
    it behind an older completed one would tell an operator all is well.
    """
    with engine.connect() as conn:
        where = [] if include_dry_runs else [Run.dry_run.is_(False)]
        latest = (
            select(Run.campaign, func.max(Run.started_at).label("t"))
            .where(*where)
            .group_by(Run.campaign)
            .subquery()
        )
        rows = conn.execute(
            select(Run)
            .join(latest, (latest.c.campaign == Run.campaign) & (latest.c.t == Run.started_at))
            .where(*where)
            .order_by(Run.campaign)
        ).all()
    out = []
    for r in rows:
        summary = r.summary or {
            "campaign": r.campaign,
            "as_of": r.as_of.date().isoformat(),
            "dry_run": bool(r.dry_run),
            "selected": 0,
            "sent": 0,
            "skipped": {},
            "failed": {},
            "already": {},
            "would_send": {},
        }
        out.append(
            dict(
                summary,
                status=run_status(r),
                started_at=r.started_at.isoformat(sep=" ", timespec="seconds"),
                finished_at=r.finished_at.isoformat(timespec="seconds") if r.finished_at else None,
            )
        )
    return out


def _fmt_reasons(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


#: what "already done" is made of, by the ledger state an earlier run left, in words
ALREADY_WORDS = {
    "sent": "got this occasion's message",
    "held_out": "were held out of it",
    "deferred": "wait for their deferred message",
    "skipped": "were skipped for it",
    "failed": "failed for it",
    "in_progress": "are being sent to by another run",
}


def outcome_counts(s: dict) -> list[tuple[str, int, dict]]:
    """What became of a run's selected customers: (label, count, count by reason).

    The one definition every count a person reads comes from (the run's table, the
    Prefect artifact, the batch log lines, `report runs`, the "already done" line), so
    they agree with each other and always add up to ``selected``: each selected
    customer is in exactly one of these. A dry run counts its sends as "would send".
    """
    would = s.get("would_send") or {}
    sent = (
        ("would send", sum(would.values()), dict(would))
        if s.get("dry_run")
        else ("sent", s.get("sent") or 0, {})
    )
    buckets = [sent, ("held out", s.get("held_out") or 0, {})]
    for label, name in (
        ("already done", "already"),
        ("skipped", "skipped"),
        ("deferred", "deferred"),
        ("failed", "failed"),
    ):
        reasons = dict(s.get(name) or {})
        buckets.append((label, sum(reasons.values()), reasons))
    return buckets


def counts_text(s: dict) -> str:
    """``selected 120: sent 80, held out 9, already done 20, ...`` for a log line."""
    parts = ", ".join(f"{label} {n}" for label, n, _ in outcome_counts(s))
    return f"selected {s.get('selected') or 0}: {parts}"


def already_text(s: dict) -> str | None:
    """What the "already done" count is made of, or None when nothing was."""
    already = {k: v for k, v in (s.get("already") or {}).items() if v}
    if not already:
        return None
    order = list(ALREADY_WORDS)
    parts = [
        f"{n} {ALREADY_WORDS.get(state, f'were {state}')}"
        for state, n in sorted(
            already.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99
        )
    ]
    return (
        f"{sum(already.values())} already done by an earlier run, not taken again: "
        + ", ".join(parts)
        + "."
    )


def _count_cell(label: str, n: int, reasons: dict) -> str:
    if label == "would send":
        return f"({n} would send)"
    return f"{n}: {_fmt_reasons(reasons)}" if reasons and label != "already done" else str(n)


def summary_line(s: dict) -> list[str]:
    when = [s["started_at"], s.get("as_of", ""), s["status"]] if "status" in s else []
    return when + [
        s["campaign"] + (" (follow-up)" if s.get("followup") else ""),
        str(s["selected"]),
        *(_count_cell(label, n, why) for label, n, why in outcome_counts(s)),
    ]


HEADER = ["campaign", "selected", *(label for label, _, _ in outcome_counts({}))]


def summary_table(summaries: list[dict]) -> str:
    """A plain-text table, one row per campaign run (with when and status for reports)."""
    header = (
        ["started (UTC)", "as of", "status"] if summaries and "status" in summaries[0] else []
    ) + HEADER
    return text_table(header, [summary_line(s) for s in summaries])


def summary_markdown(s: dict) -> str:
    """The Prefect artifact for one run: counts and reasons an operator can scan."""
    if s.get("dry_run"):
        mode = "dry run, nothing sent"
    else:
        mode = f"delivery: {s['delivery']}" if s.get("delivery") else "nothing sent"
    lines = [
        f"## {s['campaign']} as of {s['as_of']} ({mode})",
        "",
        *_paused_lines(s),
        "| outcome | count | reasons |",
        "| --- | ---: | --- |",
        f"| selected | {s['selected']} | |",
    ]
    explained = {
        "held out": "held out (not contacted: the comparison group)",
        "already done": "already done by an earlier run",
        "deferred": "deferred (sent later, once)",
    }
    for label, n, reasons in outcome_counts(s):
        why = _fmt_reasons(reasons) if reasons else ""
        lines.append(f"| {explained.get(label, label)} | {n} | {why} |")
    if s.get("split"):
        can = split_in_words(s["split"])
        lines += ["", f"**Can this run tell whether the campaign works?** {can}"]
    if s.get("experiment"):
        lines += ["", f"**Which message pays more?** {plan_in_words(s['experiment'])}."]
    if s.get("uplift"):
        so_far = uplift_in_words(s["uplift"])
        lines += ["", f"**So far:** {so_far}", "", uplift_markdown(s["uplift"])]
    if s.get("decisions"):
        # a list, not a table: the reason is read whole, however long, on any screen
        lines += ["", "### Policy decisions (a few per reason)", ""]
        for d in s["decisions"]:
            until = d.get("until") or ""  # ISO in UTC: 2026-12-08T01:00+00:00
            until = f" until {until[:16].replace('T', ' ')} UTC" if until else ""
            why = _md_text(d.get("detail") or "")
            what = f"- {_customer(d)}: {d['action']} {d['reason']}{until}"
            lines.append(what + (f": {why}" if why else ""))
    return "\n".join(lines)


def _paused_lines(s: dict) -> list[str]:
    """A paused campaign's refused run, at the top of its artifact: why, the numbers, how
    to resume (careflow/pauses.py)."""
    p = s.get("paused")
    if not p:
        return []
    return [
        f"**Paused:** {_md_text(p['why'])}.",
        "",
        f"Resume it once the cause is found: `careflow campaign resume {s['campaign']}` "
        "(docs/compliance.md).",
        "",
    ]


def _customer(d: dict) -> str:
    """A customer as a marketer finds them: name and the shop's reference beside the id
    (never an address or number: artifacts are read by many)."""
    name = _md_text(d.get("name") or "")
    ref = _md_text(d.get("ref") or "")
    known = f"**{name}** " if name else ""
    ids = ([f"ref {ref}"] if ref else []) + [f"id {d['customer_id']}"]
    return f"{known}({', '.join(ids)})"


def _md_text(text: str) -> str:
    """Text from the shop's data, shown as itself in markdown (no links, emphasis, HTML)."""
    text = " ".join(str(text).split())
    return "".join("\\" + c if c in "\\`*_[]<>|~!" else c for c in text)


#: timeline kinds counted in the responses report, by column
RESPONSE_COLUMNS = {
    "replied": ("replied", "help"),
    "opted_out": ("opted_out", "unsubscribed"),
    "bounced": ("bounced", "dropped", "spam_report"),
}


def response_summary(engine: Engine, since: datetime | None = None) -> list[dict]:
    """Per campaign: sent, delivered, replied, opted out, bounced, converted and revenue.

    ``since`` limits it to messages sent from then on. Revenue is per
    currency (amounts in different currencies are never added together).
    """
    ch, ce = ContactHistory.__table__, ContactEvent.__table__
    where = [ch.c.state == "sent"] + ([ch.c.sent_at >= since] if since else [])
    out: dict[str, dict] = {}
    with engine.connect() as conn:
        for r in conn.execute(
            select(
                ch.c.campaign,
                func.count().label("sent"),
                func.count().filter(ch.c.delivery_state == "delivered").label("delivered"),
            )
            .where(*where)
            .group_by(ch.c.campaign)
        ):
            out[r.campaign] = {
                "campaign": r.campaign,
                "sent": r.sent,
                "delivered": r.delivered,
                **dict.fromkeys(RESPONSE_COLUMNS, 0),
                "converted": 0,
                "revenue": {},
            }
        events = conn.execute(
            select(ch.c.campaign, ce.c.kind, ce.c.payload)
            .join(ce, ce.c.contact_id == ch.c.id)
            .where(*where)
        ).all()
    revenue: dict[str, dict[str, int]] = {}
    for e in events:
        summary = out[e.campaign]
        for column, kinds in RESPONSE_COLUMNS.items():
            summary[column] += e.kind in kinds
        if e.kind == "converted":
            summary["converted"] += 1
            by_currency = revenue.setdefault(e.campaign, {})
            currency = (e.payload or {}).get("currency", "")
            by_currency[currency] = by_currency.get(currency, 0) + int(
                (e.payload or {}).get("amount_minor", 0)
            )
    for campaign, sums in revenue.items():
        out[campaign]["revenue"] = {c: str(from_minor(v, c)) for c, v in sorted(sums.items())}
    return sorted(out.values(), key=lambda s: s["campaign"])


def responses_table(rows: list[dict]) -> str:
    """The responses report at a glance: one line per campaign, rates beside counts."""

    def rate(n: int, of: int) -> str:
        return f"{n} ({100 * n / of:.0f}%)" if of else str(n)

    header = [
        "campaign",
        "sent",
        "delivered",
        "replied",
        "opted out",
        "bounced",
        "converted",
        "revenue",
    ]
    return text_table(
        header,
        [
            [
                r["campaign"],
                str(r["sent"]),
                rate(r["delivered"], r["sent"]),
                rate(r["replied"], r["sent"]),
                rate(r["opted_out"], r["sent"]),
                rate(r["bounced"], r["sent"]),
                rate(r["converted"], r["delivered"]),
                ", ".join(f"{v} {c}" for c, v in r["revenue"].items()) or "-",
            ]
            for r in rows
        ],
    )


def replies_by_owner(
    engine: Engine, since: datetime | None = None, owner: str | None = None
) -> dict[str, list[dict]]:
    """Replies a person should read (not opt-out keywords), grouped by the customer's owner."""
    ce, ch = ContactEvent.__table__, ContactHistory.__table__
    query = (
        select(
            Customer.owner,
            Customer.id,
            Customer.full_name,
            ce.c.occurred_at,
            ce.c.kind,
            ce.c.detail,
            ch.c.campaign,
        )
        .join(Customer, Customer.id == ce.c.customer_id)
        .outerjoin(ch, ch.c.id == ce.c.contact_id)
        .where(ce.c.kind.in_(["replied", "help"]))
        .order_by(Customer.owner, ce.c.occurred_at)
    )
    if since is not None:
        query = query.where(ce.c.occurred_at >= since)
    if owner is not None:
        query = query.where(Customer.owner == owner)
    out: dict[str, list[dict]] = {}
    with engine.connect() as conn:
        for r in conn.execute(query):
            out.setdefault(r.owner or "(no owner)", []).append(
                {
                    "customer_id": r.id,
                    "name": r.full_name,
                    "at": r.occurred_at.isoformat(sep=" ", timespec="minutes"),
                    "kind": r.kind,
                    "text": r.detail,
                    "campaign": r.campaign,
                }
            )
    return out

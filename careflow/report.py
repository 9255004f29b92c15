"""Run records and the reports an operator reads: one line per campaign, at a glance."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, func, insert, select, update

from careflow.db.models import Campaign, Run
from careflow.ledger import utcnow


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
        if conn.execute(select(Run.id).where(Run.id == run_id)).first() is None:
            conn.execute(
                insert(Run.__table__).values(
                    id=run_id,
                    campaign=spec.name,
                    as_of=at.replace(tzinfo=None),
                    channel=channel,
                    dry_run=dry_run,
                    started_at=now,
                )
            )


def finish_run(engine: Engine, run_id: str, summary: dict) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Run).where(Run.id == run_id).values(finished_at=utcnow(), summary=summary)
        )


def last_runs(engine: Engine, include_dry_runs: bool = False) -> list[dict]:
    """The latest finished run of each campaign, as summaries."""
    with engine.connect() as conn:
        where = [Run.finished_at.is_not(None)]
        if not include_dry_runs:
            where.append(Run.dry_run.is_(False))
        latest = (
            select(Run.campaign, func.max(Run.finished_at).label("t"))
            .where(*where)
            .group_by(Run.campaign)
            .subquery()
        )
        rows = conn.execute(
            select(Run.summary, Run.finished_at)
            .join(latest, (latest.c.campaign == Run.campaign) & (latest.c.t == Run.finished_at))
            .order_by(Run.campaign)
        ).all()
    return [dict(r.summary, finished_at=r.finished_at.isoformat(timespec="seconds")) for r in rows]


def _fmt_reasons(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


def summary_line(s: dict) -> list[str]:
    sent = s.get("would_send") if s.get("dry_run") else None
    return [
        s["campaign"],
        str(s["selected"]),
        (f"({sum(sent.values())} would send)" if sent is not None else str(s["sent"])),
        str(sum(s["already"].values())),
        f"{sum(s['skipped'].values())}: {_fmt_reasons(s['skipped'])}" if s["skipped"] else "0",
        f"{sum(s['failed'].values())}: {_fmt_reasons(s['failed'])}" if s["failed"] else "0",
    ]


HEADER = ["campaign", "selected", "sent", "already done", "skipped", "failed"]


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_table(summaries: list[dict]) -> str:
    """A plain-text table, one row per campaign run."""
    return text_table(HEADER, [summary_line(s) for s in summaries])


def summary_markdown(s: dict) -> str:
    """The Prefect artifact for one run: counts and reasons an operator can scan."""
    mode = "dry run, nothing sent" if s.get("dry_run") else f"delivery: {s['delivery']}"
    lines = [
        f"## {s['campaign']} as of {s['as_of']} ({mode})",
        "",
        "| outcome | count | reasons |",
        "| --- | ---: | --- |",
        f"| selected | {s['selected']} | |",
    ]
    if s.get("dry_run"):
        lines.append(
            f"| would send | {sum(s['would_send'].values())} | {_fmt_reasons(s['would_send'])} |"
        )
    else:
        lines.append(f"| sent | {s['sent']} | |")
    lines += [
        f"| already done earlier | {sum(s['already'].values())} | {_fmt_reasons(s['already'])} |",
        f"| skipped | {sum(s['skipped'].values())} | {_fmt_reasons(s['skipped'])} |",
        f"| failed | {sum(s['failed'].values())} | {_fmt_reasons(s['failed'])} |",
    ]
    return "\n".join(lines)

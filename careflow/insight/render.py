"""Skins for the pyramid report: plain text, markdown (the Prefect artifact), JSON, CSV.

No report logic here: every number comes from ``careflow.insight.pyramid.PyramidReport``;
a skin only formats it. Money is shown in the report's currency (minor units
turned into amounts by careflow.money); JSON keeps the exact minor units too.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import pandas as pd

from careflow.csv_export import write_frame
from careflow.insight.pyramid import AFTER, BEFORE, PyramidReport
from careflow.money import from_minor
from careflow.report import text_table

MEASURE_NAMES = {"R": "recency (days since)", "F": "frequency (days)", "M": "monetary"}


def _amount(report: PyramidReport, minor) -> Decimal | None:
    if minor is None or minor is pd.NA or (isinstance(minor, float) and math.isnan(minor)):
        return None
    return from_minor(int(minor), report.currency) if report.currency else Decimal(int(minor))


def money_text(report: PyramidReport, minor) -> str:
    value = _amount(report, minor)
    return "-" if value is None else f"{value:,}"


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def headline(report: PyramidReport) -> str:
    """One line: what, when, how many, how much."""
    currency = f" {report.currency}" if report.currency else ""
    return (
        f"Customer pyramid as of {report.as_of.isoformat()} "
        f"(purchases in the last {report.params['window_days']} days): "
        f"{report.buyers:,} buyers, revenue {money_text(report, report.revenue_minor)}{currency}; "
        f"movement since {report.previous.isoformat()}"
    )


def currency_line(report: PyramidReport) -> str:
    """Which currency, why, and what it leaves out: ``Money in CNY (...); 12 orders ...``."""
    choice = report.currency_choice
    return f"Money {choice.note()}" if choice else ""


def tier_rows(report: PyramidReport) -> tuple[list[str], list[list[str]]]:
    header = ["tier", "customers", "of buyers", "revenue", "of revenue", "spent from", "to"]
    rows = [
        [
            t.tier,
            f"{t.customers:,}",
            _pct(t.customer_share),
            money_text(report, t.revenue_minor),
            _pct(t.revenue_share),
            money_text(report, t.min_minor),
            money_text(report, t.max_minor),
        ]
        for t in report.tiers.itertuples()
    ]
    return header, rows


def score_rows(report: PyramidReport) -> tuple[list[str], list[list[str]]]:
    header = ["score", *[f"{m} customers" for m in "RFM"], "R days since", "F days", "M spent"]
    by = {(s.measure, s.score): s for s in report.scores.itertuples()}

    def span(measure, score):
        s = by[(measure, score)]
        if s.customers == 0:
            return "-"
        show = (lambda v: money_text(report, v)) if measure == "M" else (lambda v: f"{int(v):,}")
        low, high = show(s.low), show(s.high)
        return low if low == high else f"{low} - {high}"

    rows = [
        [str(score)]
        + [f"{by[(m, score)].customers:,}" for m in "RFM"]
        + [span(m, score) for m in "RFM"]
        for score in range(5, 0, -1)
    ]
    return header, rows


def grid_rows(report: PyramidReport) -> tuple[list[str], list[list[str]]]:
    """Customers per cell: R down (5 at the top), F across."""
    counts = report.grid.pivot(index="r_score", columns="f_score", values="customers")
    header = ["R \\ F", *[str(f) for f in range(1, 6)]]
    rows = [[str(r)] + [f"{counts.loc[r, f]:,}" for f in range(1, 6)] for r in range(5, 0, -1)]
    return header, rows


def movement_rows(report: PyramidReport) -> tuple[list[str], list[list[str]]]:
    """Previous tier down, tier now across."""
    cells = report.movement.set_index(["before", "after"])["customers"]
    header = [f"{report.previous.isoformat()} \\ now", *AFTER]
    rows = []
    for before in BEFORE:
        counts = [int(cells.get((before, after), 0)) for after in AFTER]
        if any(counts):
            rows.append([before, *[f"{n:,}" if n else "." for n in counts]])
    return header, rows


def summary_rows(report: PyramidReport) -> tuple[list[str], list[list[str]]]:
    header = ["movement", "customers"]
    return header, [[m.movement, f"{m.customers:,}"] for m in report.movement_summary.itertuples()]


def mover_rows(report: PyramidReport) -> tuple[list[str], list[list[str]]]:
    """Every customer whose tier changed: who moved up, slipped, left or came in."""
    moved = report.customers[report.customers["movement"] != "same"]
    header = ["customer", "ref", "before", "now", "movement"]
    return header, [
        [str(c.customer_id), c.ref or "", str(c.previous_tier), str(c.tier), c.movement]
        for c in moved.itertuples()
    ]


SECTIONS = (
    ("Tiers", tier_rows),
    ("RFM scores: customers and the raw values each score holds", score_rows),
    ("RFM grid: customers by recency (R) and frequency (F) score", grid_rows),
    ("Tier movement", movement_rows),
    ("Movement", summary_rows),
)


def as_text(report: PyramidReport, customers: bool = False) -> str:
    """The report for a terminal: the headline, then one table per section."""
    parts = [headline(report), currency_line(report)]
    sections = [*SECTIONS, ("Customers who moved", mover_rows)] if customers else SECTIONS
    for title, rows in sections:
        header, body = rows(report)
        parts += ["", title, text_table(header, body)]
    return "\n".join(parts)


def as_markdown(report: PyramidReport, charts: str = "") -> str:
    """The report as markdown tables: the Prefect artifact of a report run; ``charts``
    (markdown, careflow/insight/html.py ``charts_markdown``) go between the headline
    and the tables."""
    parts = [f"## {headline(report)}", "", currency_line(report)]
    if charts:
        parts += ["", charts]
    for title, rows in SECTIONS:
        header, body = rows(report)
        parts += [
            "",
            f"### {title}",
            "",
            "| " + " | ".join(h.replace("\\", "/") for h in header) + " |",
            "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
            *["| " + " | ".join(row) + " |" for row in body],
        ]
    return "\n".join(parts)


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain JSON values: missing values as null, numpy numbers as Python's."""
    out = []
    for row in frame.astype(object).where(frame.notna(), None).to_dict("records"):
        out.append({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
    return out


def _with_amounts(report: PyramidReport, frame: pd.DataFrame) -> pd.DataFrame:
    """Beside every ``*_minor`` column, the amount as text in the report's currency."""
    frame = frame.copy()
    for column in [c for c in frame.columns if c.endswith("_minor")]:
        frame[column.removesuffix("_minor")] = [
            None if (v := _amount(report, m)) is None else str(v) for m in frame[column]
        ]
    return frame


def as_dict(report: PyramidReport, customers: bool = False) -> dict:
    """The report as JSON-ready data: every table as a list of rows."""
    scores = report.scores.copy()
    out = {
        "as_of": report.as_of.isoformat(),
        "previous": report.previous.isoformat(),
        "parameters": report.params,
        "currency": report.currency,
        "currency_choice": report.currency_choice.as_dict() if report.currency_choice else None,
        "buyers": report.buyers,
        "revenue_minor": report.revenue_minor,
        "revenue": str(_amount(report, report.revenue_minor)),
        "tiers": _records(_with_amounts(report, report.tiers)),
        "scores": _records(scores),
        "rfm_grid": _records(_with_amounts(report, report.grid)),
        "movement": _records(report.movement.astype({"before": str, "after": str})),
        "movement_summary": dict(
            zip(report.movement_summary["movement"], report.movement_summary["customers"].tolist(),
                strict=True)
        ),
    }
    if customers:
        out["customers"] = _records(_with_amounts(report, customer_frame(report)))
    return out


def as_json(report: PyramidReport, customers: bool = False) -> str:
    return json.dumps(as_dict(report, customers), indent=2, ensure_ascii=False)


def customer_frame(report: PyramidReport) -> pd.DataFrame:
    return report.customers.astype({"tier": str, "previous_tier": str})


def write_csv(report: PyramidReport, folder: Path) -> list[Path]:
    """One CSV per table in ``folder`` (created): tiers, scores, rfm_grid, movement, customers."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = {
        "tiers": _with_amounts(report, report.tiers),
        "scores": report.scores,
        "rfm_grid": _with_amounts(report, report.grid),
        "movement": report.movement,
        "movement_summary": report.movement_summary,
        "customers": _with_amounts(report, customer_frame(report)),
    }
    written = []
    for name, frame in tables.items():
        path = folder / f"{name}.csv"
        write_frame(frame, path)
        written.append(path)
    return written

"""A campaign's experiment as one standalone HTML page with charts (inline SVG).

Three charts, drawn from the report's data (careflow/experiment_report.py),
never from a row per customer: how many buy in each variant and among the
held-out customers; each difference (a variant against the control, every
variant against the held out) as a point with its always-valid interval
across the zero line; and revenue per customer of each group with its
interval, per currency. Then the table a terminal shows, the verdict and the
rule. No script, nothing fetched: the page opens offline and can be mailed,
like the pyramid's (careflow/insight/html.py, whose drawing helpers and
style it shares).
"""

from __future__ import annotations

from html import escape

from careflow.experiment_stats import MIN_BUYERS
from careflow.insight.html import CSS, WIDTH, rect, svg, table, text

#: the control in grey, the other variants in turn, the held out in a light grey
PALETTE = ["#8c2981", "#de4968", "#fe9f6d", "#3b0f70", "#74c476"]
CONTROL, HELD = "#636363", "#bdbdbd"


def _label(report: dict, name: str) -> str:
    if name == "held_out":
        return "held out"
    return f"{name} (control)" if name == report["control"] else name


def _colour(report: dict, name: str) -> str:
    if name == "held_out":
        return HELD
    if name == report["control"]:
        return CONTROL
    others = [n for n in report["groups"] if n not in (report["control"], "held_out")]
    return PALETTE[others.index(name) % len(PALETTE)]


def conversion_chart(report: dict) -> str:
    """How many buy within the window, per group, as bars."""
    groups = report["groups"]
    most = max([g["conversion"] or 0 for g in groups.values()] + [1e-9])
    row, left = 40, 150
    span = WIDTH - left - 80
    parts = []
    for i, (name, g) in enumerate(groups.items()):
        y = 10 + i * row
        rate = g["conversion"] or 0
        w = span * rate / most
        tip = f"{_label(report, name)}: {g['converted']:,} of {g['customers']:,} bought"
        parts.append(text(left - 8, y + 14, _label(report, name), anchor="end"))
        parts.append(rect(left, y, w, 28, _colour(report, name), tip))
        shown = "-" if g["conversion"] is None else f"{rate:.2f}%"
        parts.append(text(left + w + 6, y + 14, shown))
    return svg("Bought within the window", 20 + row * len(groups), parts)


def forest_chart(title: str, rows: list[tuple[str, float, list | None, str]], unit: str) -> str:
    """Estimates with their intervals as points and whiskers across a zero line: each row
    (label, estimate, [lower, upper] or None, colour)."""
    ends = [abs(x) for _, d, ci, _ in rows for x in ([d, *(ci or [])])]
    reach = max(ends + [1e-9]) * 1.1
    row, left, right = 36, 170, 16
    span = WIDTH - left - right

    def at(x: float) -> float:
        return left + span * (x + reach) / (2 * reach)

    height = 30 + row * len(rows)
    parts = [
        f'<line x1="{at(0):.1f}" y1="4" x2="{at(0):.1f}" y2="{height - 22}" '
        'stroke="#999" stroke-dasharray="4 3"/>',
        text(at(0), height - 10, f"0 {unit}", anchor="middle", fill="#666"),
    ]
    for i, (label, d, ci, colour) in enumerate(rows):
        y = 18 + i * row
        parts.append(text(left - 8, y, label, anchor="end"))
        if ci is None:
            parts.append(text(at(d), y, "no interval yet", anchor="middle", fill="#666"))
            continue
        tip = f"{label}: {d:+,.2f} {unit} ({ci[0]:+,.2f} to {ci[1]:+,.2f})"
        parts.append(
            f'<line x1="{at(ci[0]):.1f}" y1="{y:.1f}" x2="{at(ci[1]):.1f}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-width="3"><title>{escape(tip)}</title></line>'
        )
        parts.append(
            f'<circle cx="{at(d):.1f}" cy="{y:.1f}" r="6" fill="{colour}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    return svg(title, height, parts)


def difference_chart(report: dict) -> str:
    rows = [
        (f"{name} vs {report['control']}", c["points"], c["ci"], _colour(report, name))
        for name, c in report["against_control"].items()
    ]
    rows += [
        (f"{name} vs held out", c["points"], c["ci"], _colour(report, name))
        for name, c in report["against_held_out"].items()
    ]
    return forest_chart("Difference in how many buy (always-valid intervals)", rows, "points")


def revenue_charts(report: dict) -> list[str]:
    currencies = sorted({c for g in report["groups"].values() for c in g["revenue_per_customer"]})
    charts = []
    for cur in currencies:
        rows = []
        for name, g in report["groups"].items():
            r = g["revenue_per_customer"].get(cur)
            if r is not None:
                rows.append((_label(report, name), r["mean"], r["ci"], _colour(report, name)))
        charts.append(forest_chart(f"Revenue per customer, {cur}", rows, cur))
    return charts


def _rows(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["group", "customers", "bought", "rate", "vs control (points)",
              "vs held out (points)"]  # fmt: skip
    rows = []
    for name, g in report["groups"].items():

        def diff(c: dict | None) -> str:
            if c is None:
                return "-"
            if c["ci"] is None:
                return "no interval yet"
            return f"{c['points']:+.2f} ({c['ci'][0]:+.2f} to {c['ci'][1]:+.2f})"

        rows.append(
            [
                _label(report, name),
                f"{g['customers']:,}",
                f"{g['converted']:,}",
                "-" if g["conversion"] is None else f"{g['conversion']:.2f}%",
                diff(report["against_control"].get(name)),
                diff(report["against_held_out"].get(name)),
            ]
        )
    return header, rows


def as_html(report: dict) -> str:
    """The whole page: the verdict, the charts, the table, the rule."""
    charts = "".join([conversion_chart(report), difference_chart(report), *revenue_charts(report)])
    level = f"{100 * report['level']:g}%"
    note = (
        f"Intervals are always-valid at {level}: they may be read every day "
        f"(docs/experiments.md). Revenue intervals appear once each group has {MIN_BUYERS} "
        "buyers. "
        f"The rule, set before the test: {report['rule']}."
        + (f" {report['held_out_note']}." if report.get("held_out_note") else "")
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(report['campaign'])}: experiment</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>{escape(report['campaign'])}: which variant pays more</h1>"
        f"<p><strong>{escape(report['verdict'])}.</strong></p>"
        f'<div class="charts">{charts}</div>'
        f'<div class="tables">{table("Each variant", *_rows(report))}</div>'
        f'<p class="note">{escape(note)}</p></body></html>'
    )

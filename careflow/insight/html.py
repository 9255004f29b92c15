"""The pyramid report as one standalone HTML page with charts (plotly, inlined).

Four charts: the pyramid, revenue share against customer share per tier,
the RFM heat map (recency x frequency) and tier movement as flows since the
previous date; then the report's tables. plotly.js is written into the page
itself, once, so the file opens offline and can be mailed as it is (about
5 MB); nothing is fetched from a CDN.

Like the other skins it only draws what ``PyramidReport`` holds.
"""

from __future__ import annotations

from html import escape

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from careflow.insight.pyramid import AFTER, BEFORE, PyramidReport
from careflow.insight.render import (
    grid_rows,
    headline,
    money_text,
    movement_rows,
    score_rows,
    summary_rows,
    tier_rows,
)

#: one colour per tier, darkest at the top; the outside states in greys
COLOURS = {
    "VIP": "#3b0f70",
    "Large": "#8c2981",
    "Medium": "#de4968",
    "Small": "#fe9f6d",
    "Inactive": "#9e9e9e",
    "Returning": "#bdbdbd",
    "New": "#74c476",
}
_LAYOUT = {
    "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
    "height": 360,
    "font": {"family": "system-ui, sans-serif", "size": 13},
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
}


def pyramid_figure(report: PyramidReport) -> go.Figure:
    tiers = report.tiers
    fig = go.Figure(
        go.Funnel(
            y=list(tiers["tier"]),
            x=list(tiers["customers"]),
            text=[f"{n:,} ({100 * s:.1f}%)" for n, s in
                  zip(tiers["customers"], tiers["customer_share"], strict=True)],
            textinfo="text",
            marker={"color": [COLOURS[t] for t in tiers["tier"]]},
            connector={"line": {"color": "#dddddd"}},
        )
    )
    fig.update_layout(title="Customer pyramid: buyers per tier", **_LAYOUT)
    return fig


def revenue_figure(report: PyramidReport) -> go.Figure:
    fig = go.Figure()
    for t in report.tiers.itertuples():
        fig.add_trace(
            go.Bar(
                name=t.tier,
                y=["of buyers", "of revenue"],
                x=[100 * t.customer_share, 100 * t.revenue_share],
                orientation="h",
                marker_color=COLOURS[t.tier],
                # a label only where it fits; the hover says it everywhere
                text=[f"{t.tier} {100 * share:.0f}%" if share >= 0.07 else ""
                      for share in (t.customer_share, t.revenue_share)],
                textposition="inside",
                textangle=0,
                insidetextanchor="middle",
                hovertemplate=f"{t.tier}: %{{x:.1f}}%<extra></extra>",
            )
        )
    fig.update_layout(
        title="Revenue share per tier against its share of buyers",
        barmode="stack",
        xaxis={"title": "%", "range": [0, 100]},
        legend={"orientation": "h", "y": -0.25},
        **_LAYOUT,
    )
    return fig


def rfm_figure(report: PyramidReport) -> go.Figure:
    grid = report.grid
    counts = grid.pivot(index="r_score", columns="f_score", values="customers")
    means = grid.pivot(index="r_score", columns="f_score", values="mean_monetary_minor")
    rows, cols = list(range(1, 6)), list(range(1, 6))  # plotly draws the first row lowest
    z = [[int(counts.loc[r, f]) for f in cols] for r in rows]
    spend = [[money_text(report, means.loc[r, f]) for f in cols] for r in rows]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"F{f}" for f in cols],
            y=[f"R{r}" for r in rows],
            text=[[f"{n:,}" for n in row] for row in z],
            texttemplate="%{text}",
            customdata=spend,
            hovertemplate="%{y} %{x}: %{z} customers, mean spend %{customdata}<extra></extra>",
            colorscale="Magma",
            reversescale=True,
            colorbar={"title": "customers"},
        )
    )
    fig.update_layout(
        title="RFM heat map: customers by recency and frequency score",
        xaxis={"title": "frequency score", "side": "bottom"},
        yaxis={"title": "recency score"},
        **_LAYOUT,
    )
    return fig


def movement_figure(report: PyramidReport) -> go.Figure:
    left = [b for b in BEFORE if (report.movement["before"] == b).any()]
    right = [a for a in AFTER if (report.movement["after"] == a).any()]
    index = {("L", b): i for i, b in enumerate(left)}
    index |= {("R", a): len(left) + i for i, a in enumerate(right)}
    links = report.movement[report.movement["customers"] > 0]
    rank = {t: i for i, t in enumerate(AFTER)}  # Inactive ranks below Small

    def colour(before: str, after: str) -> str:  # green up or in, red down or out
        if before not in rank:
            return "rgba(116,196,118,0.45)"
        step = rank[before] - rank[after]
        return ("rgba(49,163,84,0.5)" if step > 0 else "rgba(215,48,39,0.45)" if step < 0
                else "rgba(150,150,150,0.25)")

    fig = go.Figure(
        go.Sankey(
            arrangement="snap",
            node={
                "label": [f"{b} (then)" for b in left] + [f"{a} (now)" for a in right],
                "color": [COLOURS[b] for b in left] + [COLOURS[a] for a in right],
                "pad": 14,
            },
            link={
                "source": [index[("L", b)] for b in links["before"]],
                "target": [index[("R", a)] for a in links["after"]],
                "value": list(links["customers"]),
                "color": [colour(b, a) for b, a in
                          zip(links["before"], links["after"], strict=True)],
            },
        )
    )
    fig.update_layout(
        title=f"Tier movement since {report.previous.isoformat()} (green up, red down)",
        **(_LAYOUT | {"height": 420}),
    )
    return fig


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<section><h2>{escape(title)}</h2><table><tr>{head}</tr>{body}</table></section>"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1280px;
       color: #222; }
h1 { font-size: 20px; font-weight: 600; }
h2 { font-size: 16px; font-weight: 600; margin: 18px 0 6px; }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.chart { border: 1px solid #e5e5e5; border-radius: 6px; padding: 4px; }
.tables { display: grid; grid-template-columns: 1fr 1fr; gap: 0 24px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right;
         white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
p.note { font-size: 12px; color: #666; }
"""


def as_html(report: PyramidReport) -> str:
    """The whole page: headline, four charts, the tables, and how scores are made."""
    charts = [
        pyramid_figure(report),
        revenue_figure(report),
        rfm_figure(report),
        movement_figure(report),
    ]
    config = {"displayModeBar": False, "responsive": True}
    divs = "".join(
        '<div class="chart">'
        + fig.to_html(full_html=False, include_plotlyjs=False, config=config)
        + "</div>"
        for fig in charts
    )
    tables = "".join(
        _table(title, *rows(report))
        for title, rows in (
            ("Tiers", tier_rows),
            ("Movement", summary_rows),
            ("RFM scores and the raw values each holds", score_rows),
            ("RFM grid (customers)", grid_rows),
            ("Tier movement (rows: then, columns: now)", movement_rows),
        )
    )
    note = (
        "Tiers rank buyers by money spent in the window, ties kept in the higher tier. "
        "RFM scores are rank-based quintiles (each score a fifth of buyers; equal values "
        "ordered by a fixed pseudo-random order of customer ids). See docs/insight.md."
    )
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Customer pyramid {report.as_of.isoformat()}</title>"
        f"<style>{_CSS}</style><script>{get_plotlyjs()}</script></head><body>"
        f"<h1>{escape(headline(report))}</h1>"
        f'<div class="charts">{divs}</div><div class="tables">{tables}</div>'
        f'<p class="note">{escape(note)}</p></body></html>'
    )

"""The pyramid report as one standalone HTML page with charts (inline SVG).

Four charts: the pyramid, revenue share against customer share per tier,
the RFM heat map (recency x frequency) and tier movement as flows since the
previous date; then the report's tables. Each chart is drawn here as SVG
from the report's aggregates (a handful of numbers per chart, never a row
per customer), so the page is tens of kilobytes, opens offline and can be
mailed as it is: no script, nothing fetched. The SVGs scale to the width
they are given (``viewBox``), the charts and tables stack on a phone, and a
wide table scrolls inside its own box, so nothing makes the page wider than
the screen. Hovering a bar or a cell shows its numbers (SVG ``<title>``).

Like the other skins it only draws what ``PyramidReport`` holds.
"""

from __future__ import annotations

import base64
import re
from html import escape

from careflow.insight.pyramid import AFTER, BEFORE, PyramidReport
from careflow.insight.render import (
    currency_line,
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
#: the width every chart is drawn at; it scales to its box (``viewBox``)
WIDTH = 520
_FONT = 'font-family="system-ui, sans-serif" font-size="14"'


def svg(title: str, height: int, parts: list[str]) -> str:
    """One chart: a titled figure whose SVG scales to the width of its box."""
    return (
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" {_FONT}>{"".join(parts)}</svg></figure>'
    )


def rect(x: float, y: float, w: float, h: float, fill: str, tip: str) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{h:.1f}" '
        f'fill="{fill}"><title>{escape(tip)}</title></rect>'
    )


def text(x: float, y: float, text: str, *, anchor: str = "start", fill: str = "#222",
          weight: str = "normal") -> str:  # fmt: skip
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}" '
        f'font-weight="{weight}" dominant-baseline="middle">{escape(text)}</text>'
    )


def pyramid_chart(report: PyramidReport) -> str:
    """Buyers per tier, one centred bar each, the top tier at the top."""
    tiers = list(report.tiers.itertuples())
    most = max([t.customers for t in tiers] + [1])
    row, left, span = 52, 110, WIDTH - 110 - 10
    parts = []
    for i, t in enumerate(tiers):
        y = 10 + i * row
        w = max(span * t.customers / most, 2 if t.customers else 0)
        label = f"{t.customers:,} ({100 * t.customer_share:.1f}%)"
        parts.append(text(0, y + row / 2 - 4, t.tier, weight="600"))
        parts.append(rect(left + (span - w) / 2, y, w, row - 8, COLOURS[t.tier],
                           f"{t.tier}: {label} buyers"))  # fmt: skip
        if w > 8 * len(label):  # inside the bar, else beside it
            parts.append(text(left + span / 2, y + row / 2 - 4, label, anchor="middle",
                               fill="white"))  # fmt: skip
        else:
            parts.append(text(left + (span + w) / 2 + 6, y + row / 2 - 4, label))
    return svg("Customer pyramid: buyers per tier", 10 + len(tiers) * row, parts)


def revenue_chart(report: PyramidReport) -> str:
    """Two stacked bars: each tier's share of buyers and its share of revenue."""
    left, span, bar = 90, WIDTH - 90 - 10, 44
    parts = []
    tiers = list(report.tiers.itertuples())
    for i, (name, field) in enumerate((("of buyers", "customer_share"),
                                       ("of revenue", "revenue_share"))):  # fmt: skip
        y, x = 10 + i * (bar + 16), float(left)
        parts.append(text(0, y + bar / 2, name))
        for t in tiers:
            share = float(getattr(t, field))
            w = span * share
            tip = f"{t.tier}: {100 * share:.1f}% {name}"
            parts.append(rect(x, y, w, bar, COLOURS[t.tier], tip))
            label = f"{t.tier} {100 * share:.0f}%"
            if w > 9 * len(label):  # a label only where it fits; the tip says it everywhere
                parts.append(text(x + w / 2, y + bar / 2, label, anchor="middle",
                                   fill="white"))  # fmt: skip
            x += w
    y = 10 + 2 * (bar + 16) + 6
    for i, t in enumerate(tiers):  # the legend
        x = left + i * (span / max(len(tiers), 1))
        parts.append(rect(x, y, 12, 12, COLOURS[t.tier], t.tier))
        parts.append(text(x + 17, y + 6, t.tier))
    return svg("Revenue share per tier against its share of buyers", y + 22, parts)


#: the heat map's ramp, few customers to many (magma's light end to its dark end)
_RAMP = ((252, 253, 191), (254, 159, 109), (222, 73, 104), (140, 41, 129), (59, 15, 112))


def _heat(share: float) -> tuple[str, str]:
    """A cell's fill (light for few customers, dark for many) and its text colour."""
    at = min(max(share, 0.0), 1.0) * (len(_RAMP) - 1)
    i = min(int(at), len(_RAMP) - 2)
    low, high, t = _RAMP[i], _RAMP[i + 1], at - i
    rgb = [round(a + (b - a) * t) for a, b in zip(low, high, strict=True)]
    return "#{:02x}{:02x}{:02x}".format(*rgb), "white" if share > 0.5 else "#222"


def rfm_chart(report: PyramidReport) -> str:
    """Customers per recency x frequency cell, R5 at the top, F1 to F5 across."""
    grid = report.grid.set_index(["r_score", "f_score"])
    most = max(int(grid["customers"].max()) if len(grid) else 0, 1)
    left, top, cell_w, cell_h = 50, 6, (WIDTH - 60) / 5, 48
    parts = []
    for i, r in enumerate(range(5, 0, -1)):
        y = top + i * cell_h
        parts.append(text(0, y + cell_h / 2, f"R{r}", weight="600"))
        for j, f in enumerate(range(1, 6)):
            n = int(grid.loc[(r, f), "customers"])
            fill, ink = _heat((n / most) ** 0.5)
            mean = money_text(report, grid.loc[(r, f), "mean_monetary_minor"])
            x = left + j * cell_w
            parts.append(rect(x, y, cell_w - 2, cell_h - 2, fill,
                               f"R{r} F{f}: {n:,} customers, mean spend {mean}"))  # fmt: skip
            parts.append(text(x + cell_w / 2, y + cell_h / 2, f"{n:,}", anchor="middle",
                               fill=ink))  # fmt: skip
    y = top + 5 * cell_h + 12
    for j, f in enumerate(range(1, 6)):
        parts.append(text(left + j * cell_w + cell_w / 2, y, f"F{f}", anchor="middle",
                           weight="600"))  # fmt: skip
    parts.append(text(left + 5 * cell_w / 2, y + 20, "frequency score across, recency down",
                       anchor="middle", fill="#666"))  # fmt: skip
    return svg("RFM heat map: customers by recency and frequency score", y + 32, parts)


def _flow_colour(before: str, after: str) -> str:
    """Green up or in, red down or out, grey for the same tier."""
    rank = {t: i for i, t in enumerate(AFTER)}  # Inactive ranks below Small
    if before not in rank:
        return "rgba(116,196,118,0.5)"
    step = rank[before] - rank[after]
    return ("rgba(49,163,84,0.55)" if step > 0 else "rgba(215,48,39,0.5)" if step < 0
            else "rgba(150,150,150,0.3)")  # fmt: skip


def movement_chart(report: PyramidReport) -> str:
    """Tier then (left) to tier now (right), each band as wide as the customers it carries."""
    links = report.movement[report.movement["customers"] > 0]
    left = [b for b in BEFORE if (links["before"] == b).any()]
    right = [a for a in AFTER if (links["after"] == a).any()]
    total = int(links["customers"].sum())
    height, pad, node_w, label_w, top = 300, 14, 14, 118, 12
    title = f"Tier movement since {report.previous.isoformat()} (green up, red down)"
    if not total:
        return svg(title, 40, [text(WIDTH / 2, 20, "no buyers at either date", anchor="middle")])
    scale = (height - 2 * top - pad * max(len(left), len(right), 1)) / total
    x0, x1 = label_w, WIDTH - label_w - node_w

    def stack(names, side):
        tops, y = {}, float(top)
        for name in names:
            n = int(links.loc[links[side] == name, "customers"].sum())
            tops[name] = (y, n)
            y += n * scale + pad
        return tops

    l_nodes, r_nodes = stack(left, "before"), stack(right, "after")
    parts = []
    l_used = dict.fromkeys(left, 0.0)
    r_used = dict.fromkeys(right, 0.0)
    order = sorted(links.itertuples(), key=lambda r: (left.index(r.before), right.index(r.after)))
    bands = []
    for link in order:
        w = link.customers * scale
        ys = l_nodes[link.before][0] + l_used[link.before]
        l_used[link.before] += w
        bands.append((link, ys, w))
    for link, ys, w in sorted(bands, key=lambda b: (right.index(b[0].after),
                                                    left.index(b[0].before))):  # fmt: skip
        yt = r_nodes[link.after][0] + r_used[link.after]
        r_used[link.after] += w
        xa, xb, mid = x0 + node_w, x1, (x0 + node_w + x1) / 2
        path = (f"M{xa:.1f},{ys:.1f} C{mid:.1f},{ys:.1f} {mid:.1f},{yt:.1f} {xb:.1f},{yt:.1f} "
                f"L{xb:.1f},{yt + w:.1f} C{mid:.1f},{yt + w:.1f} {mid:.1f},{ys + w:.1f} "
                f"{xa:.1f},{ys + w:.1f} Z")  # fmt: skip
        tip = f"{link.before} then, {link.after} now: {int(link.customers):,} customers"
        parts.append(f'<path d="{path}" fill="{_flow_colour(link.before, link.after)}">'
                     f"<title>{escape(tip)}</title></path>")  # fmt: skip
    for name, (y, n) in l_nodes.items():
        parts.append(rect(x0, y, node_w, max(n * scale, 1), COLOURS[name], f"{name} then: {n:,}"))
        parts.append(text(x0 - 6, y + n * scale / 2, f"{name} {n:,}", anchor="end"))
    for name, (y, n) in r_nodes.items():
        parts.append(rect(x1, y, node_w, max(n * scale, 1), COLOURS[name], f"{name} now: {n:,}"))
        parts.append(text(x1 + node_w + 6, y + n * scale / 2, f"{name} {n:,}"))
    return svg(title, height, parts)

def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<section><h2>{escape(title)}</h2><table><tr>{head}</tr>{body}</table></section>"


CSS = """
*, *::before, *::after { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; margin: 16px auto; padding: 0 12px;
       max-width: 1280px; color: #222; }
h1 { font-size: 20px; font-weight: 600; overflow-wrap: anywhere; }
h2 { font-size: 16px; font-weight: 600; margin: 18px 0 6px; }
p { overflow-wrap: anywhere; }
.charts { display: grid; gap: 12px;
          grid-template-columns: repeat(auto-fit, minmax(min(100%, 460px), 1fr)); }
.charts > * { min-width: 0; }
.tables { display: flex; flex-wrap: wrap; gap: 0 32px; }
.tables > section { max-width: 100%; }
.chart { margin: 0; border: 1px solid #e5e5e5; border-radius: 6px; padding: 8px; }
.chart figcaption { font-weight: 600; font-size: 14px; margin-bottom: 6px; }
svg { display: block; width: 100%; height: auto; max-width: 100%; }
section { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right;
         white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
p.note { font-size: 12px; color: #666; }
"""


def charts(report: PyramidReport) -> list[str]:
    """The four charts, each a titled figure with its SVG."""
    return [chart(report) for chart in (pyramid_chart, revenue_chart, rfm_chart, movement_chart)]


_FIGURE = re.compile(r"<figcaption>(.*?)</figcaption>(<svg .*</svg>)", re.DOTALL)


def charts_markdown(report: PyramidReport) -> str:
    """The four charts as markdown images (:func:`figures_markdown`)."""
    return figures_markdown(charts(report))


def figures_markdown(figures: list[str]) -> str:
    """Charts drawn by :func:`svg` as markdown images, each SVG a ``data:`` URI inside
    the text.

    This is how the charts reach the Prefect UI: an artifact is text kept by the
    Prefect server, which the UI renders as markdown, images included, so the
    pyramid-report artifact shows the charts wherever the UI is opened, with no file
    on a worker's disk to fetch. (A hover's ``<title>`` does not survive in an image.)
    """
    out = []
    for figure in figures:
        caption, drawing = _FIGURE.search(figure).groups()
        data = base64.b64encode(drawing.encode("utf-8")).decode("ascii")
        alt = caption.replace("[", "(").replace("]", ")")
        out.append(f"![{alt}](data:image/svg+xml;base64,{data})")
    return "\n\n".join(out)


def as_html(report: PyramidReport) -> str:
    """The whole page: headline, four charts, the tables, and how scores are made."""
    figures = "".join(charts(report))
    tables = "".join(
        table(title, *rows(report))
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
    money = currency_line(report)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Customer pyramid {report.as_of.isoformat()}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>{escape(headline(report))}</h1>"
        + (f"<p>{escape(money)}</p>" if money else "")
        + f'<div class="charts">{figures}</div><div class="tables">{tables}</div>'
        f'<p class="note">{escape(note)}</p></body></html>'
    )

"""A campaign's send-time comparison as one standalone HTML page with charts (inline SVG).

Two charts, drawn from the report's data (careflow/send_time_report.py), never
from a row per customer: how many buy in each arm (best hour, fixed time) as a
bar with its 95% interval; and the difference, best hour minus fixed time, as a
point with its interval across the zero line. Then the arms' counts and the
verdict. No script, nothing fetched: the page opens offline and can be mailed,
like the pyramid's and the experiment's (careflow/insight/html.py draws, and
careflow/insight/experiment_html.py draws the interval across zero).
"""

from __future__ import annotations

from html import escape

from careflow.insight.experiment_html import forest_chart
from careflow.insight.html import CSS, WIDTH, rect, svg, table, text
from careflow.policy.send_time import BEST, FIXED

#: each arm's label and colour, in the order shown
ARMS = {BEST: ("best hour", "#de4968"), FIXED: ("fixed time", "#636363")}


def conversion_chart(report: dict) -> str:
    """How many buy within the window, per arm, as bars with their 95% interval."""
    arms = report["arms"]
    most = max([(a["conversion_ci"] or [0, 0])[1] for a in arms.values()] + [1e-9])
    row, left = 40, 110
    span = WIDTH - left - 170  # room for "12.2% (7.4 to 19.4)" after the widest interval

    def at(x: float) -> float:
        return left + span * x / most

    parts = []
    for i, (arm, (label, colour)) in enumerate(ARMS.items()):
        a = arms[arm]
        y = 10 + i * row
        rate = a["conversion"] or 0
        tip = f"{label}: {a['converted']:,} of {a['customers']:,} bought"
        parts.append(text(left - 8, y + 14, label, anchor="end"))
        parts.append(rect(left, y, at(rate) - left, 28, colour, tip))
        if a["conversion_ci"] is not None:
            lo, hi = a["conversion_ci"]
            parts.append(
                f'<line x1="{at(lo):.1f}" y1="{y + 14}" x2="{at(hi):.1f}" y2="{y + 14}" '
                'stroke="#222" stroke-width="2"/>'
            )
            shown = f"{rate:.1f}% ({lo:.1f} to {hi:.1f})"
            parts.append(text(at(hi) + 6, y + 14, shown))
        else:
            parts.append(text(left + 6, y + 14, "nobody sent yet", fill="#666"))
    return svg("Bought within the window (95% intervals)", 20 + row * len(ARMS), parts)


def difference_chart(report: dict) -> str:
    """Best hour minus fixed time, in points, with its 95% interval across zero."""
    diff = report["difference"]
    if diff is None:
        rows = [("best - fixed", 0.0, None, ARMS[BEST][1])]
    else:
        rows = [("best - fixed", diff["points"], diff["ci"], ARMS[BEST][1])]
    return forest_chart("Difference in how many buy (95% interval)", rows, "points")


def charts(report: dict) -> list[str]:
    """The two charts, each a titled figure with its SVG."""
    return [conversion_chart(report), difference_chart(report)]


def _rows(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["arm", "sent", "bought", "rate (95% CI)", "waiting", "not sent"]
    rows = []
    for arm, (label, _) in ARMS.items():
        a = report["arms"][arm]
        rate = "-"
        if a["conversion"] is not None:
            lo, hi = a["conversion_ci"]
            rate = f"{a['conversion']:.1f}% ({lo:.1f} to {hi:.1f})"
        rows.append([label, f"{a['customers']:,}", f"{a['converted']:,}", rate,
                     f"{a['waiting']:,}", f"{a['not_sent']:,}"])  # fmt: skip
    return header, rows


def as_html(report: dict) -> str:
    """The whole page: the verdict, the charts, the arms' table."""
    note = (
        f"Orders within {report['window_days']} days of the run taking each customer up, "
        "whatever caused them; both arms are contacted, so this measures the timing, not "
        "the contact (docs/policy.md, send-time optimisation)."
    )
    title = f"{report['campaign']}: does the best hour pay?"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(report['campaign'])}: send time</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"<p><strong>{escape(report['verdict'])}.</strong></p>"
        f'<div class="charts">{"".join(charts(report))}</div>'
        f'<div class="tables">{table("Each arm", *_rows(report))}</div>'
        f'<p class="note">{escape(note)}</p></body></html>'
    )

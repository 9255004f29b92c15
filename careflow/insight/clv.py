"""The customer value report: historical and predicted value per customer, and the matrix.

Computed once (``clv_report``) from the clv segment's own scoring
(careflow/segments/clv.py: the same fit and the same quadrants a campaign selects
by), then shown as text, JSON or CSV. Per customer: what they spent in the
window, P(alive), expected purchases and predicted value over the horizon,
each with a bootstrap interval (careflow/clv.py says how it is made).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, select

from careflow.csv_export import write_frame
from careflow.db.models import Customer
from careflow.insight.currency import CurrencyChoice, choose_currency
from careflow.money import check_stored_amounts, exponent, from_minor
from careflow.report import text_table
from careflow.segments.clv import QUADRANTS, score_customers

#: the per-customer columns the report keeps, in order
CUSTOMER_COLUMNS = [
    "customer_id", "ref", "quadrant", "historical_minor", "predicted_minor",
    "predicted_low_minor", "predicted_high_minor", "p_alive", "p_alive_low", "p_alive_high",
    "expected_purchases", "expected_purchases_low", "expected_purchases_high",
    "expected_spend", "purchase_days", "days_since", "x", "t_x", "T", "mean_spend",
]  # fmt: skip
DEFAULT_DRAWS = 30


@dataclass(frozen=True)
class ClvReport:
    """Everything the value report shows, as data. Money in minor units of ``currency``."""

    as_of: date
    params: dict
    fit: dict
    currency: str | None
    #: quadrant, customers, share, historical_minor, predicted_minor
    matrix: pd.DataFrame
    #: CUSTOMER_COLUMNS, one row per customer who bought on or before as-of
    customers: pd.DataFrame
    #: which currency the report is in, why, and the orders in others it leaves out
    currency_choice: CurrencyChoice | None = None


def clv_report(
    engine: Engine,
    as_of: date,
    *,
    params: dict | None = None,
    draws: int = DEFAULT_DRAWS,
    main_currency: str | None = None,
) -> ClvReport:
    """Score every customer (``draws`` bootstrap refits for the intervals; 0: none).

    Without a ``currency`` parameter the model is fitted on the shop's ``main_currency``,
    else the currency with the most revenue, and says so (careflow/insight/currency.py)."""
    with engine.connect() as conn:
        check_stored_amounts(conn)  # one line naming an order no sum can hold
        asked = (params or {}).get("currency")
        choice = choose_currency(
            conn, as_of, window_days=None, asked=asked.upper() if isinstance(asked, str)
            else None, main=main_currency,
        )  # fmt: skip
        if choice.code and not asked:
            params = {**(params or {}), "currency": choice.code}
        frame, fit = score_customers(conn, as_of, params, draws=draws)
        refs = dict(conn.execute(select(Customer.id, Customer.external_ref)).all())
    scale = 10 ** _exponent(fit["currency"])
    frame["ref"] = frame["customer_id"].map(refs)
    for bound in ("low", "high"):
        frame[f"predicted_{bound}_minor"] = (frame[f"predicted_value_{bound}"] * scale).round()
        frame[f"predicted_{bound}_minor"] = frame[f"predicted_{bound}_minor"].astype("Int64")
    customers = frame[CUSTOMER_COLUMNS].reset_index(drop=True)
    grouped = customers.groupby("quadrant")
    matrix = pd.DataFrame(
        {
            "customers": grouped.size(),
            "historical_minor": grouped["historical_minor"].sum(),
            "predicted_minor": grouped["predicted_minor"].sum(),
        }
    ).reindex(list(QUADRANTS), fill_value=0)
    matrix["share"] = matrix["customers"] / max(len(customers), 1)
    matrix = matrix.rename_axis("quadrant").reset_index()
    matrix = matrix[["quadrant", "customers", "share", "historical_minor", "predicted_minor"]]
    shown = {k: v for k, v in (params or {}).items() if k not in ("members", "fit", "quadrants")}
    return ClvReport(as_of, shown, fit, fit["currency"], matrix, customers, choice)


def _exponent(currency: str | None) -> int:
    return exponent(currency) if currency else 0


def money(report: ClvReport, minor) -> str:
    """An amount in minor units as text in the report's currency; '-' for none."""
    if minor is None or pd.isna(minor):
        return "-"
    value = from_minor(int(minor), report.currency) if report.currency else int(minor)
    return f"{value:,}"


def headline(report: ClvReport) -> str:
    bg, gg = report.fit["bgnbd"], report.fit["gamma_gamma"]
    return (
        f"Customer value as of {report.as_of.isoformat()} ({report.currency or 'no currency'}): "
        f"{report.fit['customers']:,} customers. BG/NBD r={bg['r']:.3g} alpha={bg['alpha']:.3g} "
        f"a={bg['a']:.3g} b={bg['b']:.3g} (days); Gamma-Gamma p={gg['p']:.3g} q={gg['q']:.3g} "
        f"gamma={gg['gamma']:.4g}; intervals from {report.fit['bootstrap_draws']} bootstrap refits"
    )


def matrix_rows(report: ClvReport) -> tuple[list[str], list[list[str]]]:
    window = report.params.get("window_days", 365)
    horizon = report.fit["horizon_days"]
    header = ["quadrant", "customers", "share", f"spent, last {window} d",
              f"predicted, next {horizon} d"]
    return header, [
        [m.quadrant, f"{m.customers:,}", f"{100 * m.share:.1f}%",
         money(report, m.historical_minor), money(report, m.predicted_minor)]
        for m in report.matrix.itertuples()
    ]


def customer_rows(report: ClvReport, limit: int | None = None) -> tuple[list[str], list[list[str]]]:
    """Customers by predicted value, highest first."""
    header = ["customer", "ref", "quadrant", "spent", "predicted (interval)",
              "P(alive) (interval)", "purchases (interval)"]
    ordered = report.customers.sort_values(["predicted_minor", "customer_id"],
                                           ascending=[False, True])
    if limit:
        ordered = ordered.head(limit)

    def interval(low, high, show):
        return "" if pd.isna(low) else f" ({show(low)} - {show(high)})"

    rows = []
    for c in ordered.itertuples():
        rows.append([
            str(c.customer_id), c.ref or "", c.quadrant, money(report, c.historical_minor),
            money(report, c.predicted_minor)
            + interval(c.predicted_low_minor, c.predicted_high_minor,
                       lambda v: money(report, v)),
            f"{c.p_alive:.3f}" + interval(c.p_alive_low, c.p_alive_high, lambda v: f"{v:.3f}"),
            f"{c.expected_purchases:.2f}"
            + interval(c.expected_purchases_low, c.expected_purchases_high,
                       lambda v: f"{v:.2f}"),
        ])
    return header, rows



def currency_line(report: ClvReport) -> str:
    """Which currency, why, and what it leaves out: ``Money in CNY (...)``."""
    choice = report.currency_choice
    return f"Money {choice.note()}" if choice else ""


def as_text(report: ClvReport, customers: int | None = 10) -> str:
    """The fit, the value matrix and its cut-offs, and the top customers (0: all)."""
    parts = [headline(report), currency_line(report), "",
             "Value matrix (high: top share by current and by predicted value, above zero)",
             text_table(*matrix_rows(report))]
    parts.append(
        f"high current value: spent at least {money(report, report.fit['current_cut_minor'])}; "
        f"high predicted value: at least {money(report, report.fit['future_cut_minor'])}"
    )
    title = "Customers by predicted value" + (f" (top {customers})" if customers else "")
    parts += ["", title, text_table(*customer_rows(report, customers or None))]
    return "\n".join(parts)


def _records(frame: pd.DataFrame) -> list[dict]:
    clean = frame.astype(object).where(frame.notna(), None)
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in clean.to_dict("records")]


def as_dict(report: ClvReport, customers: bool = False) -> dict:
    out = {
        "as_of": report.as_of.isoformat(),
        "parameters": report.params,
        "currency": report.currency,
        "currency_choice": report.currency_choice.as_dict() if report.currency_choice else None,
        "fit": report.fit,
        "matrix": _records(report.matrix),
    }
    if customers:
        out["customers"] = _records(report.customers)
    return out


def as_json(report: ClvReport, customers: bool = False) -> str:
    return json.dumps(as_dict(report, customers), indent=2, ensure_ascii=False)


def write_csv(report: ClvReport, folder: Path) -> list[Path]:
    """matrix.csv, customers.csv and fit.json in ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "matrix.csv", folder / "customers.csv", folder / "fit.json"]
    write_frame(report.matrix, written[0])
    write_frame(report.customers, written[1])
    written[2].write_text(json.dumps(report.fit, indent=2), encoding="utf-8")
    return written

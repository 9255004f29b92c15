"""Independent pandas reference for the dormant and reorder-due segments.

The SQL segments in careflow/segments/ are cross-checked against these functions on the
real UCI Online Retail file. To be a real cross-check this module shares no
code with the importer or the segments: it reads the CSV itself and follows
the written rules only.

Rules (as_of is a calendar date):

- purchases: rows with a CustomerID, an InvoiceNo not starting with "C",
  Quantity > 0 and InvoiceDate's date <= as_of. Purchase days are the distinct
  calendar dates per customer.
- dormant(as_of, days): customers with a purchase day <= as_of whose last
  purchase day is more than ``days`` days before as_of.
- reorder_due(as_of): customers with at least 3 distinct purchase days; m is
  the median gap in days between consecutive purchase days (mean of the two
  middle gaps when their count is even); s = days since the last purchase
  day; due when m <= s < 2 * m.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import pandas as pd


def _customer_key(raw: str) -> str:
    """'17850.0' and '17850' name the same customer (spreadsheets add '.0')."""
    raw = raw.strip()
    head, dot, tail = raw.partition(".")
    if dot and tail.strip("0") == "" and head:
        return head
    return raw


@lru_cache(maxsize=4)
def _purchase_days(path: str) -> pd.DataFrame:
    """Distinct (customer, day) purchase pairs of the whole file, as_of applied later."""
    df = pd.read_csv(
        path,
        dtype=str,
        usecols=["InvoiceNo", "Quantity", "InvoiceDate", "CustomerID"],
        keep_default_na=False,
    )
    customer = df["CustomerID"].str.strip()
    quantity = pd.to_numeric(df["Quantity"], errors="coerce")
    keep = (customer != "") & ~df["InvoiceNo"].str.startswith("C") & (quantity > 0)
    days = pd.DataFrame(
        {
            "customer": customer[keep].map(_customer_key),
            # Only the calendar day matters; the time of day never moves a purchase.
            "day": pd.to_datetime(df.loc[keep, "InvoiceDate"].str[:10], format="%Y-%m-%d"),
        }
    )
    return days.drop_duplicates().sort_values(["customer", "day"]).reset_index(drop=True)


def _days_until(path: str | Path, as_of: date) -> pd.DataFrame:
    days = _purchase_days(str(path))
    return days[days["day"] <= pd.Timestamp(as_of)]


def reference_dormant(path: str | Path, as_of: date, days: int = 180) -> set[str]:
    """CustomerIDs whose last purchase day is more than ``days`` days before ``as_of``."""
    purchases = _days_until(path, as_of)
    last = purchases.groupby("customer")["day"].max()
    since = (pd.Timestamp(as_of) - last).dt.days
    return set(since[since > days].index)


def reference_reorder_due(path: str | Path, as_of: date) -> set[str]:
    """CustomerIDs with >= 3 purchase days and median gap m <= days since last < 2m."""
    due: set[str] = set()
    stamp = pd.Timestamp(as_of)
    for customer, group in _days_until(path, as_of).groupby("customer"):
        days = list(group["day"])
        if len(days) < 3:
            continue
        gaps = sorted((b - a).days for a, b in pairwise(days))
        mid = len(gaps) // 2
        median = gaps[mid] if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) / 2
        since = (stamp - days[-1]).days
        if median <= since < 2 * median:
            due.add(str(customer))
    return due

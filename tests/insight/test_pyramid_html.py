"""The pyramid's HTML page as a person opens it: small enough to mail, and readable on a
phone (headless Chromium at 390 pixels, tests/browser.py)."""

from __future__ import annotations

from datetime import date

import pytest

from careflow.demo.data import seed_demo
from careflow.insight.html import as_html
from careflow.insight.pyramid import pyramid_report
from tests.test_email_layout import browser  # noqa: F401 - the shared headless Chromium

AS_OF = date(2026, 11, 22)
#: what the page may weigh: it carried plotly.js inline, 4.85 MB for the demo's shop
MAX_BYTES = 60_000


@pytest.fixture
def demo_page(engine, tmp_path):
    """The page for a 2,000-customer demo shop (several currencies, every tier, movement)."""
    seed_demo(engine, as_of=AS_OF, customers=2_000)
    report = pyramid_report(engine, AS_OF)
    path = tmp_path / "pyramid.html"
    path.write_text(as_html(report), encoding="utf-8")
    return report, path


def test_the_page_is_small_and_draws_aggregates_only(demo_page):
    """Regression: the page inlined 4.6 MB of plotly.js. Now four SVG charts drawn from the
    report's aggregates: no script, and its size does not grow with the customers."""
    report, path = demo_page
    page = path.read_text(encoding="utf-8")
    assert len(page.encode()) < MAX_BYTES, len(page.encode())
    assert "<script" not in page and page.count("<svg") == 4
    assert report.buyers > 500
    refs = [r for r in report.customers["ref"].dropna()][:50]
    assert not any(f">{ref}<" in page for ref in refs)  # no row per customer


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_page_fits_a_phone(demo_page, browser):  # noqa: F811
    """Regression: the page laid out 1,051 px wide on a 390 px phone (no viewport, fixed
    chart widths). Now nothing is wider than the screen; charts scale to it."""
    _, path = demo_page
    browser.open(path, 390, 844, mobile=True)
    width, inner = browser.evaluate(
        "[document.scrollingElement.scrollWidth, window.innerWidth]"
    )
    assert inner == 390 and width <= inner, (width, inner)
    charts = browser.evaluate(
        "[...document.querySelectorAll('svg')].map(s => s.getBoundingClientRect().width)"
    )
    assert len(charts) == 4 and all(200 < w <= 390 for w in charts), charts
    browser.open(path, 1280, 900, mobile=False)  # on a desktop, charts side by side
    tops = browser.evaluate(
        "[...document.querySelectorAll('svg')].map(s => s.getBoundingClientRect().top)"
    )
    assert tops[0] == tops[1] and tops[2] == tops[3], tops

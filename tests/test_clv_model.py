"""The CLV models against their published results on the CDNOW sample.

Data: the CDNOW summary (2,357 customers of the first quarter of 1997, 39
weeks of repeat purchases: x, t_x, T and the mean repeat spend zbar) as
Fader, Hardie and Lee published it with "Counting your customers the easy
way" (Marketing Science 24(2), 2005) and Fader and Hardie with "The
Gamma-Gamma model of monetary value" (2013). It is read from the copy the
Lifetimes package ships on PyPI (a test dependency for this file only); no
code of that package is used.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from careflow.clv import BgNbd, fit_bgnbd, fit_gamma_gamma, predict
from careflow.errors import DataError


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    try:
        path = distribution("Lifetimes").locate_file(
            "lifetimes/datasets/cdnow_customers_summary_with_transactions.csv"
        )
    except PackageNotFoundError:
        pytest.skip("the Lifetimes package (the CDNOW sample's copy) is not installed")
    frame = pd.read_csv(path)
    assert len(frame) == 2_357 and frame["x"].sum() == 2_457  # the published sample
    return frame


@pytest.fixture(scope="module")
def fitted(cdnow):
    return fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"]), fit_gamma_gamma(
        cdnow["x"], cdnow["zbar"]
    )


def test_bgnbd_reproduces_the_published_cdnow_estimates(fitted):
    bg, _ = fitted
    # Fader, Hardie and Lee (2005), section 5: r=0.243, alpha=4.414, a=0.793, b=2.426, LL=-9582.4
    assert (round(bg.r, 3), round(bg.alpha, 3), round(bg.a, 3), round(bg.b, 3)) == (
        0.243, 4.414, 0.793, 2.426)
    assert bg.log_likelihood == pytest.approx(-9582.4, abs=0.05)


def test_gamma_gamma_reproduces_the_published_cdnow_estimates(fitted):
    _, gg = fitted
    # Fader and Hardie (2013): p=6.25, q=3.74, gamma=15.44
    assert (round(gg.p, 2), round(gg.q, 2), round(gg.gamma, 2)) == pytest.approx(
        (6.25, 3.74, 15.44), abs=0.011)
    assert gg.customers == 946  # customers with repeat purchases


def test_conditional_expectation_matches_the_paper_and_an_integral(fitted):
    bg, _ = fitted
    # the paper's worked example: x=2, t_x=30.43, T=38.86 expects 1.226 purchases in 39 weeks
    assert float(bg.expected_purchases(39, 2, 30.43, 38.86)) == pytest.approx(1.226, abs=5e-4)

    # and independently of 2F1: alive customers' rate and dropout given the data are
    # Gamma(r+x, alpha+T) and Beta(a, b+x); E[purchases in t | alive, p] integrated over p
    def by_integral(x, t_x, T, t=39.0):
        beta = stats.beta(bg.a, bg.b + x)

        def inner(p):
            mean = (1 - (1 + p * t / (bg.alpha + T)) ** -(bg.r + x)) / p
            return mean * beta.pdf(p)

        alive_mean, _ = integrate.quad(inner, 0, 1, limit=200)
        return float(bg.p_alive(x, t_x, T)) * alive_mean

    for x, t_x, T in [(0, 0, 38.86), (1, 1.71, 38.86), (5, 20.0, 30.0), (12, 35.0, 38.0)]:
        assert float(bg.expected_purchases(39, x, t_x, T)) == pytest.approx(
            by_integral(x, t_x, T), rel=1e-6)


def test_p_alive_follows_the_closed_form():
    bg = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
    assert float(bg.p_alive(0, 0, 38.86)) == 1.0  # no repeat purchase: never dropped out
    want = 1 / (1 + 0.793 / (2.426 + 2 - 1) * ((4.414 + 38.86) / (4.414 + 30.43)) ** (0.243 + 2))
    assert float(bg.p_alive(2, 30.43, 38.86)) == pytest.approx(want, rel=1e-12)
    # the longer since the last purchase, the less likely alive
    assert bg.p_alive(3, 5.0, 38.0) < bg.p_alive(3, 30.0, 38.0)


def test_bootstrap_intervals_hold_the_estimate_and_repeat_exactly(cdnow, fitted):
    bg, gg = fitted
    sample = cdnow.iloc[:6]
    args = (bg, gg, 39, cdnow["x"], cdnow["t_x"], cdnow["T"], cdnow["zbar"])
    first = predict(*args, draws=12, seed=3)
    again = predict(*args, draws=12, seed=3)
    for name in ("p_alive", "expected_purchases", "predicted_value"):
        assert np.array_equal(first[f"{name}_low"], again[f"{name}_low"])
        low, mid, high = (first[f"{name}{s}"][sample.index] for s in ("_low", "", "_high"))
        # percentile intervals of refits: around the estimate (not always strictly
        # holding it: a 5% quantile of 12 refits can sit a hair above it)
        assert np.all(low <= high) and np.all(low <= mid * 1.03) and np.all(high >= mid * 0.97)
    repeaters = sample.index[sample["x"] > 0]
    assert np.all(first["predicted_value_high"][repeaters] > first["predicted_value_low"][repeaters])
    none = predict(*args, draws=0)
    assert np.isnan(none["predicted_value_low"]).all()
    assert np.array_equal(none["predicted_value"], first["predicted_value"])


def test_too_little_data_is_a_data_error():
    with pytest.raises(DataError, match="at least 10 customers"):
        fit_bgnbd([0, 1, 2], [0, 3, 4], [10, 10, 10])
    with pytest.raises(DataError, match="Gamma-Gamma needs"):
        fit_gamma_gamma([0] * 20, [0.0] * 20)

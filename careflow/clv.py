"""Customer lifetime value: the BG/NBD and Gamma-Gamma models, fitted by maximum likelihood.

Pure arithmetic on numpy arrays (scipy for the special functions and the
optimiser); the segment (careflow/segments/clv.py) and the report (careflow/insight/clv.py)
bring the data. Both models are the published ones:

- **BG/NBD** (Fader, Hardie and Lee 2005, "Counting your customers the easy
  way", Marketing Science 24(2)): while alive a customer buys at a Poisson
  rate lambda ~ Gamma(r, alpha); after each purchase they drop out with
  probability p ~ Beta(a, b). Per customer: x repeat purchases, the time
  t_x of the last one and the time T since the first, all measured from the
  first purchase. The likelihood is their equation 6; the probability of
  being alive and the expected purchases in the next t are their equations
  in section 4 (the latter with the Gauss hypergeometric function 2F1).
- **Gamma-Gamma** (Fader and Hardie 2013, "The Gamma-Gamma model of monetary
  value"; Fader, Hardie and Lee 2005, "RFM and CLV"): a purchase's value is
  Gamma(p, nu), nu ~ Gamma(q, gamma) across customers, so the mean m of a
  customer's x repeat purchases is Gamma(p x, nu x); the expected spend per
  purchase is (gamma + m x) p / (p x + q - 1).

Why our own and not a library: lifetimes, the usual Python choice, is
archived (last release 2020); PyMC-Marketing is maintained and its CLV module
fits the same models, but brings PyMC, PyTensor and ArviZ (hundreds of MB and
a compiler at run time) to maximise four-parameter likelihoods that scipy
maximises in well under a second. These are a few dozen lines each, written
from the papers and checked against their published estimates
(tests/test_clv_model.py: CDNOW r=0.243, alpha=4.414, a=0.793, b=2.426;
p=6.25, q=3.74, gamma=15.44).

Intervals: the estimates' uncertainty, not a customer's own luck. ``predict``
resamples the customers with replacement, refits both models on each sample
(a nonparametric bootstrap) and scores every customer with each refit; the
interval is the central ``level`` share of those scores. The bootstrap and
not the normal approximation around the optimum because on real data the
dropout parameters can sit on a flat ridge of the likelihood (one year of
Online Retail cannot tell "rarely buys" from "has left"), where that
approximation is meaningless and the bootstrap simply shows the spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

from careflow.errors import DataError

#: log-parameters are kept inside +-LOG_BOUND (e^12 ~ 160,000) so no evaluation overflows
LOG_BOUND = 12.0


@dataclass(frozen=True)
class BgNbd:
    """Fitted BG/NBD parameters, in the time unit of the data (days in careflow)."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = float("nan")
    customers: int = 0

    def p_alive(self, x, t_x, T) -> np.ndarray:
        """P(still alive at T | x, t_x, T). A customer with no repeat purchase is alive."""
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        ratio = np.exp(
            np.log(self.a) - np.log(np.maximum(self.b + x - 1, 1e-300))
            + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x))
        )
        return np.where(x > 0, 1.0 / (1.0 + ratio), 1.0)

    def expected_purchases(self, t: float, x, t_x, T) -> np.ndarray:
        """E[purchases in (T, T + t] | x, t_x, T] (Fader, Hardie and Lee 2005, eq. 10)."""
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + T + t)
        head = (a + b + x - 1) / (a - 1)
        tail = 1 - np.exp((r + x) * np.log((alpha + T) / (alpha + T + t))) * hyp2f1(
            r + x, b + x, a + b + x - 1, z
        )
        ratio = np.exp(
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300))
            + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        )
        return head * tail / (1 + np.where(x > 0, ratio, 0.0))


@dataclass(frozen=True)
class GammaGamma:
    """Fitted Gamma-Gamma parameters, in the money unit of the data."""

    p: float
    q: float
    gamma: float
    log_likelihood: float = float("nan")
    customers: int = 0

    def expected_spend(self, x, mean_spend) -> np.ndarray:
        """E[spend per purchase | x repeat purchases of mean ``mean_spend``].

        With no repeat purchase it is the population's mean, p gamma / (q - 1).
        """
        x, m = np.asarray(x, dtype=float), np.asarray(mean_spend, dtype=float)
        own = (self.gamma + m * x) * self.p / (self.p * x + self.q - 1)
        return np.where(x > 0, own, self.p * self.gamma / (self.q - 1))


def bgnbd_log_likelihood(log_params, x, t_x, T, weights=None) -> float:
    """Sum of ln L over customers (Fader, Hardie and Lee 2005, eq. 6)."""
    r, alpha, a, b = np.exp(log_params)
    ln_a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    ln_a2 = betaln(a, b + x) - betaln(a, b)
    ln_a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_a4 = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    each = ln_a1 + ln_a2 + np.logaddexp(ln_a3, ln_a4)
    return float(np.sum(each if weights is None else each * weights))


def gamma_gamma_log_likelihood(log_params, x, mean_spend) -> float:
    """Sum of ln f(m | p, q, gamma, x) over customers with x > 0 and m > 0."""
    p, q, gamma = np.exp(log_params)
    px = p * x
    each = (
        gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gamma)
        + (px - 1) * np.log(mean_spend) + px * np.log(x) - (px + q) * np.log(gamma + mean_spend * x)
    )
    return float(np.sum(each))


def _maximise(nll, start: np.ndarray, what: str, polish: bool = True) -> tuple[np.ndarray, float]:
    """(log-parameters, log-likelihood) maximising -nll inside the LOG_BOUND box.

    L-BFGS-B first; with ``polish`` Nelder-Mead then starts from its answer and
    the better one is kept: on data that cannot pin a parameter down (a flat
    ridge, like the dropout of one year of Online Retail) L-BFGS-B stops early.
    """
    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(start)
    results = [minimize(nll, start, method="L-BFGS-B", bounds=bounds)]
    if polish:
        results.append(
            minimize(nll, results[0].x, method="Nelder-Mead", bounds=bounds,
                     options={"maxiter": 4000, "xatol": 1e-7, "fatol": 1e-7})
        )
    finite = [r for r in results if np.isfinite(r.fun) and r.fun < 1e299]
    if not finite:
        raise DataError(f"the {what} model could not be fitted to this data")
    best = min(finite, key=lambda r: r.fun)
    return best.x, -float(best.fun)


class _BgNbdData:
    """Customers as distinct (x, t_x, T) rows with counts: fewer terms to sum."""

    def __init__(self, x, t_x, T):
        rows, self.inverse, counts = np.unique(
            np.column_stack([x, t_x, T]), axis=0, return_inverse=True, return_counts=True
        )
        self.inverse = self.inverse.ravel()
        self.x, self.t_x, self.T = rows.T
        self.counts = counts.astype(float)

    def fit(self, weights=None, start=None, polish=True) -> BgNbd:
        weights = self.counts if weights is None else weights

        def nll(theta):
            value = -bgnbd_log_likelihood(theta, self.x, self.t_x, self.T, weights)
            return value if np.isfinite(value) else 1e300

        if start is None:
            start = np.log([1.0, max(float(np.average(self.T, weights=weights)), 1.0), 1.0, 1.0])
        theta, ll = _maximise(nll, start, "BG/NBD", polish)
        r, alpha, a, b = (float(v) for v in np.exp(theta))
        return BgNbd(r, alpha, a, b, ll, round(weights.sum()))


def _check_bgnbd(x) -> None:
    if len(x) < 10 or not np.any(np.asarray(x) > 0):
        raise DataError(
            f"BG/NBD needs at least 10 customers, some with repeat purchases "
            f"(got {len(x)}, {int(np.sum(np.asarray(x) > 0))} with repeats)"
        )


def fit_bgnbd(x, t_x, T) -> BgNbd:
    """BG/NBD by maximum likelihood. DataError when the data cannot identify it."""
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    _check_bgnbd(x)
    return _BgNbdData(x, t_x, T).fit()


def _gg_usable(x, m) -> np.ndarray:
    return (x > 0) & (m > 0)


def _fit_gg(x, m, start=None, polish=True) -> GammaGamma:
    def nll(theta):
        value = -gamma_gamma_log_likelihood(theta, x, m)
        return value if np.isfinite(value) else 1e300

    if start is None:
        start = np.log([1.0, 2.0, max(float(np.mean(m)), 1e-6)])
    theta, ll = _maximise(nll, start, "Gamma-Gamma", polish)
    p, q, gamma = (float(v) for v in np.exp(theta))
    return GammaGamma(p, q, gamma, ll, len(x))


def fit_gamma_gamma(x, mean_spend) -> GammaGamma:
    """Gamma-Gamma on customers with repeat purchases of positive mean value."""
    x, m = np.asarray(x, dtype=float), np.asarray(mean_spend, dtype=float)
    keep = _gg_usable(x, m)
    if keep.sum() < 10:
        raise DataError(
            f"Gamma-Gamma needs at least 10 customers with repeat purchases (got {keep.sum()})"
        )
    return _fit_gg(x[keep], m[keep])


def predict(
    bg: BgNbd,
    gg: GammaGamma,
    horizon: float,
    x,
    t_x,
    T,
    mean_spend,
    *,
    draws: int = 0,
    level: float = 0.9,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per customer: P(alive), expected purchases and value over ``horizon``, with intervals.

    Keys: p_alive, expected_purchases, expected_spend, predicted_value, each
    with ``_low`` and ``_high``: the central ``level`` of ``draws`` bootstrap
    refits (NaN with no draws). The customers given are the population the
    models were fitted on; each draw resamples them with replacement, refits
    both models (starting from ``bg`` and ``gg``) and scores every customer.
    ``seed`` makes the draws, and so the intervals, the same on every run.
    """
    x, t_x, T, m = (np.asarray(v, dtype=float) for v in (x, t_x, T, mean_spend))

    def quantities(b: BgNbd, g: GammaGamma):
        with np.errstate(all="ignore"):
            purchases = b.expected_purchases(horizon, x, t_x, T)
            spend = g.expected_spend(x, m)
            return b.p_alive(x, t_x, T), purchases, spend, purchases * spend

    names = ("p_alive", "expected_purchases", "expected_spend", "predicted_value")
    out = dict(zip(names, quantities(bg, gg), strict=True))
    if draws <= 0:
        for name in names:
            out[f"{name}_low"] = out[f"{name}_high"] = np.full(len(x), np.nan)
        return out
    rng = np.random.default_rng(seed)
    data = _BgNbdData(x, t_x, T)
    usable = _gg_usable(x, m)
    bg_start = np.log([bg.r, bg.alpha, bg.a, bg.b])
    gg_start = np.log([gg.p, gg.q, gg.gamma])
    samples: dict[str, list] = {name: [] for name in names}
    for _ in range(draws):
        pick = rng.integers(0, len(x), len(x))
        weights = np.bincount(data.inverse[pick], minlength=len(data.x)).astype(float)
        keep = pick[usable[pick]]
        try:
            b = data.fit(weights, bg_start, polish=False)
            g = _fit_gg(x[keep], m[keep], gg_start, polish=False)
        except DataError:
            continue
        for name, value in zip(names, quantities(b, g), strict=True):
            samples[name].append(value)
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    for name in names:
        stacked = np.array(samples[name]) if samples[name] else np.full((1, len(x)), np.nan)
        out[f"{name}_low"] = np.nanquantile(stacked, lo, axis=0)
        out[f"{name}_high"] = np.nanquantile(stacked, hi, axis=0)
    return out

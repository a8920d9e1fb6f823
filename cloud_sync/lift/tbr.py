"""Time-based regression (TBR) for a geo experiment with a designed control group.

Kerman, Wang and Vaver, "Estimating ad effectiveness using geo experiments in a time-based regression
framework" (Google, 2017); the same model as `matched_markets.methodology.tbr` / `tbr_iroas`
(fixed-cost scenario).

Model. Sum the response over the geos of each group per period: y_t (treatment), x_t (control).
Over the n pre-period points fit ordinary least squares

    y_t = a + b x_t + e_t,    e_t ~ N(0, s^2),   s^2 = RSS / (n - 2).

In the m test-period points the counterfactual is y^_t = a + b x_t and the causal effect is
Delta = sum_test (y_t - y^_t). Its predictive distribution is Student t with n - 2 degrees of
freedom, centred on Delta, with variance

    Var = s^2 * ( m + m^2 / n + (sum_test x_t - m * xbar)^2 / Sxx ),

where xbar and Sxx = sum_pre (x_t - xbar)^2 are from the pre-period: m s^2 is the noise of the
test-period observations and the rest is the variance of the summed regression prediction
(the variance of m a^ + b^ sum x).

Cost. When the control group has no cost and nobody had cost in the pre-period (a fixed-cost test,
the usual case) the incremental cost is simply the treatment group's test-period cost. Otherwise a
second TBR on cost gives the incremental cost as its point estimate (the interval of iROAS then
ignores the cost's uncertainty; `matched_markets` simulates it).

iROAS = Delta / incremental cost; its one-sided lower bound at `credible` (0.9) is the
(1 - credible) quantile of the t distribution of Delta divided by the cost.

Relative lift = Delta / (sum_test y_t - Delta), the lift over the counterfactual. `matched_markets`
reports the median of 10,000 simulated draws of this ratio; the ratio is monotone in Delta, so that
median converges to the exact value computed here (the published 0.173998 is a simulation draw of
0.173964). Its lower bound uses the lower bound of Delta the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


class TbrError(ValueError):
    """The inputs cannot support a time-based regression (too few points, mismatched lengths...)."""


@dataclass(frozen=True)
class TbrResult:
    """The fitted regression and the test-period effect. Sums are over the test period."""

    intercept: float
    slope: float
    sigma: float  # residual standard deviation of the pre-period fit
    df: int  # degrees of freedom, n_pre - 2
    n_pre: int
    n_test: int
    incremental_response: float  # Delta
    incremental_response_sd: float  # scale of Delta's t distribution
    incremental_response_lower: float  # one-sided lower bound at `credible`
    incremental_cost: float
    iroas: float
    iroas_lower: float  # one-sided lower bound at `credible`
    iroas_precision: float  # iroas - iroas_lower
    counterfactual: float  # sum of y^ over the test period
    observed: float  # sum of y over the test period
    relative_lift: float  # Delta / counterfactual
    relative_lift_lower: float
    probability_positive: float  # P(Delta > 0) under the t distribution
    credible: float
    counterfactual_series: np.ndarray  # y^_t for every period given (pre, test and other)

    def as_dict(self) -> dict[str, float | int]:
        out = {k: v for k, v in self.__dict__.items() if k != "counterfactual_series"}
        return {k: (int(v) if isinstance(v, int) else float(v)) for k, v in out.items()}


def _vector(name: str, values: object, length: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise TbrError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise TbrError(f"{name} has {arr.shape[0]} periods, expected {length}")
    return arr


def time_based_regression(
    treat_response: object,
    control_response: object,
    treat_cost: object,
    control_cost: object,
    pre_mask: object,
    test_mask: object,
    credible: float = 0.9,
) -> TbrResult:
    """TBR on per-period group totals (one value per period, e.g. per date).

    `treat_*` / `control_*` are the response and cost summed over each group's geos; `pre_mask` and
    `test_mask` are boolean arrays selecting the pre-period and the test period (periods in neither,
    such as a cool-down, are ignored). Returns the effect summed over the test period.
    """
    if not 0.0 < credible < 1.0:
        raise TbrError(f"credible must be in (0, 1), got {credible}")
    y = _vector("treat_response", treat_response)
    n_periods = y.shape[0]
    x = _vector("control_response", control_response, n_periods)
    cost_t = _vector("treat_cost", treat_cost, n_periods)
    cost_c = _vector("control_cost", control_cost, n_periods)
    pre = np.asarray(pre_mask, dtype=bool)
    test = np.asarray(test_mask, dtype=bool)
    if pre.shape != (n_periods,) or test.shape != (n_periods,):
        raise TbrError("pre_mask and test_mask must have one boolean per period")
    if np.any(pre & test):
        raise TbrError("a period cannot be both in the pre-period and in the test period")
    n, m = int(pre.sum()), int(test.sum())
    if n < 3:
        raise TbrError(f"the pre-period needs at least 3 periods, got {n}")
    if m < 1:
        raise TbrError("the test period is empty")
    for name, arr in (("treat_response", y), ("control_response", x)):
        if not np.all(np.isfinite(arr[pre | test])):
            raise TbrError(f"{name} has missing or non-finite values in the pre or test period")

    xp, yp = x[pre], y[pre]
    xbar = xp.mean()
    sxx = float(((xp - xbar) ** 2).sum())
    if sxx <= 0.0:
        raise TbrError("the control response is constant over the pre-period; no slope can be fitted")
    slope = float(((xp - xbar) * (yp - yp.mean())).sum() / sxx)
    intercept = float(yp.mean() - slope * xbar)
    resid = yp - (intercept + slope * xp)
    df = n - 2
    sigma2 = float(resid @ resid) / df

    fitted = intercept + slope * x
    delta = float((y[test] - fitted[test]).sum())
    var = sigma2 * (m + m * m / n + (x[test].sum() - m * xbar) ** 2 / sxx)
    sd = float(np.sqrt(var))
    dist = stats.t(df, loc=delta, scale=sd) if sd > 0 else None
    tail = 1.0 - credible
    delta_lower = float(dist.ppf(tail)) if dist is not None else delta
    prob_pos = float(dist.sf(0.0)) if dist is not None else float(delta > 0)

    # Fixed cost: nobody spent in the pre-period and the control group spent nothing in the test.
    fixed_cost = abs(cost_t[pre].sum()) + abs(cost_c[pre].sum()) + abs(cost_c[test].sum()) < 1e-10
    if fixed_cost:
        incr_cost = float(cost_t[test].sum())
    else:
        cost_fit = time_based_regression(cost_t, cost_c, np.zeros(n_periods), np.zeros(n_periods),
                                         pre, test, credible)
        incr_cost = cost_fit.incremental_response
    if incr_cost != 0.0:
        iroas, iroas_lower = delta / incr_cost, delta_lower / incr_cost
    else:
        iroas = iroas_lower = float("nan")

    observed = float(y[test].sum())
    counterfactual = observed - delta
    rel = delta / counterfactual if counterfactual != 0 else float("nan")
    rel_lower = delta_lower / (observed - delta_lower) if observed != delta_lower else float("nan")
    return TbrResult(
        intercept=intercept, slope=slope, sigma=float(np.sqrt(sigma2)), df=df, n_pre=n, n_test=m,
        incremental_response=delta, incremental_response_sd=sd,
        incremental_response_lower=delta_lower, incremental_cost=incr_cost,
        iroas=iroas, iroas_lower=iroas_lower, iroas_precision=iroas - iroas_lower,
        counterfactual=counterfactual, observed=observed, relative_lift=rel,
        relative_lift_lower=rel_lower, probability_positive=prob_pos, credible=credible,
        counterfactual_series=fitted,
    )

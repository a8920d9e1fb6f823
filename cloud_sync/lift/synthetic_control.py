"""Synthetic control for store-level lift, as Meta's GeoLift does it by default.

GeoLift's `GeoLift(model = "none", fixed_effects = TRUE)` calls augsynth's synthetic control
(`progfunc = "none"`, `scm = TRUE`, `fixedeff = TRUE`). This module is that estimator and its
inference, written from the method's description, over a locations x periods matrix (`GeoPanel`).

Estimator
---------
Treated locations k = 1..K, control locations j = 1..J, pre-period t < T0, post-period
T0 <= t < T1 (a post-end, when given, drops the periods after it).

- The treated series is the average over treated locations: y1_t = mean_k Y_kt.
- Fixed effects: every series is demeaned by its own pre-period mean m_i = mean_{t<T0} Y_it.
- Weights: w = argmin || (y1 - m1) - sum_j w_j (Y_j - m_j) ||^2 over t < T0, subject to w_j >= 0
  and sum_j w_j = 1 (an exact active-set solver on the simplex, `simplex_least_squares`).
- Counterfactual of the average treated location: y^_t = m1 + sum_j w_j (Y_jt - m_j).
- ATT (per treated location per period) = mean_{post} (y1_t - y^_t).
- Lift = (sum_post y1_t - sum_post y^_t) / |sum_post y^_t| (GeoLift's "Percent Lift" / 100).
- Incremental = K * sum_post (y1_t - y^_t) = sum over treated locations of the observed post-period
  outcome minus K times the counterfactual sum (GeoLift's "Incremental Y").

p-value: conformal inference (Chernozhukov, Wuethrich and Zhu 2021; augsynth's `conformal_inf`)
-------------------------------------------------------------------------------------------------
Under H0 "no effect" the post-period is just more data: the weights are refitted once on all T1
periods (every series demeaned by its T1-period mean) and give residuals u_t = y1_t - y^_t for
every t. A statistic of the residuals at the post positions is compared with the same statistic
of permuted residuals:

    p = mean over permutations pi of [ S(u at post) <= S(u at pi(post)) ].

The statistic. With `contrast="none"` it is a function of the post-period residuals alone:
`stat="total"` is S = |D| with D = sum_post u_t, "positive" D and "negative" -D (GeoLift's one-sided
stat_test "Positive" and "Negative"). GeoLift's two-sided stat_test "Total" is not |D| but the sum of
the absolute residuals, S = sum_post |u_t| (its `type_of_test`, and augsynth's default with q = 1):
that is `stat="absolute"`, with which `contrast="none", permutation="iid", permutations=1000`
reproduces GeoLift's p-value (`bench/geolift_walkthrough.py`: 0.0125 on average over 200 seeds,
0.007-0.018 for 90% of them, on its walkthrough data; published 0.006 and 0.01, from single runs
of 1,000 permutations; the weights, lift, ATT and incremental agree to every printed digit). It
also rejects when the post-period residuals are merely more spread out (an outage of a heavily
weighted control, say), not only when they are shifted, so it is not the default here. On the
walkthrough, |D| with the same permutations gives 0.20: the null model, refitted on all 105 days,
absorbs most of the effect (mean post residual 34 against an ATT of 156).

The default here (`contrast="previous"`) compares the post block with the block of
B = min(T1 - T0, T0) residuals just before it: Welch's t of the two blocks' means,
S = |mean_post u - mean_ref u| / sqrt(s2_post / (T1 - T0) + s2_ref / B), each block with its own
sample variance; the permutations move the reference block with the post block. Why a contrast:
on real daily footfall (Auckland pedestrian counts, 2022-2025, sensors drawn at random as
"treated", placebo windows with no intervention) the gap between a location and its synthetic
control drifts slowly - sensors' surroundings change, and a convex combination of donors cannot
follow a level that wanders - so the residuals are not stationary, which CWZ's permutations
assume. The post block sits at the end of the window, where a drifting series minus its mean is
furthest from zero (as a random walk minus its mean is), so |sum_post u| was too often the most
extreme of the shifted blocks: the test rejected a true null at alpha 0.1 in 17% of 28-day
windows after 182 days (`contrast="none"`, block permutations; iid ones, which also ignore the
serial correlation, in 54%). A drift moves adjacent blocks alike, so their difference is close
to stationary (the increments of a random walk are). Why studentised: the difference of the
blocks' sums (`contrast="previous-sum"`, the default before) brought the rate to 0.117 +- 0.008,
but tests whose treated sensors had an outage (days below a fifth of their usual count: a real
change, not a campaign's) still rejected in 0.134 of windows against 0.091 without; dividing by
the blocks' own spread weighs a block with an outage by its noise, and the rate is 0.106 +- 0.007
(2,000 placebo tests; 0.086 with a treated outage, 0.085 without), 0.08-0.12 for tests of 14 to
56 days after 91 to 364 days of history and 1 to 4 treated sensors (0.10-0.13 with the sums;
182 + 14 days: 0.134 -> 0.106), with the power on an injected +10% unchanged (0.470; 0.472 with
the sums, 0.49 without a contrast at its inflated rate) and the 90% intervals covering injected
+0/5/10% lifts in 0.93-0.94 of 200 windows (0.90 with the sums) at about the same width.
`bench/lift.py` measures it all, side by side. Tried and not kept (same placebo windows):
a reference block twice the test length (0.131), half of it (0.099 at 182 + 28 but 0.125 at
182 + 14 and less power on long tests), residuals winsorised at 2-3 MADs (0.111-0.116), and
weights refitted on all but each shifted block ("placebo in time": 0.168, not exchangeable).
Refitting the null model under each permutation changes nothing: it is fitted on all T1 periods
with every series demeaned, which does not depend on their order. Nor does a finite-sample
correction: the identity is one of the T1 shifts, so P(p < alpha) <= alpha already under
exchangeability. The statistic is CWZ's choice to make (any function of the post-period residuals
and the others is valid under exchangeability); the point estimates (weights, lift, ATT,
incremental) are GeoLift's whatever the statistic. With fewer than 2 periods in either block
the difference of the sums is used.

`permutation="iid"` draws `permutations` uniform random permutations of the T1 residuals (augsynth's
and GeoLift's default, ns = 1000 there); `"block"` (default) uses the T1 cyclic shifts (CWZ's moving
block permutations), which keep the residuals' serial correlation: footfall residuals are serially
correlated (lag-1 autocorrelation about 0.5, lag 7 about 0.4), and under iid permutations a run of
same-signed days looks like an effect. Either way the permutations reuse the single refit: the
method permutes residuals, not data (block: all T1 shifts, `permutations` is ignored).

Interval (default, `interval_method="conformal"`): CWZ's test inversion
-----------------------------------------------------------------------
The (1 - alpha) interval of the ATT is the set of constant effects h that the two-sided test of
H0: effect = h (treated post values minus h, null model refitted, same permutations) does not
reject, found on a grid refined by bisection (`conformal_interval`). It is therefore consistent
with the p-value (0 is outside the interval exactly when the two-sided p-value is <= alpha) and
as calibrated as the test; the interval of the incremental total is that times K * (number of
post periods).

Interval, `interval_method="jackknife+"`: jackknife+ over time (Barber, Candes, Ramdas and
Tibshirani 2021; augsynth's `time_jackknife_plus`, which GeoLift reports as the interval)
----------------------------------------------------------------------------------------------
For each pre-period t, refit the weights without period t (fixed effects recomputed from the
other T0 - 1 pre-periods), record the held-out error e_t = y1_t - y^_{-t}(t) and the mean
post-period prediction p_{-t} = mean_post y^_{-t}. With Ybar1 = mean_post y1,

    ATT interval = [ Ybar1 - q_{1-a/2}(p_{-t} + |e_t|),  Ybar1 - q_{a/2}(p_{-t} - |e_t|) ]

(q = empirical quantile over the T0 refits, linear interpolation as R's default), and the interval
of the incremental total is that times K * (number of post periods). The held-out refits are warm
started from the full fit and use a low-rank update of the Gram matrix, so each costs about
J x (support size), not J^2 x T0. The held-out errors are single-period errors applied to a
post-period mean, so the interval is conservative for long tests, as GeoLift's is.
(The jackknife is over time periods, as augsynth's jackknife+ is; a jackknife over control
locations would measure the sensitivity to the donor pool, not the prediction error.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ProgressFn = Callable[[int, int], None]


class LiftInputError(ValueError):
    """The panel or the test definition cannot be analysed; the message says what is wrong."""


# --------------------------------------------------------------------------------------------
# The panel


@dataclass(frozen=True)
class GeoPanel:
    """A locations x periods matrix of an outcome (e.g. daily visits per store).

    `periods` are sorted labels (ISO date strings, dates or integers: anything ordered);
    `values[i, t]` is the outcome of `locations[i]` in `periods[t]`, NaN where missing.
    """

    locations: tuple[str, ...]
    periods: tuple[Hashable, ...]
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.locations), len(self.periods)):
            raise LiftInputError(
                f"values has shape {self.values.shape}, expected "
                f"({len(self.locations)} locations, {len(self.periods)} periods)")
        if len(set(self.locations)) != len(self.locations):
            raise LiftInputError("location names must be unique")

    @classmethod
    def from_long(cls, locations: Iterable[object], periods: Iterable[Hashable],
                  values: Iterable[float]) -> GeoPanel:
        """Build the matrix from a long table: one (location, period, value) per row.

        A (location, period) pair given twice is an error; pairs never given are NaN.
        """
        locs = [str(v) for v in locations]
        pers = list(periods)
        vals = np.asarray(list(values), dtype=float)
        if not (len(locs) == len(pers) == len(vals)):
            raise LiftInputError("locations, periods and values must have the same length")
        if not locs:
            raise LiftInputError("the table has no rows")
        loc_names = sorted(set(locs))
        try:
            period_names = sorted(set(pers))
        except TypeError as err:
            raise LiftInputError(f"periods cannot be ordered: {err}") from None
        li = {name: i for i, name in enumerate(loc_names)}
        pi = {name: i for i, name in enumerate(period_names)}
        rows = np.fromiter((li[v] for v in locs), dtype=np.int64, count=len(locs))
        cols = np.fromiter((pi[v] for v in pers), dtype=np.int64, count=len(pers))
        flat = rows * len(period_names) + cols
        uniq, counts = np.unique(flat, return_counts=True)
        if np.any(counts > 1):
            k = int(uniq[np.argmax(counts > 1)])
            raise LiftInputError(
                f"location {loc_names[k // len(period_names)]!r} has more than one row for period "
                f"{period_names[k % len(period_names)]!r}")
        mat = np.full((len(loc_names), len(period_names)), np.nan)
        mat[rows, cols] = vals
        return cls(tuple(loc_names), tuple(period_names), mat)

    def period_index(self, label: Hashable, *, side: Literal["start", "end"]) -> int:
        """Index of the first period >= label (side="start") or the last period <= label ("end")."""
        try:
            if side == "start":
                idx = next((i for i, p in enumerate(self.periods) if p >= label), None)  # type: ignore[operator]
            else:
                idx = next((i for i in range(len(self.periods) - 1, -1, -1)
                            if self.periods[i] <= label), None)  # type: ignore[operator]
        except TypeError as err:
            raise LiftInputError(f"{label!r} cannot be compared with the periods: {err}") from None
        if idx is None:
            raise LiftInputError(
                f"{label!r} is outside the data, which runs from {self.periods[0]!r} to {self.periods[-1]!r}")
        return idx

    def select_locations(self, names: Sequence[str]) -> GeoPanel:
        idx = [self.locations.index(n) for n in names]
        return GeoPanel(tuple(names), self.periods, self.values[idx])

    def window(self, start: int, stop: int) -> GeoPanel:
        """Periods [start, stop) by index."""
        return GeoPanel(self.locations, self.periods[start:stop], self.values[:, start:stop])

    def complete_locations(self) -> GeoPanel:
        """Only the locations with a finite value in every period."""
        keep = np.all(np.isfinite(self.values), axis=1)
        return GeoPanel(tuple(n for n, k in zip(self.locations, keep) if k), self.periods,
                        self.values[keep])


# --------------------------------------------------------------------------------------------
# Weights on the simplex


class _Gram:
    """G = C - sum_k c_k u_k u_k^T, read by columns, so a low-rank downdate costs nothing to form."""

    def __init__(self, base: np.ndarray, updates: Sequence[tuple[float, np.ndarray]] = ()) -> None:
        self.base = base
        self.updates = updates

    def cols(self, idx: np.ndarray) -> np.ndarray:
        out = self.base[:, idx]
        if self.updates:
            out = out.copy()
            for coef, u in self.updates:
                out -= coef * np.outer(u, u[idx])
        return out

    def diag(self) -> np.ndarray:
        d = np.diag(self.base).copy()
        for coef, u in self.updates:
            d -= coef * u * u
        return d


def simplex_least_squares(gram: np.ndarray | _Gram, b: np.ndarray, w0: np.ndarray | None = None,
                          tol: float = 1e-10, max_iter: int | None = None) -> np.ndarray:
    """argmin_w 1/2 w'Gw - b'w subject to w >= 0, sum(w) = 1: an active-set method.

    Lawson-Hanson on the simplex: keep a support S whose equality-constrained optimum (the KKT
    system [G_SS 1; 1' 0][w; -mu] = [b_S; 1]) is strictly positive; add the coordinate with the most
    negative reduced gradient g_j - mu (g = Gw - b) while one is below -tol * scale; when the
    equality-constrained optimum leaves the positive orthant, step to the boundary and drop the
    coordinates that hit zero. Exact at convergence (the KKT conditions hold to `tol`); each
    iteration costs O(J |S|) for the gradient plus O(|S|^3) for the small system, and synthetic
    control supports are small. `w0` warm-starts from a previous solution's support.
    """
    g_op = gram if isinstance(gram, _Gram) else _Gram(np.asarray(gram, dtype=float))
    b = np.asarray(b, dtype=float)
    n = b.shape[0]
    if n == 0:
        raise LiftInputError("no control locations to weight")
    diag = g_op.diag()
    scale = max(float(np.max(np.abs(diag))), float(np.max(np.abs(b))), 1e-300)
    w = np.zeros(n)
    if w0 is not None and np.any(w0 > 0):
        support = np.flatnonzero(w0 > 0)
        w[support] = w0[support] / w0[support].sum()
    else:
        j = int(np.argmin(0.5 * diag - b))
        support = np.array([j])
        w[j] = 1.0
    max_iter = max_iter or 4 * n + 50
    for _ in range(max_iter):
        # Inner loop: move to the equality-constrained optimum on the support, staying feasible.
        for _inner in range(len(support) + 1):
            g_ss = g_op.cols(support)[support]
            k = len(support)
            kkt = np.zeros((k + 1, k + 1))
            kkt[:k, :k] = g_ss
            kkt[:k, k] = 1.0
            kkt[k, :k] = 1.0
            rhs = np.concatenate([b[support], [1.0]])
            try:
                sol = np.linalg.solve(kkt, rhs)
                if not np.all(np.isfinite(sol)):
                    raise np.linalg.LinAlgError
            except np.linalg.LinAlgError:
                sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
            z = sol[:k]
            if np.all(z > 0):
                w[support] = z
                break
            cur = w[support]
            neg = z <= 0
            ratios = np.full(k, np.inf)
            ratios[neg] = cur[neg] / (cur[neg] - z[neg])
            hit = int(np.argmin(ratios))
            new_w = cur + ratios[hit] * (z - cur)
            new_w[hit] = 0.0
            w[support] = new_w
            keep = new_w > 1e-15
            if not np.any(keep):  # numerically degenerate: fall back to the best vertex of the support
                j = support[int(np.argmin(0.5 * diag[support] - b[support]))]
                w[:] = 0.0
                w[j] = 1.0
                support = np.array([j])
                break
            w[support[~keep]] = 0.0
            support = support[keep]
        w[support] /= w[support].sum()
        grad = g_op.cols(support) @ w[support] - b
        mu = float(np.dot(w[support], grad[support]))  # equals every g_j on the support at optimum
        reduced = grad - mu
        reduced[support] = np.inf
        j = int(np.argmin(reduced))
        if not np.isfinite(reduced[j]) or reduced[j] >= -tol * scale:
            break
        support = np.append(support, j)
    return w


def fit_weights(controls: np.ndarray, treated: np.ndarray, w0: np.ndarray | None = None) -> np.ndarray:
    """Synthetic-control weights: argmin ||treated - controls' w||^2, w >= 0, sum(w) = 1.

    `controls` is J x T (one row per control location), `treated` has T values; both are used as
    given (demean them first for GeoLift's fixed effects).
    """
    x0 = np.asarray(controls, dtype=float)
    x1 = np.asarray(treated, dtype=float)
    return simplex_least_squares(x0 @ x0.T, x0 @ x1, w0)


# --------------------------------------------------------------------------------------------
# The analysis


@dataclass
class GeoLiftResult:
    """Synthetic-control estimate of a test on `treated` locations. Sums are over the post-period."""

    lift: float  # (observed - counterfactual) / |counterfactual| of the average treated location
    att: float  # average effect per treated location per period
    incremental: float  # total effect over all treated locations and post periods
    p_value: float  # conformal permutation p-value of H0: no effect
    ci_low: float  # interval of `incremental` (`interval_method`), NaN if not computed
    ci_high: float
    att_ci_low: float
    att_ci_high: float
    alpha: float
    weights: dict[str, float]  # control location -> weight (non-zero weights only)
    treated: tuple[str, ...]
    periods: tuple[Hashable, ...]  # every period analysed (pre and post)
    post_start_index: int  # periods[post_start_index:] is the post-period
    treated_series: np.ndarray  # y1_t, the average treated location
    counterfactual_series: np.ndarray  # y^_t
    pre_rmse: float  # root mean squared pre-period error of the fit
    permutations: int
    permutation: str
    stat: str
    contrast: str = "none"  # test statistic: post-period alone ("none") or against the previous block
    interval_method: str = "jackknife+"  # conformal (test inversion), jackknife+ or none
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def observed_post(self) -> float:
        return float(self.treated_series[self.post_start_index:].sum()) * len(self.treated)

    @property
    def counterfactual_post(self) -> float:
        return float(self.counterfactual_series[self.post_start_index:].sum()) * len(self.treated)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary (the series as lists, with their period labels as strings)."""
        def num(v: float) -> float | None:
            return None if not math.isfinite(v) else float(v)

        return {
            "lift": num(self.lift), "att": num(self.att), "incremental": num(self.incremental),
            "p_value": num(self.p_value), "ci_low": num(self.ci_low), "ci_high": num(self.ci_high),
            "att_ci_low": num(self.att_ci_low), "att_ci_high": num(self.att_ci_high),
            "alpha": self.alpha, "observed": num(self.observed_post),
            "counterfactual": num(self.counterfactual_post),
            "weights": {k: float(v) for k, v in self.weights.items()},
            "treated": list(self.treated),
            "post_start": str(self.periods[self.post_start_index]),
            "post_end": str(self.periods[-1]),
            "pre_periods": self.post_start_index,
            "post_periods": len(self.periods) - self.post_start_index,
            "pre_rmse": num(self.pre_rmse),
            "permutations": self.permutations, "permutation": self.permutation, "stat": self.stat,
            "contrast": self.contrast,
            "interval_method": self.interval_method,
            "series": {
                "period": [str(p) for p in self.periods],
                "treated": [float(v) for v in self.treated_series],
                "counterfactual": [float(v) for v in self.counterfactual_series],
            },
        }


_STATS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "total": lambda s: np.abs(s),
    "positive": lambda s: s,
    "negative": lambda s: -s,
    # GeoLift's two-sided "Total": the sum of the absolute residuals, computed by summing |u_t|
    # (`_statistic_inputs`) and reading that sum as is
    "absolute": lambda s: s,
}


def _statistic_inputs(resid: np.ndarray, stat: str) -> np.ndarray:
    """The residuals whose (post-period) sum the statistic reads: |u_t| for "absolute", else u_t."""
    return np.abs(resid) if stat == "absolute" else resid


def _demeaned_fit(y0: np.ndarray, y1: np.ndarray, fit_cols: slice,
                  w0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-effects SCM fitted on columns `fit_cols`: (weights, counterfactual over all columns)."""
    m0 = y0[:, fit_cols].mean(axis=1)
    m1 = float(y1[fit_cols].mean())
    x0 = y0[:, fit_cols] - m0[:, None]
    w = fit_weights(x0, y1[fit_cols] - m1, w0)
    support = np.flatnonzero(w)
    cf = m1 + w[support] @ (y0[support] - m0[support, None])
    return w, cf


class _NullModel:
    """The synthetic control fitted on all T1 periods under a null hypothesis, for conformal inference.

    Every series is demeaned over all T1 periods (GeoLift's fixed effects); the weights are the
    simplex least squares of the treated residual on the controls' residuals. The controls' part
    (residuals, Gram matrix) does not depend on the null hypothesis, so testing many values of the
    effect (`residuals(y1 - h)`) refits only the weights, warm-started.
    """

    def __init__(self, y0: np.ndarray, w0: np.ndarray | None = None) -> None:
        self.r0 = y0 - y0.mean(axis=1, keepdims=True)
        self.gram = self.r0 @ self.r0.T
        self.w = w0

    def residuals(self, y1: np.ndarray) -> np.ndarray:
        r1 = y1 - y1.mean()
        w = simplex_least_squares(self.gram, self.r0 @ r1, self.w)
        self.w = w
        support = np.flatnonzero(w)
        return r1 - w[support] @ self.r0[support]


CONTRASTS = ("previous", "none", "previous-sum")


def _baseline_length(t0: int, t1: int, contrast: str) -> int:
    """Periods of the reference block just before the post-period (0: no contrast)."""
    if contrast not in CONTRASTS:
        raise LiftInputError(f"contrast must be one of {', '.join(CONTRASTS)}, got {contrast!r}")
    return min(t1 - t0, t0) if contrast != "none" else 0


def _studentised(contrast: str, n_post: int, base: int) -> bool:
    """Whether the contrast is studentised: "previous" with at least 2 periods in each block."""
    return contrast == "previous" and n_post >= 2 and base >= 2


def _contrast_t(post_sum: np.ndarray, post_sq: np.ndarray, ref_sum: np.ndarray, ref_sq: np.ndarray,
                n_post: int, base: int, floor: float) -> np.ndarray:
    """Welch's t of the post block's mean against the reference block's, from sums and sums of squares."""
    m_post, m_ref = post_sum / n_post, ref_sum / base
    v_post = np.maximum(post_sq - n_post * m_post * m_post, 0.0) / (n_post - 1)
    v_ref = np.maximum(ref_sq - base * m_ref * m_ref, 0.0) / (base - 1)
    return (m_post - m_ref) / np.sqrt(np.maximum(v_post / n_post + v_ref / base, floor))


def _null_statistics(resid: np.ndarray, t0: int, stat_fn: Callable[[np.ndarray], np.ndarray],
                     permutation: str, orders: np.ndarray | None,
                     base: int, studentise: bool = False) -> tuple[float, np.ndarray]:
    """The observed statistic and its permutation distribution.

    The statistic is stat_fn of the post residuals' sum (`base` = 0), or of the difference between
    the post residuals' mean and the mean of the `base` residuals just before them, scaled to a
    post-period total (`studentise` False) or divided by its standard error (Welch's t: each
    block's own variance, `studentise` True). Block permutations move both blocks together (cyclic
    shifts); iid ones permute all residuals and read the same positions (`orders`: the permuted
    positions t0 - base .. t1 - 1 of each permutation).
    """
    n_post = resid.shape[0] - t0
    post, ref = _block_sums(resid, t0, base, permutation, orders)
    obs_post, obs_ref = resid[t0:], resid[t0 - base:t0]
    if studentise:
        floor = max(1e-24 * float(np.mean(resid * resid)), 1e-300)  # a perfect fit gives t = 0, not 0/0
        post_sq, ref_sq = _block_sums(resid * resid, t0, base, permutation, orders)
        null = _contrast_t(post, post_sq, ref, ref_sq, n_post, base, floor)
        observed = _contrast_t(np.array(obs_post.sum()), np.array(obs_post @ obs_post),
                               np.array(obs_ref.sum()), np.array(obs_ref @ obs_ref), n_post, base, floor)
        return float(stat_fn(observed)), stat_fn(null)
    null = post - ref * (n_post / base) if base else post
    observed = obs_post.sum() - (obs_ref.sum() * (n_post / base) if base else 0.0)
    return float(stat_fn(np.array(observed))), stat_fn(null)


def _block_sums(values: np.ndarray, t0: int, base: int, permutation: str,
                orders: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per permutation, the sums of `values` over the post block and over the `base` periods before it."""
    t1 = values.shape[0]
    if permutation == "block":
        csum = np.concatenate([[0.0], np.cumsum(np.concatenate([values, values, values]))])
        j = np.arange(t1) + t1  # shift j, offset by one copy so that the reference block may wrap
        return csum[j + t1] - csum[j + t0], csum[j + t0] - csum[j + t0 - base]
    assert orders is not None
    return values[orders[:, base:]].sum(axis=1), values[orders[:, :base]].sum(axis=1)


def _p_from(observed: float, null: np.ndarray, sampled: bool = False) -> float:
    """Share of the null statistics at least as extreme as the observed one. With `sampled` (random
    permutations, which need not include the observed order) the observed order is counted in:
    (1 + k) / (1 + n), so the p-value is never 0 and stays valid (Phipson and Smyth, 2010)."""
    k = int(np.sum(observed <= null + 1e-12 * max(1.0, abs(observed))))
    return (1 + k) / (1 + len(null)) if sampled else k / len(null)


def _iid_orders(t1: int, t0: int, base: int, permutations: int, rng: np.random.Generator,
                progress: ProgressFn | None = None) -> np.ndarray:
    """`permutations` uniform random permutations of t1 positions: their positions t0 - base .. t1 - 1."""
    if permutations < 1:
        raise LiftInputError("permutations must be at least 1")
    orders = np.empty((permutations, t1 - t0 + base), dtype=np.int64)
    chunk = max(1, min(permutations, 50))
    done = 0
    while done < permutations:
        k = min(chunk, permutations - done)
        orders[done:done + k] = np.argsort(rng.random((k, t1)), axis=1)[:, t0 - base:]
        done += k
        if progress:
            progress(done, permutations)
    return orders


def conformal_p_value(y0: np.ndarray, y1: np.ndarray, t0: int, permutations: int = 200,
                      stat: str = "total", permutation: str = "iid", h0: float = 0.0,
                      rng: np.random.Generator | None = None, w0: np.ndarray | None = None,
                      progress: ProgressFn | None = None, *, contrast: str = "none") -> float:
    """Conformal permutation p-value of H0: effect = h0 in every post period (see module docstring).

    `y0` is J x T (controls), `y1` the T values of the average treated location, post = t >= t0.
    `contrast="previous"` tests the post residuals against the block of residuals just before
    them (Welch's t: the calibrated default of `synthetic_control`; "previous-sum": the difference of
    the blocks' sums, the former default); "none" reads the post residuals alone.
    `stat="absolute"` with `contrast="none"` is GeoLift's two-sided statistic (sum of |u_t|).
    """
    if stat not in _STATS:
        raise LiftInputError(f"stat must be one of {sorted(_STATS)}, got {stat!r}")
    if permutation not in ("block", "iid"):
        raise LiftInputError(f"permutation must be 'iid' or 'block', got {permutation!r}")
    rng = rng if rng is not None else np.random.default_rng()
    t1 = y1.shape[0]
    base = _baseline_length(t0, t1, contrast)
    adj = y1.copy()
    adj[t0:] -= h0
    resid = _NullModel(y0, w0).residuals(adj)
    orders = None
    if permutation == "iid":
        orders = _iid_orders(t1, t0, base, permutations, rng, progress)
    elif progress:
        progress(t1, t1)
    observed, null = _null_statistics(_statistic_inputs(resid, stat), t0, _STATS[stat], permutation,
                                      orders, base, _studentised(contrast, t1 - t0, base))
    return _p_from(observed, null, sampled=permutation == "iid")


def conformal_interval(y0: np.ndarray, y1: np.ndarray, t0: int, alpha: float = 0.1, *,
                       contrast: str = "previous", permutation: str = "block",
                       permutations: int = 200, rng: np.random.Generator | None = None,
                       w0: np.ndarray | None = None, center: float | None = None,
                       scale: float | None = None,
                       progress: ProgressFn | None = None) -> tuple[float, float]:
    """The (1 - alpha) interval of a constant post-period ATT by inverting the conformal test.

    CWZ's interval: the values h of the effect (per treated location per period, the same in every
    post period) that the two-sided test of H0: effect = h does not reject at level alpha. p(h) is
    evaluated on a grid around `center` (default: where the observed statistic is zero, so p = 1)
    and the two ends are refined by bisection; the interval is the hull of the accepted values.
    Infinite ends mean the data cannot exclude any large effect (too few periods for the level:
    the permutation distribution has fewer than 1/alpha values).
    """
    rng = rng if rng is not None else np.random.default_rng()
    t1 = y1.shape[0]
    base = _baseline_length(t0, t1, contrast)
    model = _NullModel(y0, w0)
    post = np.zeros(t1)
    post[t0:] = 1.0
    orders = _iid_orders(t1, t0, base, permutations, rng) if permutation == "iid" else None
    stat_fn = _STATS["total"]
    studentise = _studentised(contrast, t1 - t0, base)
    evaluations = 0

    def observed_sum(h: float) -> float:
        resid = model.residuals(y1 - h * post)
        return float(resid[t0:].sum() - (resid[t0 - base:t0].sum() * (t1 - t0) / base if base else 0.0))

    def accepted(h: float) -> bool:
        nonlocal evaluations
        evaluations += 1
        observed, null = _null_statistics(model.residuals(y1 - h * post), t0, stat_fn,
                                          permutation, orders, base, studentise)
        return _p_from(observed, null, sampled=permutation == "iid") > alpha

    if center is None:
        # The root of the observed statistic, where p = 1: for fixed weights it is linear in h
        # (slope = its change per unit of h), so iterate Newton steps with the weights refitted.
        shift = post - post.mean()
        slope = -float(shift[t0:].sum() - (shift[t0 - base:t0].sum() * (t1 - t0) / base if base else 0.0))
        center = 0.0
        for _ in range(50):
            step = -observed_sum(center) / slope if slope else 0.0
            center += step
            if abs(step) <= 1e-9 * max(1.0, abs(center)):
                break
    if scale is None or not scale > 0:
        scale = float(np.std(model.residuals(y1))) or 1.0
    span = 2.0 * scale
    ok_lo = ok_hi = no_lo = no_hi = None
    for _ in range(12):  # widen until both ends of the grid are rejected
        grid = center + span * np.linspace(-1.0, 1.0, 41)
        ok = np.array([accepted(float(h)) for h in grid])
        if progress:
            progress(evaluations, evaluations)
        if ok[0] or ok[-1]:
            span *= 4.0
            continue
        if not ok.any():  # only a sliver around the centre is accepted: take the centre
            ok[20] = True
        first, last = int(np.argmax(ok)), int(len(ok) - 1 - np.argmax(ok[::-1]))
        ok_lo, no_lo = grid[first], grid[first - 1]
        ok_hi, no_hi = grid[last], grid[last + 1]
        break
    if ok_lo is None or ok_hi is None or no_lo is None or no_hi is None:
        return float("-inf"), float("inf")
    for _ in range(30):
        mid = 0.5 * (ok_lo + no_lo)
        if accepted(mid):
            ok_lo = mid
        else:
            no_lo = mid
        mid = 0.5 * (ok_hi + no_hi)
        if accepted(mid):
            ok_hi = mid
        else:
            no_hi = mid
        if abs(no_lo - ok_lo) + abs(no_hi - ok_hi) < 1e-9 * max(1.0, abs(ok_hi - ok_lo)):
            break
    if progress:
        progress(evaluations, evaluations)
    return float(ok_lo), float(ok_hi)


def jackknife_plus_att(y0: np.ndarray, y1: np.ndarray, t0: int, w_full: np.ndarray,
                       alpha: float = 0.1, progress: ProgressFn | None = None) -> tuple[float, float]:
    """Jackknife+ over pre-periods: the (1 - alpha) interval of the post-period ATT (see module doc)."""
    if t0 < 3:
        return float("nan"), float("nan")
    z0 = y0[:, :t0]  # J x t0
    z1 = y1[:t0]
    cross = z0 @ z0.T
    cvec = z0 @ z1
    s0 = z0.sum(axis=1)
    s1 = float(z1.sum())
    post0 = y0[:, t0:].mean(axis=1)
    y1_post = float(y1[t0:].mean())
    n = t0 - 1
    hi = np.empty(t0)
    lo = np.empty(t0)
    for t in range(t0):
        u = z0[:, t]
        m0 = (s0 - u) / n
        m1 = (s1 - z1[t]) / n
        # Gram of the demeaned series over the other pre-periods: C - u u' - n m0 m0'
        gram = _Gram(cross, ((1.0, u), (float(n), m0)))
        b = cvec - u * z1[t] - n * m0 * m1
        w = simplex_least_squares(gram, b, w_full)
        pred_t = m1 + float(w @ (u - m0))
        pred_post = m1 + float(w @ (post0 - m0))
        err = abs(z1[t] - pred_t)
        hi[t] = pred_post + err
        lo[t] = pred_post - err
        if progress and (t % 16 == 15 or t == t0 - 1):
            progress(t + 1, t0)
    pred_hi = float(np.quantile(hi, 1 - alpha / 2))
    pred_lo = float(np.quantile(lo, alpha / 2))
    return y1_post - pred_hi, y1_post - pred_lo


def synthetic_control(panel: GeoPanel, treated: Sequence[str], post_start: Hashable,
                      post_end: Hashable | None = None, permutations: int = 200, alpha: float = 0.1,
                      rng: np.random.Generator | int | None = None,
                      progress: Callable[[str, int, int], None] | None = None, *,
                      stat: str = "total", permutation: str = "block",
                      interval: bool = True, contrast: str = "previous",
                      interval_method: str = "conformal") -> GeoLiftResult:
    """GeoLift-style synthetic control of the `treated` locations from `post_start` (a period label).

    Locations with any missing value in the analysed periods are an error (drop them first with
    `GeoPanel.complete_locations`). Every other location is a control. `contrast` chooses the
    statistic of the conformal test and interval ("previous": Welch's t of the post-period against
    the block just before it, the calibrated default; "previous-sum": the difference of their sums,
    the former default; "none": the post-period alone). `stat` is "total"
    (|post-period sum|), "positive" or "negative" (one-sided), or "absolute" (sum of the absolute
    post-period residuals: GeoLift's two-sided "Total"; GeoLift's p-value is `contrast="none",
    stat="absolute", permutation="iid", permutations=1000`); the interval always inverts the
    two-sided "total" test. `interval_method` is "conformal" (CWZ's test inversion, the default)
    or "jackknife+" (GeoLift's); `interval=False` skips the interval.
    `progress(stage, done, total)` is called during the permutation test (stage "permutations")
    and the interval (stage "interval" or "jackknife+").
    """
    if not 0.0 < alpha < 1.0:
        raise LiftInputError(f"alpha must be in (0, 1), got {alpha}")
    _baseline_length(1, 2, contrast)  # validates it
    if interval_method not in ("conformal", "jackknife+"):
        raise LiftInputError(f"interval_method must be 'conformal' or 'jackknife+', got {interval_method!r}")
    treated = list(dict.fromkeys(str(t) for t in treated))
    if not treated:
        raise LiftInputError("no treated location given")
    unknown = [t for t in treated if t not in panel.locations]
    if unknown:
        raise LiftInputError(f"unknown treated location(s): {', '.join(unknown)}")
    t0 = panel.period_index(post_start, side="start")
    t1 = len(panel.periods) if post_end is None else panel.period_index(post_end, side="end") + 1
    if t1 <= t0:
        raise LiftInputError(f"post-end {post_end!r} is before post-start {post_start!r}")
    if t0 < 3:
        raise LiftInputError(
            f"post-start {post_start!r} leaves {t0} pre-period(s); at least 3 are needed")
    controls = [loc for loc in panel.locations if loc not in set(treated)]
    if not controls:
        raise LiftInputError("every location is treated; at least one control location is needed")
    values = panel.values[:, :t1]
    bad = [panel.locations[i] for i in np.flatnonzero(~np.all(np.isfinite(values), axis=1))]
    if bad:
        raise LiftInputError(
            f"missing or non-finite values for location(s) {', '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''} in the analysed periods")
    if isinstance(rng, (int, np.integer)) or rng is None:
        rng = np.random.default_rng(rng)
    li = {name: i for i, name in enumerate(panel.locations)}
    y1 = values[[li[t] for t in treated]].mean(axis=0)
    y0 = values[[li[c] for c in controls]]
    k = len(treated)

    w, cf = _demeaned_fit(y0, y1, slice(0, t0))
    gap = y1 - cf
    post_gap = gap[t0:]
    att = float(post_gap.mean())
    cf_sum = float(cf[t0:].sum())
    lift = float(post_gap.sum() / abs(cf_sum)) if cf_sum != 0 else float("nan")
    incremental = float(k * post_gap.sum())
    pre_rmse = float(np.sqrt(np.mean(gap[:t0] ** 2)))

    p_progress = (lambda d, n: progress("permutations", d, n)) if progress else None
    p_value = conformal_p_value(y0, y1, t0, permutations, stat, permutation, 0.0, rng, w, p_progress,
                                contrast=contrast)

    if interval and interval_method == "jackknife+":
        j_progress = (lambda d, n: progress("jackknife+", d, n)) if progress else None
        att_lo, att_hi = jackknife_plus_att(y0, y1, t0, w, alpha, j_progress)
    elif interval:
        c_progress = (lambda d, n: progress("interval", d, n)) if progress else None
        att_lo, att_hi = conformal_interval(y0, y1, t0, alpha, contrast=contrast, permutation=permutation,
                                            permutations=permutations, rng=rng, w0=w,
                                            scale=pre_rmse, progress=c_progress)
    else:
        att_lo = att_hi = float("nan")
    n_post = t1 - t0
    weights = {controls[i]: float(w[i]) for i in np.flatnonzero(w > 1e-10)}
    return GeoLiftResult(
        lift=lift, att=att, incremental=incremental, p_value=p_value,
        ci_low=att_lo * k * n_post, ci_high=att_hi * k * n_post,
        att_ci_low=att_lo, att_ci_high=att_hi, alpha=alpha,
        weights=dict(sorted(weights.items(), key=lambda kv: -kv[1])),
        treated=tuple(treated), periods=tuple(panel.periods[:t1]), post_start_index=t0,
        treated_series=y1, counterfactual_series=cf, pre_rmse=pre_rmse,
        permutations=(t1 if permutation == "block" else permutations), permutation=permutation,
        stat=stat, contrast=contrast, interval_method=interval_method if interval else "none",
    )

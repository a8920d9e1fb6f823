"""People-level lift: the issue's numbers, window boundaries, vectorised = simple, CSV errors, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cloud_sync.lift.people import (
    DAY_S,
    Exposures,
    ProportionsResult,
    RowError,
    Visits,
    assign_arms,
    attribute,
    load_exposures_csv,
    load_visits_csv,
    two_proportions,
    wilson,
)
from omnisense.lift_people_cli import register

T0 = 1_767_225_600.0  # 2026-01-01T00:00Z


def test_issue_numbers() -> None:
    r = two_proportions(56, 70, 48, 80)
    assert (r.p1, r.p2) == (0.8, 0.6)
    assert round(r.newcombe[0], 4) == 0.0524 and round(r.newcombe[1], 4) == 0.3339
    assert round(r.z, 3) == 2.650
    assert round(r.p_value, 5) == 0.00805
    assert r.lift == pytest.approx(1 / 3)
    assert r.lift_ci[0] < r.lift < r.lift_ci[1]


def test_against_statsmodels() -> None:
    pytest.importorskip("statsmodels")
    from statsmodels.stats.proportion import (
        confint_proportions_2indep,
        proportion_confint,
        proportions_ztest,
    )

    rng = np.random.default_rng(3)
    cases = [(56, 70, 48, 80), (0, 40, 3, 50), (12, 12, 5, 30), (1, 1000, 7, 900)]
    cases += [(int(rng.integers(0, n1 + 1)), n1, int(rng.integers(0, n2 + 1)), n2)
              for n1, n2 in rng.integers(1, 500, size=(20, 2))]
    for x1, n1, x2, n2 in cases:
        r = two_proportions(x1, n1, x2, n2)
        assert r.wilson1 == pytest.approx(proportion_confint(x1, n1, method="wilson"), abs=1e-12)
        assert r.wilson2 == pytest.approx(proportion_confint(x2, n2, method="wilson"), abs=1e-12)
        assert r.newcombe == pytest.approx(confint_proportions_2indep(x1, n1, x2, n2, method="newcomb"), abs=1e-12)
        if 0 < x1 + x2 < n1 + n2:
            z, p = proportions_ztest([x1, x2], [n1, n2])
            assert (r.z, r.p_value) == pytest.approx((z, p), rel=1e-10, abs=1e-15)
        else:
            assert math.isnan(r.z) and math.isnan(r.p_value)
        mover_identities(r)
    # MOVER-R and Koopman's score interval for the ratio are different methods; on the issue's data close
    lo, hi = confint_proportions_2indep(56, 70, 48, 80, method="score", compare="ratio")
    r = two_proportions(56, 70, 48, 80)
    assert (r.lift_ci[0] + 1, r.lift_ci[1] + 1) == pytest.approx((lo, hi), abs=0.01)


def mover_identities(r: ProportionsResult) -> None:
    """The MOVER-R (Donner & Zou 2012) limits L, U of p1/p2 solve the square-and-add equations
    p1 - L p2 = sqrt((p1 - l1)^2 + L^2 (u2 - p2)^2) and p1 - U p2 = -sqrt((u1 - p1)^2 + U^2 (p2 - l2)^2)."""
    (l1, u1), (l2, u2) = r.wilson1, r.wilson2
    lo, hi = r.lift_ci[0] + 1, r.lift_ci[1] + 1
    if r.x2 > 0:
        assert r.p1 - lo * r.p2 == pytest.approx(math.sqrt((r.p1 - l1) ** 2 + lo**2 * (u2 - r.p2) ** 2), abs=1e-12)
        assert lo <= r.p1 / r.p2
    if r.x2 > 0 and math.isfinite(hi):
        assert r.p1 - hi * r.p2 == pytest.approx(-math.sqrt((u1 - r.p1) ** 2 + hi**2 * (r.p2 - l2) ** 2), abs=1e-12)
        assert hi >= r.p1 / r.p2


def test_alpha_and_edge_cases() -> None:
    assert wilson(5, 10, alpha=0.10)[0] > wilson(5, 10, alpha=0.05)[0]
    assert all(math.isnan(v) for v in wilson(0, 0))
    r = two_proportions(5, 50, 0, 50)
    assert r.lift == math.inf and r.lift_ci[1] == math.inf and r.lift_ci[0] > -1
    r = two_proportions(0, 50, 5, 50)
    assert r.lift == -1 and r.lift_ci[0] == -1 and r.lift_ci[1] < 0
    with pytest.raises(ValueError):
        two_proportions(6, 5, 0, 5)


def hand_case() -> tuple[Exposures, Visits]:
    """People 0-3 exposed, 4-6 control, all exposed at T0 except person 2 (first at T0 + 1 d)."""
    e = Exposures(
        person=[0, 1, 2, 2, 3, 4, 5, 6, 6],
        time=[T0, T0, T0 + 5 * DAY_S, T0 + DAY_S, T0, T0, T0, T0, T0 - DAY_S],
        # person 2's later exposure says control; person 6's first (earlier) exposure says exposed
        exposed=[True, True, False, True, True, False, False, False, True],
    )
    v = Visits(
        person=[0, 0, 0, 1, 1, 2, 3, 3, 4, 4, 4, 5, 9],
        time=[
            T0,  # 0: at the exposure instant: not counted
            T0 + DAY_S,  # 0: exactly exposure + 1 d: counted in 1 d
            T0 + DAY_S + 3600,  # 0: same day 2? no: day 2 starts after T0 + 1 d -> second person-day
            T0 - 3600,  # 1: before the exposure: not counted
            T0 + 7 * DAY_S + 1,  # 1: just after 7 d: counted from 14 d
            T0 + DAY_S + 10,  # 2: exposed at T0 + 1 d, so 10 s after: counted in 1 d
            T0 + 100,  # 3: dwell below minimum: not counted
            T0 + 30 * DAY_S,  # 3: exactly 30 d: counted in 30 d
            T0 + 0.5 * DAY_S,  # 4: day 1
            T0 + 0.75 * DAY_S,  # 4: day 1 again: one person-day
            T0 + 14 * DAY_S,  # 4: day 14: counted in 14 d
            T0 + 31 * DAY_S,  # 5: after 30 d: never counted
            T0 + 60,  # 9: never exposed: ignored
        ],
        dwell_s=[300, 300, 300, 300, 300, 300, 59.9, 60, 300, 300, 300, 300, 300],
    )
    return e, v


def test_hand_made_windows() -> None:
    e, v = hand_case()
    arms = assign_arms(e)
    assert arms.person.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert arms.exposed.tolist() == [True, True, True, True, False, False, True]
    assert arms.both_arms == 2  # people 2 and 6
    results = attribute(e, v, (1, 7, 14, 30), min_dwell_s=60)
    got = {r.window_days: (r.n_exposed, r.n_control, r.converted_exposed, r.converted_control,
                           r.visits_exposed, r.visits_control) for r in results}
    assert got == {
        1: (5, 2, 2, 1, 2, 1),  # people 0, 2; control 4 (its two day-1 visits one person-day)
        7: (5, 2, 2, 1, 3, 1),  # person 0's second day
        14: (5, 2, 3, 1, 4, 2),  # person 1 (7 d + 1 s); person 4 on day 14
        30: (5, 2, 4, 1, 5, 2),  # person 3 at exactly 30 d; person 5 at 31 d never
    }
    r30 = results[-1]
    assert r30.rate_exposed == 0.8 and r30.rate_control == 0.5
    assert r30.incremental_visits == pytest.approx(5 - 2 * 5 / 2)
    assert r30.incremental_people == pytest.approx((0.8 - 0.5) * 5)


def reference(e: Exposures, v: Visits, windows: tuple[int, ...], min_dwell: float) -> dict[int, tuple[int, ...]]:
    """The semantics in plain Python loops."""
    first: dict[int, tuple[float, bool]] = {}
    for p, t, x in zip(e.person.tolist(), e.time.tolist(), e.exposed.tolist(), strict=True):
        if p not in first or t < first[p][0] or (t == first[p][0] and x):
            first[p] = (t, x)
    out = {}
    for w in windows:
        conv: set[int] = set()
        days: set[tuple[int, int]] = set()
        for p, t, d in zip(v.person.tolist(), v.time.tolist(), v.dwell_s.tolist(), strict=True):
            if p in first and d >= min_dwell and first[p][0] < t <= first[p][0] + w * DAY_S:
                conv.add(p)
                days.add((p, math.ceil((t - first[p][0]) / DAY_S)))
        exposed = {p for p, (_, x) in first.items() if x}
        out[w] = (len(exposed), len(first) - len(exposed), len(conv & exposed), len(conv - exposed),
                  sum(1 for p, _ in days if p in exposed), sum(1 for p, _ in days if p not in exposed))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_equals_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_people = int(rng.integers(1, 300))
    n_e, n_v = int(rng.integers(1, 1500)), int(rng.integers(0, 3000))
    # coarse times (whole hours, some exactly on window edges) so boundaries and ties are common;
    # seed 5 uses large sparse person codes (the np.unique path)
    scale = 10**12 if seed == 5 else 1
    e = Exposures(person=rng.integers(0, n_people, n_e) * scale,
                  time=T0 + rng.integers(0, 24 * 20, n_e) * 3600.0, exposed=rng.random(n_e) < 0.5)
    v_time = T0 + rng.integers(-24 * 5, 24 * 50, n_v) * 3600.0 + rng.choice([0.0, 0.0004, 0.3], n_v)
    v = Visits(person=rng.integers(-1, n_people + 5, n_v) * scale, time=v_time,
               dwell_s=rng.choice([30.0, 59.999, 60.0, 600.0], n_v))
    windows = (1, 2, 7, 14, 30)
    got = {r.window_days: (r.n_exposed, r.n_control, r.converted_exposed, r.converted_control, r.visits_exposed,
                           r.visits_control) for r in attribute(e, v, windows, min_dwell_s=60)}
    assert got == reference(e, v, windows, 60)


def test_submillisecond_order() -> None:
    """Visits within the exposure's millisecond: only those strictly after it count."""
    e = Exposures([0, 1], [T0 + 0.0005, T0 + 0.0005], [True, False])
    v = Visits([0, 0, 1], [T0 + 0.0001, T0 + 0.0009, T0 + 0.0005], [100, 100, 100])
    (r,) = attribute(e, v, (1,))
    assert (r.converted_exposed, r.converted_control) == (1, 0)


def test_empty_inputs() -> None:
    e = Exposures([], [], [])
    v = Visits([], [], [])
    (r,) = attribute(e, v, (7,))
    assert (r.n_exposed, r.n_control, r.converted_exposed) == (0, 0, 0) and math.isnan(r.lift)
    e = Exposures([0, 1], [T0, T0], [True, False])
    (r,) = attribute(e, v, (7,))
    assert (r.n_exposed, r.n_control, r.converted_exposed, r.converted_control) == (1, 1, 0, 0)
    with pytest.raises(ValueError):
        attribute(e, v, (0,))


EXPOSURES_CSV = """pseudonym,campaign,time,arm
a,spring,2026-01-01T00:00:00Z,exposed
b,spring,2026-01-01T00:00:00+00:00,control
,spring,2026-01-01T00:00:00Z,exposed
c,spring,yesterday,exposed
d,spring,2026-01-01T00:00:00Z,maybe
e,spring,2026-01-01T00:00:00,exposed
f,spring,1767225600,Control
g,summer,1767225600,exposed
"""

VISITS_CSV = """pseudonym,arrival,dwell_s
a,2026-01-02T00:00:00Z,120
b,2026-01-05T00:00:00Z,300
a,not a time,120
,2026-01-02T00:00:00Z,120
f,2026-01-03T00:00:00Z,-5
f,2026-01-03T00:00:00Z,long
f,2026-01-03T00:00:00Z,30
zz,2026-01-03T00:00:00Z,600
"""


def test_csv_loaders_keep_good_rows(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text(EXPOSURES_CSV)
    (tmp_path / "v.csv").write_text(VISITS_CSV)
    rows, errors = load_exposures_csv(tmp_path / "e.csv")
    assert rows.pseudonym == ["a", "b", "f", "g"]
    assert rows.exposed.tolist() == [True, False, False, True]
    assert rows.time.tolist() == [T0] * 4
    assert [e.line for e in errors] == [4, 5, 6, 7]
    assert "empty pseudonym" in errors[0].reason
    assert "bad time 'yesterday'" in errors[1].reason
    assert "unknown arm 'maybe'" in errors[2].reason
    assert "no UTC offset" in errors[3].reason
    assert str(errors[0]) == "line 4: empty pseudonym"
    visits, verrors = load_visits_csv(tmp_path / "v.csv")
    assert visits.pseudonym == ["a", "b", "f", "zz"] and visits.campaign is None
    assert visits.dwell_s.tolist() == [120, 300, 30, 600]
    assert [(e.line, e.reason.split(" ")[0]) for e in verrors] == [(4, "bad"), (5, "empty"), (6, "bad"), (7, "bad")]
    assert all(isinstance(e, RowError) for e in verrors)


def cli_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def lift() -> None:
        """Lift."""

    register(app)
    return app


def test_cli_json(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text(EXPOSURES_CSV)
    (tmp_path / "v.csv").write_text(VISITS_CSV)
    result = CliRunner().invoke(cli_app(), ["people", str(tmp_path / "e.csv"), str(tmp_path / "v.csv"),
                                            "--campaign", "spring", "--windows", "1,7", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["campaign"] == "spring"
    assert out["people"] == {"exposed": 1, "control": 2, "both_arms": 0}
    assert out["visits_without_exposure"] == 1
    w1, w7 = out["windows"]
    assert (w1["window_days"], w1["converted_exposed"], w1["converted_control"]) == (1, 1, 0)
    assert (w7["window_days"], w7["converted_exposed"], w7["converted_control"]) == (7, 1, 1)
    assert w7["rate_control"] == 0.5 and w7["lift"] == 1.0 and len(w7["newcombe"]) == 2
    assert w1["lift"] is None  # control rate 0: infinite lift, not JSON
    assert out["bad_rows"]["exposures"]["count"] == 4
    assert out["bad_rows"]["exposures"]["first"][0] == {"line": 4, "reason": "empty pseudonym"}
    assert out["bad_rows"]["visits"]["count"] == 4


def test_cli_table_and_errors(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text(EXPOSURES_CSV)
    (tmp_path / "v.csv").write_text(VISITS_CSV)
    runner = CliRunner()
    result = runner.invoke(cli_app(), ["people", str(tmp_path / "e.csv"), str(tmp_path / "v.csv"), "--campaign",
                                       "spring"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "30 d" in result.stdout and "incremental visits" in result.stdout
    assert "4 bad exposure rows left out" in result.stderr and "line 4: empty pseudonym" in result.stderr
    result = runner.invoke(cli_app(), ["people", str(tmp_path / "e.csv"), str(tmp_path / "v.csv")])
    assert result.exit_code == 2 and "2 campaigns (spring, summer)" in " ".join(result.stderr.split())
    result = runner.invoke(cli_app(), ["people", str(tmp_path / "nope.csv"), str(tmp_path / "v.csv")])
    assert result.exit_code == 2 and "no such file" in " ".join(result.stderr.split())
    (tmp_path / "bad.csv").write_text("who,when\nx,1\n")
    result = runner.invoke(cli_app(), ["people", str(tmp_path / "bad.csv"), str(tmp_path / "v.csv")])
    assert result.exit_code == 2 and "no column pseudonym, campaign, time, arm" in " ".join(result.stderr.split())
    result = runner.invoke(cli_app(), ["people", str(tmp_path / "e.csv"), str(tmp_path / "v.csv"), "--windows", "x"])
    assert result.exit_code == 2

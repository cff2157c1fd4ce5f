"""Data-efficiency estimators: standard errors against their formulas and Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest

from rl.experiments.data_efficiency import (
    MetaActionOutcomes,
    decomposed_estimate,
    difference,
    holistic_estimate,
    local_estimate,
    sample_size_study,
    standard_error_ratios,
)


def test_standard_errors_match_formulas() -> None:
    rng = np.random.default_rng(0)
    w = rng.gamma(2.0, 300.0, size=500)
    estimate = holistic_estimate(w)
    assert estimate.value == pytest.approx(w.mean())
    assert estimate.standard_error == pytest.approx(w.std(ddof=1) / np.sqrt(500))
    assert local_estimate(w).standard_error == estimate.standard_error
    engaged = rng.random(400) < 0.2
    z = rng.gamma(1.5, 50.0, size=150)
    got = decomposed_estimate(engaged, z)
    p, z_bar = engaged.mean(), z.mean()
    var_p = engaged.var(ddof=1) / 400
    var_z = z.var(ddof=1) / 150
    assert got.value == pytest.approx(p * z_bar)
    assert got.standard_error == pytest.approx(
        np.sqrt(z_bar**2 * var_p + p**2 * var_z + var_p * var_z)
    )
    low, high = got.interval()
    assert low == pytest.approx(got.value - 1.959964 * got.standard_error, rel=1e-6)
    d = difference(estimate, got)
    assert d.value == pytest.approx(got.value - estimate.value)
    assert d.standard_error == pytest.approx(np.hypot(estimate.standard_error, got.standard_error))


def test_standard_errors_match_monte_carlo_spread() -> None:
    rng = np.random.default_rng(1)
    n, m, p_true, reps = 300, 80, 0.15, 4000
    holistic, decomposed, holistic_se, decomposed_se = [], [], [], []
    for _ in range(reps):
        engaged = rng.random(n) < p_true
        total = rng.gamma(2.0, 200.0, size=n) + engaged * rng.gamma(1.0, 60.0, size=n)
        aux = rng.gamma(1.0, 60.0, size=m)
        h, dcp = holistic_estimate(total), decomposed_estimate(engaged, aux)
        holistic.append(h.value)
        decomposed.append(dcp.value)
        holistic_se.append(h.standard_error)
        decomposed_se.append(dcp.standard_error)
    assert np.mean(holistic_se) == pytest.approx(np.std(holistic), rel=0.06)
    assert np.mean(decomposed_se) == pytest.approx(np.std(decomposed), rel=0.06)
    # Unbiased for the same quantity: E[p * z] = p * E[z].
    assert np.mean(decomposed) == pytest.approx(p_true * 60.0, rel=0.03)


def outcomes(name: str, rng, n: int, p: float, mean_minutes: float) -> MetaActionOutcomes:
    engaged = rng.random(n) < p
    item = engaged * rng.gamma(1.0, mean_minutes, size=n)
    total = rng.gamma(1.5, 1000.0, size=n) + item
    return MetaActionOutcomes(name, engaged, item, total, rng.gamma(1.0, mean_minutes, size=200))


def test_sample_size_study_shapes_and_ratios() -> None:
    rng = np.random.default_rng(2)
    a, b = (
        outcomes("control", rng, 3000, 0.3, 30.0),
        outcomes("personalised", rng, 3000, 0.25, 60.0),
    )
    study = sample_size_study(a, b, [100, 1000, 10000], seed=0)
    assert len(study) == 3 * 3 * 3
    assert set(study["action"]) == {"control", "personalised", "personalised - control"}
    assert (study["ci_low"] <= study["value"]).all() and (study["value"] <= study["ci_high"]).all()
    ratios = standard_error_ratios(study, "personalised - control")
    assert (ratios["holistic/decomposed"] > 5).all()
    assert (ratios["holistic/local"] > 1).all()
    assert np.allclose(
        ratios["data multiple holistic vs decomposed"], ratios["holistic/decomposed"] ** 2
    )
    again = sample_size_study(a, b, [100, 1000, 10000], seed=0)
    assert study.equals(again)
    with pytest.raises(ValueError, match="at least 2"):
        holistic_estimate(np.array([1.0]))
